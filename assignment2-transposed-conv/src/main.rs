//! Command line of assignment 2: parse the flags into a [`Config`] (or the
//! `evaluate` / `predict` configs), run it, print what came out.

use std::process::ExitCode;

use assignment2_transposed_conv::config::{Config, EvaluateConfig, PredictConfig};
use assignment2_transposed_conv::{evaluate, predict, run};
use clap::{Parser, Subcommand};

/// Train segmentation nets on the 38 lecture patches, segment flower.jpg at full
/// resolution with each, and score them against flower_mask.png.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the nets and score them (the default when no subcommand is given)
    Train(Config),
    /// Re-score the nets a training run saved on flower.jpg
    Evaluate(EvaluateConfig),
    /// Segment any images with the nets a training run saved
    Predict(PredictConfig),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(cfg) => run::run(&cfg).map(|report| {
            report.print();
            println!("outputs in {}", cfg.out_dir().display());
        }),
        Command::Evaluate(cfg) => evaluate::evaluate(&cfg).map(|report| {
            report.print();
            println!("outputs in {}", cfg.out_dir().display());
        }),
        Command::Predict(cfg) => predict::predict(&cfg).map(|folders| {
            for folder in folders {
                println!("wrote {}", folder.display());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
