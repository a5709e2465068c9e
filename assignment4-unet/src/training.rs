//! Training a U-Net: augmented random crops of the training images, cross-entropy
//! plus soft Dice (the reference's sum), Adam with warm-up and cosine decay, and
//! the loop of `common::train::fit` (history, loss curve, checkpoints, resume),
//! validated on the held-back whole images after every epoch.

use std::sync::Arc;

use candle::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use common::data::loader::{Loader, LoaderConfig};
use common::data::{Dataset, InMemoryDataset};
use common::loss::{dice_loss, pixel_cross_entropy_weighted};
use common::optim::{param_group, Adam, AdamConfig};
use common::run_dir::RunDir;
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, History, TrainConfig as FitConfig, Validation};
use common::Result;

use crate::augment::{augment_transform, AugmentConfig};
use crate::config::Config;
use crate::data::{Repeated, Splits, ISBI_CLASSES};
use crate::evaluate::evaluate_model;
use crate::model::UNet;
use crate::predict::{CheckpointInfo, Readout};
use crate::weight_map::{batch_weight_maps, WeightMapConfig};

/// What [`train`] trains, on what, and where it writes.
#[derive(Clone, Copy)]
pub struct TrainSetup<'a> {
    pub cfg: &'a Config,
    pub model: &'a UNet,
    pub varmap: &'a VarMap,
    pub splits: &'a Splits,
    /// Side of the training crops (see [`crop_size`]).
    pub crop: usize,
    /// The run folder: checkpoint, history, loss curve.
    pub run_dir: &'a RunDir,
    pub device: &'a Device,
}

/// The crop side to train with: `requested`, shrunk to the smallest training image
/// (rounded down to a multiple of 16) when that is smaller, since larger crops
/// would be mostly padding.
pub fn crop_size(requested: usize, train: &InMemoryDataset) -> usize {
    let min_side = train
        .samples
        .iter()
        .map(|s| s.size().0.min(s.size().1))
        .min()
        .unwrap_or(0);
    let crop = requested.min(min_side / 16 * 16).max(16);
    if crop != requested {
        eprintln!(
            "crop {requested} is larger than the smallest training image ({min_side} px): using {crop}"
        );
    }
    crop
}

/// Batches of augmented random crops: one epoch is `steps_per_epoch * batch_size`
/// crops, the training set repeated as often as that needs.
pub fn crop_loader(cfg: &Config, train: &InMemoryDataset, crop: usize) -> Loader {
    let crops_per_epoch = cfg.steps_per_epoch * cfg.batch_size;
    let repeats = crops_per_epoch.div_ceil(train.samples.len());
    let train_set: Arc<dyn Dataset> = Arc::new(Repeated::new(Arc::new(train.clone()), repeats));
    let loader_config = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        drop_last: true,
        seed: cfg.seed,
    };
    Loader::new(train_set, loader_config).with_transform(augment_transform(AugmentConfig {
        crop,
        flips_and_rotations: true,
        elastic: cfg.elastic(),
    }))
}

/// Linear warm-up (at most half the steps) then cosine decay to 1% of `--lr`.
fn schedule(cfg: &Config, total_steps: usize) -> LrSchedule {
    let cosine = ScheduleKind::Cosine {
        min_lr: cfg.lr * 0.01,
    };
    LrSchedule::new(cfg.lr, cosine, total_steps).with_warmup(cfg.warmup_steps.min(total_steps / 2))
}

/// Trains the net with Adam on random crops for `cfg.epochs` epochs (continuing
/// from the run folder's checkpoint with `--resume`); returns the history.
pub fn train(setup: &TrainSetup) -> Result<History> {
    let TrainSetup {
        cfg,
        model,
        varmap,
        splits,
        crop,
        run_dir,
        device,
    } = *setup;
    let loader = crop_loader(cfg, &splits.train, crop);
    let mut optimizer = Adam::new(
        vec![param_group("unet", varmap, None, 1.0)],
        AdamConfig::adam(cfg.lr),
    )?;
    let info = CheckpointInfo {
        model: *model.config(),
        options: cfg,
    };
    let fit_config = FitConfig {
        epochs: cfg.epochs,
        run_dir: run_dir.clone(),
        seed: cfg.seed,
        schedule: schedule(cfg, loader.batches_per_epoch() * cfg.epochs),
        resume: cfg.resume,
        title: format!("U-Net width {} on {}", cfg.width, splits.title),
        run_config: serde_json::to_value(info)?,
        progress: cfg.run.progress(),
    };
    fit(
        &fit_config,
        varmap,
        &mut optimizer,
        &loader,
        device,
        // (N, 3, crop, crop) -> (N, K, crop, crop) scores against (N, crop, crop) labels.
        |batch| {
            let logits = model.forward_t(&batch.images, true)?;
            crop_loss(&logits, &batch.masks, cfg.weight_map)
        },
        |_epoch| validate(model, &splits.val, device).map(Some),
    )
}

/// Cross-entropy (weighted by the border weight map of the crops with
/// `weight_map`) plus soft Dice.
///
/// # Shapes
/// `logits (N, K, H, W)`, `masks (N, H, W)` -> scalar
pub fn crop_loss(logits: &Tensor, masks: &Tensor, weight_map: bool) -> candle::Result<Tensor> {
    if !weight_map {
        return common::loss::ce_dice_loss(logits, masks, None);
    }
    let n_classes = logits.dim(1)?;
    let weights = batch_weight_maps(masks, n_classes, &WeightMapConfig::default())?; // (N, H, W)
    pixel_cross_entropy_weighted(logits, masks, &weights)? + dice_loss(logits, masks, 1.0)?
}

/// The check after each epoch: the loss on the held-back images, and their
/// membrane Dice (ISBI) or mean foreground Dice (other sets).
pub fn validate(model: &UNet, val: &InMemoryDataset, device: &Device) -> Result<Validation> {
    let metrics = evaluate_model(model, val, &Readout::PLAIN, device)?;
    let is_isbi = val.class_names.iter().map(String::as_str).eq(ISBI_CLASSES);
    let metric = if is_isbi {
        ("membrane Dice".to_string(), metrics.class_dice(0))
    } else {
        ("Dice".to_string(), metrics.dice)
    };
    Ok(Validation {
        loss: Some(metrics.loss),
        metric: Some(metric),
    })
}
