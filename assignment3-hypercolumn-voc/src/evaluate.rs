//! Evaluation on the val split: logits at the feature resolution, upsampled
//! bilinearly to each image's original size and scored against the original
//! labels (pixel accuracy, mean class accuracy, per-class IoU, mean IoU,
//! frequency-weighted IoU), plus the pictures: confusion matrix and
//! `image | truth | prediction` panels.

use std::path::Path;

use candle::Tensor;
use common::metrics::ConfusionMatrix;
use common::nn::resize_bilinear;
use common::train::Validation;
use ndarray::Array2;

use crate::model::ConvHead;
use crate::training::{stack_taps, TapImage};

/// The predicted labels of one image at `out_size` (its original size).
///
/// # Shapes
/// `taps[i] (1, C_i, h_i, w_i)` -> `(H, W)` host labels
pub fn predict(
    head: &ConvHead,
    taps: &[Tensor],
    feature_size: (usize, usize),
    out_size: (usize, usize),
) -> anyhow::Result<Array2<u8>> {
    let logits = head.forward_taps(taps, feature_size.0, feature_size.1)?; // (1, K, fh, fw)
    labels_at(&logits, out_size)
}

/// Argmax labels of `(1, K, h, w)` logits after bilinear resizing to `out_size`.
fn labels_at(logits: &Tensor, out_size: (usize, usize)) -> anyhow::Result<Array2<u8>> {
    // (1, K, fh, fw) -> (1, K, H, W) -> (1, H, W) -> (H, W)
    let labels = resize_bilinear(logits, out_size.0, out_size.1)?
        .argmax(1)?
        .squeeze(0)?
        .to_dtype(candle::DType::U8)?;
    common::data::image_io::tensor_to_mask(&labels)
}

/// Scores `head` on `images` (whose `mask` holds the original labels): the
/// confusion matrix at the original sizes and the mean cross-entropy at the
/// feature resolution.
pub fn evaluate(
    head: &ConvHead,
    images: &[TapImage],
    feature_size: (usize, usize),
    n_classes: usize,
) -> anyhow::Result<(ConfusionMatrix, f64)> {
    let head = head.detached()?;
    let mut cm = ConfusionMatrix::new(n_classes);
    let mut loss_sum = 0.0;
    for image in images {
        let mask = image.mask.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "image {:?} was extracted without its original labels",
                image.id
            )
        })?;
        let taps = stack_taps(&[image])?;
        let logits = head.forward_taps(&taps, feature_size.0, feature_size.1)?;
        loss_sum += common::loss::pixel_cross_entropy(&logits, &image.labels, None)?
            .to_scalar::<f32>()? as f64;
        let prediction = labels_at(&logits, mask.dim())?;
        let prediction: Vec<u8> = prediction.iter().copied().collect();
        let truth: Vec<u8> = mask.iter().copied().collect();
        cm.update(&prediction, &truth)?;
    }
    Ok((cm, loss_sum / images.len().max(1) as f64))
}

/// A `fit` validation record: val loss and mean IoU.
pub fn validation(
    head: &ConvHead,
    images: &[TapImage],
    feature_size: (usize, usize),
    n_classes: usize,
) -> anyhow::Result<Validation> {
    let (cm, loss) = evaluate(head, images, feature_size, n_classes)?;
    Ok(Validation {
        loss: Some(loss),
        metric: Some(("val mIoU".to_owned(), cm.mean_iou())),
    })
}

/// Writes the confusion-matrix PNG of `cm` to `path`.
pub fn save_confusion(
    path: &Path,
    cm: &ConfusionMatrix,
    class_names: &[String],
) -> anyhow::Result<()> {
    common::plot::plot_confusion_matrix(path, cm, class_names)
}
