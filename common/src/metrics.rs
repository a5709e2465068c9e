//! Segmentation metrics from a confusion matrix: pixel accuracy, mean class
//! accuracy, IoU per class, mean IoU, frequency-weighted IoU and Dice, as defined
//! in Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic
//! Segmentation" (CVPR 2015), section 5.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use candle::{DType, Tensor};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::data::IGNORE_LABEL;
use crate::Result;

/// Pixel counts over `K` classes: `counts[[truth, prediction]]` (rows = truth,
/// columns = prediction).
///
/// Pixels whose truth is [`IGNORE_LABEL`] (255) are skipped entirely, whatever
/// their prediction. Any other truth or prediction outside `0..K` is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    counts: Array2<u64>,
}

impl ConfusionMatrix {
    /// An empty `n_classes x n_classes` matrix.
    pub fn new(n_classes: usize) -> Self {
        Self {
            counts: Array2::zeros((n_classes, n_classes)),
        }
    }

    /// Number of classes `K`.
    pub fn n_classes(&self) -> usize {
        self.counts.nrows()
    }

    /// The raw counts, `(K, K)`, rows = truth, columns = prediction.
    pub fn counts(&self) -> &Array2<u64> {
        &self.counts
    }

    /// Number of pixels counted (ignored pixels excluded).
    pub fn total(&self) -> u64 {
        self.counts.sum()
    }

    /// Sets every count back to zero.
    pub fn reset(&mut self) {
        self.counts.fill(0);
    }

    /// Counts the pixel pairs of `pred` and `truth` (same length, any label type
    /// that widens to `u64`, such as `u8` or `u32`).
    ///
    /// Truth 255 is ignored. On error (length mismatch, a label outside `0..K`)
    /// the matrix is left unchanged.
    pub fn update<P, T>(&mut self, pred: &[P], truth: &[T]) -> Result<()>
    where
        P: Copy + Into<u64>,
        T: Copy + Into<u64>,
    {
        if pred.len() != truth.len() {
            bail!(
                "confusion matrix update: prediction has {} pixels but truth has {}",
                pred.len(),
                truth.len()
            );
        }
        let pairs = pred.iter().map(|&p| p.into() as i64);
        let truths = truth.iter().map(|&t| t.into() as i64);
        self.add_pairs(pairs.zip(truths).collect::<Vec<_>>())
    }

    /// Counts the pixels of two integer tensors of the same shape, usually
    /// `(N, H, W)`: predictions (for example `logits.argmax(1)`, any integer dtype)
    /// and truth (`u32`, or any integer dtype). Float tensors are an error.
    pub fn update_tensors(&mut self, pred: &Tensor, truth: &Tensor) -> Result<()> {
        if pred.dims() != truth.dims() {
            bail!(
                "confusion matrix update: prediction shape {:?} differs from truth shape {:?}",
                pred.dims(),
                truth.dims()
            );
        }
        let pred = tensor_labels(pred, "prediction")?;
        let truth = tensor_labels(truth, "truth")?;
        self.add_pairs(pred.into_iter().zip(truth).collect())
    }

    /// Validates every `(prediction, truth)` pair first, then counts them, so that
    /// an error leaves the matrix as it was.
    fn add_pairs(&mut self, pairs: Vec<(i64, i64)>) -> Result<()> {
        let k = self.n_classes() as i64;
        let ignore = IGNORE_LABEL as i64;
        for (index, &(p, t)) in pairs.iter().enumerate() {
            if t == ignore {
                continue;
            }
            if t < 0 || t >= k {
                bail!("truth label {t} at pixel {index} is outside 0..{k} (and is not the ignore label 255)");
            }
            if p < 0 || p >= k {
                bail!("predicted label {p} at pixel {index} is outside 0..{k}");
            }
        }
        for (p, t) in pairs {
            if t != ignore {
                self.counts[[t as usize, p as usize]] += 1;
            }
        }
        Ok(())
    }

    /// Adds the counts of `other` (for example from another batch or worker).
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.n_classes() != self.n_classes() {
            bail!(
                "cannot merge a confusion matrix of {} classes into one of {}",
                other.n_classes(),
                self.n_classes()
            );
        }
        self.counts += &other.counts;
        Ok(())
    }

    /// Pixels of class `c` in the truth (row sum).
    fn truth_count(&self, c: usize) -> u64 {
        self.counts.row(c).sum()
    }

    /// Pixels predicted as class `c` (column sum).
    fn pred_count(&self, c: usize) -> u64 {
        self.counts.column(c).sum()
    }

    /// Correctly labelled pixels / all counted pixels; NaN when nothing was counted.
    pub fn pixel_accuracy(&self) -> f64 {
        let correct: u64 = self.counts.diag().sum();
        correct as f64 / self.total() as f64
    }

    /// Recall of each class, `counts[c][c] / truth pixels of c`; `None` when class
    /// `c` never occurs in the truth.
    pub fn accuracy_per_class(&self) -> Vec<Option<f64>> {
        (0..self.n_classes())
            .map(|c| {
                let truth = self.truth_count(c);
                (truth > 0).then(|| self.counts[[c, c]] as f64 / truth as f64)
            })
            .collect()
    }

    /// Mean of [`accuracy_per_class`](Self::accuracy_per_class) over the classes
    /// present in the truth; NaN when no class is.
    pub fn mean_accuracy(&self) -> f64 {
        mean_of_some(&self.accuracy_per_class())
    }

    /// IoU of each class, `tp / (truth + predicted - tp)`; `None` when the class
    /// occurs neither in the truth nor in the prediction (0/0).
    pub fn iou_per_class(&self) -> Vec<Option<f64>> {
        (0..self.n_classes())
            .map(|c| {
                let tp = self.counts[[c, c]];
                let union = self.truth_count(c) + self.pred_count(c) - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// Mean IoU over the classes that occur in the truth or the prediction
    /// (`truth + predicted > 0`); classes absent from both are skipped rather than
    /// counted as 0 or 1. A class predicted but absent from the truth counts with
    /// IoU 0. NaN when no class occurs.
    pub fn mean_iou(&self) -> f64 {
        // BEGIN SOLUTION a3.miou the mean of iou_per_class over the classes that occur
        mean_of_some(&self.iou_per_class())
        // END SOLUTION
    }

    /// Frequency-weighted IoU: `sum_c (truth pixels of c / all pixels) * IoU_c`
    /// (FCN paper). NaN when nothing was counted.
    pub fn fw_iou(&self) -> f64 {
        // BEGIN SOLUTION a3.miou each class's IoU weighted by its share of the truth pixels
        let total = self.total() as f64;
        self.iou_per_class()
            .iter()
            .enumerate()
            .map(|(c, iou)| self.truth_count(c) as f64 / total * iou.unwrap_or(0.0))
            .sum()
        // END SOLUTION
    }

    /// Dice (F1) of each class, `2 tp / (truth + predicted)`; `None` when the class
    /// occurs neither in the truth nor in the prediction.
    pub fn dice_per_class(&self) -> Vec<Option<f64>> {
        (0..self.n_classes())
            .map(|c| {
                let sum = self.truth_count(c) + self.pred_count(c);
                (sum > 0).then(|| 2.0 * self.counts[[c, c]] as f64 / sum as f64)
            })
            .collect()
    }

    /// Mean Dice over the classes that occur in the truth or the prediction, as
    /// [`mean_iou`](Self::mean_iou); NaN when none does.
    pub fn mean_dice(&self) -> f64 {
        mean_of_some(&self.dice_per_class())
    }

    /// The figures for `metrics.json`: the overall ones, then per-class IoU, Dice,
    /// accuracy and truth pixel counts keyed by class name (absent classes are
    /// `None`, written as `null`). `class_names` must hold `K` distinct names.
    pub fn scores(&self, class_names: &[String]) -> Result<Scores> {
        let k = self.n_classes();
        if class_names.len() != k {
            bail!(
                "confusion matrix has {k} classes but {} class names were given",
                class_names.len()
            );
        }
        let by_name = |values: Vec<Option<f64>>| -> Result<BTreeMap<String, Option<f64>>> {
            let mut map = BTreeMap::new();
            for (name, value) in class_names.iter().zip(values) {
                if map.insert(name.clone(), value).is_some() {
                    bail!("class name {name:?} appears twice");
                }
            }
            Ok(map)
        };
        let truth_pixels = class_names
            .iter()
            .enumerate()
            .map(|(c, name)| (name.clone(), self.truth_count(c)))
            .collect();
        Ok(Scores {
            n_classes: k,
            pixels: self.total(),
            pixel_accuracy: self.pixel_accuracy(),
            mean_accuracy: self.mean_accuracy(),
            mean_iou: self.mean_iou(),
            fw_iou: self.fw_iou(),
            mean_dice: self.mean_dice(),
            iou_per_class: by_name(self.iou_per_class())?,
            dice_per_class: by_name(self.dice_per_class())?,
            accuracy_per_class: by_name(self.accuracy_per_class())?,
            truth_pixels_per_class: truth_pixels,
        })
    }
}

/// A confusion matrix's figures as `metrics.json` holds them (NaN is written as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub n_classes: usize,
    pub pixels: u64,
    pub pixel_accuracy: f64,
    pub mean_accuracy: f64,
    pub mean_iou: f64,
    pub fw_iou: f64,
    pub mean_dice: f64,
    pub iou_per_class: BTreeMap<String, Option<f64>>,
    pub dice_per_class: BTreeMap<String, Option<f64>>,
    pub accuracy_per_class: BTreeMap<String, Option<f64>>,
    pub truth_pixels_per_class: BTreeMap<String, u64>,
}

/// Mean of the `Some` values; NaN when there are none.
fn mean_of_some(values: &[Option<f64>]) -> f64 {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    present.iter().sum::<f64>() / present.len() as f64
}

/// The labels of an integer tensor, flattened, as `i64` (host copy).
fn tensor_labels(t: &Tensor, what: &str) -> Result<Vec<i64>> {
    let flat = t
        .flatten_all()
        .with_context(|| format!("flattening the {what} tensor"))?;
    let labels = match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?.into_iter().map(i64::from).collect(),
        DType::U32 => flat.to_vec1::<u32>()?.into_iter().map(i64::from).collect(),
        DType::I64 => flat.to_vec1::<i64>()?,
        dtype if dtype.is_int() => flat
            .to_dtype(DType::I64)
            .with_context(|| format!("converting the {what} tensor from {dtype:?} to i64"))?
            .to_vec1::<i64>()?,
        dtype => bail!("the {what} tensor must hold integer labels, not {dtype:?}"),
    };
    Ok(labels)
}
