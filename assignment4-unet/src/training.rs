//! Training a U-Net: augmented random crops of the training images, cross-entropy
//! plus soft Dice (the reference's sum), Adam with warm-up and cosine decay, the
//! loop of `common::train::fit` (history, loss curve, checkpoints, resume), then an
//! evaluation on the held-back whole images and their predictions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle::ModuleT;
use common::data::loader::{Loader, LoaderConfig};
use common::data::Dataset;
use common::device::{device_name, open_device, DeviceChoice};
use common::optim::{param_group, Adam, AdamConfig};
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, write_atomic, TrainConfig as FitConfig, Validation};
use common::Result;
use serde::{Deserialize, Serialize};

use crate::augment::{augment_transform, AugmentConfig, ElasticConfig};
use crate::data::{open_splits, Repeated, ISBI_CLASSES};
use crate::evaluate::{evaluate, save_predictions, Metrics};
use crate::model::{build_unet, count_parameters, UNetConfig};

/// Everything a training run needs; `main` fills it from the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Data folder (`None`: look for ISBI 2012, else the generated set).
    pub data_dir: Option<PathBuf>,
    /// Output folder of the run.
    pub out_dir: PathBuf,
    /// Epochs; one epoch is `steps_per_epoch` batches of random crops.
    pub epochs: usize,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Crops per batch.
    pub batch_size: usize,
    /// Side of the square training crops.
    pub crop: usize,
    /// First-level width of the net (64 in the paper).
    pub width: usize,
    /// Bilinear upsampling instead of transposed convolutions.
    pub bilinear: bool,
    /// Peak learning rate of Adam.
    pub lr: f64,
    /// Steps of linear warm-up before the cosine decay.
    pub warmup_steps: usize,
    /// Elastic deformation of the training crops (`None`: off).
    pub elastic: Option<ElasticConfig>,
    /// Images held back for validation (ISBI and folder pairs).
    pub n_val: usize,
    /// Seed of the weights, the split, the crop order and the augmentation.
    pub seed: u64,
    /// Device to run on.
    #[serde(with = "device_text")]
    pub device: DeviceChoice,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    /// Draw progress bars.
    pub progress: bool,
}

impl Default for TrainOptions {
    /// The default run: fits in 15 minutes on 2 CPU cores (see the README).
    fn default() -> Self {
        Self {
            data_dir: None,
            out_dir: PathBuf::from("runs/assignment4-unet/default"),
            epochs: 8,
            steps_per_epoch: 50,
            batch_size: 4,
            crop: 256,
            width: 16,
            bilinear: false,
            lr: 2e-3,
            warmup_steps: 20,
            elastic: Some(ElasticConfig::default()),
            n_val: 5,
            seed: 0,
            device: DeviceChoice::Auto,
            resume: false,
            progress: true,
        }
    }
}

/// `DeviceChoice` as its name in `config.json`.
mod device_text {
    use common::device::DeviceChoice;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(choice: &DeviceChoice, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&choice.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceChoice, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Figures on the held-back images.
    pub metrics: Metrics,
    /// Training loss of every step.
    pub step_losses: Vec<f64>,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// True when the run used the generated data set.
    pub synthetic: bool,
}

/// Trains, evaluates on the held-back images and writes the run's files into
/// `opts.out_dir`: `config.json`, `history.csv`/`.json`, `loss.png`,
/// `checkpoint.safetensors`, `metrics.json`, `predictions/*.png`.
pub fn train(opts: &TrainOptions) -> Result<TrainReport> {
    let started = Instant::now();
    check_options(opts)?;
    let device = open_device(opts.device)?;
    let splits = open_splits(opts.data_dir.as_deref(), opts.n_val, opts.seed)?;
    let class_names = splits.train.class_names.clone();
    let model_config = UNetConfig {
        n_channels: 3,
        n_classes: class_names.len(),
        bilinear: opts.bilinear,
        width: opts.width,
    };
    let (model, varmap) = build_unet(model_config, opts.seed, &device)?;
    let n_parameters = count_parameters(&varmap);
    eprintln!(
        "data: {} ({} train, {} held back); U-Net width {} {} ({} parameters) on {}",
        splits.source,
        splits.train.samples.len(),
        splits.val.samples.len(),
        opts.width,
        if opts.bilinear {
            "bilinear"
        } else {
            "transposed-conv"
        },
        n_parameters,
        device_name(&device)
    );

    // Crops larger than the images would be mostly padding: shrink them to the
    // smallest training image (rounded down to a multiple of 16).
    let min_side = splits
        .train
        .samples
        .iter()
        .map(|s| s.size().0.min(s.size().1))
        .min()
        .unwrap_or(0);
    let crop = opts.crop.min(min_side / 16 * 16).max(16);
    if crop != opts.crop {
        eprintln!(
            "crop {} is larger than the smallest training image ({min_side} px): using {crop}",
            opts.crop
        );
    }

    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create output folder {:?}", opts.out_dir))?;
    let run_config = serde_json::json!({
        "model": model_config,
        "options": opts,
        "data": splits.source,
        "synthetic_data": splits.synthetic,
        "class_names": class_names,
        "held_back_ids": splits.val.samples.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "device": device_name(&device),
        "crop_used": crop,
    });
    write_atomic(
        &opts.out_dir.join("config.json"),
        &serde_json::to_vec_pretty(&run_config)?,
    )?;

    // One epoch = steps_per_epoch * batch_size random crops of the training images.
    let crops_per_epoch = opts.steps_per_epoch * opts.batch_size;
    let repeats = crops_per_epoch.div_ceil(splits.train.samples.len());
    let train_set: Arc<dyn Dataset> =
        Arc::new(Repeated::new(Arc::new(splits.train.clone()), repeats));
    let loader = Loader::new(
        train_set,
        LoaderConfig {
            batch_size: opts.batch_size,
            shuffle: true,
            drop_last: true,
            seed: opts.seed,
        },
    )
    .with_transform(augment_transform(AugmentConfig {
        crop,
        flips_and_rotations: true,
        elastic: opts.elastic,
    }));
    let steps_per_epoch = loader.batches_per_epoch();
    let total_steps = steps_per_epoch * opts.epochs;
    let schedule = LrSchedule::new(
        opts.lr,
        ScheduleKind::Cosine {
            min_lr: opts.lr * 0.01,
        },
        total_steps,
    )
    .with_warmup(opts.warmup_steps.min(total_steps / 2));
    let mut optimizer = Adam::new(
        vec![param_group("unet", &varmap, None, 1.0)],
        AdamConfig::adam(opts.lr),
    )?;

    let is_isbi = class_names.iter().map(String::as_str).eq(ISBI_CLASSES);
    let val_set = splits.val.clone();
    let fit_config = FitConfig {
        epochs: opts.epochs,
        out_dir: opts.out_dir.clone(),
        seed: opts.seed,
        schedule,
        resume: opts.resume,
        // The source without its folder path: "ISBI 2012 membranes".
        title: format!(
            "U-Net width {} on {}",
            opts.width,
            splits.source.split(" \"").next().unwrap_or("data")
        ),
        run_config,
        progress: opts.progress,
    };
    let history = fit(
        &fit_config,
        &varmap,
        &mut optimizer,
        &loader,
        &device,
        // (N, 3, crop, crop) -> (N, K, crop, crop) scores against (N, crop, crop) labels.
        |batch| {
            common::loss::ce_dice_loss(&model.forward_t(&batch.images, true)?, &batch.masks, None)
        },
        |_epoch| {
            let metrics = evaluate(&model, &val_set, n_parameters, &device)?;
            let metric = if is_isbi {
                ("membrane Dice".to_string(), metrics.class_dice(0))
            } else {
                ("Dice".to_string(), metrics.dice)
            };
            Ok(Some(Validation {
                loss: Some(metrics.loss),
                metric: Some(metric),
            }))
        },
    )?;

    let metrics = evaluate(&model, &splits.val, n_parameters, &device)?;
    metrics.save(&opts.out_dir.join("metrics.json"))?;
    save_predictions(
        &model,
        &splits.val,
        &opts.out_dir.join("predictions"),
        &device,
    )?;
    Ok(TrainReport {
        metrics,
        step_losses: history.step_losses(),
        seconds: started.elapsed().as_secs_f64(),
        synthetic: splits.synthetic,
    })
}

/// Rejects option values that cannot make a run, naming the flag.
pub fn check_options(opts: &TrainOptions) -> Result<()> {
    let positive = [
        ("--epochs", opts.epochs),
        ("--steps-per-epoch", opts.steps_per_epoch),
        ("--batch-size", opts.batch_size),
        ("--width", opts.width),
        ("--n-val", opts.n_val),
    ];
    for (flag, value) in positive {
        if value == 0 {
            anyhow::bail!("{flag} must be at least 1, got 0");
        }
    }
    if opts.crop < 16 || opts.crop % 16 != 0 {
        anyhow::bail!(
            "--crop must be a multiple of 16 (four 2x2 pools), at least 16, got {}",
            opts.crop
        );
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        anyhow::bail!("--lr must be a positive number, got {}", opts.lr);
    }
    if opts.bilinear && opts.width % 2 != 0 {
        anyhow::bail!(
            "--bilinear halves the widths: --width must be even, got {}",
            opts.width
        );
    }
    Ok(())
}
