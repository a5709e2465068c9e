//! The program's settings: one [`Config`] for training (every default written once, in
//! its clap attributes), and the settings of the `evaluate` and `predict` subcommands,
//! which read a training run's folder.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, ValueEnum};
use common::cli::{RunArgs, SavedRunArgs};
use common::run_dir::RunDir;
use serde::{Deserialize, Serialize};

use crate::data::DataSetChoice;
use crate::model::Arch;
use crate::training::ClassWeighting;

/// The program's name: its run folders are `runs/<PROGRAM>/seed<seed>`.
pub const PROGRAM: &str = "assignment3-hypercolumn-voc";

/// The default cache folder (sampled features, disk taps, the generated data set).
pub const DEFAULT_CACHE_DIR: &str = "runs/assignment3-hypercolumn-voc/cache";

/// Which VGG weights to load; `evaluate` and `predict` default to the ones the run used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct BackboneArgs {
    /// VGG conv weights, safetensors with torchvision names (features.N.weight) [default: the
    /// shared VGG16, else timm/vgg11.tv_in1k from the hub cache or a hub download, else random]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// VGG configuration [default: the one the weights hold]
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
}

/// Everything a training run needs.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub struct Config {
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub backbone: BackboneArgs,
    /// A run of a few minutes for slow machines: the homework's first settings (3
    /// fine-tuning epochs at rate 1e-3) as the defaults; flags given still win
    #[arg(long)]
    #[serde(default)]
    pub quick: bool,
    /// Seed of sampling, initialisation and shuffling
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The data set: voc (PASCAL VOC 2012, 21 classes; 2 GB downloaded after a yes),
    /// camvid (CamVid, 11 classes; 187 MB downloaded by its manifest) or a folder of
    /// either layout [default: any set found in data/ or the shared data, else CamVid
    /// downloaded, else generated]
    #[arg(long, value_name = "voc|camvid|DIR", value_parser = parse_dataset)]
    pub dataset: Option<DataSetChoice>,
    /// Answer yes to downloading PASCAL VOC 2012 (2 GB) into data/ (with --dataset voc),
    /// instead of asking in a terminal
    #[arg(long)]
    pub download: bool,
    /// Cache folder for sampled features, disk taps and the generated data set
    #[arg(long, default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Epochs of phase 1: the head on sampled features
    #[arg(long, default_value_t = 15)]
    pub head_epochs: usize,
    /// Epochs of phase 2: the 1x1-conv head fine-tuned on whole images (0 skips it)
    /// [--quick: 3]
    #[arg(long, default_value_t = 15, default_value_if("quick", "true", "3"))]
    pub finetune_epochs: usize,
    /// VGG input size, HEIGHTxWIDTH
    #[arg(long, default_value = "180x240", value_parser = parse_size)]
    pub input_size: (usize, usize),
    /// Hypercolumn map size, HEIGHTxWIDTH [default: the input size; --quick: half of it]
    #[arg(long, value_parser = parse_size)]
    pub feature_size: Option<(usize, usize)>,
    /// Use at most this many images of each split (a quick run)
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Random pixels sampled per class present in each training image
    #[arg(long, default_value_t = 3)]
    pub samples_per_class: usize,
    /// Width of the head's two hidden layers
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Learning rate of phase 1 (AdamW, cosine decay to 1% of it)
    #[arg(long, default_value_t = 1e-3)]
    pub head_lr: f64,
    /// Sampled hypercolumns per step of phase 1
    #[arg(long, default_value_t = 128)]
    pub head_batch_size: usize,
    /// Learning rate of phase 2 (AdamW, cosine decay to 1% of it) [--quick: 0.001]
    #[arg(
        long,
        default_value_t = 3e-3,
        default_value_if("quick", "true", "0.001")
    )]
    pub finetune_lr: f64,
    /// Images per step of phase 2
    #[arg(long, default_value_t = 4)]
    pub finetune_batch_size: usize,
    /// Decoupled (AdamW) weight decay of both phases
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Class weights in the losses: none, median (median frequency / class frequency) or their square roots
    #[arg(long, value_enum, default_value_t = ClassWeighting::SqrtMedian)]
    pub class_weights: ClassWeighting,
    /// Test-time flip: average the head's logits on each val image with the mirrored
    /// logits on the mirrored image (one more VGG pass per val image; off by default:
    /// measured to lower the CamVid val mIoU, see the README)
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false)]
    #[serde(default)]
    pub test_flip: bool,
    /// Choose settings without looking at val: train on the first 80% of the training
    /// images and score the last 20% in val's place (a block, not a sample: CamVid's
    /// training images are video frames, and neighbours are near copies)
    #[arg(long)]
    #[serde(default)]
    pub tune: bool,
    /// Number of val images drawn as image | truth | prediction panels
    #[arg(long, default_value_t = 6)]
    pub panels: usize,
    /// Most GiB of f16 taps to keep in memory
    #[arg(long, default_value_t = 8.0)]
    pub max_cache_gib: f64,
    /// Keep every image's taps on disk in the cache folder (f16, about 6 MB an image at
    /// 180x240) so later runs skip the VGG
    #[arg(long)]
    pub cache_taps: bool,
}

impl Default for Config {
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl Config {
    /// The defaults of `--quick`, as the command line gives them.
    pub fn quick() -> Self {
        QuickOnly::parse_from(["quick", "--quick"]).config
    }
}

/// A parser of the `Config` alone, for [`Config::quick`].
#[derive(Debug, Parser)]
struct QuickOnly {
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// The run folder: `--out`, else `runs/<PROGRAM>/seed<seed>`.
    pub fn out_dir(&self) -> PathBuf {
        self.run.out_dir(PROGRAM, self.seed)
    }

    /// `--feature-size`, else the input size (half of it with `--quick`).
    pub fn feature_size(&self) -> (usize, usize) {
        let (ih, iw) = self.input_size;
        let default = if self.quick {
            (ih / 2, iw / 2)
        } else {
            (ih, iw)
        };
        self.feature_size.unwrap_or(default)
    }

    /// One clear error for settings the pipeline cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        let (ih, iw) = self.input_size;
        if ih < 16 || iw < 16 {
            bail!("--input-size {ih}x{iw} is too small: the VGG needs at least 16x16");
        }
        let (fh, fw) = self.feature_size();
        if fh == 0 || fw == 0 {
            bail!("--feature-size {fh}x{fw} must be at least 1x1");
        }
        if self.samples_per_class == 0 {
            bail!("--samples-per-class must be at least 1");
        }
        if self.max_images == Some(0) {
            bail!("--max-images 0 leaves no image to train or evaluate on");
        }
        Ok(())
    }
}

/// Which split `evaluate` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    Val,
    Train,
}

/// The seed of a training run given no `--seed`: the run `evaluate` and `predict` read
/// unless `--run` names another.
fn default_seed() -> u64 {
    Config::default().seed
}

/// `evaluate`: a saved run's head scored on a split.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |a| a.help("The training run folder to read [default: runs/assignment3-hypercolumn-voc/seed0]")),
    mut_arg("out", |a| a.help("Output folder [default: <run>/evaluate]")),
)]
pub struct EvaluateConfig {
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// The data set's folder [default: the run's, else the search a training run makes]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub backbone: BackboneArgs,
    /// The split to score
    #[arg(long, value_enum, default_value_t = EvalSplit::Val)]
    pub split: EvalSplit,
    /// Use at most this many images of the split [default: the run's --max-images]
    #[arg(long)]
    pub max_images: Option<usize>,
    /// Test-time flip (true|false) [default: the run's --test-flip]
    #[arg(long)]
    pub test_flip: Option<bool>,
    /// Number of images drawn as image | truth | prediction panels
    #[arg(long, default_value_t = 6)]
    pub panels: usize,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl EvaluateConfig {
    /// The training run folder (`--run`, else the default seed's), which must exist.
    pub fn open_run(&self) -> common::Result<RunDir> {
        self.saved.open_run(PROGRAM, default_seed())
    }

    /// `--out`, else `<run>/evaluate`.
    pub fn out_dir(&self) -> PathBuf {
        self.saved.out_dir(PROGRAM, default_seed(), "evaluate")
    }
}

/// `predict`: a saved run's head on any image files.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(
    mut_arg("run_folder", |a| a.help("The training run folder to read [default: runs/assignment3-hypercolumn-voc/seed0]")),
    mut_arg("out", |a| a.help("Output folder [default: <run>/predict]")),
)]
pub struct PredictConfig {
    /// Image files (.jpg, .png) or folders of them
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub saved: SavedRunArgs,
    /// A folder of images to segment, besides the IMAGEs
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub backbone: BackboneArgs,
}

impl Default for PredictConfig {
    fn default() -> Self {
        common::cli::defaults()
    }
}

impl PredictConfig {
    /// The training run folder (`--run`, else the default seed's), which must exist.
    pub fn open_run(&self) -> common::Result<RunDir> {
        self.saved.open_run(PROGRAM, default_seed())
    }

    /// `--out`, else `<run>/predict`.
    pub fn out_dir(&self) -> PathBuf {
        self.saved.out_dir(PROGRAM, default_seed(), "predict")
    }
}

/// Parses `HxW` (e.g. `180x240`) into `(height, width)`.
pub fn parse_size(text: &str) -> anyhow::Result<(usize, usize)> {
    let parse = |s: &str| s.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match text.split_once(['x', 'X']) {
        Some((h, w)) => match (parse(h), parse(w)) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => bail!("size {text:?} must be two positive numbers, HEIGHTxWIDTH (e.g. 180x240)"),
        },
        None => bail!("size {text:?} must be HEIGHTxWIDTH (e.g. 180x240)"),
    }
}

/// Parses `--dataset`: `voc`, `camvid` or a folder.
pub fn parse_dataset(text: &str) -> anyhow::Result<DataSetChoice> {
    text.parse()
}
