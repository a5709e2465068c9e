//! Scoring: a net's full-resolution segmentation of the photo against its
//! reference mask (flower IoU, pixel accuracy, the probability map's roughness),
//! the masks of the variants side by side, and the `evaluate` subcommand that
//! re-scores the nets a run saved.

use std::collections::BTreeMap;
use std::path::Path;

use candle::Device;
use common::data::locate::Located;
use common::data::Dataset;
use common::device::{device_name, open_device};
use common::metrics::ConfusionMatrix;
use common::run_dir::RunDir;
use common::viz::{colorize_mask, heat_map, save_rgb, PANEL_GAP};
use common::Result;
use image::{Rgb, RgbImage};
use ndarray::Array2;

use crate::config::{EvaluateConfig, DEFAULT_SEED, PROGRAM};
use crate::data::{find_flower_data, FlowerData, SCORE_NAME};
use crate::model::{parameter_count, receptive_field, SegNet};
use crate::predict::{load_nets, save_pictures, segment, segment_with_probability, Segmentation};
use crate::report::{EvaluateReport, Setting, VariantScores};

/// The confusion matrix of `prediction` against `truth` (same size; 255 in truth ignored).
pub fn score(
    prediction: &Array2<u8>,
    truth: &Array2<u8>,
    n_classes: usize,
) -> Result<ConfusionMatrix> {
    if prediction.dim() != truth.dim() {
        anyhow::bail!(
            "prediction is {:?} but the reference mask is {:?}",
            prediction.dim(),
            truth.dim()
        );
    }
    let mut cm = ConfusionMatrix::new(n_classes);
    let pred: Vec<u8> = prediction.iter().copied().collect();
    let truth: Vec<u8> = truth.iter().copied().collect();
    cm.update(&pred, &truth)?;
    Ok(cm)
}

/// Pixel accuracy of the model over every sample of `dataset`, as stored (no augmentation).
pub fn dataset_pixel_accuracy(
    model: &SegNet,
    dataset: &dyn Dataset,
    device: &Device,
) -> Result<f64> {
    let mut cm = ConfusionMatrix::new(model.n_classes());
    for index in 0..dataset.len() {
        let sample = dataset.get(index)?;
        let prediction = segment(model, &sample.image, device)?;
        cm.merge(&score(&prediction, &sample.mask, model.n_classes())?)?;
    }
    Ok(cm.pixel_accuracy())
}

/// Intersection over union of the flower class (1) in a two-class matrix;
/// 0 when neither mask holds any flower.
pub fn flower_iou(cm: &ConfusionMatrix) -> f64 {
    cm.iou_per_class().get(1).copied().flatten().unwrap_or(0.0)
}

/// Mean absolute difference between each interior pixel of a probability map and
/// the mean of its four neighbours: a measure of high-frequency texture such as
/// the checkerboard pattern of transposed convolutions (0 on a plane).
pub fn roughness(map: &Array2<f32>) -> f64 {
    let (h, w) = map.dim();
    if h < 3 || w < 3 {
        return 0.0;
    }
    let mut total = 0.0f64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let around =
                (map[[y - 1, x]] + map[[y + 1, x]] + map[[y, x - 1]] + map[[y, x + 1]]) / 4.0;
            total += f64::from((map[[y, x]] - around).abs());
        }
    }
    total / ((h - 2) * (w - 2)) as f64
}

/// Writes the masks in VOC colours side by side, [`PANEL_GAP`] pixels apart on
/// white; all masks must have one size.
pub fn save_masks_side_by_side(path: &Path, masks: &[&Array2<u8>]) -> Result<()> {
    let pictures: Vec<RgbImage> = masks.iter().map(|m| colorize_mask(m)).collect();
    save_side_by_side(path, &pictures)
}

/// Writes the flower probability maps as heat maps side by side, [`PANEL_GAP`]
/// pixels apart on white (where grid artefacts of an upsampling show); all maps
/// must have one size.
pub fn save_probabilities_side_by_side(path: &Path, maps: &[&Array2<f32>]) -> Result<()> {
    let pictures: Vec<RgbImage> = maps.iter().map(|m| heat_map(m)).collect();
    save_side_by_side(path, &pictures)
}

/// Writes `pictures` side by side, [`PANEL_GAP`] pixels apart on white.
fn save_side_by_side(path: &Path, pictures: &[RgbImage]) -> Result<()> {
    let Some(first) = pictures.first() else {
        anyhow::bail!("{path:?}: no picture to draw");
    };
    let (w, h) = first.dimensions();
    if let Some(other) = pictures.iter().find(|p| p.dimensions() != (w, h)) {
        anyhow::bail!(
            "{path:?}: pictures differ in size, {h}x{w} and {}x{}",
            other.height(),
            other.width()
        );
    }
    let n = pictures.len() as u32;
    let mut out = RgbImage::from_pixel(n * w + (n - 1) * PANEL_GAP, h, Rgb([255, 255, 255]));
    for (index, picture) in pictures.iter().enumerate() {
        let left = index as u32 * (w + PANEL_GAP);
        image::imageops::replace(&mut out, picture, i64::from(left), 0);
    }
    save_rgb(path, &out)
}

/// Segments the scoring image with `model` and scores it (and the training
/// patches); gives the figures and the segmentation.
pub fn score_net(
    model: &SegNet,
    data: &FlowerData,
    device: &Device,
) -> Result<(VariantScores, Segmentation)> {
    let seg = segment_with_probability(model, &data.image, device)?;
    let cm = score(&seg.mask, &data.mask, model.n_classes())?;
    let scores = VariantScores {
        flower_iou: flower_iou(&cm),
        flower_pixel_accuracy: cm.pixel_accuracy(),
        train_pixel_accuracy: dataset_pixel_accuracy(model, data.train.as_ref(), device)?,
        parameters: parameter_count(model.variant(), model.n_classes()),
        probability_roughness: roughness(&seg.probability),
        receptive_field: receptive_field(model.variant())?,
    };
    Ok((scores, seg))
}

/// [`score_net`], then the net's pictures of the scoring image (with its
/// reference mask) into `dir/predictions/`.
pub fn score_and_draw(
    model: &SegNet,
    data: &FlowerData,
    dir: &RunDir,
    device: &Device,
) -> Result<(VariantScores, Segmentation)> {
    let (scores, seg) = score_net(model, data, device)?;
    save_pictures(dir, SCORE_NAME, &data.image, Some(&data.mask), &seg)?;
    Ok((scores, seg))
}

/// Where the data came from, the device, and the scoring image's size.
pub fn setting(located: Located, device: &Device, data: &FlowerData) -> Setting {
    let (_, height, width) = data.image.dim();
    Setting {
        data: located,
        device: device_name(device).to_owned(),
        image_size: [height, width],
        train_samples: data.train.len(),
    }
}

/// Re-scores the nets a training run saved on the scoring image: writes
/// `config.json`, `metrics.json` and `<variant>/predictions/` under `cfg.out_dir()`.
pub fn evaluate(cfg: &EvaluateConfig) -> Result<EvaluateReport> {
    let run = cfg.saved.open_run(PROGRAM, DEFAULT_SEED)?;
    let device = open_device(cfg.saved.device)?;
    let nets = load_nets(&run, &cfg.model, &device)?;
    // The generated scene (no data set found) is the one the run was scored on.
    let (data, located) = find_flower_data(cfg.data_dir.as_deref(), nets[0].1.seed)?;
    eprintln!("{}", located.banner);
    let out = RunDir::create(cfg.out_dir(), cfg)?;
    let mut variants = BTreeMap::new();
    for (variant, net) in &nets {
        let (scores, _) = score_and_draw(&net.model, &data, &out.child(variant.name())?, &device)?;
        variants.insert(variant.name().to_owned(), scores);
    }
    let report = EvaluateReport::new(
        run.path().to_path_buf(),
        setting(located, &device, &data),
        variants,
    );
    out.write_metrics(&report)?;
    Ok(report)
}
