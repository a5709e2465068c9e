//! What `metrics.json` holds, as types: per net its figures on the scoring image
//! ([`VariantScores`]), for a training run also how its training went
//! ([`VariantReport`]); the comparison of the nets ([`Report`], [`EvaluateReport`]);
//! and the closing table the program prints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::data::locate::Located;
use common::nn::ReceptiveField;
use serde::{Deserialize, Serialize};

use crate::model::Variant;

/// The figures of one net on the scoring image (full resolution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantScores {
    /// Flower IoU of the segmentation of the photo.
    pub flower_iou: f64,
    /// Pixel accuracy of the same.
    pub flower_pixel_accuracy: f64,
    /// Pixel accuracy over the training patches (not augmented).
    pub train_pixel_accuracy: f64,
    /// Number of trained parameters.
    pub parameters: usize,
    /// Mean |p - mean of its 4 neighbours| of the flower probability map: high
    /// for checkerboard texture, low for smooth maps.
    pub probability_roughness: f64,
    /// The net's receptive-field table (per layer kernel, stride, dilation,
    /// padding, jump and field; `common::nn::receptive_field_table`).
    pub receptive_field: ReceptiveField,
}

/// One trained net: its figures, and how its training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    #[serde(flatten)]
    pub scores: VariantScores,
    /// Wall-clock seconds of training (and the per-epoch training-accuracy check).
    pub train_seconds: f64,
    /// Mean training loss of the first and the last epoch.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
}

/// What the scored image and the device were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Where the data came from (`origin`, `root`).
    pub data: Located,
    /// `"cpu"` or `"cuda"`.
    pub device: String,
    /// Size of the scored image, `[height, width]`.
    pub image_size: [usize; 2],
    /// Number of training pairs.
    pub train_samples: usize,
}

/// A training run's `metrics.json`: the nets it trained, compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub setting: Setting,
    /// Per variant, by name.
    pub variants: BTreeMap<String, VariantReport>,
    /// The variant with the highest flower IoU.
    pub best: Option<String>,
}

/// `evaluate`'s `metrics.json`: a saved run's nets re-scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateReport {
    /// The training run folder the nets came from.
    pub run: PathBuf,
    #[serde(flatten)]
    pub setting: Setting,
    /// Per variant, by name.
    pub variants: BTreeMap<String, VariantScores>,
    /// The variant with the highest flower IoU.
    pub best: Option<String>,
}

impl Report {
    /// The report of the trained `variants`, with the best one picked.
    pub fn new(setting: Setting, variants: BTreeMap<String, VariantReport>) -> Self {
        let best = best(variants.iter().map(|(name, v)| (name, &v.scores)));
        Self {
            setting,
            variants,
            best,
        }
    }

    /// The closing table, one row per net.
    pub fn print(&self) {
        print_table(
            self.variants
                .iter()
                .map(|(name, v)| (name.as_str(), &v.scores, Some(v.train_seconds))),
        );
        print_best(self.best.as_deref());
    }
}

impl EvaluateReport {
    /// The report of the re-scored `variants`, with the best one picked.
    pub fn new(run: PathBuf, setting: Setting, variants: BTreeMap<String, VariantScores>) -> Self {
        let best = best(variants.iter());
        Self {
            run,
            setting,
            variants,
            best,
        }
    }

    /// The closing table, one row per net.
    pub fn print(&self) {
        print_table(
            self.variants
                .iter()
                .map(|(name, scores)| (name.as_str(), scores, None)),
        );
        print_best(self.best.as_deref());
    }
}

/// The name with the highest flower IoU.
fn best<'a>(scores: impl Iterator<Item = (&'a String, &'a VariantScores)>) -> Option<String> {
    scores
        .max_by(|a, b| a.1.flower_iou.total_cmp(&b.1.flower_iou))
        .map(|(name, _)| name.clone())
}

/// One line per net (in [`Variant::ALL`] order), training seconds where known.
fn print_table<'a>(rows: impl Iterator<Item = (&'a str, &'a VariantScores, Option<f64>)>) {
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by_key(|(name, _, _)| Variant::ALL.iter().position(|v| v.name() == *name));
    println!(
        "{:<11} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>6} {:>6}",
        "model",
        "flower IoU",
        "pixel acc",
        "train acc",
        "parameters",
        "seconds",
        "roughness",
        "field",
        "grid"
    );
    for (name, v, seconds) in rows {
        let seconds = seconds.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "{name:<11} {:>9.2}% {:>9.2}% {:>9.2}% {:>10} {seconds:>9} {:>10.4} {:>6} {:>6}",
            100.0 * v.flower_iou,
            100.0 * v.flower_pixel_accuracy,
            100.0 * v.train_pixel_accuracy,
            v.parameters,
            v.probability_roughness,
            v.receptive_field.receptive_field,
            format!("1/{}", v.receptive_field.coarsest_jump)
        );
    }
}

fn print_best(best: Option<&str>) {
    if let Some(best) = best {
        println!("best: {best}");
    }
}
