//! One whole training run, as the homework's steps: locate data and weights; extract the
//! hypercolumns (the VGG taps before each pool, upsampled and concatenated, Z = 1472)
//! with a sparse sample of 3 pixels per class present; normalise them (mean/std); train
//! the 3-layer head on the sample; turn its FC layers into 1x1 convolutions; fine-tune
//! it on whole images; score the mIoU on val from a confusion matrix.

use std::time::Instant;

use candle::{DType, Device};
use candle_nn::VarMap;
use common::device::{device_name, open_device};
use common::run_dir::RunDir;
use common::train::History;
use common::weights::HubSettings;

use common::metrics::Scores;

use crate::config::Config;
use crate::data::VocData;
use crate::evaluate::{confusion, save_confusion, save_panels, validation};
use crate::features::SampledFeatures;
use crate::model::{head, Backbone, ConvHead, FeatureNorm, Head, HeadConfig, FEATURE_DIM};
use crate::report::{plot_phases, Report, Timings};
use crate::taps::{self, Extractor, SampleSettings, TapImage, TapSettings};
use crate::training::{finetune, train_head, HeadRecord, PhaseConfig, PHASES};
use crate::weights::{resolve_backbone_with, WeightsInfo};

/// Runs every step and writes the outputs into the run folder.
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    cfg.check()?;
    let device = open_device(cfg.run.device)?;
    let run_dir = RunDir::create(cfg.out_dir(), cfg)?;

    // 1. Data and weights.
    let data = crate::data::open(cfg)?;
    let hub = HubSettings::from_env();
    let hub = HubSettings {
        progress: hub.progress && cfg.run.progress(),
        ..hub
    };
    let (backbone, weights) = resolve_backbone_with(&cfg.backbone, cfg.seed, &device, &hub)?;
    let vgg = extractor(cfg, &backbone, &data, &weights, &device)?;

    // 2. Hypercolumns: every image's taps, and a sparse sample of pixels per class present.
    let fine_tune = cfg.finetune_epochs > 0;
    let settings = sample_settings(cfg, &data, &weights);
    let train = taps::extract_train(&vgg, &data.train, &settings, fine_tune)?;
    print_samples(&train.samples, data.class_names(), cfg.samples_per_class);
    let val = taps::extract_eval(&vgg, &data.val, data.n_val, "val", cfg.test_flip)?;
    let mut timings = Timings {
        train_extraction_s: train.seconds,
        vgg_forward_s_per_image: train.vgg_s_per_image,
        val_extraction_s: val.seconds,
        ..Timings::default()
    };

    // 3. Mean/std normalisation and the 3-layer head, trained on the sampled rows.
    let (head_phase, tune_phase) = phases(cfg, &run_dir, &record(cfg, &data, &weights), &device)?;
    let varmap = VarMap::new();
    let norm = FeatureNorm::fit(&train.samples.features, &device)?;
    let head = new_head(&varmap, norm, cfg, data.class_names().len(), &device)?;
    let step = Instant::now();
    let validate = |epoch| validate_after(cfg.head_epochs, epoch, &head, &val.images);
    let head_history = train_head(&varmap, &head, &train.samples, &head_phase, validate)?;
    timings.head_training_s = seconds(step);

    // 4. The fully connected layers become 1x1 convolutions (sharing their tensors).
    let conv_head = head.convolutionalize()?;
    let head_only_mean_iou = head_only_miou(&head_history, &conv_head, &val.images)?;

    // 5. Fine-tuning on whole training images.
    let step = Instant::now();
    let finetune_history = if fine_tune {
        eprintln!(
            "phase 2: fine-tuning the 1x1-conv head on {} images",
            data.n_train
        );
        let validate = |_| Ok(Some(validation(&conv_head, &val.images)?));
        finetune(&varmap, &conv_head, &train.images, &tune_phase, validate)?
    } else {
        History::default()
    };
    timings.finetune_s = seconds(step);
    drop(train.images);

    // 6. The mean IoU on val, from a confusion matrix at the images' own sizes.
    let step = Instant::now();
    let (cm, val_loss) = confusion(&conv_head, &val.images)?;
    timings.evaluation_s = seconds(step);

    save_confusion(&run_dir, &cm, data.class_names())?;
    save_panels(&run_dir, &conv_head, &val.images, &data.val, cfg.panels)?;
    plot_phases(&run_dir, &head_history, &finetune_history)?;
    timings.total_s = seconds(started);
    let scores = cm.scores(data.class_names())?;
    let losses = (val_loss, head_only_mean_iou);
    let report = report(&data, &train.samples, weights, scores, losses, timings);
    run_dir.write_metrics(&report)?;
    Ok(report)
}

/// The VGG over the run's images, after saying which it is and checking that the taps
/// kept for fine-tuning and evaluation fit in `--max-cache-gib`.
fn extractor<'a>(
    cfg: &Config,
    backbone: &'a Backbone,
    data: &VocData,
    weights: &WeightsInfo,
    device: &'a Device,
) -> anyhow::Result<Extractor<'a>> {
    let ((ih, iw), (fh, fw)) = (cfg.input_size, cfg.feature_size());
    eprintln!(
        "backbone: {weights}, {} preprocessing, input {ih}x{iw}, features {fh}x{fw}, device {}",
        weights.normalization,
        device_name(device)
    );
    let train_kept = if cfg.finetune_epochs > 0 {
        data.n_train
    } else {
        0
    };
    // The test-time flip keeps a second set of val taps, of the mirrored images.
    let val_kept = data.n_val * if cfg.test_flip { 2 } else { 1 };
    taps::check_memory(
        cfg.input_size,
        (fh, fw),
        val_kept + train_kept,
        cfg.max_cache_gib,
    )?;
    let settings = TapSettings::new(&data.root, weights, cfg.input_size, (fh, fw));
    let tap_dir = cfg
        .cache_taps
        .then(|| taps::tap_dir(&cfg.cache_dir, &settings));
    let tap_dir = tap_dir.transpose()?;
    if let Some(dir) = &tap_dir {
        eprintln!("taps cached on disk in {dir:?}");
    }
    Ok(Extractor {
        backbone,
        input_size: cfg.input_size,
        feature_size: (fh, fw),
        device,
        tap_dir,
        cache_dir: cfg.cache_dir.clone(),
        progress: cfg.run.progress(),
    })
}

/// What decides the sampled hypercolumns (and so their cache file).
fn sample_settings(cfg: &Config, data: &VocData, weights: &WeightsInfo) -> SampleSettings {
    SampleSettings {
        taps: TapSettings::new(&data.root, weights, cfg.input_size, cfg.feature_size()),
        n_train: data.n_train,
        samples_per_class: cfg.samples_per_class,
        seed: cfg.seed,
    }
}

fn print_samples(samples: &SampledFeatures, class_names: &[String], per_class: usize) {
    let counts = samples.class_counts(class_names.len());
    let per_name: Vec<String> = class_names
        .iter()
        .zip(&counts)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    eprintln!(
        "sampled {} hypercolumns of length {FEATURE_DIM} ({per_class} per class present per image); per class: {}",
        samples.len(),
        per_name.join(", ")
    );
}

/// What the phases' checkpoints record for `evaluate` and `predict`.
fn record(cfg: &Config, data: &VocData, weights: &WeightsInfo) -> HeadRecord {
    HeadRecord {
        config: cfg.clone(),
        backbone: weights.clone(),
        feature_size: cfg.feature_size(),
        class_names: data.class_names().to_vec(),
    }
}

/// The settings of the two phases (head, fine-tuning), each in its own child folder.
fn phases(
    cfg: &Config,
    run_dir: &RunDir,
    record: &HeadRecord,
    device: &Device,
) -> anyhow::Result<(PhaseConfig, PhaseConfig)> {
    let run_config = serde_json::to_value(record)?;
    let phase = |name: &str, epochs, batch_size, lr| -> anyhow::Result<PhaseConfig> {
        Ok(PhaseConfig {
            epochs,
            batch_size,
            lr,
            weight_decay: cfg.weight_decay,
            class_weights: cfg.class_weights,
            seed: cfg.seed,
            device: device.clone(),
            run_dir: run_dir.child(name)?,
            title: format!("{name}: {} hypercolumns", record.backbone.arch),
            run_config: run_config.clone(),
            progress: cfg.run.progress(),
        })
    };
    let [head, finetune] = PHASES;
    Ok((
        phase(head, cfg.head_epochs, cfg.head_batch_size, cfg.head_lr)?,
        phase(
            finetune,
            cfg.finetune_epochs,
            cfg.finetune_batch_size,
            cfg.finetune_lr,
        )?,
    ))
}

/// The head `Z -> hidden -> hidden -> K` with seeded weights, its normalisation in
/// `varmap` beside its layers so the checkpoints hold both.
fn new_head(
    varmap: &VarMap,
    norm: FeatureNorm,
    cfg: &Config,
    n_classes: usize,
    device: &Device,
) -> anyhow::Result<Head> {
    let vb = common::init::seeded_var_builder(varmap, cfg.seed, DType::F32, device);
    let head_cfg = HeadConfig {
        feature_dim: FEATURE_DIM,
        hidden: cfg.hidden,
        n_classes,
    };
    let head = head(&head_cfg, norm.clone(), vb)?;
    norm.register(varmap)?;
    eprintln!(
        "phase 1: head {FEATURE_DIM} -> {0} -> {0} -> {n_classes} on sampled features",
        cfg.hidden
    );
    Ok(head)
}

/// Phase 1's validation: only after its last epoch (a pass over val costs as much as
/// several epochs of the head).
fn validate_after(
    last_epoch: usize,
    epoch: usize,
    head: &Head,
    images: &[TapImage],
) -> common::Result<Option<common::train::Validation>> {
    if epoch < last_epoch {
        return Ok(None);
    }
    Ok(Some(validation(&head.convolutionalize()?, images)?))
}

/// The val mIoU of the phase-1 head: from its last epoch, else computed now.
fn head_only_miou(
    history: &History,
    conv_head: &ConvHead,
    images: &[TapImage],
) -> anyhow::Result<f64> {
    let miou = match history.epochs.last().and_then(|e| e.metric) {
        Some(miou) => miou,
        None => validation(conv_head, images)?
            .metric
            .map_or(f64::NAN, |m| m.1),
    };
    eprintln!("head alone: val mIoU {:.2}%", 100.0 * miou);
    Ok(miou)
}

fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// `metrics.json`: the final scores with the losses `(val, head-only mIoU)` and what
/// the run was made of.
fn report(
    data: &VocData,
    samples: &SampledFeatures,
    backbone: WeightsInfo,
    scores: Scores,
    (val_loss, head_only_mean_iou): (f64, f64),
    timings: Timings,
) -> Report {
    let class_names = data.class_names().to_vec();
    let counts = samples.class_counts(class_names.len());
    Report {
        scores,
        val_loss,
        head_only_mean_iou,
        sampled_per_class: class_names.iter().cloned().zip(counts).collect(),
        class_names,
        feature_dim: FEATURE_DIM,
        n_sampled_features: samples.len(),
        n_train_images: data.n_train,
        n_val_images: data.n_val,
        backbone,
        data: data.located.clone(),
        timings,
    }
}
