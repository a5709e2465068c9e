//! The `predict` subcommand: the final head of a saved run on any image files. Each
//! image goes through the run's VGG at the run's input size; the labels, upsampled to
//! the image's own size, are written as `predictions/<stem>.png` (`image |
//! prediction`) and `predictions/<stem>-mask.png` (the labels in colour).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use common::data::image_io::load_image;
use common::device::open_device;
use common::run_dir::RunDir;
use common::viz::{save_mask_png, save_panel, MaskStyle};
use ndarray::Array2;

use crate::config::PredictConfig;
use crate::evaluate::predict_labels;
use crate::model::ConvHead;
use crate::report::{PredictReport, Prediction};
use crate::taps::Extractor;
use crate::training::load_final_head;
use crate::weights::reload_backbone;

/// Runs the subcommand; writes the pictures and `predictions.json` into `--out`
/// (default `<run>/predict`).
pub fn predict(cfg: &PredictConfig) -> anyhow::Result<PredictReport> {
    let files = image_files(&cfg.images, cfg.data_dir.as_deref())?;
    let run = cfg.open_run()?;
    let device = open_device(cfg.saved.device)?;
    let (head, record) = load_final_head(&run, &device)?;
    let out = RunDir::create(cfg.out_dir(), cfg)?;
    let seed = record.config.seed;
    let (backbone, weights) = reload_backbone(&record.backbone, &cfg.backbone, seed, &device)?;
    let extractor = Extractor {
        backbone: &backbone,
        input_size: record.config.input_size,
        feature_size: record.feature_size,
        device: &device,
        tap_dir: None,
        cache_dir: record.config.cache_dir.clone(),
        progress: false,
    };
    let head = head.detached()?;
    let images = files
        .into_iter()
        .map(|file| predict_image(&extractor, &head, &record.class_names, &out, file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = PredictReport {
        run: run.path().to_path_buf(),
        backbone: weights,
        images,
    };
    out.write_json("predictions.json", &report)?;
    Ok(report)
}

/// One image through the VGG and the head; its panel and coloured mask written into `out`.
fn predict_image(
    extractor: &Extractor,
    head: &ConvHead,
    class_names: &[String],
    out: &RunDir,
    file: PathBuf,
) -> anyhow::Result<Prediction> {
    let image = load_image(&file)?;
    let taps = extractor.image_taps(&image, &file.display().to_string())?;
    // The f16 taps as f32, as the head saw them in training.
    let taps = taps
        .iter()
        .map(|t| t.to_dtype(candle::DType::F32))
        .collect::<candle::Result<Vec<_>>>()?;
    let (_, height, width) = image.dim();
    let labels = predict_labels(head, &taps, extractor.feature_size, (height, width))?;
    let stem = file
        .file_stem()
        .map_or_else(|| "image".to_owned(), |s| s.to_string_lossy().into_owned());
    let panel = out.predictions().join(format!("{stem}.png"));
    let mask = out.predictions().join(format!("{stem}-mask.png"));
    save_panel(&panel, &image, None, &labels)?;
    save_mask_png(&mask, &labels, MaskStyle::Colour)?;
    Ok(Prediction {
        image: file,
        panel,
        mask,
        class_fractions: class_fractions(&labels, class_names),
    })
}

/// The image files named by `paths` and in the folder `data_dir`: files as given,
/// folders as their `.jpg`, `.jpeg` and `.png` files in name order.
fn image_files(paths: &[PathBuf], data_dir: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths.iter().map(PathBuf::as_path).chain(data_dir) {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read folder {path:?}"))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            inside.sort();
            files.extend(inside);
        } else if path.is_file() {
            files.push(path.to_path_buf());
        } else {
            bail!("image {path:?} not found");
        }
    }
    if files.is_empty() {
        bail!("no image to predict: name image files or folders of them (.jpg, .png)");
    }
    Ok(files)
}

fn is_image(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// The share of the pixels of each class that occurs in `labels`.
fn class_fractions(labels: &Array2<u8>, class_names: &[String]) -> BTreeMap<String, f64> {
    let mut counts = vec![0usize; class_names.len()];
    for &label in labels {
        if let Some(count) = counts.get_mut(usize::from(label)) {
            *count += 1;
        }
    }
    let total = labels.len().max(1) as f64;
    class_names
        .iter()
        .zip(counts)
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| (name.clone(), count as f64 / total))
        .collect()
}
