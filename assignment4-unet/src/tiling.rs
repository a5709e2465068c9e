//! The U-Net paper's overlap-tile strategy (Ronneberger et al. 2015, Fig. 2): an
//! image of any size is segmented tile by tile, each tile seen with a border of
//! context mirrored at the image's edges, and only the tile's own part of the
//! output kept. With a border at least the net's receptive-field radius and tiles
//! on the pooling grid, the stitched scores equal those of the whole mirrored image
//! at once: no seams, and memory bounded by the tile. (Exactly so with the paper's
//! up-convolutions; bilinear upsampling with aligned corners depends on the input's
//! size, so there tiles differ from the whole image by about 1e-5 in the scores.)

use candle::{Device, Tensor};

use crate::model::UNet;
use crate::predict::{classify, predict_logits, SIZE_MULTIPLE};

/// The four 2x2 pools of the U-Net.
const DEPTH: usize = 4;

/// A context border (a multiple of 16) at least the receptive-field radius of the
/// U-Net: by the recurrence `r += (k - 1) · jump`, two 3x3 convolutions and a 2x2
/// pool per level down, two 3x3 convolutions at the bottom, and per level up a 2x2
/// upsampling (counted as a 3x3 kernel, an upper bound for both kinds) and two
/// 3x3 convolutions.
pub fn context_margin() -> usize {
    let mut field: usize = 1;
    let mut jump = 1;
    for _ in 0..DEPTH {
        field += 2 * 2 * jump + jump;
        jump *= 2;
    }
    field += 2 * 2 * jump;
    for _ in 0..DEPTH {
        jump /= 2;
        field += 2 * jump + 2 * 2 * jump;
    }
    (field / 2 + 1).div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE
}

/// Index `i` of a line of `n` values mirrored at both ends (`-1 -> 1`, `n -> n - 2`),
/// repeatedly for borders longer than the line.
fn mirror_index(i: isize, n: usize) -> u32 {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let folded = i.rem_euclid(period);
    (if folded < n as isize {
        folded
    } else {
        period - folded
    }) as u32
}

/// `images` mirrored by `before` and `after` pixels along dimension `dim`.
fn mirror_pad(images: &Tensor, dim: usize, before: usize, after: usize) -> candle::Result<Tensor> {
    let n = images.dim(dim)?;
    let indices: Vec<u32> = (-(before as isize)..(n + after) as isize)
        .map(|i| mirror_index(i, n))
        .collect();
    let indices = Tensor::new(indices, images.device())?;
    images.index_select(&indices, dim)
}

/// Scores of the whole image mirrored by `margin` on every side, then cropped back:
/// what [`predict_tiled`] reproduces tile by tile.
///
/// # Shapes
/// `(N, C, H, W) -> (N, K, H, W)`
pub fn predict_mirrored(model: &UNet, images: &Tensor, margin: usize) -> candle::Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    let padded = mirror_pad(&mirror_pad(images, 2, margin, margin)?, 3, margin, margin)?;
    predict_logits(model, &padded)?
        .narrow(2, margin, h)?
        .narrow(3, margin, w)
}

/// Scores of an image of any size by overlapping tiles: the image is mirrored by
/// `margin` (and up to a whole number of tiles), each `tile x tile` block of the
/// output is predicted from its block plus `margin` of context on every side, and
/// the blocks are stitched. `tile` and `margin` must be multiples of 16.
///
/// # Shapes
/// `(N, C, H, W) -> (N, K, H, W)`
pub fn predict_tiled(
    model: &UNet,
    images: &Tensor,
    tile: usize,
    margin: usize,
) -> candle::Result<Tensor> {
    if tile == 0 || tile % SIZE_MULTIPLE != 0 || margin % SIZE_MULTIPLE != 0 {
        candle::bail!(
            "tiles of {tile} px with a {margin} px border: both must be multiples of {SIZE_MULTIPLE} (tile > 0)"
        );
    }
    let (_, _, h, w) = images.dims4()?;
    let (rows, cols) = (h.div_ceil(tile), w.div_ceil(tile));
    let padded = mirror_pad(images, 2, margin, rows * tile - h + margin)?;
    let padded = mirror_pad(&padded, 3, margin, cols * tile - w + margin)?;
    let side = tile + 2 * margin;
    let mut row_blocks = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut blocks = Vec::with_capacity(cols);
        for col in 0..cols {
            // (N, C, side, side) -> (N, K, side, side) -> (N, K, tile, tile)
            let input = padded
                .narrow(2, row * tile, side)?
                .narrow(3, col * tile, side)?;
            let scores = predict_logits(model, &input)?;
            blocks.push(scores.narrow(2, margin, tile)?.narrow(3, margin, tile)?);
        }
        row_blocks.push(Tensor::cat(&blocks, 3)?);
    }
    Tensor::cat(&row_blocks, 2)?
        .narrow(2, 0, h)?
        .narrow(3, 0, w)
}

/// The class mask of one image by [`predict_tiled`] with [`context_margin`] (see
/// [`classify`] for `membrane_threshold`).
pub fn tiled_mask(
    model: &UNet,
    image: &ndarray::Array3<f32>,
    tile: usize,
    membrane_threshold: f64,
    device: &Device,
) -> common::Result<ndarray::Array2<u8>> {
    let xs = common::data::image_io::image_to_tensor(image, device)?.unsqueeze(0)?; // (1, C, H, W)
    let scores = predict_tiled(model, &xs, tile, context_margin())?; // (1, K, H, W)
    common::data::image_io::tensor_to_mask(&classify(&scores, membrane_threshold)?.squeeze(0)?)
}
