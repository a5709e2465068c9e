//! `cargo run -p assignment3-hypercolumn-voc`: hypercolumns of a frozen VGG,
//! sparse sampling, a fully connected head, convolutionalised and fine-tuned,
//! scored on the val split of a VOC-layout data set.

use std::path::PathBuf;

use assignment3_hypercolumn_voc::model::Arch;
use assignment3_hypercolumn_voc::run::{
    parse_size, run, RunConfig, DEFAULT_CACHE_DIR, DEFAULT_OUT,
};
use assignment3_hypercolumn_voc::training::ClassWeighting;
use clap::Parser;
use common::device::DeviceChoice;

/// Semantic segmentation with VGG hypercolumns (zoom-out features) and a 1x1-conv head.
///
/// Data: --data-dir, else data/VOCdevkit/VOC2012, else the shared CamVid copy
/// (../shared/data/camvid-voc), else --download (PASCAL VOC 2012, about 2 GB),
/// else a generated VOC-layout set. Weights: --weights, else the shared VGG16,
/// else the Hugging Face hub (timm/vgg11.tv_in1k), else random.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A VOC-layout root (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/), or a folder holding VOCdevkit/VOC2012
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Download PASCAL VOC 2012 (about 2 GB) into data/ when no data set is found
    #[arg(long)]
    download: bool,
    /// VGG conv weights, safetensors with torchvision names (features.N.weight)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// VGG configuration (default: the one the weights hold)
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Output folder
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Cache folder for sampled features and the generated data set
    #[arg(long, default_value = DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Epochs of phase 1: the head on sampled features
    #[arg(long, default_value_t = RunConfig::default().head_epochs)]
    head_epochs: usize,
    /// Epochs of phase 2: the 1x1-conv head fine-tuned on whole images (0 skips it)
    #[arg(long, default_value_t = RunConfig::default().finetune_epochs)]
    finetune_epochs: usize,
    /// Seed of sampling, initialisation and shuffling
    #[arg(long, default_value_t = RunConfig::default().seed)]
    seed: u64,
    /// cpu, cuda or auto
    #[arg(long, default_value_t = RunConfig::default().device)]
    device: DeviceChoice,
    /// VGG input size, HEIGHTxWIDTH [default: 180x240]
    #[arg(long, value_parser = parse_size)]
    input_size: Option<(usize, usize)>,
    /// Hypercolumn map size, HEIGHTxWIDTH (default: half the input size)
    #[arg(long, value_parser = parse_size)]
    feature_size: Option<(usize, usize)>,
    /// Use at most this many images of each split (a quick run)
    #[arg(long)]
    max_images: Option<usize>,
    /// Random pixels sampled per class present in each training image
    #[arg(long, default_value_t = RunConfig::default().samples_per_class)]
    samples_per_class: usize,
    /// Width of the head's two hidden layers
    #[arg(long, default_value_t = RunConfig::default().hidden)]
    hidden: usize,
    /// Learning rate of phase 1 (AdamW, cosine decay)
    #[arg(long, default_value_t = RunConfig::default().head_lr)]
    head_lr: f64,
    /// Learning rate of phase 2 (AdamW, cosine decay)
    #[arg(long, default_value_t = RunConfig::default().finetune_lr)]
    finetune_lr: f64,
    /// Images per fine-tuning step
    #[arg(long, default_value_t = RunConfig::default().finetune_batch_size)]
    finetune_batch_size: usize,
    /// Class weights in the losses: none, median (median frequency / class frequency) or their square roots
    #[arg(long, value_enum, default_value_t = RunConfig::default().class_weights)]
    class_weights: ClassWeighting,
    /// Number of val images drawn as image | truth | prediction panels
    #[arg(long, default_value_t = RunConfig::default().n_panels)]
    panels: usize,
    /// Most GiB of f16 taps to keep in memory
    #[arg(long, default_value_t = RunConfig::default().max_cache_gib)]
    max_cache_gib: f64,
    /// Keep every image's taps on disk in the cache folder (f16, about 6 MB an image at 180x240) so later runs skip the VGG
    #[arg(long)]
    cache_taps: bool,
    /// No progress bars
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let defaults = RunConfig::default();
    let cfg = RunConfig {
        data_dir: args.data_dir,
        download: args.download,
        weights: args.weights,
        arch: args.arch,
        out: args.out,
        cache_dir: args.cache_dir,
        head_epochs: args.head_epochs,
        finetune_epochs: args.finetune_epochs,
        seed: args.seed,
        device: args.device,
        input_size: args.input_size.unwrap_or(defaults.input_size),
        feature_size: args.feature_size,
        max_images: args.max_images,
        samples_per_class: args.samples_per_class,
        hidden: args.hidden,
        head_lr: args.head_lr,
        finetune_lr: args.finetune_lr,
        finetune_batch_size: args.finetune_batch_size,
        class_weights: args.class_weights,
        n_panels: args.panels,
        max_cache_gib: args.max_cache_gib,
        cache_taps: args.cache_taps,
        progress: !args.quiet,
        ..defaults
    };
    let summary = run(&cfg)?;
    println!("\nval results ({:?} data):", summary.data_origin);
    println!(
        "  pixel accuracy      {:6.2}%",
        100.0 * summary.pixel_accuracy
    );
    println!(
        "  mean accuracy       {:6.2}%",
        100.0 * summary.mean_accuracy
    );
    println!(
        "  mean IoU            {:6.2}%   (head alone before fine-tuning {:.2}%)",
        100.0 * summary.mean_iou,
        100.0 * summary.head_only_mean_iou
    );
    println!("  frequency-weighted  {:6.2}%", 100.0 * summary.fw_iou);
    println!("  per-class IoU:");
    for (name, iou) in summary.class_names.iter().zip(&summary.per_class_iou) {
        match iou {
            Some(v) => println!("    {name:<14} {:6.2}%", 100.0 * v),
            None => println!("    {name:<14}    n/a"),
        }
    }
    println!(
        "  {} sampled features; {} backbone ({}); {:.1} s in all; outputs in {}",
        summary.n_sampled_features,
        summary.arch,
        summary.weights,
        summary.seconds_total,
        summary.out.display()
    );
    Ok(())
}
