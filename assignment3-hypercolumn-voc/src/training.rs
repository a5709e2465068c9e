//! The two training phases: the fully connected head on the sampled
//! hypercolumns, then the convolutionalised head fine-tuned on whole training
//! images (pixel-wise cross-entropy, 255 ignored) with the backbone frozen.
//!
//! Both go through `common::train::fit` (progress bar, history, loss curve, NaN
//! guard, checkpoint per epoch). `fit` walks a `Loader` of image samples; here
//! the "samples" are indices into data already in memory (sampled features,
//! cached taps), so the loader runs over an [`IndexSet`] and each batch's ids
//! pick the rows or images.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::data::loader::{Batch, Loader, LoaderConfig};
use common::data::{Dataset, Sample};
use common::optim::{param_group, Adam, AdamConfig};
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, History, TrainConfig, Validation};
use ndarray::{Array2, Array3};

use crate::features::SampledFeatures;
use crate::model::{ConvHead, Head};

/// The taps of one image kept in memory for fine-tuning and evaluation.
#[derive(Debug, Clone)]
pub struct TapImage {
    /// The sample id.
    pub id: String,
    /// The taps prepared for the head (`model::prepare_taps`), `(1, C_i, h_i, w_i)`.
    pub taps: Vec<Tensor>,
    /// `(1, fh, fw)` u32 labels at the feature resolution (nearest).
    pub labels: Tensor,
    /// The original `(H, W)` labels (kept for evaluation only).
    pub mask: Option<Array2<u8>>,
}

/// A data set of `n` placeholder samples whose ids are their indices: lets
/// `common::train::fit` and its `Loader` (seeded shuffling, batching) run over
/// data that already sits in memory.
#[derive(Debug, Clone)]
pub struct IndexSet {
    n: usize,
    class_names: Vec<String>,
}

impl IndexSet {
    /// `n` indices.
    pub fn new(n: usize, class_names: Vec<String>) -> Self {
        Self { n, class_names }
    }
}

impl Dataset for IndexSet {
    fn len(&self) -> usize {
        self.n
    }

    fn get(&self, index: usize) -> common::Result<Sample> {
        if index >= self.n {
            anyhow::bail!("index {index} asked for, but the set has {}", self.n);
        }
        Ok(Sample {
            id: index.to_string(),
            image: Array3::zeros((3, 1, 1)),
            mask: Array2::zeros((1, 1)),
        })
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

/// The indices a batch of an [`IndexSet`] stands for.
fn batch_indices(batch: &Batch) -> candle::Result<Vec<usize>> {
    batch
        .ids
        .iter()
        .map(|id| {
            id.parse::<usize>()
                .map_err(|_| candle::Error::Msg(format!("batch id {id:?} is not an index")))
        })
        .collect()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
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
    /// Where `fit` writes this phase's checkpoint, history and loss curve.
    pub out_dir: PathBuf,
    pub title: String,
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
        out_dir: cfg.out_dir.clone(),
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
    class_names: &[String],
    cfg: &PhaseConfig,
    device: &Device,
    validate: impl FnMut(usize) -> common::Result<Option<Validation>>,
) -> anyhow::Result<History> {
    let (p, z) = samples.features.dim();
    if p == 0 {
        anyhow::bail!("no sampled features to train the head on");
    }
    // (P, Z) and (P) on the device once; batches pick rows by index.
    let features = Tensor::from_slice(
        samples
            .features
            .as_slice()
            .context("sampled features are not contiguous")?,
        (p, z),
        device,
    )?;
    let labels = Tensor::from_vec(
        samples
            .labels
            .iter()
            .map(|&l| u32::from(l))
            .collect::<Vec<_>>(),
        p,
        device,
    )?;
    let weights = cfg
        .class_weights
        .weights(&samples.class_counts(class_names.len()), device)?;
    let loader = Loader::new(
        Arc::new(IndexSet::new(p, class_names.to_vec())),
        LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: false,
            seed: cfg.seed,
        },
    );
    let (mut adam, train) = optimizer(varmap, cfg, cfg.epochs * loader.batches_per_epoch())?;
    let loss_fn = |batch: &Batch| -> candle::Result<Tensor> {
        let index = Tensor::from_vec(
            batch_indices(batch)?
                .into_iter()
                .map(|i| i as u32)
                .collect::<Vec<_>>(),
            batch.ids.len(),
            device,
        )?;
        let xs = features.index_select(&index, 0)?; // (B, Z)
        let ys = labels.index_select(&index, 0)?; // (B)
        let logits = head.forward(&xs)?; // (B, K)
        let (b, k) = logits.dims2()?;
        // (B, K) -> (B, K, 1, 1) and (B) -> (B, 1, 1): pixel CE with class weights.
        common::loss::pixel_cross_entropy(
            &logits.reshape((b, k, 1, 1))?,
            &ys.reshape((b, 1, 1))?,
            weights.as_ref(),
        )
    };
    fit(
        &train, varmap, &mut adam, &loader, device, loss_fn, validate,
    )
}

/// The per-level concatenation of the taps of `images`, as f32.
///
/// # Shapes
/// `images[j].taps[i] (1, C_i, h_i, w_i)` -> `[(B, C_i, h_i, w_i)]`
pub fn stack_taps(images: &[&TapImage]) -> candle::Result<Vec<Tensor>> {
    let levels = images.first().map_or(0, |image| image.taps.len());
    (0..levels)
        .map(|level| {
            let parts: Vec<&Tensor> = images.iter().map(|image| &image.taps[level]).collect();
            Tensor::cat(&parts, 0)?.to_dtype(DType::F32)
        })
        .collect()
}

/// Phase 2: fine-tunes the convolutionalised head on whole training images
/// (their cached taps), pixel-wise cross-entropy at the feature resolution.
pub fn finetune(
    varmap: &VarMap,
    conv_head: &ConvHead,
    images: &[TapImage],
    feature_size: (usize, usize),
    class_names: &[String],
    cfg: &PhaseConfig,
    device: &Device,
    validate: impl FnMut(usize) -> common::Result<Option<Validation>>,
) -> anyhow::Result<History> {
    if images.is_empty() {
        anyhow::bail!("no training images to fine-tune on");
    }
    let mut counts = vec![0usize; class_names.len()];
    for image in images {
        for label in image.labels.flatten_all()?.to_vec1::<u32>()? {
            if let Some(count) = counts.get_mut(label as usize) {
                *count += 1;
            }
        }
    }
    let weights = cfg.class_weights.weights(&counts, device)?;
    let loader = Loader::new(
        Arc::new(IndexSet::new(images.len(), class_names.to_vec())),
        LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: false,
            seed: cfg.seed,
        },
    );
    let (mut adam, train) = optimizer(varmap, cfg, cfg.epochs * loader.batches_per_epoch())?;
    let (fh, fw) = feature_size;
    let loss_fn = |batch: &Batch| -> candle::Result<Tensor> {
        let chosen: Vec<&TapImage> = batch_indices(batch)?
            .into_iter()
            .map(|i| &images[i])
            .collect();
        let taps = stack_taps(&chosen)?;
        let labels: Vec<&Tensor> = chosen.iter().map(|image| &image.labels).collect();
        let labels = Tensor::cat(&labels, 0)?; // (B, fh, fw)
        let logits = conv_head.forward_taps(&taps, fh, fw)?; // (B, K, fh, fw)
        common::loss::pixel_cross_entropy(&logits, &labels, weights.as_ref())
    };
    fit(
        &train, varmap, &mut adam, &loader, device, loss_fn, validate,
    )
}
