//! What the program reports: the typed [`Report`] that is a training run's
//! `metrics.json`, the reports of `evaluate` and `predict`, the run folder's
//! `loss.png` over both phases, and the closing summaries printed to stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::data::locate::Located;
use common::metrics::Scores;
use common::plot::{plot_loss_curves, Curve};
use common::run_dir::RunDir;
use common::train::{EpochRecord, History};
use serde::Serialize;

use crate::config::EvalSplit;
use crate::weights::WeightsInfo;

/// A training run's `metrics.json`: the final head's figures on val and how it got there.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The final head on the val split.
    #[serde(flatten)]
    pub scores: Scores,
    /// Mean pixel cross-entropy on val (unweighted, at the feature resolution).
    pub val_loss: f64,
    /// Val mIoU of the phase-1 head alone (before fine-tuning).
    pub head_only_mean_iou: f64,
    /// The classes, in label order.
    pub class_names: Vec<String>,
    /// `Z`, the hypercolumn length.
    pub feature_dim: usize,
    pub n_sampled_features: usize,
    /// Sampled hypercolumns of each class.
    pub sampled_per_class: BTreeMap<String, usize>,
    pub n_train_images: usize,
    pub n_val_images: usize,
    pub backbone: WeightsInfo,
    pub data: Located,
    pub timings: Timings,
}

/// Seconds of each step of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// The pass over the training split (absent when the sampled features came from the cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_extraction_s: Option<f64>,
    /// The VGG per image, when every training image went through it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgg_forward_s_per_image: Option<f64>,
    pub val_extraction_s: f64,
    pub head_training_s: f64,
    pub finetune_s: f64,
    pub evaluation_s: f64,
    pub total_s: f64,
}

/// The `evaluate` subcommand's `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    /// The training run whose head was scored.
    pub run: PathBuf,
    pub split: EvalSplit,
    #[serde(flatten)]
    pub scores: Scores,
    /// Mean pixel cross-entropy (unweighted, at the feature resolution).
    pub loss: f64,
    /// The classes, in label order.
    pub class_names: Vec<String>,
    pub n_images: usize,
    pub data: Located,
    pub backbone: WeightsInfo,
    pub seconds: f64,
}

/// The `predict` subcommand's `predictions.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PredictReport {
    /// The training run whose head predicted.
    pub run: PathBuf,
    pub backbone: WeightsInfo,
    pub images: Vec<Prediction>,
}

/// One image given to `predict` and what was written for it.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    /// `image | prediction` side by side.
    pub panel: PathBuf,
    /// The labels in the palette's colours.
    pub mask: PathBuf,
    /// The share of the image's pixels given to each class that occurs.
    pub class_fractions: BTreeMap<String, f64>,
}

/// `loss.png` of the run folder: both phases on one epoch axis (fine-tuning continues
/// after the head's epochs), with the val mIoU beside it.
pub fn plot_phases(dir: &RunDir, head: &History, finetune: &History) -> anyhow::Result<()> {
    let offset = head.epochs.len() as f64;
    let points = |h: &History, shift: f64, f: &dyn Fn(&EpochRecord) -> Option<f64>| {
        h.epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64 + shift, v)))
            .collect::<Vec<_>>()
    };
    let both = |f: &dyn Fn(&EpochRecord) -> Option<f64>| {
        [points(head, 0.0, f), points(finetune, offset, f)].concat()
    };
    let losses = vec![
        Curve::new(
            "head train loss (sampled pixels)",
            points(head, 0.0, &|e| Some(e.train_loss)),
        ),
        Curve::new(
            "fine-tune train loss (whole images)",
            points(finetune, offset, &|e| Some(e.train_loss)),
        ),
        Curve::new("val loss", both(&|e| e.val_loss)),
    ];
    let miou = Curve::new("val mIoU", both(&|e| e.metric));
    plot_loss_curves(
        &dir.loss_png(),
        "hypercolumn head: phase 1 (sampled features), then phase 2 (fine-tuning)",
        &losses,
        Some(&miou),
    )
}

/// Prints the overall figures and the IoU of every class.
fn print_scores(scores: &Scores, class_names: &[String]) {
    println!(
        "  pixel accuracy      {:6.2}%",
        100.0 * scores.pixel_accuracy
    );
    println!(
        "  mean accuracy       {:6.2}%",
        100.0 * scores.mean_accuracy
    );
    println!("  mean IoU            {:6.2}%", 100.0 * scores.mean_iou);
    println!("  frequency-weighted  {:6.2}%", 100.0 * scores.fw_iou);
    println!("  per-class IoU:");
    for name in class_names {
        match scores.iou_per_class.get(name).copied().flatten() {
            Some(v) => println!("    {name:<14} {:6.2}%", 100.0 * v),
            None => println!("    {name:<14}    n/a"),
        }
    }
}

impl Report {
    /// The closing summary of a training run written into `out`.
    pub fn print(&self, out: &Path) {
        println!("\nval results ({:?} data):", self.data.origin);
        print_scores(&self.scores, &self.class_names);
        println!(
            "  head alone before fine-tuning: mean IoU {:.2}%",
            100.0 * self.head_only_mean_iou
        );
        println!(
            "  {} sampled features; backbone {}; {:.1} s in all; outputs in {}",
            self.n_sampled_features,
            self.backbone,
            self.timings.total_s,
            out.display()
        );
    }
}

impl EvaluateReport {
    /// The closing summary of `evaluate`, written into `out`.
    pub fn print(&self, out: &Path) {
        println!(
            "\n{:?} results of {} ({} images, {:?} data):",
            self.split,
            self.run.display(),
            self.n_images,
            self.data.origin
        );
        print_scores(&self.scores, &self.class_names);
        println!("  {:.1} s; outputs in {}", self.seconds, out.display());
    }
}

impl PredictReport {
    /// One line per image: where its pictures went.
    pub fn print(&self) {
        for p in &self.images {
            println!(
                "{} -> {}, {}",
                p.image.display(),
                p.panel.display(),
                p.mask.display()
            );
        }
    }
}
