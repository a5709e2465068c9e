//! Segmenting whole images at full resolution, scoring masks against a reference,
//! and the pictures a run writes (masks, overlays, the variants side by side).

use std::path::Path;

use anyhow::Context;
use candle::{Device, Module, Tensor};
use common::data::image_io::{image_to_tensor, tensor_to_mask};
use common::data::Dataset;
use common::metrics::ConfusionMatrix;
use common::viz::{colorize_mask, save_rgb, PANEL_GAP};
use common::Result;
use image::{Rgb, RgbImage};
use ndarray::{Array2, Array3};

use crate::model::SegNet;

/// Class scores of one `(3, H, W)` image, softmaxed: `(K, H, W)` on the host device.
pub fn probabilities(model: &SegNet, image: &Array3<f32>, device: &Device) -> Result<Tensor> {
    // (3, H, W) -> (1, 3, H, W)
    let xs = image_to_tensor(image, device)?.unsqueeze(0)?;
    let logits = model
        .forward(&xs)
        .with_context(|| format!("segmenting a {:?} image", image.dim()))?;
    // (1, K, H, W) -> (K, H, W)
    Ok(candle_nn::ops::softmax(&logits, 1)?.squeeze(0)?)
}

/// The predicted class of every pixel of a `(3, H, W)` image: an `(H, W)` mask.
pub fn segment(model: &SegNet, image: &Array3<f32>, device: &Device) -> Result<Array2<u8>> {
    // (K, H, W) -> (H, W) class indices
    let probs = probabilities(model, image, device)?;
    tensor_to_mask(&probs.argmax(0)?)
}

/// The flower (class 1) probability of every pixel, `(H, W)` on the host.
pub fn flower_probability(
    model: &SegNet,
    image: &Array3<f32>,
    device: &Device,
) -> Result<Array2<f32>> {
    let probs = probabilities(model, image, device)?;
    let (_, h, w) = probs.dims3()?;
    // (K, H, W) -> (H, W) row of class 1
    let values = probs.get(1)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Array2::from_shape_vec((h, w), values)?)
}

/// The confusion matrix of `prediction` against `truth` (same size; 255 in truth ignored).
pub fn score(
    prediction: &Array2<u8>,
    truth: &Array2<u8>,
    n_classes: usize,
) -> Result<ConfusionMatrix> {
    if prediction.dim() != truth.dim() {
        anyhow::bail!(
            "prediction is {:?} but the reference mask is {:?}",
            prediction.dim(),
            truth.dim()
        );
    }
    let mut cm = ConfusionMatrix::new(n_classes);
    let pred: Vec<u8> = prediction.iter().copied().collect();
    let truth: Vec<u8> = truth.iter().copied().collect();
    cm.update(&pred, &truth)?;
    Ok(cm)
}

/// Pixel accuracy of the model over every sample of `dataset`, as stored (no augmentation).
pub fn dataset_pixel_accuracy(
    model: &SegNet,
    dataset: &dyn Dataset,
    device: &Device,
) -> Result<f64> {
    let mut cm = ConfusionMatrix::new(model.n_classes());
    for index in 0..dataset.len() {
        let sample = dataset.get(index)?;
        let prediction = segment(model, &sample.image, device)?;
        cm.merge(&score(&prediction, &sample.mask, model.n_classes())?)?;
    }
    Ok(cm.pixel_accuracy())
}

/// Intersection over union of the flower class (1) in a two-class matrix;
/// 0 when neither mask holds any flower.
pub fn flower_iou(cm: &ConfusionMatrix) -> f64 {
    cm.iou_per_class().get(1).copied().flatten().unwrap_or(0.0)
}

/// Mean absolute difference between each interior pixel of a probability map and
/// the mean of its four neighbours: a measure of high-frequency texture such as
/// the checkerboard pattern of transposed convolutions (0 on a plane).
pub fn roughness(map: &Array2<f32>) -> f64 {
    let (h, w) = map.dim();
    if h < 3 || w < 3 {
        return 0.0;
    }
    let mut total = 0.0f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let around =
                (map[[y - 1, x]] + map[[y + 1, x]] + map[[y, x - 1]] + map[[y, x + 1]]) / 4.0;
            total += f64::from((map[[y, x]] - around).abs());
        }
    }
    total / ((h - 2) * (w - 2)) as f64
}

/// Writes the masks in VOC colours side by side, [`PANEL_GAP`] pixels apart on
/// white; all masks must have one size.
pub fn save_masks_side_by_side(path: &Path, masks: &[&Array2<u8>]) -> Result<()> {
    let Some(first) = masks.first() else {
        anyhow::bail!("{path:?}: no mask to draw");
    };
    let (h, w) = first.dim();
    if let Some(other) = masks.iter().find(|m| m.dim() != (h, w)) {
        anyhow::bail!(
            "{path:?}: masks differ in size, {h}x{w} and {:?}",
            other.dim()
        );
    }
    let n = masks.len() as u32;
    let (w32, h32) = (w as u32, h as u32);
    let mut out = RgbImage::from_pixel(n * w32 + (n - 1) * PANEL_GAP, h32, Rgb([255, 255, 255]));
    for (index, mask) in masks.iter().enumerate() {
        let left = index as u32 * (w32 + PANEL_GAP);
        image::imageops::replace(&mut out, &colorize_mask(mask), i64::from(left), 0);
    }
    save_rgb(path, &out)
}
