//! The program's settings: one [`Config`] for training (the default command), and
//! the configs of `evaluate` and `predict`, which read a training run's folder.
//! clap reads them from the command line; every default is written once, in its
//! `#[arg(default_value_t = ...)]`, and `Default` takes it from there.

use std::path::PathBuf;

use common::cli::{RunArgs, SavedRunArgs};
use common::run_dir::RunDir;
use serde::{Deserialize, Serialize};

use crate::model::{Arch, ArchSpec};

/// The program's name: its run folders live under `runs/<PROGRAM>/`.
pub const PROGRAM: &str = "assignment1-classify-to-segment";
/// The seed of a run when `--seed` is not given.
pub const DEFAULT_SEED: u64 = 0;

/// Train the patch classifier, make it fully convolutional, segment `flower.jpg`
/// and compare with the sliding window.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(mut_arg("out", |a| {
    a.help("Output folder [default: runs/assignment1-classify-to-segment/seed<seed>]")
}))]
pub struct Config {
    // --out, --data-dir, --device, --quiet.
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    /// Seed of the split, the initial weights, the batch order and the flips
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Classifier: the lecture's tiny preset (2 and 4 filters) or a wider one (8, 16, dense 32)
    #[arg(long, value_enum, default_value_t = Arch::Default)]
    pub arch: Arch,
    /// Passes over the training patches
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Patches per optimisation step
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Adam's initial learning rate (cosine decay to 1/20 of it)
    #[arg(long, default_value_t = 0.003)]
    pub lr: f64,
    /// Label smoothing of the cross-entropy (keeps logits finite, probabilities graded)
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f64,
    /// Fraction of each class held back for validation
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Skip the sliding-window and shift-and-stitch comparison (the slow part)
    #[arg(long)]
    pub no_compare: bool,
    /// Crops per forward pass of the sliding window
    #[arg(long, default_value_t = 256)]
    pub window_batch: usize,
    /// Side of the centred square of pixels where the stride-1 sliding window is
    /// compared with shift-and-stitch; 0 = the whole image (minutes on 2 cores)
    #[arg(long, default_value_t = 128)]
    pub stride1_region: usize,
    /// Patches to generate when the real data set is missing
    #[arg(long, default_value_t = 400)]
    pub generated_patches: usize,
}

impl Default for Config {
    fn default() -> Self {
        common::cli::defaults()
    }
}

/// What a training run's `config.json` and checkpoint record: its flags and the
/// widths its `--arch` chose, so `evaluate` and `predict` rebuild the same net
/// even if the presets change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedConfig {
    #[serde(flatten)]
    pub config: Config,
    pub arch_spec: ArchSpec,
}

impl SavedConfig {
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            arch_spec: config.arch.spec(),
        }
    }
}

/// `--run`'s help: `what`, with the default folder spelled out.
fn run_help(what: &str) -> String {
    let default = RunDir::default_path(PROGRAM, DEFAULT_SEED);
    format!("{what} [default: {}]", default.display())
}

/// Score a saved run's classifier again, from its checkpoint, without retraining:
/// on the validation patches of its split and on `flower.jpg`; writes into
/// `<run>/evaluate` unless `--out` says otherwise.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |a| a.help(run_help("The training run folder to read"))),
    mut_arg("out", |a| a.help("Output folder [default: <run>/evaluate]")),
)]
pub struct EvaluateConfig {
    // --run, --out (default <run>/evaluate), --device, --quiet.
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// The data set's folder [default: the generated set if the training run used it,
    /// else $SEGKIT_DATA_DIR/<set>, data/<set> in the workspace, then
    /// $SEGKIT_SHARED_DATA or ../shared/data, then generated data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl EvaluateConfig {
    /// The training run folder: `--run`, else that of the default seed.
    pub fn run_folder(&self) -> PathBuf {
        self.saved.run_folder(PROGRAM, DEFAULT_SEED)
    }

    /// `--out`, else `<run>/evaluate`.
    pub fn out_dir(&self) -> PathBuf {
        self.saved.out_dir(PROGRAM, DEFAULT_SEED, "evaluate")
    }
}

/// Segment one image with a saved run's classifier; writes into `<run>/predict`
/// unless `--out` says otherwise.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |a| {
        a.help(run_help("The training run folder whose checkpoint to read"))
    }),
    mut_arg("out", |a| a.help("Output folder [default: <run>/predict]")),
)]
pub struct PredictConfig {
    // --run, --out (default <run>/predict), --device, --quiet; no data set is read.
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// A checkpoint.safetensors to read instead of the one in --run
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The image to segment (JPEG or PNG)
    #[arg(long)]
    pub image: PathBuf,
    /// Reference mask to score against (PNG; non-zero = flower)
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Also run and time the sliding windows and shift-and-stitch
    #[arg(long)]
    pub compare: bool,
    /// Crops per forward pass of the sliding window
    #[arg(long, default_value_t = 256)]
    pub window_batch: usize,
    /// Side of the centred square where the stride-1 sliding window runs; 0 = whole image
    #[arg(long, default_value_t = 0)]
    pub stride1_region: usize,
}

impl PredictConfig {
    /// The training run folder: `--run`, else that of the default seed.
    pub fn run_folder(&self) -> PathBuf {
        self.saved.run_folder(PROGRAM, DEFAULT_SEED)
    }

    /// The checkpoint to read: `--checkpoint`, else the run folder's.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.checkpoint
            .clone()
            .unwrap_or_else(|| self.run_folder().join(common::run_dir::CHECKPOINT_FILE))
    }

    /// `--out`, else `<run>/predict`.
    pub fn out_dir(&self) -> PathBuf {
        self.saved.out_dir(PROGRAM, DEFAULT_SEED, "predict")
    }
}

/// `--stride1-region` as the comparison reads it: `None` for 0, the whole image.
pub fn stride1_side(stride1_region: usize) -> Option<usize> {
    (stride1_region > 0).then_some(stride1_region)
}
