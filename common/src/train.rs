//! The training loop: a progress bar, a validation hook per epoch, the history as
//! CSV and JSON, the loss-curve PNG rewritten after every epoch, a NaN guard, and
//! atomic checkpoints after every epoch that `resume` continues from. It trains on
//! anything that yields batches per epoch ([`EpochBatches`]): image batches from a
//! [`Loader`], or rows of sampled features.

use std::time::Instant;

use anyhow::Context;
use candle::{Device, Tensor};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_checkpoint, load_into_varmap, save_checkpoint, CheckpointMeta};
use crate::data::loader::{Batch, Loader};
use crate::optim::Optimizer;
use crate::plot::{plot_loss_curves, Curve};
use crate::run_dir::{RunDir, HISTORY_CSV, HISTORY_JSON};
use crate::schedule::LrSchedule;

/// What [`fit`] trains on: a fixed number of batches per epoch, each epoch's order
/// a function of the epoch alone (so a resumed run sees the same batches).
pub trait EpochBatches {
    /// What one optimisation step consumes.
    type Batch;

    /// Batches in every epoch.
    fn batches_per_epoch(&self) -> usize;

    /// The batches of `epoch` (1-based) on `device`, in order.
    fn epoch_batches<'a>(
        &'a self,
        epoch: usize,
        device: &Device,
    ) -> Box<dyn Iterator<Item = crate::Result<Self::Batch>> + 'a>;

    /// Items (images, feature rows) in `batch`, for the rate on the progress bar.
    fn batch_len(batch: &Self::Batch) -> usize;
}

impl EpochBatches for Loader {
    type Batch = Batch;

    fn batches_per_epoch(&self) -> usize {
        Loader::batches_per_epoch(self)
    }

    fn epoch_batches<'a>(
        &'a self,
        epoch: usize,
        device: &Device,
    ) -> Box<dyn Iterator<Item = crate::Result<Batch>> + 'a> {
        Box::new(self.epoch(epoch, device))
    }

    fn batch_len(batch: &Batch) -> usize {
        batch.ids.len()
    }
}

/// What one run of [`fit`] needs besides the model, optimiser and data.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Number of epochs in the whole run (a resumed run continues up to it).
    pub epochs: usize,
    /// The run's (or the phase's) folder: checkpoint, history, loss curve.
    pub run_dir: RunDir,
    /// The seed the run was started with (saved in the checkpoint).
    pub seed: u64,
    /// Learning rate per optimiser step (its `total_steps` should be `epochs * batches`).
    pub schedule: LrSchedule,
    /// Continue from `out_dir/checkpoint.safetensors` when it exists.
    pub resume: bool,
    /// Title of the loss-curve PNG.
    pub title: String,
    /// The run's configuration, saved in every checkpoint.
    pub run_config: serde_json::Value,
    /// Draw a progress bar (off in tests and when stderr is not a terminal).
    pub progress: bool,
}

/// What a validation hook reports after an epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Validation loss, if the hook computes one.
    pub loss: Option<f64>,
    /// A named metric such as `("mIoU", 0.38)` or `("pixel accuracy", 0.91)`.
    pub metric: Option<(String, f64)>,
}

/// One row of the history: one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub metric_name: Option<String>,
    pub metric: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Training loss of every step, in order (for resume checks and fine curves).
    pub step_losses: Vec<f64>,
}

/// The whole history of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// Training loss of the last epoch, if any.
    pub fn last_train_loss(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.train_loss)
    }

    /// Training losses of every step of every epoch, in order.
    pub fn step_losses(&self) -> Vec<f64> {
        self.epochs
            .iter()
            .flat_map(|e| e.step_losses.iter().copied())
            .collect()
    }

    /// Writes `history.csv`, `history.json` and `loss.png` into `dir`, each atomically.
    pub fn save(&self, dir: &RunDir, title: &str) -> crate::Result<()> {
        let mut csv = String::from("epoch,train_loss,val_loss,metric_name,metric,lr,seconds\n");
        for e in &self.epochs {
            let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            csv.push_str(&format!(
                "{},{},{},{},{},{},{:.3}\n",
                e.epoch,
                e.train_loss,
                opt(e.val_loss),
                e.metric_name.clone().unwrap_or_default(),
                opt(e.metric),
                e.lr,
                e.seconds
            ));
        }
        dir.write_bytes(HISTORY_CSV, csv.as_bytes())?;
        dir.write_json(HISTORY_JSON, self)?;
        self.plot(&dir.loss_png(), title)
    }

    /// Reads a history written by [`History::save`].
    pub fn load(dir: &RunDir) -> crate::Result<Self> {
        dir.read_json(HISTORY_JSON)
    }

    /// Draws the loss curves (train, val) and the metric into a PNG.
    pub fn plot(&self, path: &std::path::Path, title: &str) -> crate::Result<()> {
        let train = Curve {
            name: "train loss".into(),
            points: self
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train_loss))
                .collect(),
        };
        let val = Curve {
            name: "val loss".into(),
            points: self
                .epochs
                .iter()
                .filter_map(|e| e.val_loss.map(|l| (e.epoch as f64, l)))
                .collect(),
        };
        let metric_name = self.epochs.iter().find_map(|e| e.metric_name.clone());
        let metric = metric_name.map(|name| Curve {
            name,
            points: self
                .epochs
                .iter()
                .filter_map(|e| e.metric.map(|m| (e.epoch as f64, m)))
                .collect(),
        });
        let mut losses = vec![train];
        if !val.points.is_empty() {
            losses.push(val);
        }
        plot_loss_curves(path, title, &losses, metric.as_ref())
    }
}

/// Trains `varmap`'s weights with `optimizer` on `batches` for `cfg.epochs` epochs.
///
/// `loss_fn` gives the scalar training loss of a batch (the model in training
/// mode); `validate` runs after each epoch (model in eval mode) and may return
/// `None`. After every epoch the checkpoint, history and loss curve are rewritten
/// atomically. A non-finite loss stops the run with an error naming the epoch and
/// step; the checkpoint of the last good epoch stays.
pub fn fit<B: EpochBatches>(
    cfg: &TrainConfig,
    varmap: &VarMap,
    optimizer: &mut dyn Optimizer,
    batches: &B,
    device: &Device,
    mut loss_fn: impl FnMut(&B::Batch) -> candle::Result<Tensor>,
    mut validate: impl FnMut(usize) -> crate::Result<Option<Validation>>,
) -> crate::Result<History> {
    let checkpoint_path = cfg.run_dir.checkpoint();
    let steps_per_epoch = batches.batches_per_epoch();
    let (mut history, first_epoch) = if cfg.resume && checkpoint_path.exists() {
        let checkpoint = load_checkpoint(&checkpoint_path, device)?;
        load_into_varmap(varmap, &checkpoint.model)
            .with_context(|| format!("cannot resume from {checkpoint_path:?}"))?;
        optimizer
            .load_state(&checkpoint.optimizer)
            .with_context(|| format!("optimiser state in {checkpoint_path:?} does not fit"))?;
        let mut history = History::load(&cfg.run_dir).unwrap_or_default();
        history.epochs.truncate(checkpoint.meta.epoch);
        eprintln!(
            "resuming from {checkpoint_path:?} after epoch {}",
            checkpoint.meta.epoch
        );
        (history, checkpoint.meta.epoch + 1)
    } else {
        (History::default(), 1)
    };

    for epoch in first_epoch..=cfg.epochs {
        let started = Instant::now();
        let bar = progress_bar(cfg.progress, steps_per_epoch, epoch, cfg.epochs);
        let mut step_losses = Vec::with_capacity(steps_per_epoch);
        let mut items = 0usize;
        let mut lr = optimizer.learning_rate();
        for (step, batch) in batches.epoch_batches(epoch, device).enumerate() {
            let batch = batch.with_context(|| format!("epoch {epoch} step {}", step + 1))?;
            let global_step = (epoch - 1) * steps_per_epoch + step;
            lr = cfg.schedule.lr_at(global_step);
            optimizer.set_learning_rate(lr);
            let loss = loss_fn(&batch)?;
            let value = loss.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                bar.abandon();
                anyhow::bail!(
                    "loss became {value} at epoch {epoch} step {} (learning rate {lr:e}); \
                     the last good checkpoint is {checkpoint_path:?}",
                    step + 1
                );
            }
            let grads = loss.backward()?;
            optimizer.step(&grads)?;
            step_losses.push(value);
            items += B::batch_len(&batch);
            let rate = items as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {value:.4}  {rate:.1} items/s"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let validation = validate(epoch)?.unwrap_or_default();
        let train_loss = mean(&step_losses);
        let record = EpochRecord {
            epoch,
            train_loss,
            val_loss: validation.loss,
            metric_name: validation.metric.as_ref().map(|m| m.0.clone()),
            metric: validation.metric.as_ref().map(|m| m.1),
            lr,
            seconds: started.elapsed().as_secs_f64(),
            step_losses,
        };
        eprintln!("{}", epoch_line(&record));
        history.epochs.push(record);
        let meta = CheckpointMeta {
            epoch,
            step: epoch * steps_per_epoch,
            seed: cfg.seed,
            config: cfg.run_config.clone(),
        };
        save_checkpoint(&checkpoint_path, varmap, &optimizer.state()?, &meta)?;
        history.save(&cfg.run_dir, &cfg.title)?;
    }
    Ok(history)
}

/// The one fixed-width log line per epoch:
/// `epoch   3  train loss 0.41233  val loss 0.39120  mIoU 38.20%`.
pub fn epoch_line(record: &EpochRecord) -> String {
    let mut line = format!(
        "epoch {:>3}  train loss {:.5}",
        record.epoch, record.train_loss
    );
    if let Some(loss) = record.val_loss {
        line.push_str(&format!("  val loss {loss:.5}"));
    }
    if let (Some(name), Some(value)) = (&record.metric_name, record.metric) {
        line.push_str(&format!("  {name} {:.2}%", 100.0 * value));
    }
    line.push_str(&format!("  ({:.1}s)", record.seconds));
    line
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn progress_bar(show: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
