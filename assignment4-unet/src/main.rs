//! Command line of assignment 4: `train` (the default), `evaluate`, `predict`.
//! It parses the flags into a config, calls the library and prints what it gives.

use anyhow::Result;
use clap::{Parser, Subcommand};

use assignment4_unet::config::{Config, EvaluateConfig, PredictConfig};
use assignment4_unet::evaluate::evaluate;
use assignment4_unet::predict::predict;
use assignment4_unet::run::run;

/// U-Net on the ISBI 2012 membranes: train (the default), evaluate, predict
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: train with these flags.
    #[command(flatten)]
    train: Config,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train on random crops, evaluate on the held-back images, write predictions (the default)
    Train(Config),
    /// Evaluate a trained net on the held-back images of a data set
    Evaluate(EvaluateConfig),
    /// Predict masks for images of any size (files or folders)
    Predict(PredictConfig),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(cfg) => {
            let report = run(&cfg)?;
            println!("{}", report.summary());
            println!(
                "wrote {:?} (config.json, history.csv, history.json, loss.png, metrics.json, \
                 checkpoint.safetensors, predictions/)",
                cfg.out_dir()
            );
        }
        Command::Evaluate(cfg) => {
            let report = evaluate(&cfg)?;
            println!("{}", report.summary());
            println!(
                "wrote {:?} (config.json, metrics.json, predictions/)",
                cfg.out_dir()
            );
        }
        Command::Predict(cfg) => {
            let written = predict(&cfg)?;
            println!(
                "wrote {} masks and overlays into {:?}",
                written.len(),
                cfg.out_dir()
            );
        }
    }
    Ok(())
}
