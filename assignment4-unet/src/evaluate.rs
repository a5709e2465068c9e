//! Evaluation of a U-Net on whole images: the confusion matrix and its figures
//! (`common::metrics::Scores`: Dice and IoU per class, pixel accuracy, ...), the
//! mean Dice/IoU over the foreground classes 1.. (as the reference's `evaluate.py`),
//! the challenge's Rand score `V_rand` for two-class (membrane/cell) sets, the
//! prediction pictures, and the `evaluate` subcommand on a saved run.

use std::path::Path;

use anyhow::bail;
use candle::Device;
use common::data::image_io::{image_to_tensor, mask_to_tensor, save_palette_mask, tensor_to_mask};
use common::data::Dataset;
use common::device::open_device;
use common::metrics::{ConfusionMatrix, Scores};
use common::run_dir::RunDir;
use common::Result;
use serde::{Deserialize, Serialize};

use crate::config::EvaluateConfig;
use crate::data::{locate_data, open_run_splits};
use crate::model::{count_parameters, UNet};
use crate::predict::{classify, load_model, predict_mask, predict_scores, Readout};
use crate::rand_score::{RandCounts, RandScore};
use crate::report::EvaluateReport;

/// The figures of one evaluation on whole images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean Dice over the foreground classes 1.. (over all classes when there is one).
    pub dice: f64,
    /// Mean IoU over the same classes.
    pub iou: f64,
    /// Mean cross-entropy + Dice loss over the images.
    pub loss: f64,
    /// Number of images evaluated.
    pub n_images: usize,
    /// The foreground-restricted Rand scores, cells (class 1) as segments; two-class sets only.
    pub rand: Option<RandScore>,
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// The confusion matrix's figures (per-class values keyed by class name).
    pub scores: Scores,
}

impl Metrics {
    /// The figures of a finished [`Tally`].
    pub fn from_evaluation(tally: &Tally, class_names: &[String]) -> Result<Self> {
        let cm = &tally.confusion;
        Ok(Self {
            dice: foreground_mean(&cm.dice_per_class()),
            iou: foreground_mean(&cm.iou_per_class()),
            loss: tally.loss_sum / tally.n_images.max(1) as f64,
            n_images: tally.n_images,
            rand: (class_names.len() == 2).then(|| tally.rand.score()),
            class_names: class_names.to_vec(),
            scores: cm.scores(class_names)?,
        })
    }

    /// Dice of class `index`, 0 when the class is absent from truth and prediction.
    pub fn class_dice(&self, index: usize) -> f64 {
        self.class_names
            .get(index)
            .and_then(|name| self.scores.dice_per_class.get(name).copied().flatten())
            .unwrap_or(0.0)
    }
}

/// Mean of the present values of classes 1.. (of all when there is one class); 0 when none.
fn foreground_mean(values: &[Option<f64>]) -> f64 {
    let chosen = if values.len() > 1 {
        &values[1..]
    } else {
        values
    };
    let present: Vec<f64> = chosen.iter().flatten().copied().collect();
    if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    }
}

/// What an evaluation adds up over the images.
#[derive(Debug, Clone)]
pub struct Tally {
    pub confusion: ConfusionMatrix,
    /// The Rand counts with class 1 (cells) as segments.
    pub rand: RandCounts,
    pub loss_sum: f64,
    pub n_images: usize,
}

/// Runs `model` (evaluation mode, read out as `readout` says) on every whole image of
/// `ds`, one at a time, and adds up the confusion matrix, the Rand counts and the loss.
pub fn tally_on(
    model: &UNet,
    ds: &dyn Dataset,
    readout: &Readout,
    device: &Device,
) -> Result<Tally> {
    let mut tally = Tally {
        confusion: ConfusionMatrix::new(model.config().n_classes),
        rand: RandCounts::default(),
        loss_sum: 0.0,
        n_images: ds.len(),
    };
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        let xs = image_to_tensor(&sample.image, device)?.unsqueeze(0)?; // (1, C, H, W)
        let truth = mask_to_tensor(&sample.mask, device)?.unsqueeze(0)?; // (1, H, W)
        let logits = predict_scores(model, &xs, readout.test_time_views)?; // (1, K, H, W)
        tally.loss_sum += common::loss::ce_dice_loss(&logits, &truth, None)?
            .to_dtype(candle::DType::F64)?
            .to_scalar::<f64>()?;
        let pred = classify(&logits, readout.membrane_threshold)?; // (1, H, W) u32
        tally.confusion.update_tensors(&pred, &truth)?;
        let pred_mask = tensor_to_mask(&pred.squeeze(0)?)?; // (H, W)
        tally
            .rand
            .add(RandCounts::of_masks(&sample.mask, &pred_mask, 1));
    }
    Ok(tally)
}

/// Evaluates `model` on `ds` (see [`tally_on`]) into [`Metrics`].
pub fn evaluate_model(
    model: &UNet,
    ds: &dyn Dataset,
    readout: &Readout,
    device: &Device,
) -> Result<Metrics> {
    Metrics::from_evaluation(&tally_on(model, ds, readout, device)?, ds.class_names())
}

/// Writes `image | truth | prediction` panels, mask PNGs and overlays of the
/// samples of `ds` into `dir` (`<id>_panel.png`, `<id>_mask.png`, `<id>_overlay.png`).
pub fn save_predictions(
    model: &UNet,
    ds: &dyn Dataset,
    dir: &Path,
    readout: &Readout,
    device: &Device,
) -> Result<()> {
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        let pred = predict_mask(model, &sample.image, readout, device)?;
        let id = sample.id.replace(['/', '\\'], "_");
        let file = |kind: &str| dir.join(format!("{id}_{kind}.png"));
        common::viz::save_panel(&file("panel"), &sample.image, Some(&sample.mask), &pred)?;
        save_palette_mask(&file("mask"), &pred)?;
        common::viz::save_rgb(
            &file("overlay"),
            &common::viz::overlay(&sample.image, &pred, 0.5),
        )?;
    }
    Ok(())
}

/// The `evaluate` subcommand: the saved net on the held-back images of a data set
/// (the training run's split unless `--n-val`/`--seed` say otherwise); writes
/// `config.json`, `metrics.json` and `predictions/` into `cfg.out_dir()`.
pub fn evaluate(cfg: &EvaluateConfig) -> Result<EvaluateReport> {
    let device = open_device(cfg.saved.device)?;
    let checkpoint = cfg.checkpoint_file()?;
    let loaded = load_model(&checkpoint, &device)?;
    let data = locate_data(cfg.data_dir.as_deref())?;
    eprintln!("{}", data.banner);
    let n_val = cfg.n_val.unwrap_or(loaded.split.n_val);
    let seed = cfg.seed.unwrap_or(loaded.split.seed);
    let splits = open_run_splits(data, n_val, seed, loaded.split.tune)?;
    let n_classes = loaded.model.config().n_classes;
    if splits.val.class_names.len() != n_classes {
        bail!(
            "checkpoint {checkpoint:?} predicts {n_classes} classes but the data set {:?} has {}",
            splits.data.root,
            splits.val.class_names.len()
        );
    }
    let out = RunDir::create(cfg.out_dir(), &cfg.resolved())?;
    let readout = cfg.readout(&loaded.split);
    let metrics = evaluate_model(&loaded.model, &splits.val, &readout, &device)?;
    save_predictions(
        &loaded.model,
        &splits.val,
        &out.predictions(),
        &readout,
        &device,
    )?;
    let report = EvaluateReport {
        checkpoint,
        model: *loaded.model.config(),
        n_parameters: count_parameters(&loaded.varmap),
        held_back: splits.val.samples.iter().map(|s| s.id.clone()).collect(),
        evaluation: metrics,
        data: splits.data,
    };
    out.write_metrics(&report)?;
    Ok(report)
}
