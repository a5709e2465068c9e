//! What the programs give back: the typed contents of `metrics.json` for `train`
//! ([`Report`]) and `evaluate` ([`EvaluateReport`]), and the summaries they print.

use std::path::PathBuf;

use common::data::locate::Located;
use serde::Serialize;

use crate::evaluate::Metrics;
use crate::model::UNetConfig;

/// A training run, as its `metrics.json` holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the data came from.
    pub data: Located,
    /// The device trained on (`cpu`, `cuda`).
    pub device: String,
    /// The net's sizes.
    pub model: UNetConfig,
    /// Trainable parameters of the net.
    pub n_parameters: usize,
    /// Side of the training crops used (`--crop`, shrunk to the smallest training image).
    pub crop: usize,
    /// Ids of the held-back images.
    pub held_back: Vec<String>,
    /// Figures on the held-back whole images after the last epoch.
    pub evaluation: Metrics,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
}

impl Report {
    /// The closing lines `train` prints.
    pub fn summary(&self) -> String {
        let mut text = metrics_lines(&self.evaluation, self.n_parameters);
        if self.data.is_generated() {
            text.push_str("\n(GENERATED data: no ISBI data was found)");
        }
        text.push_str(&format!("\nfinished in {:.1} min", self.seconds / 60.0));
        text
    }
}

/// An `evaluate` run, as its `metrics.json` holds it.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    /// The checkpoint evaluated.
    pub checkpoint: PathBuf,
    /// Where the data came from.
    pub data: Located,
    /// The net's sizes.
    pub model: UNetConfig,
    /// Trainable parameters of the net.
    pub n_parameters: usize,
    /// Ids of the held-back images evaluated.
    pub held_back: Vec<String>,
    /// Figures on those images.
    pub evaluation: Metrics,
}

impl EvaluateReport {
    /// The lines `evaluate` prints.
    pub fn summary(&self) -> String {
        metrics_lines(&self.evaluation, self.n_parameters)
    }
}

/// One line per class (Dice, IoU), then the mean foreground figures and pixel accuracy.
pub fn metrics_lines(metrics: &Metrics, n_parameters: usize) -> String {
    let pct = |v: Option<&Option<f64>>| match v.copied().flatten() {
        Some(v) => format!("{:6.2}%", 100.0 * v),
        None => "   n/a".into(),
    };
    let mut text = String::new();
    for (index, name) in metrics.class_names.iter().enumerate() {
        text.push_str(&format!(
            "class {index} {name:<12} Dice {}  IoU {}\n",
            pct(metrics.scores.dice_per_class.get(name)),
            pct(metrics.scores.iou_per_class.get(name))
        ));
    }
    text.push_str(&format!(
        "mean foreground Dice {:.2}%  IoU {:.2}%  pixel accuracy {:.2}%  ({} images, {n_parameters} parameters)",
        100.0 * metrics.dice,
        100.0 * metrics.iou,
        100.0 * metrics.scores.pixel_accuracy,
        metrics.n_images,
    ));
    if let Some(rand) = metrics.rand {
        text.push_str(&format!(
            "\nV_rand {:.4} (split {:.4}, merge {:.4}; the ISBI 2012 challenge's foreground-restricted Rand score)",
            rand.v_rand, rand.v_split, rand.v_merge
        ));
    }
    text
}
