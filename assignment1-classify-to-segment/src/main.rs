//! Command line of assignment 1: with no arguments, train the patch classifier,
//! make it fully convolutional, segment `flower.jpg`, compare with the sliding
//! window and write everything under `runs/`; `segment` applies a saved checkpoint
//! to any image.

use std::io::IsTerminal;
use std::path::PathBuf;

use assignment1_classify_to_segment::model::Arch;
use assignment1_classify_to_segment::run::{
    default_out_dir, run, segment, RunConfig, SegmentConfig,
};
use clap::{Parser, Subcommand};

/// A 32x32 flower/background patch classifier turned into a fully convolutional segmenter.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segment one image with a checkpoint saved by a training run.
    Segment(SegmentArgs),
}

/// Train, convert, segment flower.jpg and compare (the default command).
#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Folder holding Positive/, Negative/, flower.jpg and flower_mask.png
    /// [default: data/cmput328-flower, then $SEGKIT_SHARED_DATA or ../shared/data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder [default: runs/assignment1-classify-to-segment/<arch>-seed<seed>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Classifier: the lecture's tiny preset (2 and 4 filters) or a wider one (8, 16, dense 32)
    #[arg(long, value_enum, default_value_t = Arch::Default)]
    arch: Arch,
    /// Passes over the training patches
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Patches per optimisation step
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam's initial learning rate (cosine decay to 1/20 of it)
    #[arg(long, default_value_t = 0.003)]
    lr: f64,
    /// Label smoothing of the cross-entropy (keeps logits finite, probabilities graded)
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Fraction of each class held back for validation
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Seed of the split, the initial weights, the batch order and the flips
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or auto
    #[arg(long, default_value = "auto")]
    device: String,
    /// Skip the sliding-window and shift-and-stitch comparison (the slow part)
    #[arg(long)]
    no_compare: bool,
    /// Crops per forward pass of the sliding window
    #[arg(long, default_value_t = 256)]
    window_batch: usize,
    /// Side of the centred square of pixels where the stride-1 sliding window is
    /// compared with shift-and-stitch; 0 = the whole image (minutes on 2 cores)
    #[arg(long, default_value_t = 128)]
    stride1_region: usize,
    /// Patches to generate when the real data set is missing
    #[arg(long, default_value_t = 400)]
    generated_patches: usize,
}

#[derive(Debug, clap::Args)]
struct SegmentArgs {
    /// checkpoint.safetensors written by a training run
    #[arg(long)]
    checkpoint: PathBuf,
    /// The image to segment (JPEG or PNG)
    #[arg(long)]
    image: PathBuf,
    /// Reference mask to score against (PNG; non-zero = flower)
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Output folder
    #[arg(long, default_value = "runs/assignment1-classify-to-segment/segment")]
    out: PathBuf,
    /// cpu, cuda or auto
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also run and time the sliding windows and shift-and-stitch
    #[arg(long)]
    compare: bool,
    /// Crops per forward pass of the sliding window
    #[arg(long, default_value_t = 256)]
    window_batch: usize,
    /// Side of the centred square where the stride-1 sliding window runs; 0 = whole image
    #[arg(long, default_value_t = 0)]
    stride1_region: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let progress = std::io::stderr().is_terminal();
    match args.command {
        Some(Command::Segment(a)) => {
            segment(&SegmentConfig {
                checkpoint: a.checkpoint,
                image: a.image,
                mask: a.mask,
                out: a.out,
                device: a.device,
                compare: a.compare,
                window_batch: a.window_batch,
                stride1_region: (a.stride1_region > 0).then_some(a.stride1_region),
                progress,
            })?;
        }
        None => {
            let a = args.train;
            run(&RunConfig {
                out: a.out.unwrap_or_else(|| default_out_dir(a.arch, a.seed)),
                data_dir: a.data_dir,
                arch: a.arch,
                epochs: a.epochs,
                batch_size: a.batch_size,
                learning_rate: a.lr,
                label_smoothing: a.label_smoothing,
                val_fraction: a.val_fraction,
                seed: a.seed,
                device: a.device,
                compare: !a.no_compare,
                window_batch: a.window_batch,
                stride1_region: (a.stride1_region > 0).then_some(a.stride1_region),
                generated_patches: a.generated_patches,
                progress,
            })?;
        }
    }
    Ok(())
}
