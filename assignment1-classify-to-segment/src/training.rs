//! Training the patch classifier with the shared loop (`common::train::fit`):
//! patches are samples whose 32x32 mask holds the label on every pixel, so the
//! shared loader batches them (images `(N, 3, 32, 32)`, masks `(N, 32, 32)`); random horizontal
//! and vertical flips augment them (a flower has no up or left). Adam with a
//! cosine learning-rate decay; cross-entropy on the 2 logits.

use std::sync::Arc;

use candle::{Device, Module, Tensor};
use candle_nn::VarMap;
use common::data::loader::{Loader, LoaderConfig};
use common::data::transforms::{hflip, Transform};
use common::data::{InMemoryDataset, Sample};
use common::optim::{param_group, Adam, AdamConfig};
use common::run_dir::RunDir;
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, History, TrainConfig, Validation};
use ndarray::Axis;
use rand::Rng;

use crate::config::{Config, SavedConfig};
use crate::evaluate::score_patches;
use crate::model::{new_classifier, Classifier, CLASS_NAMES};

/// A trained classifier with its weights and history.
pub struct Trained {
    /// The classifier (its variables live in `varmap`).
    pub classifier: Classifier,
    /// The weights.
    pub varmap: VarMap,
    /// Loss and validation accuracy per epoch.
    pub history: History,
}

/// Random left-right and up-down flips, each with probability 1/2.
pub fn flips() -> Transform {
    Arc::new(|sample: Sample, rng| {
        let mut sample = if rng.random_bool(0.5) {
            hflip(sample)
        } else {
            sample
        };
        if rng.random_bool(0.5) {
            // (3, H, W): reverse the rows; the constant mask is unchanged.
            sample.image.invert_axis(Axis(1));
            sample.image = sample.image.as_standard_layout().into_owned();
        }
        Ok(sample)
    })
}

/// Trains a fresh classifier (`cfg.arch`, weights from `cfg.seed`) on `train`
/// for `cfg.epochs` epochs, reporting validation accuracy on `val` after each;
/// writes the checkpoint, `history.csv/json` and `loss.png` into `run_dir`.
pub fn train_classifier(
    cfg: &Config,
    run_dir: &RunDir,
    train: Vec<Sample>,
    val: &[Sample],
    device: &Device,
) -> anyhow::Result<Trained> {
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        anyhow::bail!(
            "epochs and batch size must be at least 1, got {} and {}",
            cfg.epochs,
            cfg.batch_size
        );
    }
    let (classifier, varmap) = new_classifier(&cfg.arch.spec(), cfg.seed, device)?;
    let loader = patch_loader(train, cfg)?;
    let fit_config = TrainConfig {
        epochs: cfg.epochs,
        run_dir: run_dir.clone(),
        seed: cfg.seed,
        schedule: cosine_schedule(cfg, loader.batches_per_epoch()),
        resume: false,
        title: "patch classifier".into(),
        run_config: serde_json::to_value(SavedConfig::new(cfg))?,
        progress: cfg.run.progress(),
    };
    let mut optimizer = Adam::new(
        vec![param_group("classifier", &varmap, None, 1.0)],
        AdamConfig::adam(cfg.lr),
    )?;
    let history = fit(
        &fit_config,
        &varmap,
        &mut optimizer,
        &loader,
        device,
        |batch| {
            // (N, 32, 32) u32 masks, constant per patch -> (N,) labels
            let labels = batch
                .masks
                .narrow(1, 0, 1)?
                .narrow(2, 0, 1)?
                .flatten_all()?;
            let logits = classifier.forward(&batch.images)?;
            smoothed_cross_entropy(&logits, &labels, cfg.label_smoothing)
        },
        |_| validate(&classifier, val, device),
    )?;
    Ok(Trained {
        classifier,
        varmap,
        history,
    })
}

/// Shuffled batches of `cfg.batch_size` training patches with random flips.
fn patch_loader(train: Vec<Sample>, cfg: &Config) -> anyhow::Result<Loader> {
    if train.is_empty() {
        anyhow::bail!("no training patches");
    }
    let dataset = InMemoryDataset {
        samples: train,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    let config = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        drop_last: false,
        seed: cfg.seed,
    };
    Ok(Loader::new(Arc::new(dataset), config).with_transform(flips()))
}

/// Cosine decay from `cfg.lr` to 1/20 of it over the whole run.
fn cosine_schedule(cfg: &Config, batches_per_epoch: usize) -> LrSchedule {
    let kind = ScheduleKind::Cosine {
        min_lr: cfg.lr / 20.0,
    };
    LrSchedule::new(cfg.lr, kind, cfg.epochs * batches_per_epoch)
}

/// The validation after an epoch: loss and accuracy on `val`, if any.
fn validate(
    classifier: &Classifier,
    val: &[Sample],
    device: &Device,
) -> anyhow::Result<Option<Validation>> {
    if val.is_empty() {
        return Ok(None);
    }
    let score = score_patches(classifier, val, device)?;
    Ok(Some(Validation {
        loss: Some(score.loss),
        metric: Some(("val accuracy".into(), score.accuracy)),
    }))
}

/// Cross-entropy with label smoothing `eps`: the target puts `1 - eps` on the
/// label and `eps` spread evenly over all classes (PyTorch's `label_smoothing`).
///
/// # Shapes
/// `logits (N, K)`, `labels (N,)` u32 -> scalar
pub fn smoothed_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    eps: f64,
) -> candle::Result<Tensor> {
    if !(0.0..1.0).contains(&eps) {
        candle::bail!("label smoothing must be in [0, 1), got {eps}");
    }
    // (N, K) -> (N, K) log-probabilities
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    // (N,) -> (N, 1) -> gathered (N, 1): -log p(label)
    let nll = log_p.gather(&labels.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if eps == 0.0 {
        return Ok(nll);
    }
    // mean over samples and classes of -log p(k)
    let uniform = log_p.neg()?.mean_all()?;
    (nll * (1.0 - eps))? + (uniform * eps)?
}
