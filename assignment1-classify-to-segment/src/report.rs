//! What the commands measure, as `metrics.json` holds it (each figure once), and
//! the closing summary each prints on stdout (`Display`).

use std::fmt;
use std::path::PathBuf;

use common::data::locate::Located;
use common::nn::ReceptiveField;
use common::run_dir::{
    CHECKPOINT_FILE, CONFIG_FILE, HISTORY_CSV, LOSS_PNG, METRICS_FILE, PREDICTIONS_DIR,
};
use serde::Serialize;

use crate::evaluate::PatchScore;
use crate::model::ArchSpec;
use crate::scene::SceneReport;

/// What a training run measured (its `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the patches and the scene came from.
    pub data: Located,
    pub train_patches: usize,
    /// The trained classifier measured on the validation patches and the scene.
    pub evaluation: Evaluation,
    /// The FCN's output size rule in words.
    pub output_size_rule: String,
    /// The FCN's receptive-field table (per layer kernel, stride, dilation,
    /// padding, jump and field; `common::nn::receptive_field_table`).
    pub receptive_field: ReceptiveField,
    /// The widths trained (recorded in `config.json` as `arch_spec`).
    #[serde(skip)]
    pub arch: ArchSpec,
    /// The run folder.
    #[serde(skip)]
    pub out: PathBuf,
}

/// A classifier measured on the validation patches and on the scene.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub val_patches: usize,
    /// Accuracy and loss on the validation patches (none without them).
    pub val: Option<PatchScore>,
    /// Max |classifier - FCN| on the validation patches (32x32 input, 1x1 output).
    pub fcn_vs_classifier_on_patches_max_abs_diff: Option<f32>,
    /// The segmentation of the scene (and the comparison with the naive methods).
    pub scene: SceneReport,
}

/// What `evaluate` measured (its `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    /// The training run evaluated.
    pub run: PathBuf,
    pub data: Located,
    pub evaluation: Evaluation,
    /// The folder written.
    #[serde(skip)]
    pub out: PathBuf,
}

/// What `predict` measured (its `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    pub image: PathBuf,
    pub checkpoint: PathBuf,
    pub scene: SceneReport,
    /// The folder written.
    #[serde(skip)]
    pub out: PathBuf,
}

/// `98.91%`, or `n/a`.
fn percent(value: Option<f64>) -> String {
    value.map_or("n/a".to_string(), |v| format!("{:.2}%", 100.0 * v))
}

/// `data "<root>"`, or `data generated`.
fn data_name(data: &Located) -> String {
    data.root
        .as_ref()
        .map_or("generated".to_string(), |root| format!("{root:?}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data {}  arch {:?}", data_name(&self.data), self.arch)?;
        writeln!(
            f,
            "receptive field {} px, stride {}:\n{}",
            self.receptive_field.receptive_field,
            self.receptive_field.jump,
            self.receptive_field.to_text().trim_end()
        )?;
        write!(f, "{}", self.evaluation)?;
        write!(
            f,
            "wrote {}: {CHECKPOINT_FILE} {HISTORY_CSV} {LOSS_PNG} {CONFIG_FILE} {METRICS_FILE} {PREDICTIONS_DIR}/",
            self.out.display()
        )
    }
}

impl fmt::Display for EvaluateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "run {}  data {}",
            self.run.display(),
            data_name(&self.data)
        )?;
        write!(f, "{}", self.evaluation)?;
        write!(
            f,
            "wrote {}: {CONFIG_FILE} {METRICS_FILE} {PREDICTIONS_DIR}/",
            self.out.display()
        )
    }
}

impl fmt::Display for PredictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scene;
        let (r, c) = s.fcn_map_size;
        writeln!(
            f,
            "{:?}: {}x{} -> {r}x{c} FCN map in {:.3}s",
            self.image, s.image_size.0, s.image_size.1, s.fcn_seconds
        )?;
        if let Some(score) = s.score {
            writeln!(
                f,
                "flower IoU {}  pixel accuracy {}",
                percent(Some(score.flower_iou)),
                percent(Some(score.pixel_accuracy))
            )?;
        }
        if s.comparison.is_some() {
            write_comparison(f, s)?;
        }
        write!(
            f,
            "wrote {}: {CONFIG_FILE} {METRICS_FILE} {PREDICTIONS_DIR}/",
            self.out.display()
        )
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scene;
        writeln!(
            f,
            "validation accuracy {}  ({} patches)",
            percent(self.val.map(|v| v.accuracy)),
            self.val_patches
        )?;
        let ((h, w), (r, c)) = (s.image_size, s.fcn_map_size);
        writeln!(f, "{h}x{w} image -> {r}x{c} FCN map (padded input)")?;
        writeln!(
            f,
            "flower IoU {}  pixel accuracy {}  (FCN, stride 4, upsampled)",
            percent(s.score.map(|m| m.flower_iou)),
            percent(s.score.map(|m| m.pixel_accuracy))
        )?;
        let stride4 = s
            .comparison
            .as_ref()
            .map(|c| c.fcn_vs_sliding_stride4_max_abs_diff);
        let worst = self
            .fcn_vs_classifier_on_patches_max_abs_diff
            .into_iter()
            .chain(stride4)
            .fold(0f32, f32::max);
        writeln!(
            f,
            "max |classifier - FCN| = {worst:.2e}  (validation patches and every stride-4 window)"
        )?;
        write_comparison(f, s)
    }
}

/// The lines of the comparison with the naive methods, if one was made.
fn write_comparison(f: &mut fmt::Formatter<'_>, s: &SceneReport) -> fmt::Result {
    let Some(c) = &s.comparison else {
        return Ok(());
    };
    writeln!(
        f,
        "FCN {:.3}s  vs sliding window stride 4 {:.3}s: {:.1}x faster, max diff {:.2e}",
        s.fcn_seconds,
        c.sliding_window_stride4_seconds,
        c.speedup_fcn_vs_sliding_stride4,
        c.fcn_vs_sliding_stride4_max_abs_diff
    )?;
    let (top, left, rh, rw) = c.stride1_region;
    writeln!(
        f,
        "stride 1 on the {rh}x{rw} pixels at ({top}, {left}): shift-and-stitch {:.3}s  vs sliding window {:.3}s: {:.1}x faster, max diff {:.2e}",
        c.shift_and_stitch_seconds,
        c.sliding_window_stride1_seconds,
        c.speedup_shift_and_stitch_vs_sliding_stride1,
        c.shift_and_stitch_vs_sliding_stride1_max_abs_diff
    )?;
    writeln!(
        f,
        "shift-and-stitch over the whole image: {:.3}s",
        c.shift_and_stitch_full_image_seconds
    )?;
    if let Some(m) = c.stride1_score {
        writeln!(
            f,
            "stride-1 map (whole image): flower IoU {}  pixel accuracy {}",
            percent(Some(m.flower_iou)),
            percent(Some(m.pixel_accuracy))
        )?;
    }
    Ok(())
}
