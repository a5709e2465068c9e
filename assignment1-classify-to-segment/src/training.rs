//! Training the patch classifier with the shared loop (`common::train::fit`):
//! patches are samples whose 32x32 mask holds the label on every pixel, so the
//! shared loader batches them (images `(N, 3, 32, 32)`, masks `(N, 32, 32)`); random horizontal
//! and vertical flips augment them (a flower has no up or left). Adam with a
//! cosine learning-rate decay; cross-entropy on the 2 logits.

use std::path::PathBuf;
use std::sync::Arc;

use candle::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use common::data::loader::{Loader, LoaderConfig};
use common::data::transforms::{hflip, Transform};
use common::data::{InMemoryDataset, Sample};
use common::init::seeded_var_builder;
use common::optim::{param_group, Adam, AdamConfig};
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, History, TrainConfig, Validation};
use ndarray::Axis;
use rand::Rng;

use crate::data::label_of;
use crate::model::{ArchSpec, Classifier, CLASS_NAMES, PATCH_SIZE};

/// Patches per forward pass when evaluating.
const EVAL_BATCH: usize = 256;

/// What one training run needs.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// The classifier's widths.
    pub arch: ArchSpec,
    /// Number of passes over the training patches.
    pub epochs: usize,
    /// Patches per optimisation step.
    pub batch_size: usize,
    /// Adam's initial learning rate (decays by cosine to 1/20 of it).
    pub learning_rate: f64,
    /// Label smoothing of the cross-entropy (0 = none): keeps the logits finite
    /// on this separable set, so probabilities stay graded near the flower's edge.
    pub label_smoothing: f64,
    /// Seed of the initial weights, the batch order and the flips.
    pub seed: u64,
    /// Folder for the checkpoint, history and loss curve.
    pub out_dir: PathBuf,
    /// The run's configuration, saved in the checkpoint.
    pub run_config: serde_json::Value,
    /// Show progress bars.
    pub progress: bool,
}

/// A trained classifier with its weights and history.
pub struct Trained {
    /// The classifier (its variables live in `varmap`).
    pub classifier: Classifier,
    /// The weights.
    pub varmap: VarMap,
    /// Loss and validation accuracy per epoch.
    pub history: History,
}

/// Accuracy and mean cross-entropy of a classifier on a set of patches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchScore {
    /// Fraction of patches whose arg-max class is their label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
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

/// A classifier with fresh weights drawn from `seed`.
pub fn new_classifier(
    arch: &ArchSpec,
    seed: u64,
    device: &Device,
) -> anyhow::Result<(Classifier, VarMap)> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
    let classifier = Classifier::new(arch, vb)?;
    Ok((classifier, varmap))
}

/// Trains a fresh classifier on `train`, reporting validation accuracy on `val`
/// after each epoch; writes the checkpoint, `history.csv/json` and `loss.png`
/// into `settings.out_dir`.
pub fn train_classifier(
    settings: &TrainSettings,
    train: Vec<Sample>,
    val: &[Sample],
    device: &Device,
) -> anyhow::Result<Trained> {
    if train.is_empty() {
        anyhow::bail!("no training patches");
    }
    if settings.epochs == 0 || settings.batch_size == 0 {
        anyhow::bail!(
            "epochs and batch size must be at least 1, got {} and {}",
            settings.epochs,
            settings.batch_size
        );
    }
    let (classifier, varmap) = new_classifier(&settings.arch, settings.seed, device)?;
    let dataset = InMemoryDataset {
        samples: train,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    let loader = Loader::new(
        Arc::new(dataset),
        LoaderConfig {
            batch_size: settings.batch_size,
            shuffle: true,
            drop_last: false,
            seed: settings.seed,
        },
    )
    .with_transform(flips());
    let total_steps = settings.epochs * loader.batches_per_epoch();
    let schedule = LrSchedule::new(
        settings.learning_rate,
        ScheduleKind::Cosine {
            min_lr: settings.learning_rate / 20.0,
        },
        total_steps,
    );
    let mut optimizer = Adam::new(
        vec![param_group("classifier", &varmap, None, 1.0)],
        AdamConfig::adam(settings.learning_rate),
    )?;
    let config = TrainConfig {
        epochs: settings.epochs,
        out_dir: settings.out_dir.clone(),
        seed: settings.seed,
        schedule,
        resume: false,
        title: "patch classifier".into(),
        run_config: settings.run_config.clone(),
        progress: settings.progress,
    };
    let history = fit(
        &config,
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
            smoothed_cross_entropy(&logits, &labels, settings.label_smoothing)
        },
        |_| {
            if val.is_empty() {
                return Ok(None);
            }
            let score = score_patches(&classifier, val, device)?;
            Ok(Some(Validation {
                loss: Some(score.loss),
                metric: Some(("val accuracy".into(), score.accuracy)),
            }))
        },
    )?;
    Ok(Trained {
        classifier,
        varmap,
        history,
    })
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

/// Stacks patches into a `(N, 3, 32, 32)` tensor and their `(N,)` u32 labels.
pub fn patch_batch(patches: &[Sample], device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
    let mut pixels = Vec::with_capacity(patches.len() * 3 * PATCH_SIZE * PATCH_SIZE);
    for p in patches {
        let (c, h, w) = p.image.dim();
        if (c, h, w) != (3, PATCH_SIZE, PATCH_SIZE) {
            anyhow::bail!(
                "patch {:?} is {c}x{h}x{w}, expected 3x{PATCH_SIZE}x{PATCH_SIZE}",
                p.id
            );
        }
        pixels.extend(p.image.iter().copied());
    }
    let labels: Vec<u32> = patches.iter().map(|p| u32::from(label_of(p))).collect();
    let images = Tensor::from_vec(pixels, (patches.len(), 3, PATCH_SIZE, PATCH_SIZE), device)?;
    let labels = Tensor::from_vec(labels, patches.len(), device)?;
    Ok((images, labels))
}

/// Accuracy and mean cross-entropy on `patches` (inference mode).
pub fn score_patches(
    classifier: &Classifier,
    patches: &[Sample],
    device: &Device,
) -> anyhow::Result<PatchScore> {
    if patches.is_empty() {
        anyhow::bail!("cannot score an empty set of patches");
    }
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    for chunk in patches.chunks(EVAL_BATCH) {
        let (images, labels) = patch_batch(chunk, device)?;
        let logits = classifier.forward(&images)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * chunk.len() as f64;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        let truth = labels.to_vec1::<u32>()?;
        correct += predicted.iter().zip(&truth).filter(|(p, t)| p == t).count();
    }
    Ok(PatchScore {
        accuracy: correct as f64 / patches.len() as f64,
        loss: loss_sum / patches.len() as f64,
    })
}
