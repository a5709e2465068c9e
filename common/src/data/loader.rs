//! Seeded shuffling and batching: a [`Dataset`] of host-side samples becomes
//! batches of `(N, 3, H, W)` f32 images and `(N, H, W)` u32 masks on a device.
//!
//! Reproducibility: the order of epoch `e` and the random transform of each sample
//! depend only on `(seed, e)` and `(seed, e, index)`, never on the epochs before,
//! so a run resumed at epoch 3 sees exactly the batches it would have seen.
//! The samples of one batch are read and transformed in parallel (rayon); each has
//! its own generator, so the result does not depend on thread scheduling.

use std::sync::Arc;

use anyhow::Context;
use candle::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::transforms::Transform;
use super::{Dataset, Sample};
use crate::Result;

/// How a [`Loader`] cuts a data set into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Shuffle the order every epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Leave out the last batch when it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffle and of the random transforms.
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 1,
            shuffle: false,
            drop_last: false,
            seed: 0,
        }
    }
}

/// One batch of samples as tensors.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(N, 3, H, W)` f32.
    pub images: Tensor,
    /// `(N, H, W)` u32 class indices (255 = ignore).
    pub masks: Tensor,
    /// The sample ids, in batch order.
    pub ids: Vec<String>,
}

/// Cuts a data set into seeded, optionally shuffled and transformed batches.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    cfg: LoaderConfig,
    transform: Option<Transform>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("samples", &self.dataset.len())
            .field("cfg", &self.cfg)
            .field("transform", &self.transform.is_some())
            .finish()
    }
}

/// SplitMix64 finaliser: spreads nearby inputs (epoch 3, epoch 4) to unrelated seeds.
/// Every seed derived from a run's seed in the course goes through it.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of the shuffle of `epoch`.
fn order_seed(seed: u64, epoch: usize) -> u64 {
    mix(mix(seed) ^ epoch as u64)
}

/// `0..n` shuffled for `epoch` of a run seeded with `seed`: the order a shuffling
/// [`Loader`] uses, for anything else that is served in epochs (feature rows).
pub fn shuffled_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(order_seed(seed, epoch)));
    order
}

/// The seed of the transform of sample `index` in `epoch`.
fn sample_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    mix(order_seed(seed, epoch) ^ mix(index as u64 ^ 0x5EED))
}

impl Loader {
    /// A loader over `dataset`; no transform until [`Loader::with_transform`].
    pub fn new(dataset: Arc<dyn Dataset>, cfg: LoaderConfig) -> Self {
        Self {
            dataset,
            cfg,
            transform: None,
        }
    }

    /// Applies `transform` to every sample before batching (use
    /// [`super::transforms::compose`] for several).
    pub fn with_transform(mut self, transform: Transform) -> Self {
        self.transform = Some(transform);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// Number of samples in the data set.
    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    /// True when the data set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }

    /// Batches in one epoch (0 when `batch_size` is 0).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.len(), self.cfg.batch_size);
        if b == 0 {
            0
        } else if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The data set indices in the order of `epoch` (the identity without shuffle).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        if self.cfg.shuffle {
            shuffled_order(self.len(), self.cfg.seed, epoch)
        } else {
            (0..self.len()).collect()
        }
    }

    /// The batches of `epoch` on `device`, in order; an error names the sample.
    /// A `batch_size` of 0 gives a single error.
    pub fn epoch(&self, epoch: usize, device: &Device) -> impl Iterator<Item = Result<Batch>> + '_ {
        let device = device.clone();
        let order = self.order(epoch);
        let size_error = (self.cfg.batch_size == 0)
            .then(|| anyhow::anyhow!("loader batch_size is 0: use at least 1"));
        let batches = self.batches_per_epoch();
        size_error
            .into_iter()
            .map(Err)
            .chain((0..batches).map(move |b| {
                let start = b * self.cfg.batch_size;
                let end = (start + self.cfg.batch_size).min(order.len());
                self.load_batch(epoch, &order[start..end], &device)
                    .with_context(|| format!("batch {b} of epoch {epoch}"))
            }))
    }

    /// Batch `batch` of `epoch` alone (random access, e.g. to resume mid-epoch).
    pub fn batch(&self, epoch: usize, batch: usize, device: &Device) -> Result<Batch> {
        let batches = self.batches_per_epoch();
        if batch >= batches {
            anyhow::bail!("batch {batch} asked for, but an epoch has {batches}");
        }
        let order = self.order(epoch);
        let start = batch * self.cfg.batch_size;
        let end = (start + self.cfg.batch_size).min(order.len());
        self.load_batch(epoch, &order[start..end], device)
    }

    /// Reads and transforms sample `index` with its own seeded generator.
    fn load_sample(&self, epoch: usize, index: usize) -> Result<Sample> {
        let sample = self
            .dataset
            .get(index)
            .with_context(|| format!("loading sample {index}"))?;
        let sample = match &self.transform {
            Some(transform) => {
                let id = sample.id.clone();
                let mut rng = StdRng::seed_from_u64(sample_seed(self.cfg.seed, epoch, index));
                transform(sample, &mut rng)
                    .with_context(|| format!("transforming sample {index} ({id:?})"))?
            }
            None => sample,
        };
        let (c, h, w) = sample.image.dim();
        if c != 3 {
            anyhow::bail!(
                "sample {index} ({:?}) has a ({c}, {h}, {w}) image, expected 3 channels",
                sample.id
            );
        }
        if sample.mask.dim() != (h, w) {
            let (mh, mw) = sample.mask.dim();
            anyhow::bail!(
                "sample {index} ({:?}): mask is {mh}x{mw} but image is {h}x{w}",
                sample.id
            );
        }
        Ok(sample)
    }

    /// Stacks the samples at `indices` into one batch.
    fn load_batch(&self, epoch: usize, indices: &[usize], device: &Device) -> Result<Batch> {
        let samples = indices
            .par_iter()
            .map(|&index| self.load_sample(epoch, index))
            .collect::<Result<Vec<Sample>>>()?;
        let (h, w) = match samples.first() {
            Some(first) => first.size(),
            None => anyhow::bail!("empty batch"),
        };
        if samples.iter().any(|s| s.size() != (h, w)) {
            let sizes: Vec<String> = samples
                .iter()
                .map(|s| format!("{:?} {}x{}", s.id, s.size().0, s.size().1))
                .collect();
            anyhow::bail!(
                "samples of one batch differ in size ({}): add a resize or crop transform \
                 (transforms::resize_transform / scale_crop_transform) or use batch_size 1",
                sizes.join(", ")
            );
        }
        let n = samples.len();
        let mut images = Vec::with_capacity(n * 3 * h * w);
        let mut masks = Vec::with_capacity(n * h * w);
        let mut ids = Vec::with_capacity(n);
        for sample in samples {
            // Standard-layout iteration is (C, H, W) row-major whatever the memory order.
            images.extend(sample.image.iter().copied());
            masks.extend(sample.mask.iter().map(|&label| label as u32));
            ids.push(sample.id);
        }
        // n x (3, H, W) -> (N, 3, H, W); n x (H, W) -> (N, H, W)
        let images = Tensor::from_vec(images, (n, 3, h, w), device)?;
        let masks = Tensor::from_vec(masks, (n, h, w), device)?;
        Ok(Batch { images, masks, ids })
    }
}
