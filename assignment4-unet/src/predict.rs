//! Inference on images of any size: pad to a multiple of 16 (the four 2x2 pools),
//! run the net in evaluation mode, crop the scores back; load a trained net from
//! its checkpoint; write mask PNGs and overlays.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use common::checkpoint::{load_checkpoint, load_into_varmap};
use common::data::image_io::{image_to_tensor, load_image, save_palette_mask, tensor_to_mask};
use common::Result;
use ndarray::{Array2, Array3};

use crate::model::{build_unet, UNet, UNetConfig};

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

/// The class-index mask of one `(C, H, W)` image (argmax of the scores).
pub fn predict_mask(model: &UNet, image: &Array3<f32>, device: &Device) -> Result<Array2<u8>> {
    let xs = image_to_tensor(image, device)?.unsqueeze(0)?; // (1, C, H, W)
    let classes = predict_logits(model, &xs)?.argmax(1)?.squeeze(0)?; // (H, W) u32
    tensor_to_mask(&classes)
}

/// A trained net read back from a checkpoint written by `train`.
pub struct LoadedModel {
    pub model: UNet,
    pub varmap: VarMap,
    /// The configuration the run saved (`model` holds the [`UNetConfig`]).
    pub run_config: serde_json::Value,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("model", &self.model)
            .field("run_config", &self.run_config)
            .finish_non_exhaustive()
    }
}

/// Rebuilds the net from `checkpoint.safetensors`: its sizes from the saved run
/// configuration (key `model`), its weights and BatchNorm statistics from the file.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    if !path.is_file() {
        bail!("checkpoint {path:?} not found (train first, or pass --checkpoint FILE)");
    }
    let checkpoint = load_checkpoint(path, device)?;
    let run_config = checkpoint.meta.config.clone();
    let config: UNetConfig =
        serde_json::from_value(run_config["model"].clone()).with_context(|| {
            format!("checkpoint {path:?} has no U-Net configuration (key `model`) in its metadata")
        })?;
    let (model, varmap) = build_unet(config, 0, device)?;
    load_into_varmap(&varmap, &checkpoint.model)
        .with_context(|| format!("weights in {path:?} do not fit a U-Net {config:?}"))?;
    Ok(LoadedModel {
        model,
        varmap,
        run_config,
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

/// Writes `<stem>_mask.png` (class indices, VOC palette) and `<stem>_overlay.png`
/// into `out_dir` for every image in `inputs`; returns the mask paths.
pub fn predict_files(
    model: &UNet,
    inputs: &[PathBuf],
    out_dir: &Path,
    device: &Device,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {out_dir:?}"))?;
    let files = collect_inputs(inputs)?;
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let mut written = Vec::new();
    for file in &files {
        let image = load_image(file)?;
        let mask =
            predict_mask(model, &image, device).with_context(|| format!("predicting {file:?}"))?;
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("image")
            .to_string();
        let mask_path = out_dir.join(format!("{stem}_mask.png"));
        save_palette_mask(&mask_path, &mask)?;
        let overlay = common::viz::overlay(&image, &mask, 0.5);
        common::viz::save_rgb(&out_dir.join(format!("{stem}_overlay.png")), &overlay)?;
        written.push(mask_path);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(written)
}
