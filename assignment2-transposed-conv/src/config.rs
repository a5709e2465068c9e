//! The program's settings: one [`Config`] for training (clap reads it, `config.json`
//! holds it, every default is written once in its `#[arg]` attributes), and the
//! configs of the `evaluate` and `predict` subcommands, which read a training run through
//! `common::cli::SavedRunArgs` (`--run`, `--out`, `--device`, `--quiet`) with the same flag names.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use common::cli::{defaults, RunArgs, SavedRunArgs};
use common::run_dir::RunDir;
use serde::{Deserialize, Serialize};

use crate::model::{variant_names, Variant};
use crate::training::TrainSettings;

/// The program's name: its run folders are `runs/<PROGRAM>/seed<seed>`.
pub const PROGRAM: &str = "assignment2-transposed-conv";

/// `--seed`'s default; `evaluate` and `predict` read the run of this seed unless `--run`
/// says otherwise.
pub const DEFAULT_SEED: u64 = 42;

/// `--run`'s help, with the default folder spelled out.
fn run_help() -> String {
    let default = RunDir::default_path(PROGRAM, DEFAULT_SEED);
    format!(
        "The training run folder to read [default: {}]",
        default.display()
    )
}

/// Which nets a command works on: every variant, or the ones named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Models {
    /// Every variant (for `evaluate` and `predict`: every one the run saved).
    All,
    /// These, in this order.
    List(Vec<Variant>),
}

impl Models {
    /// The variants to train: [`Variant::ALL`] for [`Models::All`].
    pub fn variants(&self) -> Vec<Variant> {
        match self {
            Models::All => Variant::ALL.to_vec(),
            Models::List(list) => list.clone(),
        }
    }
}

impl FromStr for Models {
    type Err = anyhow::Error;

    /// `all`, or variant names separated by commas (`transposed,bilinear`).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Models::All);
        }
        let list = s
            .split(',')
            .map(|name| name.trim().parse())
            .collect::<anyhow::Result<Vec<Variant>>>()?;
        Ok(Models::List(list))
    }
}

impl fmt::Display for Models {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Models::All => f.write_str("all"),
            Models::List(list) => {
                let names: Vec<&str> = list.iter().map(|v| v.name()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl TryFrom<String> for Models {
    type Error = anyhow::Error;

    fn try_from(s: String) -> anyhow::Result<Self> {
        s.parse()
    }
}

impl From<Models> for String {
    fn from(models: Models) -> String {
        models.to_string()
    }
}

/// Train the nets on the 38 lecture patches, segment flower.jpg at full resolution
/// with each, and score them against flower_mask.png.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct Config {
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    /// Seed of the weights, the shuffle and the augmentation
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Which nets to train: all, or names from transposed, skip, bilinear, unpool, dilated separated by commas
    #[arg(long, default_value = "all")]
    pub model: Models,
    /// Passes over the training patches (each pass turns every patch by a random
    /// flip/rotation)
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Patches per optimisation step
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Adam's peak learning rate (cosine decay to 5% of it)
    #[arg(long, default_value_t = 0.003)]
    pub lr: f64,
}

impl Default for Config {
    fn default() -> Self {
        defaults()
    }
}

impl Config {
    /// The run folder: `--out`, else `runs/<PROGRAM>/seed<seed>`.
    pub fn out_dir(&self) -> PathBuf {
        self.run.out_dir(PROGRAM, self.seed)
    }

    /// Checks the settings before any work: at least one variant, epochs and
    /// batch size at least 1, a positive finite learning rate.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.model.variants().is_empty() {
            anyhow::bail!("no model variant to train (use {})", variant_names(" or "));
        }
        TrainSettings::from(self).validate()
    }
}

/// Re-score the nets a training run saved on flower.jpg (or the generated scene).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |arg| arg.help(run_help())),
    mut_arg("out", |arg| arg.help("Output folder [default: <run>/evaluate]")),
)]
pub struct EvaluateConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// Which saved nets: all (every one the run holds), or names separated by commas
    #[arg(long, default_value = "all")]
    pub model: Models,
    /// The data set's folder [default: $SEGKIT_DATA_DIR/<set>, data/<set> in the workspace,
    /// then $SEGKIT_SHARED_DATA or ../shared/data, then a download, then generated data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        defaults()
    }
}

impl EvaluateConfig {
    /// `--out`, else `<run>/evaluate`.
    pub fn out_dir(&self) -> PathBuf {
        self.saved.out_dir(PROGRAM, DEFAULT_SEED, "evaluate")
    }
}

/// Segment any images with the nets a training run saved.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |arg| arg.help(run_help())),
    mut_arg("out", |arg| arg.help("Output folder [default: <run>/predict]")),
)]
pub struct PredictConfig {
    /// Images to segment (PNG or JPEG, any size) [default: the data set's flower.jpg]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// Which saved nets: all (every one the run holds), or names separated by commas
    #[arg(long, default_value = "all")]
    pub model: Models,
    /// The data set's folder, for the default image [default: $SEGKIT_DATA_DIR/<set>,
    /// data/<set> in the workspace, then $SEGKIT_SHARED_DATA or ../shared/data, then a
    /// download, then generated data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Default for PredictConfig {
    fn default() -> Self {
        defaults()
    }
}

impl PredictConfig {
    /// `--out`, else `<run>/predict`.
    pub fn out_dir(&self) -> PathBuf {
        self.saved.out_dir(PROGRAM, DEFAULT_SEED, "predict")
    }
}
