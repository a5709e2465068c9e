//! Inference: a saved net read back from its variant's folder of a run, whole
//! images segmented at full resolution, and the pictures of a segmentation
//! (`predictions/<image>_{panel,mask,overlay,probability}.png`). The `predict`
//! subcommand runs saved nets on any images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::checkpoint::{load_checkpoint, load_into_varmap};
use common::data::image_io::{image_to_tensor, load_image, tensor_to_mask};
use common::device::open_device;
use common::run_dir::{RunDir, CHECKPOINT_FILE};
use common::viz::{heat_map, overlay, save_mask_png, save_panel, save_rgb, MaskStyle};
use common::Result;
use ndarray::{Array2, Array3};

use crate::config::{Models, PredictConfig, DEFAULT_SEED, PROGRAM};
use crate::data::{class_names, find_flower_data, SCORE_NAME};
use crate::model::{variant_names, SegNet, Variant};

/// Class scores of one `(3, H, W)` image, softmaxed: `(K, H, W)` on the host device.
pub fn probabilities(model: &SegNet, image: &Array3<f32>, device: &Device) -> Result<Tensor> {
    // (3, H, W) -> (1, 3, H, W)
    let xs = image_to_tensor(image, device)?.unsqueeze(0)?;
    let logits = model
        .forward(&xs)
        .with_context(|| format!("segmenting a {:?} image", image.dim()))?;
    // (1, K, H, W) -> (K, H, W)
    Ok(candle_nn::ops::softmax(&logits, 1)?.squeeze(0)?)
}

/// The predicted class of every pixel of a `(3, H, W)` image: an `(H, W)` mask.
pub fn segment(model: &SegNet, image: &Array3<f32>, device: &Device) -> Result<Array2<u8>> {
    // (K, H, W) -> (H, W) class indices
    let probs = probabilities(model, image, device)?;
    tensor_to_mask(&probs.argmax(0)?)
}

/// A segmentation of one image: the mask and the flower probability map.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// `(H, W)` class indices.
    pub mask: Array2<u8>,
    /// `(H, W)` probability of class 1 (flower).
    pub probability: Array2<f32>,
}

/// Segments a `(3, H, W)` image: the argmax mask and the flower probabilities.
pub fn segment_with_probability(
    model: &SegNet,
    image: &Array3<f32>,
    device: &Device,
) -> Result<Segmentation> {
    let probs = probabilities(model, image, device)?;
    let (_, h, w) = probs.dims3()?;
    // (K, H, W) -> (H, W) class indices
    let mask = tensor_to_mask(&probs.argmax(0)?)?;
    // (K, H, W) -> (H, W) row of class 1
    let values = probs.get(1)?.flatten_all()?.to_vec1::<f32>()?;
    let probability = Array2::from_shape_vec((h, w), values)?;
    Ok(Segmentation { mask, probability })
}

/// Writes the pictures of `seg` of `image` (called `name`) into `dir/predictions/`:
/// `<name>_panel.png` (image | truth | prediction, or image | prediction without
/// truth), `<name>_mask.png` (black/white), `<name>_overlay.png` and
/// `<name>_probability.png` (flower probability heat map).
pub fn save_pictures(
    dir: &RunDir,
    name: &str,
    image: &Array3<f32>,
    truth: Option<&Array2<u8>>,
    seg: &Segmentation,
) -> Result<()> {
    let folder = dir.predictions();
    let file = |kind: &str| folder.join(format!("{name}_{kind}.png"));
    save_panel(&file("panel"), image, truth, &seg.mask)?;
    save_mask_png(&file("mask"), &seg.mask, MaskStyle::Binary)?;
    save_rgb(&file("overlay"), &overlay(image, &seg.mask, 0.5))?;
    save_rgb(&file("probability"), &heat_map(&seg.probability))
}

/// A net read back from a run folder.
#[derive(Debug, Clone)]
pub struct SavedNet {
    pub model: SegNet,
    /// The seed it was trained with.
    pub seed: u64,
}

/// The nets of `models` that `run` saved (`<run>/<variant>/checkpoint.safetensors`):
/// for [`Models::All`] every one present (at least one), else each one named.
pub fn load_nets(
    run: &RunDir,
    models: &Models,
    device: &Device,
) -> Result<Vec<(Variant, SavedNet)>> {
    let saved = |v: &Variant| checkpoint_path(run, *v).is_file();
    let variants: Vec<Variant> = match models {
        Models::All => Variant::ALL.into_iter().filter(saved).collect(),
        Models::List(list) => list.clone(),
    };
    if variants.is_empty() {
        bail!(
            "run folder {:?} holds no saved net (<variant>/{CHECKPOINT_FILE} for {}): train first",
            run.path(),
            variant_names(" or ")
        );
    }
    variants
        .into_iter()
        .map(|v| Ok((v, load_net(run, v, device)?)))
        .collect()
}

/// `<run>/<variant>/checkpoint.safetensors`.
pub fn checkpoint_path(run: &RunDir, variant: Variant) -> PathBuf {
    run.file(variant.name()).join(CHECKPOINT_FILE)
}

/// The `variant` net `run` saved, its weights from its checkpoint.
pub fn load_net(run: &RunDir, variant: Variant, device: &Device) -> Result<SavedNet> {
    let path = checkpoint_path(run, variant);
    if !path.is_file() {
        bail!("{path:?} not found: the run holds no {variant} net (train it first)");
    }
    let checkpoint = load_checkpoint(&path, device)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = SegNet::new(variant, class_names().len(), vb)?;
    load_into_varmap(&varmap, &checkpoint.model).with_context(|| {
        format!("{path:?} does not hold a {variant} net (a run folder of an older format?)")
    })?;
    Ok(SavedNet {
        model,
        seed: checkpoint.meta.seed,
    })
}

/// Segments `cfg.images` (default: the data set's photo) with the saved nets and
/// writes `<out>/<variant>/predictions/<image>_*.png`; gives the folders written.
pub fn predict(cfg: &PredictConfig) -> Result<Vec<PathBuf>> {
    let run = cfg.saved.open_run(PROGRAM, DEFAULT_SEED)?;
    let device = open_device(cfg.saved.device)?;
    let nets = load_nets(&run, &cfg.model, &device)?;
    let images = images_to_segment(cfg, nets[0].1.seed)?;
    let out = RunDir::create(cfg.out_dir(), cfg)?;
    let mut written = Vec::new();
    for (variant, net) in &nets {
        let dir = out.child(variant.name())?;
        for (name, image) in &images {
            let seg = segment_with_probability(&net.model, image, &device)?;
            save_pictures(&dir, name, image, None, &seg)?;
        }
        written.push(dir.predictions());
    }
    Ok(written)
}

/// The images of `cfg` by file stem, or the data set's photo (the generated scene
/// of `seed` when no data set is found) when none is given.
fn images_to_segment(cfg: &PredictConfig, seed: u64) -> Result<Vec<(String, Array3<f32>)>> {
    if cfg.images.is_empty() {
        let (data, located) = find_flower_data(cfg.data_dir.as_deref(), seed)?;
        eprintln!("{}", located.banner);
        return Ok(vec![(SCORE_NAME.to_owned(), data.image)]);
    }
    let mut images: Vec<(String, Array3<f32>)> = Vec::new();
    for path in &cfg.images {
        let name = stem(path)?;
        if images.iter().any(|(other, _)| *other == name) {
            bail!("two images are called {name:?} (their pictures would overwrite each other): rename one of them");
        }
        images.push((name, load_image(path)?));
    }
    Ok(images)
}

/// The file stem of `path`, the name of its pictures.
fn stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_owned)
        .with_context(|| format!("image {path:?} has no UTF-8 file name"))
}
