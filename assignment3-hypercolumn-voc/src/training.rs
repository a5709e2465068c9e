//! The two training phases: the fully connected head on the sampled
//! hypercolumns, then the convolutionalised head fine-tuned on whole training
//! images (pixel-wise cross-entropy, 255 ignored) with the backbone frozen.
//!
//! Both go through `common::train::fit` (progress bar, history, loss curve, NaN
//! guard, checkpoint per epoch) in the phase's own folder. `fit` takes anything
//! that yields batches per epoch: here [`FeatureRows`] (batches of sampled rows) and
//! [`TapBatches`] (batches of whole images' taps), both shuffled in the order
//! `common::data::loader::Loader` would give.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle::{Device, Tensor};
use candle_nn::VarMap;
use common::checkpoint::load_checkpoint;
use common::data::loader::shuffled_order;
use common::optim::{param_group, Adam, AdamConfig};
use common::run_dir::{RunDir, CHECKPOINT_FILE};
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, EpochBatches, History, TrainConfig, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::features::SampledFeatures;
use crate::model::{head_from_tensors, ConvHead, Head};
use crate::taps::{stack_taps, tap_dir, TapImage, TapSettings};
use crate::weights::WeightsInfo;

/// Seeded shuffled batches of the indices `0..n`: epoch `e` (1-based) is the loader's
/// [`shuffled_order`] of `(seed, e)`, cut into batches as `common::data::loader::Loader`
/// does with `shuffle: true, drop_last: false`, so runs stay comparable with earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shuffled {
    pub n: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Shuffled {
    /// Batches per epoch (the last one may be short).
    pub fn batches(&self) -> usize {
        self.n.div_ceil(self.batch_size.max(1))
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: usize) -> Vec<Vec<usize>> {
        shuffled_order(self.n, self.seed, epoch)
            .chunks(self.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }
}

/// The sampled hypercolumns on the device, served in shuffled batches of rows.
#[derive(Debug)]
pub struct FeatureRows {
    /// `(P, Z)` raw hypercolumns.
    features: Tensor,
    /// `(P)` u32 labels.
    labels: Tensor,
    order: Shuffled,
}

impl FeatureRows {
    /// Copies `samples` to `device` once.
    pub fn new(
        samples: &SampledFeatures,
        batch_size: usize,
        seed: u64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let (p, z) = samples.features.dim();
        if p == 0 {
            anyhow::bail!("no sampled features to train the head on");
        }
        let values: Vec<f32> = samples.features.iter().copied().collect();
        let labels: Vec<u32> = samples.labels.iter().map(|&l| u32::from(l)).collect();
        Ok(Self {
            features: Tensor::from_vec(values, (p, z), device)?,
            labels: Tensor::from_vec(labels, p, device)?,
            order: Shuffled {
                n: p,
                batch_size,
                seed,
            },
        })
    }
}

impl EpochBatches for FeatureRows {
    /// `(B, Z)` features and `(B)` labels.
    type Batch = (Tensor, Tensor);

    fn batches_per_epoch(&self) -> usize {
        self.order.batches()
    }

    fn epoch_batches<'a>(
        &'a self,
        epoch: usize,
        device: &Device,
    ) -> Box<dyn Iterator<Item = common::Result<Self::Batch>> + 'a> {
        let device = device.clone();
        Box::new(self.order.epoch(epoch).into_iter().map(move |rows| {
            let rows: Vec<u32> = rows.into_iter().map(|i| i as u32).collect();
            let n = rows.len();
            let index = Tensor::from_vec(rows, n, &device)?;
            Ok((
                self.features.index_select(&index, 0)?,
                self.labels.index_select(&index, 0)?,
            ))
        }))
    }

    fn batch_len(batch: &Self::Batch) -> usize {
        batch.1.dims().first().copied().unwrap_or(0)
    }
}

/// Whole training images' taps, served in shuffled batches.
#[derive(Debug)]
pub struct TapBatches<'a> {
    images: &'a [TapImage],
    order: Shuffled,
}

impl<'a> TapBatches<'a> {
    pub fn new(images: &'a [TapImage], batch_size: usize, seed: u64) -> anyhow::Result<Self> {
        if images.is_empty() {
            anyhow::bail!("no training images to fine-tune on");
        }
        let order = Shuffled {
            n: images.len(),
            batch_size,
            seed,
        };
        Ok(Self { images, order })
    }
}

impl EpochBatches for TapBatches<'_> {
    /// The per-level taps `[(B, C_i, h_i, w_i)]` (f32) and the `(B, fh, fw)` labels.
    type Batch = (Vec<Tensor>, Tensor);

    fn batches_per_epoch(&self) -> usize {
        self.order.batches()
    }

    fn epoch_batches<'b>(
        &'b self,
        epoch: usize,
        _device: &Device,
    ) -> Box<dyn Iterator<Item = common::Result<Self::Batch>> + 'b> {
        Box::new(self.order.epoch(epoch).into_iter().map(move |indices| {
            let chosen: Vec<&TapImage> = indices.iter().map(|&i| &self.images[i]).collect();
            let labels: Vec<&Tensor> = chosen.iter().map(|image| &image.labels).collect();
            Ok((stack_taps(&chosen)?, Tensor::cat(&labels, 0)?))
        }))
    }

    fn batch_len(batch: &Self::Batch) -> usize {
        batch.1.dims().first().copied().unwrap_or(0)
    }
}

/// Median-frequency class weights (Eigen & Fergus 2015, as in SegNet):
/// `w_c = median(freq) / freq_c` over the classes that occur, 0 for the others.
pub fn class_weights(counts: &[usize]) -> Vec<f32> {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return vec![1.0; counts.len()];
    }
    let mut present: Vec<f64> = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / total as f64)
        .collect();
    present.sort_by(f64::total_cmp);
    let median = present[present.len() / 2];
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                (median / (c as f64 / total as f64)) as f32
            }
        })
        .collect()
}

/// How the loss weighs the classes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeighting {
    /// All classes weigh 1.
    None,
    /// Median-frequency weights, [`class_weights`].
    Median,
    /// Their square roots: rare classes count more, but less so.
    SqrtMedian,
}

impl std::fmt::Display for ClassWeighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClassWeighting::None => "none",
            ClassWeighting::Median => "median",
            ClassWeighting::SqrtMedian => "sqrt-median",
        })
    }
}

impl ClassWeighting {
    /// The `(K)` weights for these label counts, or `None` for equal weights.
    pub fn weights(self, counts: &[usize], device: &Device) -> candle::Result<Option<Tensor>> {
        let w = match self {
            ClassWeighting::None => return Ok(None),
            ClassWeighting::Median => class_weights(counts),
            ClassWeighting::SqrtMedian => class_weights(counts).iter().map(|w| w.sqrt()).collect(),
        };
        Ok(Some(Tensor::from_vec(w, counts.len(), device)?))
    }
}

/// Settings of one training phase.
#[derive(Debug, Clone)]
pub struct PhaseConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's base learning rate (cosine decay to 1% of it).
    pub lr: f64,
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Class weights in the loss.
    pub class_weights: ClassWeighting,
    pub seed: u64,
    pub device: Device,
    /// The phase's folder: `fit` writes its checkpoint, history and loss curve there.
    pub run_dir: RunDir,
    pub title: String,
    /// What the checkpoints record besides the weights (`evaluate` reads it back).
    pub run_config: serde_json::Value,
    pub progress: bool,
}

/// The optimiser and schedule of a phase over the head's `fc*` variables (the
/// normalisation statistics in the same `VarMap` stay fixed).
fn optimizer(
    varmap: &VarMap,
    cfg: &PhaseConfig,
    steps: usize,
) -> anyhow::Result<(Adam, TrainConfig)> {
    let group = param_group("head", varmap, Some("fc"), 1.0);
    let adam = Adam::new(vec![group], AdamConfig::adamw(cfg.lr, cfg.weight_decay))?;
    let schedule = LrSchedule::new(
        cfg.lr,
        ScheduleKind::Cosine {
            min_lr: cfg.lr * 0.01,
        },
        steps.max(1),
    );
    let train = TrainConfig {
        epochs: cfg.epochs,
        run_dir: cfg.run_dir.clone(),
        seed: cfg.seed,
        schedule,
        resume: false,
        title: cfg.title.clone(),
        run_config: cfg.run_config.clone(),
        progress: cfg.progress,
    };
    Ok((adam, train))
}

/// Phase 1: trains the fully connected head on the sampled features.
pub fn train_head(
    varmap: &VarMap,
    head: &Head,
    samples: &SampledFeatures,
    cfg: &PhaseConfig,
    validate: impl FnMut(usize) -> common::Result<Option<Validation>>,
) -> anyhow::Result<History> {
    let device = &cfg.device;
    let n_classes = head.n_classes()?;
    let weights = cfg
        .class_weights
        .weights(&samples.class_counts(n_classes), device)?;
    let rows = FeatureRows::new(samples, cfg.batch_size, cfg.seed, device)?;
    let (mut adam, train) = optimizer(varmap, cfg, cfg.epochs * rows.batches_per_epoch())?;
    let loss_fn = |(xs, ys): &(Tensor, Tensor)| -> candle::Result<Tensor> {
        let logits = head.forward(xs)?; // (B, Z) -> (B, K)
        let (b, k) = logits.dims2()?;
        // (B, K) -> (B, K, 1, 1) and (B) -> (B, 1, 1): pixel CE with class weights.
        common::loss::pixel_cross_entropy(
            &logits.reshape((b, k, 1, 1))?,
            &ys.reshape((b, 1, 1))?,
            weights.as_ref(),
        )
    };
    fit(&train, varmap, &mut adam, &rows, device, loss_fn, validate)
}

/// Label counts of `images` at the feature resolution, for the class weights.
fn label_counts(images: &[TapImage], n_classes: usize) -> candle::Result<Vec<usize>> {
    let mut counts = vec![0usize; n_classes];
    for image in images {
        for label in image.labels.flatten_all()?.to_vec1::<u32>()? {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
    }
    Ok(counts)
}

/// Phase 2: fine-tunes the convolutionalised head on whole training images
/// (their cached taps), pixel-wise cross-entropy at the feature resolution.
pub fn finetune(
    varmap: &VarMap,
    conv_head: &ConvHead,
    images: &[TapImage],
    cfg: &PhaseConfig,
    validate: impl FnMut(usize) -> common::Result<Option<Validation>>,
) -> anyhow::Result<History> {
    let device = &cfg.device;
    let batches = TapBatches::new(images, cfg.batch_size, cfg.seed)?;
    let counts = label_counts(images, conv_head.n_classes()?)?;
    let weights = cfg.class_weights.weights(&counts, device)?;
    let (mut adam, train) = optimizer(varmap, cfg, cfg.epochs * batches.batches_per_epoch())?;
    // BEGIN SOLUTION a3.finetune pixel-wise cross-entropy of the conv head on whole images' taps, through fit
    let (fh, fw) = images[0].feature_size()?;
    let loss_fn = |(taps, labels): &(Vec<Tensor>, Tensor)| -> candle::Result<Tensor> {
        let logits = conv_head.forward_taps(taps, fh, fw)?; // (B, K, fh, fw)
        common::loss::pixel_cross_entropy(&logits, labels, weights.as_ref())
    };
    fit(
        &train, varmap, &mut adam, &batches, device, loss_fn, validate,
    )
    // END SOLUTION
}

/// What every checkpoint of a run records besides the weights: enough for `evaluate`
/// and `predict` to rebuild the inputs the head was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRecord {
    pub config: Config,
    /// The backbone the taps came from.
    pub backbone: WeightsInfo,
    pub feature_size: (usize, usize),
    pub class_names: Vec<String>,
}

impl HeadRecord {
    /// The disk cache of the taps (`--cache-taps`) of the data at `data_root` through
    /// `weights`, or `None` when the run kept none.
    pub fn tap_dir(
        &self,
        data_root: &Path,
        weights: &WeightsInfo,
    ) -> anyhow::Result<Option<PathBuf>> {
        if !self.config.cache_taps {
            return Ok(None);
        }
        let settings = TapSettings::new(
            data_root,
            weights,
            self.config.input_size,
            self.feature_size,
        );
        Ok(Some(tap_dir(&self.config.cache_dir, &settings)?))
    }
}

/// The phase folders of a run, in training order; the last one with a checkpoint holds
/// the final head.
pub const PHASES: [&str; 2] = ["head", "finetune"];

/// The final head of the training run in `run` (the last phase's checkpoint) and what
/// the run recorded; one clear error for a folder of an older format.
pub fn load_final_head(run: &RunDir, device: &Device) -> anyhow::Result<(ConvHead, HeadRecord)> {
    let Some(path) = PHASES
        .iter()
        .rev()
        .map(|phase| run.file(phase).join(CHECKPOINT_FILE))
        .find(|path| path.is_file())
    else {
        if run.checkpoint().is_file() {
            bail!(
                "{:?} is a run folder of an older format (one checkpoint at its top, no \
                 head/ or finetune/ checkpoint with the run's record): train it again",
                run.path()
            );
        }
        bail!(
            "{:?} holds no head/ or finetune/ checkpoint: not a finished training run of this \
             program (pass --run DIR)",
            run.path()
        );
    };
    let checkpoint = load_checkpoint(&path, device)?;
    let record: HeadRecord = serde_json::from_value(checkpoint.meta.config).with_context(|| {
        format!("{path:?} was written by an older version (a run folder of an older format): train again")
    })?;
    let head = head_from_tensors(&checkpoint.model, device)
        .with_context(|| format!("the head in {path:?}"))?;
    Ok((head.convolutionalize()?, record))
}
