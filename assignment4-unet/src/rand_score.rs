//! The ISBI 2012 challenge's own metric, the foreground-restricted Rand score
//! `V_rand` (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image
//! segmentation algorithms for connectomics", Frontiers in Neuroanatomy 9:142).
//!
//! Truth and prediction are read as segmentations: connected cells are segments,
//! membranes the boundaries between them. Only pixels inside a true cell count
//! ("foreground-restricted"); there, `p_ij` is the fraction of those pixels in
//! predicted segment `i` and true segment `j` (predicted membrane is one more
//! segment, 0), `s_i = Σ_j p_ij`, `t_j = Σ_i p_ij`, and
//!
//! - `V_split = Σ p_ij² / Σ t_j²` (1 when no true cell is split),
//! - `V_merge = Σ p_ij² / Σ s_i²` (1 when no two true cells are merged),
//! - `V_rand = 2 Σ p_ij² / (Σ s_i² + Σ t_j²)`, their harmonic mean (α = 0.5).

use std::collections::HashMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use common::segments::connected_components;

/// The Rand scores of one or more images (all in 0..=1, higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandScore {
    pub v_rand: f64,
    pub v_split: f64,
    pub v_merge: f64,
}

/// The counts behind [`RandScore`], summed over images before the ratios are taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RandCounts {
    /// `Σ n_ij²`, `Σ n_i²` (predicted), `Σ n_j²` (true), over the counted pixels.
    pub joint: f64,
    pub predicted: f64,
    pub truth: f64,
}

impl RandCounts {
    /// The counts of one image from its true and predicted label masks, `cell`
    /// being the class whose connected components are the segments.
    pub fn of_masks(truth: &Array2<u8>, predicted: &Array2<u8>, cell: u8) -> Self {
        let truth = connected_components(truth, cell).labels;
        let predicted = connected_components(predicted, cell).labels;
        Self::of_segments(&truth, &predicted)
    }

    /// The counts of one image from segment numbers (0 = boundary) of truth and prediction.
    pub fn of_segments(truth: &Array2<u32>, predicted: &Array2<u32>) -> Self {
        let mut joint = HashMap::<(u32, u32), f64>::new();
        let mut by_pred = HashMap::<u32, f64>::new();
        let mut by_truth = HashMap::<u32, f64>::new();
        for (&t, &p) in truth.iter().zip(predicted.iter()).filter(|(&t, _)| t != 0) {
            *joint.entry((p, t)).or_default() += 1.0;
            *by_pred.entry(p).or_default() += 1.0;
            *by_truth.entry(t).or_default() += 1.0;
        }
        let squares = |counts: &mut dyn Iterator<Item = f64>| counts.map(|n| n * n).sum::<f64>();
        Self {
            joint: squares(&mut joint.into_values()),
            predicted: squares(&mut by_pred.into_values()),
            truth: squares(&mut by_truth.into_values()),
        }
    }

    /// Adds another image's counts.
    pub fn add(&mut self, other: RandCounts) {
        self.joint += other.joint;
        self.predicted += other.predicted;
        self.truth += other.truth;
    }

    /// The scores; all 1 when no pixel was counted (no true cell anywhere).
    pub fn score(&self) -> RandScore {
        let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 1.0 };
        RandScore {
            v_rand: ratio(2.0 * self.joint, self.predicted + self.truth),
            v_split: ratio(self.joint, self.truth),
            v_merge: ratio(self.joint, self.predicted),
        }
    }
}
