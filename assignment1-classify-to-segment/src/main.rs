//! Command line of assignment 1: with no subcommand (or `train`), train the patch
//! classifier, make it fully convolutional, segment `flower.jpg`, compare with the
//! sliding window and write everything under `runs/`; `evaluate` measures a saved
//! run again; `predict` (alias `segment`) applies a saved run to any image.

use assignment1_classify_to_segment::config::{Config, EvaluateConfig, PredictConfig};
use assignment1_classify_to_segment::evaluate::evaluate;
use assignment1_classify_to_segment::predict::predict;
use assignment1_classify_to_segment::run::run;
use clap::{Parser, Subcommand};

/// A 32x32 flower/background patch classifier turned into a fully convolutional segmenter.
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
    /// Train, convert, segment flower.jpg and compare (the default command)
    Train(Config),
    /// Measure a saved run's classifier again from its checkpoint (writes <run>/evaluate)
    Evaluate(EvaluateConfig),
    /// Segment one image with a saved run's classifier (writes <run>/predict)
    #[command(alias = "segment")]
    Predict(PredictConfig),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(cfg) => println!("{}", run(&cfg)?),
        Command::Evaluate(cfg) => println!("{}", evaluate(&cfg)?),
        Command::Predict(cfg) => println!("{}", predict(&cfg)?),
    }
    Ok(())
}
