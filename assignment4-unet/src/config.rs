//! The flags of the three subcommands: one [`Config`] for `train` (every default
//! written once, in its clap attribute; `Default` reads them back), and
//! [`EvaluateConfig`] and [`PredictConfig`], which read a trained run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use common::cli::RunArgs;
use common::device::DeviceChoice;
use common::run_dir::RunDir;
use serde::{Deserialize, Serialize};

use crate::augment::ElasticConfig;
use crate::model::UNetConfig;

/// The program's name: its run folders are `runs/<PROGRAM>/seed<seed>`.
pub const PROGRAM: &str = "assignment4-unet";

/// Train on random crops, evaluate on the held-back whole images, write predictions
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct Config {
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    /// Seed of the weights, the split, the crop order and the augmentation
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Epochs, each of --steps-per-epoch batches
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    /// Optimiser steps per epoch
    #[arg(long, default_value_t = 50)]
    pub steps_per_epoch: usize,
    /// Random crops per batch
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Side of the square training crops (a multiple of 16; shrunk to the smallest image)
    #[arg(long, default_value_t = 256)]
    pub crop: usize,
    /// First-level width of the net (64 in the paper)
    #[arg(long, default_value_t = 16)]
    pub width: usize,
    /// Bilinear upsampling instead of 2x2 transposed convolutions
    #[arg(long)]
    pub bilinear: bool,
    /// Peak learning rate (Adam, linear warm-up then cosine decay to 1% of it)
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Warm-up steps (at most half of all steps)
    #[arg(long, default_value_t = 20)]
    pub warmup_steps: usize,
    /// Switch the elastic deformation off
    #[arg(long)]
    pub no_elastic: bool,
    #[command(flatten)]
    pub elastic: ElasticConfig,
    /// Images held back for validation (ISBI and folder pairs; a VOC layout uses its val split)
    #[arg(long, default_value_t = 5)]
    pub n_val: usize,
    /// Continue from the checkpoint in --out
    #[arg(long)]
    pub resume: bool,
}

impl Default for Config {
    /// The default run: fits in 15 minutes on 2 CPU cores (see the README).
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl Config {
    /// Rejects values that cannot make a run, naming the flag.
    pub fn check(&self) -> Result<()> {
        let positive = [
            ("--epochs", self.epochs),
            ("--steps-per-epoch", self.steps_per_epoch),
            ("--batch-size", self.batch_size),
            ("--width", self.width),
            ("--n-val", self.n_val),
        ];
        for (flag, value) in positive {
            if value == 0 {
                bail!("{flag} must be at least 1, got 0");
            }
        }
        if self.crop < 16 || self.crop % 16 != 0 {
            bail!(
                "--crop must be a multiple of 16 (four 2x2 pools), at least 16, got {}",
                self.crop
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if self.bilinear && self.width % 2 != 0 {
            bail!(
                "--bilinear halves the widths: --width must be even, got {}",
                self.width
            );
        }
        Ok(())
    }

    /// The run folder: `--out`, else `runs/assignment4-unet/seed<seed>`.
    pub fn out_dir(&self) -> PathBuf {
        self.run.out_dir(PROGRAM, self.seed)
    }

    /// The elastic deformation of the training crops, `None` with `--no-elastic`.
    pub fn elastic(&self) -> Option<ElasticConfig> {
        (!self.no_elastic).then_some(self.elastic)
    }

    /// The net this config trains on RGB images of `n_classes` classes.
    pub fn unet(&self, n_classes: usize) -> UNetConfig {
        UNetConfig {
            n_channels: 3,
            n_classes,
            bilinear: self.bilinear,
            width: self.width,
        }
    }
}

/// The default run folder of the default seed: what `evaluate` and `predict` read.
pub fn default_run() -> PathBuf {
    RunDir::default_path(PROGRAM, Config::default().seed)
}

/// Which trained net `evaluate` and `predict` read.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct TrainedRun {
    /// The training run's folder, whose checkpoint.safetensors is read
    #[arg(long, default_value_os_t = default_run())]
    pub run: PathBuf,
    /// A checkpoint file to read instead of <run>/checkpoint.safetensors
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

impl TrainedRun {
    /// `--checkpoint`, else the checkpoint of the run folder `--run` (which must exist).
    pub fn checkpoint(&self) -> Result<PathBuf> {
        match &self.checkpoint {
            Some(file) => Ok(file.clone()),
            None => Ok(RunDir::open(&self.run)?.checkpoint()),
        }
    }

    /// `<run>/<name>`, or `<name>` beside `--checkpoint`: a command's default output.
    pub fn default_out(&self, name: &str) -> PathBuf {
        let folder = match &self.checkpoint {
            Some(file) => file.parent().map(PathBuf::from).unwrap_or_default(),
            None => self.run.clone(),
        };
        folder.join(name)
    }
}

/// Evaluate a trained net on the held-back images of a data set (the training run's split)
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct EvaluateConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub trained: TrainedRun,
    /// Output folder for config.json, metrics.json and predictions/
    /// [default: <run>/evaluate, or evaluate/ beside --checkpoint]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The data set's folder [default: looked up as for train]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Images held back [default: the training run's]
    #[arg(long)]
    pub n_val: Option<usize>,
    /// Seed of the split [default: the training run's]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where tensors live: cuda needs a build with `--features cuda`; auto takes it when it answers
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// No progress bars (evaluate draws none; the flag is there as in every command)
    #[arg(long)]
    pub quiet: bool,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl EvaluateConfig {
    /// `--out`, else `<run>/evaluate`.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.trained.default_out("evaluate"))
    }
}

/// Predict masks for images of any size (files or folders of .png/.jpg)
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct PredictConfig {
    /// Images or folders of images (any size)
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub trained: TrainedRun,
    /// Output folder for <name>_mask.png and <name>_overlay.png
    /// [default: <run>/predict, or predict/ beside --checkpoint]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where tensors live: cuda needs a build with `--features cuda`; auto takes it when it answers
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// No progress bar (it is also off when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
}

impl PredictConfig {
    /// `--out`, else `<run>/predict`.
    pub fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.trained.default_out("predict"))
    }

    /// Whether to draw the progress bar.
    pub fn progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.quiet && std::io::stderr().is_terminal()
    }
}
