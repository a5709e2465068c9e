//! Measuring a classifier: accuracy and loss on the validation patches, the FCN
//! checked equal to the classifier on them, and the segmentation of the scene
//! ([`measure`], the same for a training run and for `evaluate`); and the
//! `evaluate` command, which measures a saved run again from its checkpoint.

use std::path::Path;

use candle::{Device, Module};
use common::data::locate::{Located, Origin};
use common::data::Sample;
use common::device::open_device;
use common::run_dir::{RunDir, CONFIG_FILE, METRICS_FILE};
use serde::{Deserialize, Serialize};

use crate::config::{stride1_side, Config, EvaluateConfig, SavedConfig, DEFAULT_SEED, PROGRAM};
use crate::data::{load_data, locate_data, patch_batch, Scene};
use crate::model::{load_classifier, Classifier, Fcn};
use crate::predict::write_pictures;
use crate::report::{EvaluateReport, Evaluation};
use crate::scene::{segment_scene, SegmentOptions};

/// Patches per forward pass when evaluating.
const EVAL_BATCH: usize = 256;

/// Accuracy and mean cross-entropy of a classifier on a set of patches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PatchScore {
    /// Fraction of patches whose arg-max class is their label.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Scores a saved run's classifier again: on the validation patches its split held
/// back and on its scene, as the training run did; writes `config.json`,
/// `metrics.json` and `predictions/` into `--out` (default `<run>/evaluate`).
pub fn evaluate(cfg: &EvaluateConfig) -> anyhow::Result<EvaluateReport> {
    let device = open_device(cfg.saved.device)?;
    let trained = cfg.saved.open_run(PROGRAM, DEFAULT_SEED)?;
    let saved: SavedConfig = trained.read_json(CONFIG_FILE)?;
    let classifier = load_classifier(&trained.checkpoint(), &device)?;
    let located = locate_like(&trained, cfg.data_dir.as_deref())?;
    eprintln!("{}", located.banner);
    let data = load_data(&located, &saved.config)?;
    let out = RunDir::create(cfg.out_dir(), cfg)?;
    let options = segment_options(&saved.config, cfg.saved.progress());
    let evaluation = measure(&classifier, &data.val, &data.scene, &options, &device)?;
    write_pictures(&out.predictions(), &data.scene, &evaluation.scene)?;
    let report = EvaluateReport {
        run: trained.path().to_path_buf(),
        data: located,
        evaluation,
        out: out.path().to_path_buf(),
    };
    out.write_metrics(&report)?;
    Ok(report)
}

/// The data to evaluate on: `--data-dir` when given, the generated set when the
/// training run's `metrics.json` says it used it, else the shared search.
fn locate_like(trained: &RunDir, given: Option<&Path>) -> anyhow::Result<Located> {
    #[derive(Deserialize)]
    struct TrainedOn {
        data: Located,
    }
    let generated = given.is_none()
        && trained
            .read_json::<TrainedOn>(METRICS_FILE)
            .is_ok_and(|m| m.data.is_generated());
    if !generated {
        return locate_data(given);
    }
    Ok(Located {
        origin: Origin::Generated,
        root: None,
        banner: "data: generated, as in the training run".into(),
    })
}

/// How a run with `cfg` segments its scene.
pub fn segment_options(cfg: &Config, progress: bool) -> SegmentOptions {
    SegmentOptions {
        compare: !cfg.no_compare,
        window_batch: cfg.window_batch,
        stride1_region: stride1_side(cfg.stride1_region),
        progress,
    }
}

/// Everything a run measures of a trained classifier: accuracy and loss on `val`,
/// the FCN against the classifier on `val`, and the segmentation of `scene`.
pub fn measure(
    classifier: &Classifier,
    val: &[Sample],
    scene: &Scene,
    options: &SegmentOptions,
    device: &Device,
) -> anyhow::Result<Evaluation> {
    let fcn = classifier.to_fcn()?;
    let (val_score, patch_diff) = if val.is_empty() {
        eprintln!("no validation patches (--val-fraction 0): accuracy not measured");
        (None, None)
    } else {
        let score = score_patches(classifier, val, device)?;
        let diff = fcn_vs_classifier_on_patches(classifier, &fcn, val, device)?;
        (Some(score), Some(diff))
    };
    Ok(Evaluation {
        val_patches: val.len(),
        val: val_score,
        fcn_vs_classifier_on_patches_max_abs_diff: patch_diff,
        scene: segment_scene(classifier, scene, device, options)?,
    })
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
        // (N, 3, 32, 32) -> (N, 2)
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

/// The largest difference between the classifier's logits on each patch and
/// the FCN's 1x1 output on the same patch.
pub fn fcn_vs_classifier_on_patches(
    classifier: &Classifier,
    fcn: &Fcn,
    patches: &[Sample],
    device: &Device,
) -> anyhow::Result<f32> {
    let mut worst = 0f32;
    for chunk in patches.chunks(EVAL_BATCH) {
        let (images, _) = patch_batch(chunk, device)?;
        // (N, 2) and (N, 2, 1, 1) -> (N, 2)
        let a = classifier.forward(&images)?;
        let b = fcn.forward(&images)?.flatten_from(1)?;
        let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        worst = worst.max(diff);
    }
    Ok(worst)
}
