//! Inference on images of any size: pad to a multiple of 16 (the four 2x2 pools),
//! run the net in evaluation mode, crop the scores back; what a checkpoint says
//! about its net and how to load it back; the `predict` subcommand, which writes
//! mask PNGs and overlays (whole images, or tiles with `--tile`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle::{DType, Device, ModuleT, Tensor};
use candle_nn::VarMap;
use common::checkpoint::{load_checkpoint, load_into_varmap};
use common::data::image_io::{image_to_tensor, load_image, save_palette_mask, tensor_to_mask};
use common::device::open_device;
use common::nn::dihedral_probabilities;
use common::run_dir::RunDir;
use common::Result;
use indicatif::ProgressBar;
use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};

use crate::config::{Config, PredictConfig};
use crate::model::{build_unet, UNet, UNetConfig};
use crate::tiling::tiled_mask;

/// The net's inputs must be multiples of this (2^4 for four 2x2 pools).
pub const SIZE_MULTIPLE: usize = 16;

/// Class scores for images of any size.
///
/// The input is padded at the bottom and right to the next multiple of 16 (at
/// least 16) by repeating its edge pixels, and the scores are cropped back.
///
/// # Shapes
/// `(N, C, H, W) -> (N, n_classes, H, W)`
pub fn predict_logits(model: &UNet, images: &Tensor) -> candle::Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    let round_up = |n: usize| n.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE;
    let (hp, wp) = (round_up(h), round_up(w));
    let padded = images
        .pad_with_same(2, 0, hp - h)?
        .pad_with_same(3, 0, wp - w)?;
    // (N, C, Hp, Wp) -> (N, K, Hp, Wp) -> (N, K, H, W)
    model
        .forward_t(&padded, false)?
        .narrow(2, 0, h)?
        .narrow(3, 0, w)
}

/// The scores of `(N, C, H, W)` images: [`predict_logits`], or with `test_time_views`
/// the log of the softmax averaged over the eight flips and quarter turns
/// (`common::nn::dihedral_probabilities`), each mapped back: `(N, K, H, W)`.
pub fn predict_scores(
    model: &UNet,
    images: &Tensor,
    test_time_views: bool,
) -> candle::Result<Tensor> {
    if !test_time_views {
        return predict_logits(model, images);
    }
    dihedral_probabilities(images, |view| predict_logits(model, view))?
        .clamp(1e-12, 1.0)?
        .log()
}

/// How a net's scores become a class mask: with or without the eight test-time views,
/// and from which membrane probability a pixel of a two-class set is called membrane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readout {
    /// The softmax averaged over the eight flips and quarter turns (see [`predict_scores`]).
    pub test_time_views: bool,
    /// Class 0 (membrane) wherever its probability is at least this, on two-class sets
    /// (0.5 is the argmax); sets of more classes take the argmax.
    pub membrane_threshold: f64,
}

/// The membrane threshold that is the argmax of two classes.
pub const ARGMAX_THRESHOLD: f64 = 0.5;

impl Readout {
    /// One plain pass and the argmax: the check after each epoch.
    pub const PLAIN: Self = Self {
        test_time_views: false,
        membrane_threshold: ARGMAX_THRESHOLD,
    };

    /// The class of every pixel (see [`classify`]) of `(N, C, H, W)` images: `(N, H, W)` u32.
    pub fn classes(&self, model: &UNet, images: &Tensor) -> candle::Result<Tensor> {
        classify(
            &predict_scores(model, images, self.test_time_views)?,
            self.membrane_threshold,
        )
    }
}

/// The class of every pixel from scores (logits or log-probabilities): on two classes,
/// class 0 wherever its softmax probability is at least `membrane_threshold`, else 1; on
/// more classes, the argmax.
///
/// # Shapes
/// `(N, K, H, W) -> (N, H, W)` u32
pub fn classify(scores: &Tensor, membrane_threshold: f64) -> candle::Result<Tensor> {
    if scores.dim(1)? != 2 {
        return scores.argmax(1);
    }
    let membrane = candle_nn::ops::softmax(scores, 1)?
        .narrow(1, 0, 1)?
        .squeeze(1)?; // (N, H, W)
    membrane.lt(membrane_threshold)?.to_dtype(DType::U32)
}

/// The class-index mask of one `(C, H, W)` image, read out as `readout` says.
pub fn predict_mask(
    model: &UNet,
    image: &Array3<f32>,
    readout: &Readout,
    device: &Device,
) -> Result<Array2<u8>> {
    let xs = image_to_tensor(image, device)?.unsqueeze(0)?; // (1, C, H, W)
    let classes = readout.classes(model, &xs)?.squeeze(0)?; // (H, W) u32
    tensor_to_mask(&classes)
}

/// What every checkpoint of a run holds besides the tensors (its metadata's
/// `config`): the net's sizes and the run's flags. Checkpoints written before the
/// run folders had the same two keys (`options` then held the older flags), so
/// [`load_model`] reads both.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo<'a> {
    pub model: UNetConfig,
    pub options: &'a Config,
}

/// The part of [`CheckpointInfo`] that `evaluate` needs: the sizes and the split.
#[derive(Debug, Clone, Deserialize)]
struct SavedInfo {
    model: UNetConfig,
    options: HeldBack,
}

/// How a run split its data: `n_val` images held back with `seed`, and with
/// `tune` another `n_val` of the training images scored instead of them; and
/// whether it scored them with test-time augmentation (`tta`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct HeldBack {
    pub n_val: usize,
    pub seed: u64,
    #[serde(default)]
    pub tune: bool,
    #[serde(default)]
    pub tta: bool,
    /// Absent from checkpoints written before the flag: 0.5, the argmax they used.
    #[serde(default = "crate::config::argmax_threshold")]
    pub membrane_threshold: f64,
}

/// A trained net read back from a checkpoint written by `train`.
pub struct LoadedModel {
    pub model: UNet,
    pub varmap: VarMap,
    /// The split of the run that trained it.
    pub split: HeldBack,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("model", &self.model)
            .field("split", &self.split)
            .finish_non_exhaustive()
    }
}

/// Rebuilds the net from a checkpoint: its sizes and split from the metadata (see
/// [`CheckpointInfo`]), its weights and BatchNorm statistics from the tensors.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    if !path.is_file() {
        bail!(
            "checkpoint {path:?} not found (train first, or pass --run DIR or --checkpoint FILE)"
        );
    }
    let checkpoint = load_checkpoint(path, device)?;
    let info: SavedInfo =
        serde_json::from_value(checkpoint.meta.config.clone()).with_context(|| {
            format!(
                "checkpoint {path:?} does not describe its U-Net (keys `model` and `options` \
                 with `n_val` and `seed` in its metadata): a run folder of an older format?"
            )
        })?;
    let config = info.model;
    let (model, varmap) = build_unet(config, 0, device)?;
    load_into_varmap(&varmap, &checkpoint.model)
        .with_context(|| format!("weights in {path:?} do not fit a U-Net {config:?}"))?;
    Ok(LoadedModel {
        model,
        varmap,
        split: info.options,
    })
}

/// The image files to predict: `inputs` themselves, and the `.png`/`.jpg`/`.jpeg`
/// files of any folder among them (sorted).
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("cannot list {input:?}"))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("folder {input:?} holds no .png/.jpg/.jpeg image");
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            bail!("input {input:?} does not exist");
        }
    }
    if files.is_empty() {
        bail!("no input image given");
    }
    Ok(files)
}

/// The `predict` subcommand: the saved net on every image of `cfg.inputs`;
/// writes `config.json` and, per image, `<stem>_mask.png` (class indices, VOC
/// palette) and `<stem>_overlay.png` into `cfg.out_dir()`. Returns the mask paths.
pub fn predict(cfg: &PredictConfig) -> Result<Vec<PathBuf>> {
    let files = collect_inputs(&cfg.inputs)?;
    let device = open_device(cfg.saved.device)?;
    let loaded = load_model(&cfg.checkpoint_file()?, &device)?;
    let views = Views {
        tile: cfg.tile,
        readout: cfg.readout(&loaded.split),
    };
    if views.tile.is_some() && cfg.tta == Some(true) {
        bail!("--tta true works on whole images only: leave out --tile, or pass --tta false");
    }
    let out = RunDir::create(cfg.out_dir(), &cfg.resolved())?;
    let bar = if cfg.saved.progress() {
        ProgressBar::new(files.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    let mut written = Vec::new();
    for file in &files {
        written.push(predict_file(&loaded.model, file, &views, &out, &device)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(written)
}

/// How `predict` runs the net on each image: in tiles, or whole (with or without
/// test-time augmentation; tiles use none).
struct Views {
    tile: Option<usize>,
    readout: Readout,
}

/// Predicts one image file into `out`; returns the mask's path.
fn predict_file(
    model: &UNet,
    file: &Path,
    views: &Views,
    out: &RunDir,
    device: &Device,
) -> Result<PathBuf> {
    let image = load_image(file)?;
    let mask = match views.tile {
        Some(tile) => tiled_mask(
            model,
            &image,
            tile,
            views.readout.membrane_threshold,
            device,
        ),
        None => predict_mask(model, &image, &views.readout, device),
    }
    .with_context(|| format!("predicting {file:?}"))?;
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let mask_path = out.file(&format!("{stem}_mask.png"));
    save_palette_mask(&mask_path, &mask)?;
    let overlay = common::viz::overlay(&image, &mask, 0.5);
    common::viz::save_rgb(&out.file(&format!("{stem}_overlay.png")), &overlay)?;
    Ok(mask_path)
}
