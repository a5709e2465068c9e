//! Segmenting a whole image with the trained classifier: the FCN's stride-4 map
//! upsampled to full size, thresholded and scored against a reference mask; with
//! a comparison, the naive sliding windows (stride 4 and stride 1) and
//! shift-and-stitch timed and checked equal to the FCN's maps.

use std::time::Instant;

use candle::{Device, Tensor};
use common::data::image_io::image_to_tensor;
use common::data::transforms::resize_image;
use common::metrics::ConfusionMatrix;
use ndarray::{s, Array2, Array3, Axis};
use serde::Serialize;

use crate::data::Scene;
use crate::model::{Classifier, Fcn, PATCH_SIZE, STRIDE};
use crate::segment::{
    fcn_map, flower_probability, max_abs_diff, pad_image, padding_for, shift_and_stitch,
    sliding_window,
};

/// Probability above which a pixel is called flower.
pub const THRESHOLD: f32 = 0.5;

/// How to segment a scene.
#[derive(Debug, Clone, Copy)]
pub struct SegmentOptions {
    /// Also run and time the sliding windows (stride 4 and 1) and shift-and-stitch.
    pub compare: bool,
    /// Crops per forward pass of the sliding window.
    pub window_batch: usize,
    /// Side of the centred square of pixels on which the stride-1 sliding window
    /// and shift-and-stitch are compared and timed; `None` = the whole image (the
    /// stride-1 sliding window over all of `flower.jpg` takes minutes on 2 cores).
    pub stride1_region: Option<usize>,
    /// Show progress bars.
    pub progress: bool,
}

/// IoU of the flower class and pixel accuracy against a reference mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MaskScore {
    pub flower_iou: f64,
    pub pixel_accuracy: f64,
}

/// The comparison of the FCN with the naive sliding window and shift-and-stitch.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub sliding_window_stride4_seconds: f64,
    /// Stride-1 sliding window on `stride1_region`.
    pub sliding_window_stride1_seconds: f64,
    /// Shift-and-stitch on the same region as the stride-1 sliding window.
    pub shift_and_stitch_seconds: f64,
    /// Shift-and-stitch on the whole image (the full-resolution map).
    pub shift_and_stitch_full_image_seconds: f64,
    /// `(top, left, height, width)` of the pixels the stride-1 comparison covers.
    pub stride1_region: (usize, usize, usize, usize),
    /// Max |FCN logits - stride-4 sliding-window logits| over the whole map.
    pub fcn_vs_sliding_stride4_max_abs_diff: f32,
    /// Max |shift-and-stitch logits - stride-1 sliding-window logits|.
    pub shift_and_stitch_vs_sliding_stride1_max_abs_diff: f32,
    /// Stride-4 sliding window time / FCN time.
    pub speedup_fcn_vs_sliding_stride4: f64,
    /// Stride-1 sliding window time / shift-and-stitch time.
    pub speedup_shift_and_stitch_vs_sliding_stride1: f64,
    /// `(rows, cols)` of the whole stride-1 map (one per pixel).
    pub stride1_map_size: (usize, usize),
    /// Score of the full-resolution (stride-1) mask, when a reference exists.
    pub stride1_score: Option<MaskScore>,
    /// `(H, W)` flower probability of every pixel from shift-and-stitch.
    #[serde(skip)]
    pub stride1_probability: Array2<f32>,
}

/// Everything learned from segmenting one scene.
#[derive(Debug, Clone, Serialize)]
pub struct SceneReport {
    /// Seconds of one FCN pass over the padded image.
    pub fcn_seconds: f64,
    /// `(rows, cols)` of the FCN's map (about 4x smaller than the image).
    pub fcn_map_size: (usize, usize),
    /// `(height, width)` of the image.
    pub image_size: (usize, usize),
    /// Score of the upsampled FCN mask, when a reference exists.
    pub score: Option<MaskScore>,
    /// The naive methods, when asked for.
    pub comparison: Option<Comparison>,
    /// `(rows, cols)` flower probability at FCN resolution.
    #[serde(skip)]
    pub coarse_probability: Array2<f32>,
    /// `(H, W)` flower probability, bilinearly upsampled from the FCN's map.
    #[serde(skip)]
    pub probability: Array2<f32>,
    /// `(H, W)` mask: probability >= 0.5.
    #[serde(skip)]
    pub mask: Array2<u8>,
}

/// The FCN's pass over the scene, kept for the comparison.
struct FcnPass {
    /// `(1, 3, H, W)` the image.
    image: Tensor,
    /// `(1, 3, H', W')` the image padded for stride 4.
    padded: Tensor,
    /// `(2, ceil(H/4), ceil(W/4))` logits.
    logits: Array3<f32>,
    seconds: f64,
}

/// Segments `scene` with the FCN made from `classifier` and, with
/// `options.compare`, times and checks the naive methods against it.
pub fn segment_scene(
    classifier: &Classifier,
    scene: &Scene,
    device: &Device,
    options: &SegmentOptions,
) -> anyhow::Result<SceneReport> {
    let fcn = classifier.to_fcn()?;
    let (_, height, width) = scene.image.dim();
    // (3, H, W) -> (1, 3, H, W)
    let image = image_to_tensor(&scene.image, device)?.unsqueeze(0)?;
    let pass = timed_fcn_pass(&fcn, &image)?;
    let coarse_probability = flower_probability(&pass.logits);
    let probability = upsample_to(&coarse_probability, STRIDE, height, width);
    let mask = threshold(&probability);
    let truth = scene.mask.as_ref();
    let score = truth.map(|t| score_mask(&mask, t)).transpose()?;
    let comparison = options
        .compare
        .then(|| compare_naive(classifier, &fcn, &pass, truth, options))
        .transpose()?;
    Ok(SceneReport {
        fcn_seconds: pass.seconds,
        fcn_map_size: coarse_probability.dim(),
        image_size: (height, width),
        score,
        comparison,
        coarse_probability,
        probability,
        mask,
    })
}

/// The FCN over the image padded for stride 4, timed on a second pass so the
/// time does not include one-off allocations.
fn timed_fcn_pass(fcn: &Fcn, image: &Tensor) -> anyhow::Result<FcnPass> {
    let (_, _, height, width) = image.dims4()?;
    let padded = pad_image(image, &padding_for(height, width, STRIDE)?)?;
    fcn_map(fcn, &padded)?;
    let (logits, seconds) = timed(|| fcn_map(fcn, &padded))?;
    Ok(FcnPass {
        image: image.clone(),
        padded,
        logits,
        seconds,
    })
}

/// The stride-4 sliding window against the FCN's map, and the stride-1 sliding
/// window against shift-and-stitch.
fn compare_naive(
    classifier: &Classifier,
    fcn: &Fcn,
    pass: &FcnPass,
    truth: Option<&Array2<u8>>,
    options: &SegmentOptions,
) -> anyhow::Result<Comparison> {
    let (window4, sliding4) = timed(|| {
        sliding_window(
            classifier,
            &pass.padded,
            STRIDE,
            options.window_batch,
            options.progress,
        )
    })?;
    let stride1 = stride1_check(classifier, fcn, &pass.image, options)?;
    let stride1_probability = flower_probability(&stride1.full_map);
    let stride1_score = truth
        .map(|t| score_mask(&threshold(&stride1_probability), t))
        .transpose()?;
    Ok(Comparison {
        sliding_window_stride4_seconds: sliding4,
        sliding_window_stride1_seconds: stride1.sliding_seconds,
        shift_and_stitch_seconds: stride1.stitch_seconds,
        shift_and_stitch_full_image_seconds: stride1.full_seconds,
        stride1_region: stride1.region,
        fcn_vs_sliding_stride4_max_abs_diff: max_abs_diff(&pass.logits, &window4)?,
        shift_and_stitch_vs_sliding_stride1_max_abs_diff: stride1.max_abs_diff,
        speedup_fcn_vs_sliding_stride4: sliding4 / pass.seconds.max(1e-9),
        speedup_shift_and_stitch_vs_sliding_stride1: stride1.sliding_seconds
            / stride1.stitch_seconds.max(1e-9),
        stride1_map_size: (stride1.full_map.dim().1, stride1.full_map.dim().2),
        stride1_score,
        stride1_probability,
    })
}

/// What the stride-1 comparison measured.
struct Stride1 {
    /// `(2, H, W)` shift-and-stitch logits, one cell per pixel.
    full_map: Array3<f32>,
    full_seconds: f64,
    region: (usize, usize, usize, usize),
    sliding_seconds: f64,
    stitch_seconds: f64,
    /// Max |sliding window - shift-and-stitch| on the region, both the region's
    /// own stitched map and the same cells of the whole image's.
    max_abs_diff: f32,
}

/// Shift-and-stitch over the whole image padded for stride 1, then the stride-1
/// sliding window and shift-and-stitch on the centred region only.
fn stride1_check(
    classifier: &Classifier,
    fcn: &Fcn,
    image: &Tensor,
    options: &SegmentOptions,
) -> anyhow::Result<Stride1> {
    let (_, _, height, width) = image.dims4()?;
    let padded = pad_image(image, &padding_for(height, width, 1)?)?;
    let (full_map, full_seconds) = timed(|| shift_and_stitch(fcn, &padded))?;
    // Pixels (top.., left..) of size rh x rw need the padded rows
    // top..top+rh+31 and columns left..left+rw+31.
    let region = centred_region(height, width, options.stride1_region);
    let (top, left, rh, rw) = region;
    let padded_region = padded
        .narrow(2, top, rh + PATCH_SIZE - 1)?
        .narrow(3, left, rw + PATCH_SIZE - 1)?
        .contiguous()?;
    let (window, sliding_seconds) = timed(|| {
        sliding_window(
            classifier,
            &padded_region,
            1,
            options.window_batch,
            options.progress,
        )
    })?;
    let (stitched, stitch_seconds) = timed(|| shift_and_stitch(fcn, &padded_region))?;
    let full_cells = full_map
        .slice(s![.., top..top + rh, left..left + rw])
        .to_owned();
    let max_abs_diff = max_abs_diff(&stitched, &window)?.max(max_abs_diff(&full_cells, &window)?);
    Ok(Stride1 {
        full_map,
        full_seconds,
        region,
        sliding_seconds,
        stitch_seconds,
        max_abs_diff,
    })
}

/// The value of `f` and the seconds it took.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64)> {
    let started = Instant::now();
    let value = f()?;
    Ok((value, started.elapsed().as_secs_f64()))
}

/// `(top, left, height, width)` of the centred `side x side` square of an
/// `height x width` image (clipped to the image), or the whole image for `None`.
pub fn centred_region(
    height: usize,
    width: usize,
    side: Option<usize>,
) -> (usize, usize, usize, usize) {
    match side {
        None => (0, 0, height, width),
        Some(side) => {
            let (rh, rw) = (side.clamp(1, height), side.clamp(1, width));
            ((height - rh) / 2, (width - rw) / 2, rh, rw)
        }
    }
}

/// Bilinear upsampling (align_corners = false) of a stride-`factor` map to
/// `factor` times its size, cropped to `height x width`. With the padding of
/// [`padding_for`], cell `i`'s window is centred on pixel `factor*i + (factor-1)/2`,
/// which is exactly where align_corners = false puts it.
///
/// # Shapes
/// `(R, C) -> (height, width)`, `height <= factor*R`, `width <= factor*C`
pub fn upsample_to(map: &Array2<f32>, factor: usize, height: usize, width: usize) -> Array2<f32> {
    let (rows, cols) = map.dim();
    // (R, C) -> (1, R, C) -> (1, factor*R, factor*C) -> (H, W)
    let big = resize_image(
        &map.clone().insert_axis(Axis(0)),
        factor * rows,
        factor * cols,
    );
    big.slice(s![
        0,
        ..height.min(factor * rows),
        ..width.min(factor * cols)
    ])
    .to_owned()
}

/// 1 where the probability is at least [`THRESHOLD`].
pub fn threshold(probability: &Array2<f32>) -> Array2<u8> {
    probability.mapv(|p| u8::from(p >= THRESHOLD))
}

/// Flower IoU and pixel accuracy of `predicted` against `truth` (0/1 masks).
pub fn score_mask(predicted: &Array2<u8>, truth: &Array2<u8>) -> anyhow::Result<MaskScore> {
    if predicted.dim() != truth.dim() {
        anyhow::bail!(
            "predicted mask is {:?} but the reference is {:?}",
            predicted.dim(),
            truth.dim()
        );
    }
    let mut cm = ConfusionMatrix::new(2);
    let pred: Vec<u8> = predicted.iter().copied().collect();
    let truth: Vec<u8> = truth.iter().copied().collect();
    cm.update(&pred, &truth)?;
    Ok(MaskScore {
        flower_iou: cm.iou_per_class()[1].unwrap_or(0.0),
        pixel_accuracy: cm.pixel_accuracy(),
    })
}
