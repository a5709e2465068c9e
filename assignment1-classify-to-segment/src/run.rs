//! The two things the program does: a full run (find data, train, convert,
//! check the conversion, segment `flower.jpg`, compare with the naive sliding
//! window, write everything) and segmenting one image with a saved checkpoint.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle::Device;
use common::checkpoint::{load_checkpoint, load_into_varmap};
use common::data::image_io::{load_grey_mask, load_image};
use common::device::{device_name, open_device, DeviceChoice};
use common::train::{write_atomic, CHECKPOINT_FILE, HISTORY_CSV, LOSS_PNG};
use serde::Serialize;

use crate::data::{
    generated_data, load_patches, load_scene, locate_data, split_train_val, DataSource, Scene,
};
use crate::evaluate::{
    fcn_vs_classifier_on_patches, segment_scene, write_pictures, SceneReport, SegmentOptions,
};
use crate::model::{output_size_rule, Arch, ArchSpec, Classifier};
use crate::training::{new_classifier, score_patches, train_classifier, TrainSettings};

/// Everything a full run needs (the command line, parsed).
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// The data folder, if given on the command line.
    pub data_dir: Option<PathBuf>,
    /// The output folder.
    pub out: PathBuf,
    pub arch: Arch,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Label smoothing of the training cross-entropy.
    pub label_smoothing: f64,
    /// Fraction of each class held back for validation.
    pub val_fraction: f64,
    pub seed: u64,
    /// `cpu`, `cuda` or `auto`.
    pub device: String,
    /// Run and time the sliding windows and shift-and-stitch.
    pub compare: bool,
    /// Crops per forward pass of the sliding window.
    pub window_batch: usize,
    /// Side of the centred square where the stride-1 sliding window runs (None = whole image).
    pub stride1_region: Option<usize>,
    /// Patches generated when the real data set is missing.
    pub generated_patches: usize,
    pub progress: bool,
}

/// What `metrics.json` holds after a full run.
#[derive(Debug, Clone, Serialize)]
pub struct RunMetrics {
    /// `real` or `generated`.
    pub data: String,
    pub arch: ArchSpec,
    pub train_patches: usize,
    pub val_patches: usize,
    pub val_accuracy: f64,
    pub val_loss: f64,
    pub flower_iou: Option<f64>,
    pub flower_pixel_accuracy: Option<f64>,
    /// Max |classifier - FCN| over the validation patches and the stride-4 map.
    pub fcn_vs_classifier_max_abs_diff: f32,
    /// Max |classifier - FCN| on the validation patches (32x32 input, 1x1 output).
    pub fcn_vs_classifier_on_patches_max_abs_diff: f32,
    pub fcn_seconds: f64,
    pub sliding_window_stride4_seconds: Option<f64>,
    pub sliding_window_stride1_seconds: Option<f64>,
    pub shift_and_stitch_seconds: Option<f64>,
    /// `(top, left, height, width)` of the pixels where the stride-1 sliding window ran.
    pub stride1_region: Option<(usize, usize, usize, usize)>,
    pub output_size_rule: String,
    /// The segmentation of the scene in detail.
    pub scene: SceneReport,
}

/// The default output folder of a run: `runs/assignment1-classify-to-segment/<arch>-seed<seed>`.
pub fn default_out_dir(arch: Arch, seed: u64) -> PathBuf {
    Path::new("runs")
        .join("assignment1-classify-to-segment")
        .join(format!("{arch}-seed{seed}"))
}

/// The full run; writes `config.json`, `history.csv/json`, `loss.png`,
/// `checkpoint.safetensors`, `metrics.json` and `predictions/*.png` into `cfg.out`.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunMetrics> {
    let device = open_device(cfg.device.parse::<DeviceChoice>()?)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create output folder {:?}", cfg.out))?;
    let source = locate_data(cfg.data_dir.as_deref())?;
    let (patches, scene, data) = match &source {
        DataSource::Real(dir) => {
            eprintln!("data: {dir:?}");
            (load_patches(dir)?, load_scene(dir)?, "real")
        }
        DataSource::Generated => {
            let (patches, scene) = generated_data(cfg.generated_patches, cfg.seed);
            (patches, scene, "generated")
        }
    };
    let (train, val) = split_train_val(patches, cfg.val_fraction, cfg.seed)?;
    eprintln!(
        "{} training and {} validation patches; device {}; arch {} {:?}",
        train.len(),
        val.len(),
        device_name(&device),
        cfg.arch,
        cfg.arch.spec()
    );
    let mut run_config = serde_json::to_value(cfg)?;
    run_config["arch_spec"] = serde_json::to_value(cfg.arch.spec())?;
    run_config["data"] = data.into();
    write_atomic(
        &cfg.out.join("config.json"),
        &serde_json::to_vec_pretty(&run_config)?,
    )?;

    let settings = TrainSettings {
        arch: cfg.arch.spec(),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        learning_rate: cfg.learning_rate,
        label_smoothing: cfg.label_smoothing,
        seed: cfg.seed,
        out_dir: cfg.out.clone(),
        run_config,
        progress: cfg.progress,
    };
    let n_train = train.len();
    let trained = train_classifier(&settings, train, &val, &device)?;
    let classifier = trained.classifier;
    let val_score = if val.is_empty() {
        eprintln!("no validation patches (--val-fraction 0): accuracy not measured");
        None
    } else {
        Some(score_patches(&classifier, &val, &device)?)
    };

    let fcn = classifier.to_fcn()?;
    eprintln!("{}", output_size_rule());
    let patch_diff = if val.is_empty() {
        0.0
    } else {
        fcn_vs_classifier_on_patches(&classifier, &fcn, &val, &device)?
    };
    let options = SegmentOptions {
        compare: cfg.compare,
        window_batch: cfg.window_batch,
        stride1_region: cfg.stride1_region,
        progress: cfg.progress,
    };
    let report = segment_scene(&classifier, &scene, &device, &options)?;
    write_pictures(&cfg.out.join("predictions"), &scene, &report)?;

    let comparison = report.comparison.as_ref();
    let metrics = RunMetrics {
        data: data.into(),
        arch: cfg.arch.spec(),
        train_patches: n_train,
        val_patches: val.len(),
        val_accuracy: val_score.map_or(f64::NAN, |s| s.accuracy),
        val_loss: val_score.map_or(f64::NAN, |s| s.loss),
        flower_iou: report.score.map(|s| s.flower_iou),
        flower_pixel_accuracy: report.score.map(|s| s.pixel_accuracy),
        fcn_vs_classifier_max_abs_diff: patch_diff
            .max(comparison.map_or(0.0, |c| c.fcn_vs_sliding_stride4_max_abs_diff)),
        fcn_vs_classifier_on_patches_max_abs_diff: patch_diff,
        fcn_seconds: report.fcn_seconds,
        sliding_window_stride4_seconds: comparison.map(|c| c.sliding_window_stride4_seconds),
        sliding_window_stride1_seconds: comparison.map(|c| c.sliding_window_stride1_seconds),
        shift_and_stitch_seconds: comparison.map(|c| c.shift_and_stitch_seconds),
        stride1_region: comparison.map(|c| c.stride1_region),
        output_size_rule: output_size_rule(),
        scene: report,
    };
    write_atomic(
        &cfg.out.join("metrics.json"),
        &serde_json::to_vec_pretty(&metrics)?,
    )?;
    print_summary(&metrics, &cfg.out);
    Ok(metrics)
}

/// The closing lines of a run on stdout.
fn print_summary(m: &RunMetrics, out: &Path) {
    let percent = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}%", 100.0 * v));
    println!("data {}  arch {:?}", m.data, m.arch);
    println!(
        "validation accuracy {}  ({} patches)",
        percent(Some(m.val_accuracy)),
        m.val_patches
    );
    let (h, w) = m.scene.image_size;
    let (r, c) = m.scene.fcn_map_size;
    println!(
        "{}: {h}x{w} image -> {r}x{c} FCN map (padded input)",
        out.display()
    );
    println!(
        "flower IoU {}  pixel accuracy {}  (FCN, stride 4, upsampled)",
        percent(m.flower_iou),
        percent(m.flower_pixel_accuracy)
    );
    println!(
        "max |classifier - FCN| = {:.2e}  (validation patches and every stride-4 window)",
        m.fcn_vs_classifier_max_abs_diff
    );
    if let Some(c) = &m.scene.comparison {
        println!(
            "FCN {:.3}s  vs sliding window stride 4 {:.3}s: {:.1}x faster, max diff {:.2e}",
            m.fcn_seconds,
            c.sliding_window_stride4_seconds,
            c.speedup_fcn_vs_sliding_stride4,
            c.fcn_vs_sliding_stride4_max_abs_diff
        );
        let (top, left, rh, rw) = c.stride1_region;
        println!(
            "stride 1 on the {rh}x{rw} pixels at ({top}, {left}): shift-and-stitch {:.3}s  vs sliding window {:.3}s: {:.1}x faster, max diff {:.2e}",
            c.shift_and_stitch_seconds,
            c.sliding_window_stride1_seconds,
            c.speedup_shift_and_stitch_vs_sliding_stride1,
            c.shift_and_stitch_vs_sliding_stride1_max_abs_diff
        );
        println!(
            "shift-and-stitch over the whole image: {:.3}s",
            c.shift_and_stitch_full_image_seconds
        );
        if let Some(s) = c.stride1_score {
            println!(
                "stride-1 map (whole image): flower IoU {}  pixel accuracy {}",
                percent(Some(s.flower_iou)),
                percent(Some(s.pixel_accuracy))
            );
        }
    }
    println!(
        "wrote {} {} {} config.json metrics.json predictions/",
        CHECKPOINT_FILE, HISTORY_CSV, LOSS_PNG
    );
}

/// What the `segment` command needs.
#[derive(Debug, Clone)]
pub struct SegmentConfig {
    /// A checkpoint written by a full run.
    pub checkpoint: PathBuf,
    /// The image to segment.
    pub image: PathBuf,
    /// An optional reference mask (palette or grey PNG; non-zero = flower).
    pub mask: Option<PathBuf>,
    pub out: PathBuf,
    pub device: String,
    pub compare: bool,
    pub window_batch: usize,
    pub stride1_region: Option<usize>,
    pub progress: bool,
}

/// Rebuilds the classifier a full run saved in `path`.
pub fn load_classifier(path: &Path, device: &Device) -> anyhow::Result<Classifier> {
    let checkpoint = load_checkpoint(path, device)?;
    let spec: ArchSpec = serde_json::from_value(checkpoint.meta.config["arch_spec"].clone())
        .with_context(|| {
            format!("checkpoint {path:?} does not record the classifier's arch_spec")
        })?;
    let (classifier, varmap) = new_classifier(&spec, 0, device)?;
    load_into_varmap(&varmap, &checkpoint.model)
        .with_context(|| format!("checkpoint {path:?} does not fit a classifier {spec:?}"))?;
    Ok(classifier)
}

/// Segments one image with a saved classifier; writes `predictions/*.png` and
/// `metrics.json` (the scene report) into `cfg.out`.
pub fn segment(cfg: &SegmentConfig) -> anyhow::Result<SceneReport> {
    let device = open_device(cfg.device.parse::<DeviceChoice>()?)?;
    let classifier = load_classifier(&cfg.checkpoint, &device)?;
    let image = load_image(&cfg.image)?;
    let mask = match &cfg.mask {
        Some(path) => {
            let mask = load_grey_mask(path, 1)?;
            let (_, h, w) = image.dim();
            if mask.dim() != (h, w) {
                anyhow::bail!(
                    "mask {path:?} is {}x{} but image {:?} is {h}x{w}",
                    mask.nrows(),
                    mask.ncols(),
                    cfg.image
                );
            }
            Some(mask)
        }
        None => None,
    };
    let name = cfg
        .image
        .file_stem()
        .map_or("image".into(), |s| s.to_string_lossy().into_owned());
    let scene = Scene { name, image, mask };
    let options = SegmentOptions {
        compare: cfg.compare,
        window_batch: cfg.window_batch,
        stride1_region: cfg.stride1_region,
        progress: cfg.progress,
    };
    let report = segment_scene(&classifier, &scene, &device, &options)?;
    write_pictures(&cfg.out.join("predictions"), &scene, &report)?;
    write_atomic(
        &cfg.out.join("metrics.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    let (r, c) = report.fcn_map_size;
    println!(
        "{:?}: {}x{} -> {r}x{c} FCN map in {:.3}s",
        cfg.image, report.image_size.0, report.image_size.1, report.fcn_seconds
    );
    if let Some(s) = report.score {
        println!(
            "flower IoU {:.2}%  pixel accuracy {:.2}%",
            100.0 * s.flower_iou,
            100.0 * s.pixel_accuracy
        );
    }
    println!("wrote {:?}", cfg.out.join("predictions"));
    Ok(report)
}
