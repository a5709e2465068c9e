//! Training one net: a fresh [`SegNet`] of a variant fitted on the augmented patches
//! (each patch turned by a random dihedral element every epoch) with Adam, a cosine
//! learning rate and pixel cross-entropy, through `common::train::fit`, which
//! writes the variant folder's checkpoint, history and `loss.png`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle::{DType, Device, Module};
use candle_nn::VarMap;
use common::data::loader::{Loader, LoaderConfig};
use common::data::Dataset;
use common::init::seeded_var_builder;
use common::loss::pixel_cross_entropy;
use common::optim::{param_group, Adam, AdamConfig};
use common::plot::Curve;
use common::run_dir::RunDir;
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, History, TrainConfig, Validation};
use common::Result;
use serde::Serialize;

use crate::config::Config;
use crate::data::dihedral_transform;
use crate::evaluate::dataset_pixel_accuracy;
use crate::model::{SegNet, Variant};
use crate::report::{VariantReport, VariantScores};

/// Settings of [`train_variant`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    #[serde(skip)]
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

impl From<&Config> for TrainSettings {
    fn from(cfg: &Config) -> Self {
        Self {
            epochs: cfg.epochs,
            batch_size: cfg.batch_size,
            lr: cfg.lr,
            seed: cfg.seed,
            progress: cfg.run.progress(),
        }
    }
}

/// What a checkpoint's metadata says of the net in it.
#[derive(Debug, Serialize)]
struct SavedConfig<'a> {
    variant: Variant,
    #[serde(flatten)]
    settings: &'a TrainSettings,
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

impl TrainedVariant {
    /// The variant's line of `metrics.json`: its `scores` and how training went.
    pub fn report(&self, scores: VariantScores) -> VariantReport {
        let losses: Vec<f64> = self.history.epochs.iter().map(|e| e.train_loss).collect();
        VariantReport {
            scores,
            train_seconds: self.seconds,
            first_epoch_loss: losses.first().copied().unwrap_or(f64::NAN),
            last_epoch_loss: losses.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// The training loss per epoch, named by the variant, for the run's `loss.png`.
    pub fn loss_curve(&self) -> Curve {
        let points = self
            .history
            .epochs
            .iter()
            .map(|e| (e.epoch as f64, e.train_loss))
            .collect();
        Curve::new(self.model.variant().name(), points)
    }
}

/// The patches in shuffled batches of `batch_size`, each turned by a random
/// dihedral element every epoch.
fn augmented_loader(train: &Arc<dyn Dataset>, settings: &TrainSettings) -> Loader {
    let config = LoaderConfig {
        batch_size: settings.batch_size,
        shuffle: true,
        drop_last: false,
        seed: settings.seed,
    };
    Loader::new(train.clone(), config).with_transform(dihedral_transform())
}

/// Trains a fresh net of `variant` on `train`; checkpoint, history and `loss.png`
/// go to `dir`. The per-epoch metric is the pixel accuracy on the training set.
pub fn train_variant(
    variant: Variant,
    train: &Arc<dyn Dataset>,
    settings: &TrainSettings,
    dir: &RunDir,
    device: &Device,
) -> Result<TrainedVariant> {
    settings.validate()?;
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, settings.seed, DType::F32, device);
    let model = SegNet::new(variant, train.n_classes(), vb)?;
    let loader = augmented_loader(train, settings);
    let mut optimizer = Adam::new(
        vec![param_group("all", &varmap, None, 1.0)],
        AdamConfig::adam(settings.lr),
    )?;
    let cfg = train_config(variant, settings, dir, loader.batches_per_epoch())?;
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

/// `fit`'s settings: cosine decay to 5% of the peak rate over the whole run.
fn train_config(
    variant: Variant,
    settings: &TrainSettings,
    dir: &RunDir,
    batches_per_epoch: usize,
) -> Result<TrainConfig> {
    let schedule = LrSchedule::new(
        settings.lr,
        ScheduleKind::Cosine {
            min_lr: 0.05 * settings.lr,
        },
        settings.epochs * batches_per_epoch,
    );
    Ok(TrainConfig {
        epochs: settings.epochs,
        run_dir: dir.clone(),
        seed: settings.seed,
        schedule,
        resume: false,
        title: format!("{variant}: training loss"),
        run_config: serde_json::to_value(SavedConfig { variant, settings })?,
        progress: settings.progress,
    })
}
