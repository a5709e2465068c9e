//! The `predict` command: a saved run's classifier, made fully convolutional,
//! segments any image (scored when a reference mask is given); and the pictures
//! every command writes into `predictions/`.

use std::path::Path;

use common::data::image_io::{load_grey_mask, load_image};
use common::device::open_device;
use common::run_dir::RunDir;
use common::viz::{heat_map, overlay, save_mask_png, save_panel, save_rgb, MaskStyle};
use ndarray::Array2;

use crate::config::{stride1_side, PredictConfig};
use crate::data::Scene;
use crate::model::load_classifier;
use crate::report::PredictReport;
use crate::scene::{segment_scene, threshold, SceneReport, SegmentOptions};

/// Segments `cfg.image` with the classifier of the run folder (or `--checkpoint`);
/// writes `config.json`, `metrics.json` and `predictions/*.png` into `--out`
/// (default `<run>/predict`).
pub fn predict(cfg: &PredictConfig) -> anyhow::Result<PredictReport> {
    let device = open_device(cfg.saved.device)?;
    let checkpoint = cfg.checkpoint_path();
    let classifier = load_classifier(&checkpoint, &device)?;
    let scene = load_target(&cfg.image, cfg.mask.as_deref())?;
    let out = RunDir::create(cfg.out_dir(), cfg)?;
    let options = SegmentOptions {
        compare: cfg.compare,
        window_batch: cfg.window_batch,
        stride1_region: stride1_side(cfg.stride1_region),
        progress: cfg.saved.progress(),
    };
    let segmentation = segment_scene(&classifier, &scene, &device, &options)?;
    write_pictures(&out.predictions(), &scene, &segmentation)?;
    let report = PredictReport {
        image: cfg.image.clone(),
        checkpoint,
        scene: segmentation,
        out: out.path().to_path_buf(),
    };
    out.write_metrics(&report)?;
    Ok(report)
}

/// The image to segment and its optional reference mask (non-zero = flower),
/// which must have the image's size.
fn load_target(image_path: &Path, mask_path: Option<&Path>) -> anyhow::Result<Scene> {
    let image = load_image(image_path)?;
    let mask = mask_path
        .map(|path| load_matching_mask(path, image_path, image.dim()))
        .transpose()?;
    let name = image_path
        .file_stem()
        .map_or("image".into(), |s| s.to_string_lossy().into_owned());
    Ok(Scene { name, image, mask })
}

fn load_matching_mask(
    path: &Path,
    image_path: &Path,
    (_, h, w): (usize, usize, usize),
) -> anyhow::Result<Array2<u8>> {
    let mask = load_grey_mask(path, 1)?;
    if mask.dim() != (h, w) {
        anyhow::bail!(
            "mask {path:?} is {}x{} but image {image_path:?} is {h}x{w}",
            mask.nrows(),
            mask.ncols(),
        );
    }
    Ok(mask)
}

/// Writes the scene's pictures into `dir`: `<name>_heatmap.png` (flower
/// probability, full size), `<name>_heatmap_fcn.png` (the FCN's own 4x smaller
/// map), `<name>_mask.png` (black/white), `<name>_overlay.png`, `<name>_panel.png`
/// (image | reference | prediction) and, after a comparison,
/// `<name>_stride1_heatmap.png` and `<name>_stride1_mask.png`.
pub fn write_pictures(dir: &Path, scene: &Scene, report: &SceneReport) -> anyhow::Result<()> {
    let file = |what: &str| dir.join(format!("{}_{what}.png", scene.name));
    save_rgb(&file("heatmap"), &heat_map(&report.probability))?;
    save_rgb(&file("heatmap_fcn"), &heat_map(&report.coarse_probability))?;
    save_mask_png(&file("mask"), &report.mask, MaskStyle::Binary)?;
    save_rgb(&file("overlay"), &overlay(&scene.image, &report.mask, 0.5))?;
    save_panel(
        &file("panel"),
        &scene.image,
        scene.mask.as_ref(),
        &report.mask,
    )?;
    if let Some(c) = &report.comparison {
        save_rgb(&file("stride1_heatmap"), &heat_map(&c.stride1_probability))?;
        let stride1_mask = threshold(&c.stride1_probability);
        save_mask_png(&file("stride1_mask"), &stride1_mask, MaskStyle::Binary)?;
    }
    Ok(())
}
