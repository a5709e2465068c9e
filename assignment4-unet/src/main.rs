//! Command line of assignment 4: `train` (the default), `evaluate`, `predict`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use common::device::DeviceChoice;

use assignment4_unet::augment::ElasticConfig;
use assignment4_unet::evaluate::{evaluate_checkpoint, EvaluateOptions};
use assignment4_unet::predict::{load_model, predict_files};
use assignment4_unet::training::{train, TrainOptions};

/// The default run's folder; `evaluate` and `predict` read its checkpoint.
const DEFAULT_RUN: &str = "runs/assignment4-unet/default";

/// U-Net on the ISBI 2012 membranes: train (default), evaluate, predict.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: train with these flags.
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train on random crops, evaluate on the held-back images, write predictions.
    Train(TrainArgs),
    /// Evaluate a checkpoint on the held-back images of a data set.
    Evaluate(EvaluateArgs),
    /// Predict masks for images of any size (files or folders).
    Predict(PredictArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Data folder: ISBI layout (train/image, train/label), image/label pairs, or VOC.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = DEFAULT_RUN)]
    out: PathBuf,
    /// Epochs (each of --steps-per-epoch batches).
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    epochs: usize,
    /// Optimiser steps per epoch.
    #[arg(long, default_value_t = TrainOptions::default().steps_per_epoch)]
    steps_per_epoch: usize,
    /// Random crops per batch.
    #[arg(long, default_value_t = TrainOptions::default().batch_size)]
    batch_size: usize,
    /// Side of the square training crops (a multiple of 16).
    #[arg(long, default_value_t = TrainOptions::default().crop)]
    crop: usize,
    /// First-level width of the net (64 in the paper).
    #[arg(long, default_value_t = TrainOptions::default().width)]
    width: usize,
    /// Bilinear upsampling instead of 2x2 transposed convolutions.
    #[arg(long)]
    bilinear: bool,
    /// Peak learning rate (Adam, warm-up then cosine decay).
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = TrainOptions::default().warmup_steps)]
    warmup_steps: usize,
    /// Switch the elastic deformation off.
    #[arg(long)]
    no_elastic: bool,
    /// Elastic deformation scale alpha (pixels).
    #[arg(long, default_value_t = ElasticConfig::default().alpha)]
    elastic_alpha: f32,
    /// Elastic deformation smoothness sigma (pixels).
    #[arg(long, default_value_t = ElasticConfig::default().sigma)]
    elastic_sigma: f32,
    /// Images held back for validation.
    #[arg(long, default_value_t = TrainOptions::default().n_val)]
    n_val: usize,
    /// Seed of weights, split, crops and augmentation.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    seed: u64,
    /// cpu, cuda or auto.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    fn into_options(self) -> TrainOptions {
        let elastic = (!self.no_elastic).then_some(ElasticConfig {
            alpha: self.elastic_alpha,
            sigma: self.elastic_sigma,
            ..ElasticConfig::default()
        });
        TrainOptions {
            data_dir: self.data_dir,
            out_dir: self.out,
            epochs: self.epochs,
            steps_per_epoch: self.steps_per_epoch,
            batch_size: self.batch_size,
            crop: self.crop,
            width: self.width,
            bilinear: self.bilinear,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            elastic,
            n_val: self.n_val,
            seed: self.seed,
            device: self.device,
            resume: self.resume,
            progress: !self.quiet,
        }
    }
}

#[derive(Args, Debug)]
struct EvaluateArgs {
    /// Checkpoint of a training run.
    #[arg(
        long,
        default_value = "runs/assignment4-unet/default/checkpoint.safetensors"
    )]
    checkpoint: PathBuf,
    /// Data folder (as for train).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder for metrics.json and predictions/.
    #[arg(long, default_value = "runs/assignment4-unet/evaluate")]
    out: PathBuf,
    /// Images held back (default: the training run's).
    #[arg(long)]
    n_val: Option<usize>,
    /// Split seed (default: the training run's).
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or auto.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
struct PredictArgs {
    /// Images or folders of images (any size).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Checkpoint of a training run.
    #[arg(
        long,
        default_value = "runs/assignment4-unet/default/checkpoint.safetensors"
    )]
    checkpoint: PathBuf,
    /// Output folder for <name>_mask.png and <name>_overlay.png.
    #[arg(long, default_value = "runs/assignment4-unet/predict")]
    out: PathBuf,
    /// cpu, cuda or auto.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => run_train(cli.train),
        Some(Command::Train(args)) => run_train(args),
        Some(Command::Evaluate(args)) => {
            let metrics = evaluate_checkpoint(&EvaluateOptions {
                checkpoint: args.checkpoint,
                data_dir: args.data_dir,
                out_dir: args.out.clone(),
                n_val: args.n_val,
                seed: args.seed,
                device: args.device,
            })?;
            println!("{}", metrics.report());
            println!("wrote {:?}", args.out);
            Ok(())
        }
        Some(Command::Predict(args)) => {
            let device = common::device::open_device(args.device)?;
            let loaded = load_model(&args.checkpoint, &device)?;
            let written = predict_files(&loaded.model, &args.inputs, &args.out, &device)?;
            println!(
                "wrote {} masks and overlays into {:?}",
                written.len(),
                args.out
            );
            Ok(())
        }
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    let opts = args.into_options();
    let report = train(&opts)?;
    println!("{}", report.metrics.report());
    if report.synthetic {
        println!("(GENERATED data: no ISBI data was found)");
    }
    println!(
        "finished in {:.1} min; wrote {:?} (config.json, history.csv, loss.png, metrics.json, checkpoint.safetensors, predictions/)",
        report.seconds / 60.0,
        opts.out_dir
    );
    Ok(())
}
