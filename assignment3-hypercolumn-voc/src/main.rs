//! `cargo run -p assignment3-hypercolumn-voc [train|evaluate|predict]`: parses the
//! command line, runs the subcommand and prints its summary.

use assignment3_hypercolumn_voc::config::{Config, EvaluateConfig, PredictConfig};
use assignment3_hypercolumn_voc::evaluate::evaluate;
use assignment3_hypercolumn_voc::predict::predict;
use assignment3_hypercolumn_voc::run::run;
use clap::{Parser, Subcommand};

/// Semantic segmentation with VGG hypercolumns (zoom-out features) and a 1x1-conv head.
///
/// Data (--dataset voc|camvid|DIR): --data-dir, else VOCdevkit/VOC2012, camvid-segnet or
/// camvid-voc in $SEGKIT_DATA_DIR, the workspace's data/ or the course's shared folder,
/// else CamVid downloaded by its manifest (187 MB; PASCAL VOC 2012, 2 GB, with --dataset
/// voc after a yes or --download), else a generated VOC-layout set. Weights: --weights,
/// else the shared VGG16, else the Hugging Face hub (timm/vgg11.tv_in1k), else random.
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
    /// Train the head and score it on val (the default)
    Train(Config),
    /// Score a saved run's head on a split
    Evaluate(EvaluateConfig),
    /// Segment image files with a saved run's head
    Predict(PredictConfig),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Train(cli.train)) {
        Command::Train(cfg) => run(&cfg)?.print(&cfg.out_dir()),
        Command::Evaluate(cfg) => evaluate(&cfg)?.print(&cfg.out_dir()),
        Command::Predict(cfg) => predict(&cfg)?.print(),
    }
    Ok(())
}
