//! Segmenting a whole image with the trained classifier: the FCN's stride-4 map
//! upsampled to full size, scored against a reference mask; the naive sliding
//! windows (stride 4 and stride 1) and shift-and-stitch timed and checked equal
//! to the FCN's maps; and the pictures (heat maps, masks, overlay, panel).

use std::path::Path;
use std::time::Instant;

use candle::{Device, Module};
use common::data::image_io::image_to_tensor;
use common::data::transforms::resize_image;
use common::metrics::ConfusionMatrix;
use common::viz::{heat_map, overlay, save_mask_png, save_panel, save_rgb, MaskStyle};
use ndarray::{s, Array2, Axis};
use serde::Serialize;

use crate::data::Scene;
use crate::model::{Classifier, Fcn, PATCH_SIZE, STRIDE};
use crate::segment::{
    fcn_map, flower_probability, max_abs_diff, pad_image, padding_for, shift_and_stitch,
    sliding_window,
};
use crate::training::patch_batch;

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
    let image = image_to_tensor(&scene.image, device)?;
    let padded4 = pad_image(&image, &padding_for(height, width, STRIDE)?)?;
    // One untimed pass first, so the timing does not include one-off allocations.
    fcn_map(&fcn, &padded4)?;
    let started = Instant::now();
    let logits = fcn_map(&fcn, &padded4)?;
    let fcn_seconds = started.elapsed().as_secs_f64();
    let coarse_probability = flower_probability(&logits);
    let probability = upsample_to(&coarse_probability, STRIDE, height, width);
    let mask = threshold(&probability);
    let score = scene
        .mask
        .as_ref()
        .map(|t| score_mask(&mask, t))
        .transpose()?;

    let comparison = if options.compare {
        let started = Instant::now();
        let window4 = sliding_window(
            classifier,
            &padded4,
            STRIDE,
            options.window_batch,
            options.progress,
        )?;
        let sliding4 = started.elapsed().as_secs_f64();
        let diff4 = max_abs_diff(&logits, &window4)?;

        // Stride 1 over the whole padded image: one map cell per pixel.
        let padded1 = pad_image(&image, &padding_for(height, width, 1)?)?;
        let started = Instant::now();
        let stitched = shift_and_stitch(&fcn, &padded1)?;
        let stitch_full = started.elapsed().as_secs_f64();
        // The comparison region: pixels (top.., left..) of size rh x rw need the
        // padded rows top..top+rh+31 and columns left..left+rw+31.
        let region = centred_region(height, width, options.stride1_region);
        let (top, left, rh, rw) = region;
        let padded_region = padded1
            .narrow(2, top, rh + PATCH_SIZE - 1)?
            .narrow(3, left, rw + PATCH_SIZE - 1)?
            .contiguous()?;
        let started = Instant::now();
        let window1 = sliding_window(
            classifier,
            &padded_region,
            1,
            options.window_batch,
            options.progress,
        )?;
        let sliding1 = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let stitched_region = shift_and_stitch(&fcn, &padded_region)?;
        let stitch = started.elapsed().as_secs_f64();
        let diff1 = max_abs_diff(&stitched_region, &window1)?;
        // The region's stitched map must also be the same cells of the full one.
        let full_cells = stitched
            .slice(s![.., top..top + rh, left..left + rw])
            .to_owned();
        let diff1 = diff1.max(max_abs_diff(&full_cells, &window1)?);
        // The stride-1 map has one cell per pixel: (2, H, W).
        let stride1_probability = flower_probability(&stitched);
        let stride1_score = scene
            .mask
            .as_ref()
            .map(|t| score_mask(&threshold(&stride1_probability), t))
            .transpose()?;
        Some(Comparison {
            sliding_window_stride4_seconds: sliding4,
            sliding_window_stride1_seconds: sliding1,
            shift_and_stitch_seconds: stitch,
            shift_and_stitch_full_image_seconds: stitch_full,
            stride1_region: region,
            fcn_vs_sliding_stride4_max_abs_diff: diff4,
            shift_and_stitch_vs_sliding_stride1_max_abs_diff: diff1,
            speedup_fcn_vs_sliding_stride4: sliding4 / fcn_seconds.max(1e-9),
            speedup_shift_and_stitch_vs_sliding_stride1: sliding1 / stitch.max(1e-9),
            stride1_map_size: (stitched.dim().1, stitched.dim().2),
            stride1_score,
            stride1_probability,
        })
    } else {
        None
    };
    Ok(SceneReport {
        fcn_seconds,
        fcn_map_size: coarse_probability.dim(),
        image_size: (height, width),
        score,
        comparison,
        coarse_probability,
        probability,
        mask,
    })
}

/// The largest difference between the classifier's logits on each patch and
/// the FCN's 1x1 output on the same patch.
pub fn fcn_vs_classifier_on_patches(
    classifier: &Classifier,
    fcn: &Fcn,
    patches: &[common::data::Sample],
    device: &Device,
) -> anyhow::Result<f32> {
    let mut worst = 0f32;
    for chunk in patches.chunks(256) {
        let (images, _) = patch_batch(chunk, device)?;
        // (N, 2) and (N, 2, 1, 1) -> (N, 2)
        let a = classifier.forward(&images)?;
        let b = fcn.forward(&images)?.flatten_from(1)?;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        worst = worst.max(diff);
    }
    Ok(worst)
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

/// Writes the scene's pictures into `dir`: `<name>_heatmap.png` (flower
/// probability, full size), `<name>_heatmap_fcn.png` (the FCN's own 4x smaller
/// map), `<name>_mask.png` (black/white), `<name>_overlay.png`, `<name>_panel.png`
/// (image | reference | prediction) and, after a comparison,
/// `<name>_stride1_heatmap.png` and `<name>_stride1_mask.png`.
pub fn write_pictures(dir: &Path, scene: &Scene, report: &SceneReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create folder {dir:?}: {e}"))?;
    let name = &scene.name;
    save_rgb(
        &dir.join(format!("{name}_heatmap.png")),
        &heat_map(&report.probability),
    )?;
    save_rgb(
        &dir.join(format!("{name}_heatmap_fcn.png")),
        &heat_map(&report.coarse_probability),
    )?;
    save_mask_png(
        &dir.join(format!("{name}_mask.png")),
        &report.mask,
        MaskStyle::Binary,
    )?;
    save_rgb(
        &dir.join(format!("{name}_overlay.png")),
        &overlay(&scene.image, &report.mask, 0.5),
    )?;
    save_panel(
        &dir.join(format!("{name}_panel.png")),
        &scene.image,
        scene.mask.as_ref(),
        &report.mask,
    )?;
    if let Some(c) = &report.comparison {
        save_rgb(
            &dir.join(format!("{name}_stride1_heatmap.png")),
            &heat_map(&c.stride1_probability),
        )?;
        save_mask_png(
            &dir.join(format!("{name}_stride1_mask.png")),
            &threshold(&c.stride1_probability),
            MaskStyle::Binary,
        )?;
    }
    Ok(())
}
