//! Evaluation of a U-Net on whole images: confusion matrix, Dice and IoU per
//! class, mean Dice/IoU over the foreground classes (classes 1.., as the
//! reference's `evaluate.py`), pixel accuracy, and the `metrics.json` file.

use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use common::data::image_io::{image_to_tensor, mask_to_tensor, tensor_to_mask};
use common::data::Dataset;
use common::metrics::ConfusionMatrix;
use common::Result;
use serde::{Deserialize, Serialize};

use crate::model::UNet;
use crate::predict::predict_logits;

/// The figures of one evaluation, as written to `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean Dice over the foreground classes 1.. (over all classes when there is one).
    pub dice: f64,
    /// Mean IoU over the same classes.
    pub iou: f64,
    /// Fraction of labelled pixels predicted right.
    pub pixel_accuracy: f64,
    /// Trainable parameters of the net.
    pub n_parameters: usize,
    /// Dice per class index (`null` for a class absent from truth and prediction).
    pub dice_per_class: Vec<Option<f64>>,
    /// IoU per class index.
    pub iou_per_class: Vec<Option<f64>>,
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// Mean cross-entropy + Dice loss over the images.
    pub loss: f64,
    /// Number of images evaluated.
    pub n_images: usize,
}

impl Metrics {
    /// The figures of a filled confusion matrix.
    pub fn from_confusion(
        cm: &ConfusionMatrix,
        class_names: &[String],
        n_parameters: usize,
        loss: f64,
        n_images: usize,
    ) -> Self {
        let dice_per_class = cm.dice_per_class();
        let iou_per_class = cm.iou_per_class();
        let foreground = |values: &[Option<f64>]| {
            let chosen: Vec<f64> = if values.len() > 1 {
                values[1..].iter().flatten().copied().collect()
            } else {
                values.iter().flatten().copied().collect()
            };
            if chosen.is_empty() {
                0.0
            } else {
                chosen.iter().sum::<f64>() / chosen.len() as f64
            }
        };
        Self {
            dice: foreground(&dice_per_class),
            iou: foreground(&iou_per_class),
            pixel_accuracy: cm.pixel_accuracy(),
            n_parameters,
            dice_per_class,
            iou_per_class,
            class_names: class_names.to_vec(),
            loss,
            n_images,
        }
    }

    /// Dice of class `index`, 0 when absent.
    pub fn class_dice(&self, index: usize) -> f64 {
        self.dice_per_class
            .get(index)
            .copied()
            .flatten()
            .unwrap_or(0.0)
    }

    /// One line per class and the summary, for the terminal.
    pub fn report(&self) -> String {
        let mut text = String::new();
        for (index, (dice, iou)) in self
            .dice_per_class
            .iter()
            .zip(&self.iou_per_class)
            .enumerate()
        {
            let name = self
                .class_names
                .get(index)
                .map(String::as_str)
                .unwrap_or("?");
            let pct = |v: &Option<f64>| {
                v.map(|v| format!("{:6.2}%", 100.0 * v))
                    .unwrap_or_else(|| "   n/a".into())
            };
            text.push_str(&format!(
                "class {index} {name:<12} Dice {}  IoU {}\n",
                pct(dice),
                pct(iou)
            ));
        }
        text.push_str(&format!(
            "mean foreground Dice {:.2}%  IoU {:.2}%  pixel accuracy {:.2}%  ({} images, {} parameters)",
            100.0 * self.dice,
            100.0 * self.iou,
            100.0 * self.pixel_accuracy,
            self.n_images,
            self.n_parameters
        ));
        text
    }

    /// Writes the metrics as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        common::train::write_atomic(path, &json)
    }
}

/// Runs `model` (evaluation mode) on every whole image of `ds`, one at a time,
/// and returns the filled confusion matrix and the mean loss.
pub fn confusion_on(
    model: &UNet,
    ds: &dyn Dataset,
    device: &Device,
) -> Result<(ConfusionMatrix, f64)> {
    let n_classes = model.config().n_classes;
    let mut cm = ConfusionMatrix::new(n_classes);
    let mut loss_sum = 0.0;
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        let xs = image_to_tensor(&sample.image, device)?.unsqueeze(0)?; // (1, C, H, W)
        let truth = mask_to_tensor(&sample.mask, device)?.unsqueeze(0)?; // (1, H, W)
        let logits = predict_logits(model, &xs)?; // (1, K, H, W)
        loss_sum += common::loss::ce_dice_loss(&logits, &truth, None)?
            .to_dtype(candle::DType::F64)?
            .to_scalar::<f64>()?;
        let pred = logits.argmax(1)?; // (1, H, W) u32
        cm.update_tensors(&pred, &truth)?;
    }
    Ok((cm, loss_sum / ds.len().max(1) as f64))
}

/// Evaluates `model` on `ds` (see [`confusion_on`]) into [`Metrics`].
pub fn evaluate(
    model: &UNet,
    ds: &dyn Dataset,
    n_parameters: usize,
    device: &Device,
) -> Result<Metrics> {
    let (cm, loss) = confusion_on(model, ds, device)?;
    Ok(Metrics::from_confusion(
        &cm,
        ds.class_names(),
        n_parameters,
        loss,
        ds.len(),
    ))
}

/// Writes `image | truth | prediction` panels, mask PNGs and overlays of the
/// samples of `ds` into `dir` (`<id>_panel.png`, `<id>_mask.png`, `<id>_overlay.png`).
pub fn save_predictions(model: &UNet, ds: &dyn Dataset, dir: &Path, device: &Device) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {dir:?}: {e}"))?;
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        let xs: Tensor = image_to_tensor(&sample.image, device)?.unsqueeze(0)?;
        let pred = tensor_to_mask(&predict_logits(model, &xs)?.argmax(1)?.squeeze(0)?)?;
        let id = sample.id.replace(['/', '\\'], "_");
        common::viz::save_panel(
            &dir.join(format!("{id}_panel.png")),
            &sample.image,
            Some(&sample.mask),
            &pred,
        )?;
        common::data::image_io::save_palette_mask(&dir.join(format!("{id}_mask.png")), &pred)?;
        common::viz::save_rgb(
            &dir.join(format!("{id}_overlay.png")),
            &common::viz::overlay(&sample.image, &pred, 0.5),
        )?;
    }
    Ok(())
}

/// What the `evaluate` subcommand needs.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// The checkpoint of a training run.
    pub checkpoint: PathBuf,
    /// Data folder (`None`: the run's own data look-up).
    pub data_dir: Option<PathBuf>,
    /// Where `metrics.json` and `predictions/` go.
    pub out_dir: PathBuf,
    /// Held-back images and split seed; `None` takes the training run's values,
    /// so the same images are held back.
    pub n_val: Option<usize>,
    pub seed: Option<u64>,
    pub device: common::device::DeviceChoice,
}

/// Evaluates a checkpoint on the held-back images of a data set and writes
/// `metrics.json` and `predictions/` into `opts.out_dir`.
pub fn evaluate_checkpoint(opts: &EvaluateOptions) -> Result<Metrics> {
    let device = common::device::open_device(opts.device)?;
    let loaded = crate::predict::load_model(&opts.checkpoint, &device)?;
    let saved = &loaded.run_config["options"];
    let n_val = opts
        .n_val
        .or_else(|| saved["n_val"].as_u64().map(|n| n as usize))
        .unwrap_or(5);
    let seed = opts.seed.or_else(|| saved["seed"].as_u64()).unwrap_or(0);
    let splits = crate::data::open_splits(opts.data_dir.as_deref(), n_val, seed)?;
    let n_classes = loaded.model.config().n_classes;
    if splits.val.class_names.len() != n_classes {
        anyhow::bail!(
            "checkpoint {:?} predicts {n_classes} classes but the data set {} has {}",
            opts.checkpoint,
            splits.source,
            splits.val.class_names.len()
        );
    }
    let n_parameters = crate::model::count_parameters(&loaded.varmap);
    let metrics = evaluate(&loaded.model, &splits.val, n_parameters, &device)?;
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {:?}: {e}", opts.out_dir))?;
    metrics.save(&opts.out_dir.join("metrics.json"))?;
    save_predictions(
        &loaded.model,
        &splits.val,
        &opts.out_dir.join("predictions"),
        &device,
    )?;
    Ok(metrics)
}
