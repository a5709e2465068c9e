//! Scoring the head: logits at the feature resolution, upsampled bilinearly to each
//! image's original size and counted against the original labels in a confusion
//! matrix (pixel accuracy, mean class accuracy, per-class IoU, mean IoU,
//! frequency-weighted IoU); the pictures (confusion matrix, `image | truth |
//! prediction` panels); and the `evaluate` subcommand: a saved run's head on a split.

use std::time::Instant;

use anyhow::bail;
use candle::Tensor;
use common::data::voc::Split;
use common::data::Dataset;
use common::device::open_device;
use common::metrics::ConfusionMatrix;
use common::nn::resize_bilinear;
use common::run_dir::RunDir;
use common::train::Validation;
use ndarray::Array2;

use crate::config::{EvalSplit, EvaluateConfig};
use crate::model::ConvHead;
use crate::report::EvaluateReport;
use crate::taps::{extract_eval, stack_taps, Extractor, TapImage};
use crate::training::{load_final_head, HeadRecord};
use crate::weights::reload_backbone;

/// The predicted labels of one image at `out_size` (its original size).
///
/// # Shapes
/// `taps[i] (1, C_i, h_i, w_i)` -> `(H, W)` host labels
pub fn predict_labels(
    head: &ConvHead,
    taps: &[Tensor],
    feature_size: (usize, usize),
    out_size: (usize, usize),
) -> anyhow::Result<Array2<u8>> {
    let logits = head.forward_taps(taps, feature_size.0, feature_size.1)?; // (1, K, fh, fw)
    labels_at(&logits, out_size)
}

/// The `(1, K, fh, fw)` logits of one image: of its taps, averaged with the mirrored
/// logits of the mirrored image's taps where it has them (the test-time flip).
pub fn image_logits(head: &ConvHead, image: &TapImage) -> anyhow::Result<Tensor> {
    let (fh, fw) = image.feature_size()?;
    let logits = head.forward_taps(&stack_taps(&[image])?, fh, fw)?;
    let Some(flipped) = &image.flipped else {
        return Ok(logits);
    };
    let mirrored: Vec<Tensor> = flipped
        .iter()
        .map(|tap| tap.to_dtype(candle::DType::F32))
        .collect::<candle::Result<_>>()?;
    let other = flip_width(&head.forward_taps(&mirrored, fh, fw)?)?;
    Ok(((logits + other)? * 0.5)?)
}

/// `(N, C, H, W)` with its columns in reverse order.
pub fn flip_width(xs: &Tensor) -> candle::Result<Tensor> {
    common::nn::flip(xs, 3)
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
pub fn confusion(head: &ConvHead, images: &[TapImage]) -> anyhow::Result<(ConfusionMatrix, f64)> {
    let head = head.detached()?;
    let mut cm = ConfusionMatrix::new(head.n_classes()?);
    let mut loss_sum = 0.0;
    for image in images {
        let Some(mask) = image.mask.as_ref() else {
            bail!(
                "image {:?} was extracted without its original labels",
                image.id
            );
        };
        let logits = image_logits(&head, image)?; // (1, K, fh, fw)
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
pub fn validation(head: &ConvHead, images: &[TapImage]) -> anyhow::Result<Validation> {
    let (cm, loss) = confusion(head, images)?;
    Ok(Validation {
        loss: Some(loss),
        metric: Some(("val mIoU".to_owned(), cm.mean_iou())),
    })
}

/// `confusion.png`: the row-normalised confusion matrix.
pub fn save_confusion(
    dir: &RunDir,
    cm: &ConfusionMatrix,
    class_names: &[String],
) -> anyhow::Result<()> {
    common::plot::plot_confusion_matrix(&dir.file("confusion.png"), cm, class_names)
}

/// `predictions/<id>.png`: `image | truth | prediction` for the first `n` of `images`
/// (the first images of `ds`, which holds the pictures).
pub fn save_panels(
    dir: &RunDir,
    head: &ConvHead,
    images: &[TapImage],
    ds: &dyn Dataset,
    n: usize,
) -> anyhow::Result<()> {
    let head = head.detached()?;
    for (index, image) in images.iter().take(n).enumerate() {
        let sample = ds.get(index)?;
        let prediction = labels_at(&image_logits(&head, image)?, sample.mask.dim())?;
        let path = dir.predictions().join(format!("{}.png", sample.id));
        common::viz::save_panel(&path, &sample.image, Some(&sample.mask), &prediction)?;
    }
    Ok(())
}

/// The `evaluate` subcommand: the final head of a saved run scored on a split; writes
/// `metrics.json`, `confusion.png` and panels into `--out` (default `<run>/evaluate`).
pub fn evaluate(cfg: &EvaluateConfig) -> anyhow::Result<EvaluateReport> {
    let started = Instant::now();
    let run = cfg.open_run()?;
    let device = open_device(cfg.saved.device)?;
    let (head, record) = load_final_head(&run, &device)?;
    let out = RunDir::create(cfg.out_dir(), cfg)?;
    // The run's data settings, unless this command's --data-dir or --max-images differ.
    let mut trained = record.config.clone();
    trained.run.data_dir = cfg.data_dir.clone().or(trained.run.data_dir);
    trained.max_images = cfg.max_images.or(trained.max_images);
    trained.download = false;
    let data = crate::data::open_without_download(&trained)?;
    check_classes(&record, data.class_names())?;
    let (backbone, weights) =
        reload_backbone(&record.backbone, &cfg.backbone, trained.seed, &device)?;
    let extractor = Extractor {
        backbone: &backbone,
        input_size: trained.input_size,
        feature_size: record.feature_size,
        device: &device,
        tap_dir: record.tap_dir(&data.root, &weights)?,
        cache_dir: trained.cache_dir.clone(),
        progress: cfg.saved.progress(),
    };
    let split = match cfg.split {
        EvalSplit::Val => Split::Val,
        EvalSplit::Train => Split::Train,
    };
    let (ds, n) = data.split(split);
    let flip = cfg.test_flip.unwrap_or(trained.test_flip);
    let images = extract_eval(&extractor, ds, n, split.name(), flip)?.images;
    let (cm, loss) = confusion(&head, &images)?;
    save_confusion(&out, &cm, &record.class_names)?;
    save_panels(&out, &head, &images, ds, cfg.panels)?;
    let report = EvaluateReport {
        run: run.path().to_path_buf(),
        split: cfg.split,
        scores: cm.scores(&record.class_names)?,
        loss,
        class_names: record.class_names.clone(),
        n_images: n,
        data: data.located,
        backbone: weights,
        seconds: started.elapsed().as_secs_f64(),
    };
    out.write_metrics(&report)?;
    Ok(report)
}

/// The data must have the classes the head was trained on.
fn check_classes(record: &HeadRecord, class_names: &[String]) -> anyhow::Result<()> {
    if record.class_names != class_names {
        bail!(
            "the head was trained on the classes {:?}, but the data has {:?}: pass --data-dir",
            record.class_names,
            class_names
        );
    }
    Ok(())
}
