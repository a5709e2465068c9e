//! The flags of the three subcommands: one [`Config`] for `train` (every default
//! written once, in its clap attribute; `Default` reads them back), and
//! [`EvaluateConfig`] and [`PredictConfig`], which read a trained run
//! (`common::cli::SavedRunArgs`, plus `--checkpoint FILE` instead of the run's).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use common::cli::{RunArgs, SavedRunArgs};
use common::run_dir::RunDir;
use serde::{Deserialize, Serialize};

use crate::augment::ElasticConfig;
use crate::model::UNetConfig;
use crate::predict::{HeldBack, Readout, ARGMAX_THRESHOLD};

/// The program's name: its run folders are `runs/<PROGRAM>/seed<seed>`.
pub const PROGRAM: &str = "assignment4-unet";

/// Train on random crops, evaluate on the held-back whole images, write predictions
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct Config {
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    /// Seed of the weights, the split, the crop order and the augmentation
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Epochs, each of --steps-per-epoch batches
    #[arg(long, default_value_t = 10)]
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
    #[arg(long, default_value_t = 24)]
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
    /// Weight the cross-entropy by the paper's border weight map (w0 = 10, sigma = 5 px),
    /// computed on every augmented crop
    #[arg(long)]
    #[serde(default)]
    pub weight_map: bool,
    #[command(flatten)]
    pub elastic: ElasticConfig,
    /// Images held back for validation (ISBI and folder pairs; a VOC layout uses its val split)
    #[arg(long, default_value_t = 5)]
    pub n_val: usize,
    /// Test-time augmentation in the final evaluation and its pictures: the softmax
    /// averaged over the eight flips and quarter turns of each held-back image (8 passes
    /// an image; on by default: measured on a split of the training images, see the README)
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, default_value_t = true)]
    #[serde(default)]
    pub tta: bool,
    /// Two-class sets: a pixel is membrane where the net's membrane probability is at
    /// least this, in the final evaluation and its pictures (0.5, the default, is the
    /// argmax; lower values measured in the README)
    #[arg(long, value_name = "P", default_value_t = ARGMAX_THRESHOLD)]
    #[serde(default = "argmax_threshold")]
    pub membrane_threshold: f64,
    /// Choose settings without looking at the held-back images: they stay out of the
    /// run, and another --n-val of the training images are held back and scored instead
    #[arg(long)]
    #[serde(default)]
    pub tune: bool,
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
        check_threshold(self.membrane_threshold)?;
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

    /// How the final evaluation reads out the net: `--tta`, `--membrane-threshold`.
    pub fn readout(&self) -> Readout {
        Readout {
            test_time_views: self.tta,
            membrane_threshold: self.membrane_threshold,
        }
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

/// `--membrane-threshold` of runs saved before the flag: the argmax's.
pub fn argmax_threshold() -> f64 {
    ARGMAX_THRESHOLD
}

/// Rejects a `--membrane-threshold` outside (0, 1).
fn check_threshold(threshold: f64) -> Result<()> {
    if !(threshold > 0.0 && threshold < 1.0) {
        bail!("--membrane-threshold must lie strictly between 0 and 1, got {threshold}");
    }
    Ok(())
}

/// The readout of `evaluate` and `predict`: their flags, else the training run's.
fn saved_readout(tta: Option<bool>, threshold: Option<f64>, run: &HeldBack) -> Readout {
    Readout {
        test_time_views: tta.unwrap_or(run.tta),
        membrane_threshold: threshold.unwrap_or(run.membrane_threshold),
    }
}

/// `--membrane-threshold` of `evaluate` and `predict`, checked as `train` checks its own.
fn parse_threshold(text: &str) -> Result<f64> {
    let threshold = text
        .parse::<f64>()
        .map_err(|e| anyhow::anyhow!("not a number: {e}"))?;
    check_threshold(threshold)?;
    Ok(threshold)
}

/// `--seed`'s default; `evaluate` and `predict` read the run folder of this seed
/// unless `--run` or `--checkpoint` says otherwise.
pub const DEFAULT_SEED: u64 = 0;

/// `--checkpoint`'s help.
const CHECKPOINT_HELP: &str = "A checkpoint file to read instead of <run>/checkpoint.safetensors";

/// `--run`'s help, with the default folder spelled out.
fn run_help() -> String {
    format!(
        "The training run's folder, whose checkpoint.safetensors is read [default: {}]",
        RunDir::default_path(PROGRAM, DEFAULT_SEED).display()
    )
}

/// `--checkpoint`, else the checkpoint of the run folder `--run` (which must exist).
fn checkpoint_file(saved: &SavedRunArgs, checkpoint: Option<&Path>) -> Result<PathBuf> {
    match checkpoint {
        Some(file) => Ok(file.to_path_buf()),
        None => Ok(saved.open_run(PROGRAM, DEFAULT_SEED)?.checkpoint()),
    }
}

/// `--out`, else `<run>/<command>`, or `<command>` beside `--checkpoint`.
fn out_dir(saved: &SavedRunArgs, checkpoint: Option<&Path>, command: &str) -> PathBuf {
    match (&saved.out, checkpoint) {
        (None, Some(file)) => file.parent().unwrap_or(Path::new("")).join(command),
        _ => saved.out_dir(PROGRAM, DEFAULT_SEED, command),
    }
}

/// `saved` with the run folder it reads spelled out (what `config.json` records).
fn resolved(saved: &SavedRunArgs) -> SavedRunArgs {
    SavedRunArgs {
        run_folder: Some(saved.run_folder(PROGRAM, DEFAULT_SEED)),
        ..saved.clone()
    }
}

/// Evaluate a trained net on the held-back images of a data set (the training run's split)
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |arg| arg.help(run_help())),
    mut_arg("out", |arg| arg.help(
        "Output folder for config.json, metrics.json and predictions/ \
         [default: <run>/evaluate, or evaluate/ beside --checkpoint]"
    )),
    mut_arg("quiet", |arg| arg.help(
        "No progress bars (evaluate draws none; the flag is there as in every command)"
    )),
)]
pub struct EvaluateConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// A checkpoint file read instead of `<run>/checkpoint.safetensors`.
    #[arg(long, value_name = "FILE", help = CHECKPOINT_HELP)]
    pub checkpoint: Option<PathBuf>,
    /// The data set's folder [default: looked up as for train]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Images held back [default: the training run's]
    #[arg(long)]
    pub n_val: Option<usize>,
    /// Seed of the split [default: the training run's]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Test-time augmentation: the softmax averaged over the eight flips and quarter
    /// turns of each image [default: the training run's --tta]
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    #[serde(default)]
    pub tta: Option<bool>,
    /// Two-class sets: membrane where its probability is at least P [default: the
    /// training run's --membrane-threshold]
    #[arg(long, value_name = "P", value_parser = parse_threshold)]
    #[serde(default)]
    pub membrane_threshold: Option<f64>,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl EvaluateConfig {
    /// `--checkpoint`, else the checkpoint of the run folder `--run` (which must exist).
    pub fn checkpoint_file(&self) -> Result<PathBuf> {
        checkpoint_file(&self.saved, self.checkpoint.as_deref())
    }

    /// `--tta` and `--membrane-threshold`, else those of the training run `run`.
    pub fn readout(&self, run: &HeldBack) -> Readout {
        saved_readout(self.tta, self.membrane_threshold, run)
    }

    /// `--out`, else `<run>/evaluate`, or `evaluate/` beside `--checkpoint`.
    pub fn out_dir(&self) -> PathBuf {
        out_dir(&self.saved, self.checkpoint.as_deref(), "evaluate")
    }

    /// These flags with the run folder spelled out, as `config.json` records them.
    pub fn resolved(&self) -> Self {
        Self {
            saved: resolved(&self.saved),
            ..self.clone()
        }
    }
}

/// Predict masks for images of any size (files or folders of .png/.jpg)
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |arg| arg.help(run_help())),
    mut_arg("out", |arg| arg.help(
        "Output folder for <name>_mask.png and <name>_overlay.png \
         [default: <run>/predict, or predict/ beside --checkpoint]"
    )),
)]
pub struct PredictConfig {
    /// Images or folders of images (any size)
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// A checkpoint file read instead of `<run>/checkpoint.safetensors`.
    #[arg(long, value_name = "FILE", help = CHECKPOINT_HELP)]
    pub checkpoint: Option<PathBuf>,
    /// Segment in tiles of N x N pixels (a multiple of 16), each with a mirrored border of
    /// the net's context (the paper's overlap-tile strategy): any image size in bounded
    /// memory, no seams [default: the whole image at once]
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub tile: Option<usize>,
    /// Test-time augmentation: the softmax averaged over the eight flips and quarter
    /// turns of each image (whole images only) [default: the training run's --tta]
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    #[serde(default)]
    pub tta: Option<bool>,
    /// Two-class sets: membrane where its probability is at least P [default: the
    /// training run's --membrane-threshold]
    #[arg(long, value_name = "P", value_parser = parse_threshold)]
    #[serde(default)]
    pub membrane_threshold: Option<f64>,
}

impl PredictConfig {
    /// `--checkpoint`, else the checkpoint of the run folder `--run` (which must exist).
    pub fn checkpoint_file(&self) -> Result<PathBuf> {
        checkpoint_file(&self.saved, self.checkpoint.as_deref())
    }

    /// `--tta` and `--membrane-threshold`, else those of the training run `run`.
    pub fn readout(&self, run: &HeldBack) -> Readout {
        saved_readout(self.tta, self.membrane_threshold, run)
    }

    /// `--out`, else `<run>/predict`, or `predict/` beside `--checkpoint`.
    pub fn out_dir(&self) -> PathBuf {
        out_dir(&self.saved, self.checkpoint.as_deref(), "predict")
    }

    /// These flags with the run folder spelled out, as `config.json` records them.
    pub fn resolved(&self) -> Self {
        Self {
            saved: resolved(&self.saved),
            ..self.clone()
        }
    }
}
