//! Four ways to get a score map from the patch classifier, and the padding that
//! makes a map cover every pixel of the image:
//!
//! - the FCN: one pass over the image, a map with stride 4;
//! - the naive sliding window the slides warn about: the classifier on every
//!   32x32 crop, with stride 4 (must give exactly the FCN's map) or stride 1 (a
//!   full-resolution map);
//! - shift-and-stitch (Long et al. 2015, section 3.2; Sermanet et al. 2014,
//!   OverFeat): 16 FCN passes over the input shifted by `(dy, dx)` in `0..4`,
//!   interleaved, which must reproduce the stride-1 sliding window exactly.
//!
//! Every map is returned host-side as `(2, rows, cols)` logits.

use candle::{Module, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{s, Array2, Array3, Axis};

use crate::model::{Classifier, Fcn, N_CLASSES, PATCH_SIZE, STRIDE};

/// How many rows and columns of edge pixels were added on each side of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// The padding for a score map of `stride` over an `height x width` image such
/// that the map has `ceil(height / stride) x ceil(width / stride)` cells, the
/// window of cell `(i, j)` centred on the `stride x stride` block of pixels at
/// `(stride*i, stride*j)` (to half a pixel for odd strides):
/// `16 - ceil(stride/2)` before (14 for stride 4, 15 for stride 1), the rest after.
pub fn padding_for(height: usize, width: usize, stride: usize) -> anyhow::Result<Padding> {
    if stride == 0 || stride > PATCH_SIZE {
        anyhow::bail!("stride must be in 1..={PATCH_SIZE}, got {stride}");
    }
    if height == 0 || width == 0 {
        anyhow::bail!("cannot pad an empty {height}x{width} image");
    }
    let before = PATCH_SIZE / 2 - stride.div_ceil(2);
    // Padded size whose last window starts at stride * (cells - 1).
    let padded = |size: usize| stride * (size.div_ceil(stride) - 1) + PATCH_SIZE;
    Ok(Padding {
        top: before,
        bottom: padded(height) - height - before,
        left: before,
        right: padded(width) - width - before,
    })
}

/// Pads a `(3, H, W)` or `(1, 3, H, W)` image by repeating its edge pixels.
///
/// # Shapes
/// `(3, H, W) | (1, 3, H, W) -> (1, 3, top + H + bottom, left + W + right)`
pub fn pad_image(image: &Tensor, padding: &Padding) -> candle::Result<Tensor> {
    let image = match image.rank() {
        3 => image.unsqueeze(0)?,
        4 => image.clone(),
        _ => candle::bail!(
            "pad_image takes a (3, H, W) or (1, 3, H, W) image, got shape {:?}",
            image.dims()
        ),
    };
    image
        .pad_with_same(2, padding.top, padding.bottom)?
        .pad_with_same(3, padding.left, padding.right)
}

/// Checks that `padded` is one `(1, 3, H, W)` image with H, W >= 32.
fn image_dims(padded: &Tensor) -> anyhow::Result<(usize, usize)> {
    match padded.dims() {
        &[1, 3, h, w] if h >= PATCH_SIZE && w >= PATCH_SIZE => Ok((h, w)),
        dims => anyhow::bail!(
            "expected one (1, 3, H, W) image with H, W >= {PATCH_SIZE}, got shape {dims:?}"
        ),
    }
}

/// The FCN's logits on one image: one forward pass.
///
/// # Shapes
/// `(1, 3, H, W) -> (2, floor((H-32)/4)+1, floor((W-32)/4)+1)`
pub fn fcn_map(fcn: &Fcn, padded: &Tensor) -> anyhow::Result<Array3<f32>> {
    image_dims(padded)?;
    // BEGIN SOLUTION a1.fcn one forward pass of the FCN, the batch axis dropped, to the host
    // (1, 2, R, C) -> (2, R, C)
    to_host(&fcn.forward(padded)?.squeeze(0)?)
    // END SOLUTION
}

/// The classifier applied to every 32x32 crop at `stride`, `batch_size` crops
/// per forward pass (the naive method).
///
/// # Shapes
/// `(1, 3, H, W) -> (2, (H-32)/stride+1, (W-32)/stride+1)`
pub fn sliding_window(
    classifier: &Classifier,
    padded: &Tensor,
    stride: usize,
    batch_size: usize,
    progress: bool,
) -> anyhow::Result<Array3<f32>> {
    let (h, w) = image_dims(padded)?;
    if stride == 0 || batch_size == 0 {
        anyhow::bail!("stride and batch size must be at least 1, got {stride} and {batch_size}");
    }
    // BEGIN SOLUTION a1.sliding_window the classifier on every 32x32 crop at the stride, batch_size crops per forward pass
    let (rows, cols) = ((h - PATCH_SIZE) / stride + 1, (w - PATCH_SIZE) / stride + 1);
    let device = padded.device();
    // (1, 3, H, W) -> host (3, H, W); crops are cut host-side and sent per batch.
    let image = to_host(&padded.squeeze(0)?)?;
    let positions: Vec<(usize, usize)> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .collect();
    let bar = progress_bar(progress, positions.len(), "sliding window");
    let mut map = Array3::<f32>::zeros((N_CLASSES, rows, cols));
    for chunk in positions.chunks(batch_size) {
        // (B, 3, 32, 32) -> (B, 2)
        let batch = crops_at(&image, chunk, stride, device)?;
        let logits = classifier.forward(&batch)?.to_vec2::<f32>()?;
        for (&(r, c), logit) in chunk.iter().zip(&logits) {
            for (k, &v) in logit.iter().enumerate() {
                map[[k, r, c]] = v;
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(map)
    // END SOLUTION
}

/// The 32x32 crops of `image` whose corners are `(stride*r, stride*c)` for each
/// `(r, c)` of `cells`, cut host-side and stacked on `device`.
///
/// # Shapes
/// `(3, H, W) -> (cells.len(), 3, 32, 32)`
fn crops_at(
    image: &Array3<f32>,
    cells: &[(usize, usize)],
    stride: usize,
    device: &candle::Device,
) -> anyhow::Result<Tensor> {
    let mut crops: Vec<f32> = Vec::with_capacity(cells.len() * 3 * PATCH_SIZE * PATCH_SIZE);
    for &(r, c) in cells {
        let (y, x) = (r * stride, c * stride);
        crops.extend(
            image
                .slice(s![.., y..y + PATCH_SIZE, x..x + PATCH_SIZE])
                .iter(),
        );
    }
    Ok(Tensor::from_vec(
        crops,
        (cells.len(), 3, PATCH_SIZE, PATCH_SIZE),
        device,
    )?)
}

/// Shift-and-stitch: the FCN on the input shifted by `(dy, dx)` for `dy, dx` in
/// `0..4` gives the stride-1 map's cells `(dy + 4i, dx + 4j)`; interleaving the
/// 16 maps gives the full stride-1 map.
///
/// # Shapes
/// `(1, 3, H, W) -> (2, H-31, W-31)`
pub fn shift_and_stitch(fcn: &Fcn, padded: &Tensor) -> anyhow::Result<Array3<f32>> {
    let (h, w) = image_dims(padded)?;
    let (rows, cols) = (h - PATCH_SIZE + 1, w - PATCH_SIZE + 1);
    let mut map = Array3::<f32>::zeros((N_CLASSES, rows, cols));
    for dy in 0..STRIDE.min(rows) {
        for dx in 0..STRIDE.min(cols) {
            // (1, 3, H, W) -> (1, 3, H-dy, W-dx) -> (2, ceil((rows-dy)/4), ceil((cols-dx)/4))
            let shifted = padded.narrow(2, dy, h - dy)?.narrow(3, dx, w - dx)?;
            let part = fcn_map(fcn, &shifted.contiguous()?)?;
            map.slice_mut(s![.., dy..;STRIDE, dx..;STRIDE])
                .assign(&part);
        }
    }
    Ok(map)
}

/// The largest absolute difference between two maps of the same shape.
pub fn max_abs_diff(a: &Array3<f32>, b: &Array3<f32>) -> anyhow::Result<f32> {
    if a.dim() != b.dim() {
        anyhow::bail!(
            "cannot compare maps of shapes {:?} and {:?}",
            a.dim(),
            b.dim()
        );
    }
    Ok(a.iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs())))
}

/// Flower probability per cell: the softmax of the two logits, class 1.
///
/// # Shapes
/// `(2, R, C) -> (R, C)`
pub fn flower_probability(logits: &Array3<f32>) -> Array2<f32> {
    // softmax over 2 classes: p1 = 1 / (1 + exp(l0 - l1))
    let background = logits.index_axis(Axis(0), 0);
    let flower = logits.index_axis(Axis(0), 1);
    ndarray::Zip::from(&background)
        .and(&flower)
        .map_collect(|&l0, &l1| 1.0 / (1.0 + (l0 - l1).exp()))
}

/// A `(K, R, C)` float tensor copied to the host.
fn to_host(t: &Tensor) -> anyhow::Result<Array3<f32>> {
    let (k, r, c) = t.dims3()?;
    let data = t
        .to_dtype(candle::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Array3::from_shape_vec((k, r, c), data)?)
}

fn progress_bar(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style =
        ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {pos}/{len} crops  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}
