//! One run of the assignment: find the data, train each requested variant on the
//! augmented patches (Adam, cosine learning rate, pixel cross-entropy), segment
//! the full-resolution photo with each, score it, and write every output file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle::{DType, Device, Module};
use candle_nn::VarMap;
use common::data::loader::{Loader, LoaderConfig};
use common::data::Dataset;
use common::device::{device_name, open_device, DeviceChoice};
use common::init::seeded_var_builder;
use common::loss::pixel_cross_entropy;
use common::optim::{param_group, Adam, AdamConfig};
use common::plot::{plot_loss_curves, Curve};
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, write_atomic, History, TrainConfig, Validation};
use common::viz::{overlay, save_mask_png, save_panel, save_rgb, MaskStyle};
use common::Result;
use serde::Serialize;

use crate::data::{find_flower_data, DataSource, FlowerData};
use crate::evaluate::{
    dataset_pixel_accuracy, flower_iou, flower_probability, roughness, save_masks_side_by_side,
    score, segment,
};
use crate::model::{parameter_count, SegNet, Variant};

/// Everything a run needs; `main` fills it from the command line.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// The data set folder (`None`: look in the usual places).
    pub data_dir: Option<PathBuf>,
    /// Output folder of the run.
    pub out_dir: PathBuf,
    /// The variants to train, in order.
    pub variants: Vec<Variant>,
    /// Passes over the (augmented) training patches.
    pub epochs: usize,
    /// Patches per optimisation step.
    pub batch_size: usize,
    /// Adam's peak learning rate (cosine decay to 5% of it).
    pub lr: f64,
    /// Seed of the weights, the shuffle and the augmentation.
    pub seed: u64,
    /// Device to run on.
    #[serde(serialize_with = "serialize_display")]
    pub device: DeviceChoice,
    /// Draw progress bars.
    pub progress: bool,
}

fn serialize_display<S: serde::Serializer>(
    value: &DeviceChoice,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&value.to_string())
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            out_dir: PathBuf::from("runs/assignment2-transposed-conv/default"),
            variants: Variant::ALL.to_vec(),
            epochs: 20,
            batch_size: 8,
            lr: 0.003,
            seed: 42,
            device: DeviceChoice::Auto,
            progress: true,
        }
    }
}

impl RunConfig {
    /// Checks the settings before any work: at least one variant, epochs and
    /// batch size at least 1, a positive finite learning rate.
    pub fn validate(&self) -> Result<()> {
        if self.variants.is_empty() {
            anyhow::bail!("no model variant to train");
        }
        TrainSettings::from(self).validate()
    }
}

/// The figures of one variant, as written to `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    /// Flower IoU of the full-resolution segmentation of the photo.
    pub flower_iou: f64,
    /// Pixel accuracy of the same.
    pub flower_pixel_accuracy: f64,
    /// Pixel accuracy over the training patches (not augmented).
    pub train_pixel_accuracy: f64,
    /// Number of trained parameters.
    pub parameters: usize,
    /// Wall-clock seconds of training (and the per-epoch training-accuracy check).
    pub train_seconds: f64,
    /// Mean training loss of the first and the last epoch.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
    /// Mean |p - mean of its 4 neighbours| of the flower probability map: high
    /// for checkerboard texture, low for smooth maps.
    pub probability_roughness: f64,
}

/// What a whole run gives back (also written as `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `"real: <folder>"` or `"generated"`.
    pub data: String,
    /// `"cpu"` or `"cuda"`.
    pub device: String,
    /// Size of the scored image, `[height, width]`.
    pub image_size: [usize; 2],
    /// Per variant, by name.
    pub variants: BTreeMap<String, VariantReport>,
    /// The variant with the highest flower IoU.
    pub best: Option<String>,
}

/// A trained net with its weights and history.
pub struct TrainedVariant {
    pub model: SegNet,
    pub varmap: VarMap,
    pub history: History,
    /// Wall-clock seconds of [`fit`].
    pub seconds: f64,
}

impl std::fmt::Debug for TrainedVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainedVariant")
            .field("model", &self.model)
            .field("epochs", &self.history.epochs.len())
            .field("seconds", &self.seconds)
            .finish()
    }
}

/// Settings of [`train_variant`].
#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub progress: bool,
}

impl TrainSettings {
    /// Epochs and batch size at least 1, a positive finite learning rate.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            anyhow::bail!(
                "epochs ({}) and batch size ({}) must be at least 1",
                self.epochs,
                self.batch_size
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            anyhow::bail!("learning rate must be a positive number, got {}", self.lr);
        }
        Ok(())
    }
}

impl From<&RunConfig> for TrainSettings {
    fn from(cfg: &RunConfig) -> Self {
        Self {
            epochs: cfg.epochs,
            batch_size: cfg.batch_size,
            lr: cfg.lr,
            seed: cfg.seed,
            progress: cfg.progress,
        }
    }
}

/// Trains a fresh net of `variant` on `train` (each sample turned by a random
/// dihedral element every epoch); checkpoint, history and `loss.png` go to
/// `out_dir`. The per-epoch metric is the pixel accuracy on the training set.
pub fn train_variant(
    variant: Variant,
    train: &Arc<dyn Dataset>,
    settings: &TrainSettings,
    out_dir: &Path,
    device: &Device,
) -> Result<TrainedVariant> {
    settings.validate()?;
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, settings.seed, DType::F32, device);
    let model = SegNet::new(variant, train.n_classes(), vb)?;
    let loader = Loader::new(
        train.clone(),
        LoaderConfig {
            batch_size: settings.batch_size,
            shuffle: true,
            drop_last: false,
            seed: settings.seed,
        },
    )
    .with_transform(crate::data::dihedral_transform());
    let total_steps = settings.epochs * loader.batches_per_epoch();
    let schedule = LrSchedule::new(
        settings.lr,
        ScheduleKind::Cosine {
            min_lr: 0.05 * settings.lr,
        },
        total_steps,
    );
    let mut optimizer = Adam::new(
        vec![param_group("all", &varmap, None, 1.0)],
        AdamConfig::adam(settings.lr),
    )?;
    let cfg = TrainConfig {
        epochs: settings.epochs,
        out_dir: out_dir.to_path_buf(),
        seed: settings.seed,
        schedule,
        resume: false,
        title: format!("{variant}: training loss"),
        run_config: serde_json::json!({
            "variant": variant.name(),
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "seed": settings.seed,
        }),
        progress: settings.progress,
    };
    let started = Instant::now();
    let history = fit(
        &cfg,
        &varmap,
        &mut optimizer,
        &loader,
        device,
        |batch| {
            // (N, 3, H, W) -> (N, K, H, W) scores against (N, H, W) labels
            let logits = model.forward(&batch.images)?;
            pixel_cross_entropy(&logits, &batch.masks, None)
        },
        |_epoch| {
            let accuracy = dataset_pixel_accuracy(&model, train.as_ref(), device)?;
            Ok(Some(Validation {
                loss: None,
                metric: Some(("train pixel accuracy".to_owned(), accuracy)),
            }))
        },
    )
    .with_context(|| format!("training the {variant} net"))?;
    Ok(TrainedVariant {
        model,
        varmap,
        history,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs the whole assignment as `cfg` says and writes, under `cfg.out_dir`:
/// `config.json`, `metrics.json`, `loss.png` (every variant's training loss),
/// `masks.png` (reference mask, then each variant's, side by side) and per variant
/// `<variant>/{mask.png, overlay.png, panel.png, probability.png, loss.png,
/// history.csv, history.json, checkpoint.safetensors}`.
pub fn run(cfg: &RunConfig) -> Result<RunReport> {
    cfg.validate()?;
    let device = open_device(cfg.device)?;
    let data = find_flower_data(cfg.data_dir.as_deref(), cfg.seed)?;
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output folder {out:?}"))?;
    let data_name = match &data.source {
        DataSource::Real(root) => format!("real: {}", root.display()),
        DataSource::Synthetic => "generated".to_owned(),
    };
    let config_json = serde_json::json!({
        "run": cfg,
        "data": data_name,
        "device": device_name(&device),
        "train_samples": data.train.len(),
    });
    write_atomic(
        &out.join("config.json"),
        &serde_json::to_vec_pretty(&config_json)?,
    )?;
    let (_, height, width) = data.image.dim();
    eprintln!(
        "data: {data_name} ({} training pairs, scoring on a {height}x{width} image); device {}",
        data.train.len(),
        device_name(&device)
    );

    let settings = TrainSettings::from(cfg);
    let mut report = RunReport {
        data: data_name,
        device: device_name(&device).to_owned(),
        image_size: [height, width],
        variants: BTreeMap::new(),
        best: None,
    };
    let mut masks = vec![data.mask.clone()];
    let mut curves = Vec::new();
    for &variant in &cfg.variants {
        eprintln!(
            "--- {variant} ({} parameters)",
            parameter_count(variant, data.train.n_classes())
        );
        let variant_dir = out.join(variant.name());
        let trained = train_variant(variant, &data.train, &settings, &variant_dir, &device)?;
        let (variant_report, mask) = evaluate_variant(&trained, &data, &variant_dir, &device)?;
        eprintln!(
            "{variant}: flower IoU {:.2}%  pixel accuracy {:.2}%  train pixel accuracy {:.2}%  ({:.1}s)",
            100.0 * variant_report.flower_iou,
            100.0 * variant_report.flower_pixel_accuracy,
            100.0 * variant_report.train_pixel_accuracy,
            variant_report.train_seconds
        );
        curves.push(Curve {
            name: variant.name().to_owned(),
            points: trained
                .history
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train_loss))
                .collect(),
        });
        masks.push(mask);
        report
            .variants
            .insert(variant.name().to_owned(), variant_report);
    }
    report.best = report
        .variants
        .iter()
        .max_by(|a, b| a.1.flower_iou.total_cmp(&b.1.flower_iou))
        .map(|(name, _)| name.clone());

    let mask_refs: Vec<_> = masks.iter().collect();
    save_masks_side_by_side(&out.join("masks.png"), &mask_refs)?;
    plot_loss_curves(
        &out.join("loss.png"),
        "training loss per variant",
        &curves,
        None,
    )?;
    write_atomic(
        &out.join("metrics.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

/// Segments the scoring image with a trained net, scores it and writes the
/// variant's pictures into `dir`; gives the figures and the predicted mask.
pub fn evaluate_variant(
    trained: &TrainedVariant,
    data: &FlowerData,
    dir: &Path,
    device: &Device,
) -> Result<(VariantReport, ndarray::Array2<u8>)> {
    let model = &trained.model;
    let n_classes = model.n_classes();
    let mask = segment(model, &data.image, device)?;
    let cm = score(&mask, &data.mask, n_classes)?;
    let probability = flower_probability(model, &data.image, device)?;
    save_mask_png(&dir.join("mask.png"), &mask, MaskStyle::Binary)?;
    save_rgb(&dir.join("overlay.png"), &overlay(&data.image, &mask, 0.5))?;
    save_panel(&dir.join("panel.png"), &data.image, Some(&data.mask), &mask)?;
    save_rgb(
        &dir.join("probability.png"),
        &common::viz::heat_map(&probability),
    )?;
    let losses: Vec<f64> = trained
        .history
        .epochs
        .iter()
        .map(|e| e.train_loss)
        .collect();
    let report = VariantReport {
        flower_iou: flower_iou(&cm),
        flower_pixel_accuracy: cm.pixel_accuracy(),
        train_pixel_accuracy: dataset_pixel_accuracy(model, data.train.as_ref(), device)?,
        parameters: trained
            .varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count())
            .sum(),
        train_seconds: trained.seconds,
        first_epoch_loss: losses.first().copied().unwrap_or(f64::NAN),
        last_epoch_loss: losses.last().copied().unwrap_or(f64::NAN),
        probability_roughness: roughness(&probability),
    };
    Ok((report, mask))
}
