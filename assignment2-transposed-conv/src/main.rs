//! Command line of assignment 2: parse the flags into a [`RunConfig`] and run it.

use std::path::PathBuf;

use assignment2_transposed_conv::model::Variant;
use assignment2_transposed_conv::training::{run, RunConfig};
use clap::{Parser, ValueEnum};
use common::device::DeviceChoice;

/// Which nets to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelChoice {
    /// All three, one after the other.
    All,
    /// conv + pool twice, then one 7x7 stride-4 transposed convolution.
    Transposed,
    /// Two stride-2 transposed convolutions with the pool-1 features added between them.
    Skip,
    /// A 1x1 score convolution and bilinear upsampling.
    Bilinear,
}

/// Train segmentation nets on the 38 lecture patches, segment flower.jpg at full
/// resolution with each, and score them against flower_mask.png.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Folder of the data set (TrainingImages/, TrainingLabels/, flower.jpg,
    /// flower_mask.png); default: data/cmput328-flower, then $SEGKIT_SHARED_DATA/cmput328-flower
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder [default: runs/assignment2-transposed-conv/<model>-seed<seed>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which net(s) to train
    #[arg(long, value_enum, default_value_t = ModelChoice::All)]
    model: ModelChoice,
    /// Passes over the training patches (each pass turns every patch by a random
    /// flip/rotation)
    #[arg(long)]
    epochs: Option<usize>,
    /// Patches per optimisation step
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam's peak learning rate (cosine decay to 5% of it)
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the weights, the shuffle and the augmentation
    #[arg(long)]
    seed: Option<u64>,
    /// Device: cpu, cuda or auto
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Do not draw progress bars
    #[arg(long)]
    no_progress: bool,
}

impl Args {
    /// The run configuration: flags where given, [`RunConfig::default`] elsewhere.
    fn into_config(self) -> RunConfig {
        let defaults = RunConfig::default();
        let variants = match self.model {
            ModelChoice::All => Variant::ALL.to_vec(),
            ModelChoice::Transposed => vec![Variant::Transposed],
            ModelChoice::Skip => vec![Variant::Skip],
            ModelChoice::Bilinear => vec![Variant::Bilinear],
        };
        let seed = self.seed.unwrap_or(defaults.seed);
        let model_name = format!("{:?}", self.model).to_ascii_lowercase();
        RunConfig {
            data_dir: self.data_dir,
            out_dir: self.out.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "runs/assignment2-transposed-conv/{model_name}-seed{seed}"
                ))
            }),
            variants,
            epochs: self.epochs.unwrap_or(defaults.epochs),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            lr: self.lr.unwrap_or(defaults.lr),
            seed,
            device: self.device,
            progress: !self.no_progress && defaults.progress,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cfg = Args::parse().into_config();
    match run_and_print(&cfg) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `cfg` and prints the table of figures.
fn run_and_print(cfg: &RunConfig) -> anyhow::Result<()> {
    let report = run(cfg)?;
    println!(
        "{:<11} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "model", "flower IoU", "pixel acc", "train acc", "parameters", "seconds", "roughness"
    );
    for (name, v) in &report.variants {
        println!(
            "{name:<11} {:>9.2}% {:>9.2}% {:>9.2}% {:>10} {:>9.1} {:>10.4}",
            100.0 * v.flower_iou,
            100.0 * v.flower_pixel_accuracy,
            100.0 * v.train_pixel_accuracy,
            v.parameters,
            v.train_seconds,
            v.probability_roughness
        );
    }
    if let Some(best) = &report.best {
        println!("best: {best}; outputs in {}", cfg.out_dir.display());
    }
    Ok(())
}
