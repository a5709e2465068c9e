//! Short learning runs: on the generated stand-in (always) and on the real
//! lecture patches (when present) the loss falls and the pixel accuracy rises;
//! a whole `run` writes its files; bad data folders give clear errors.

use std::path::Path;

use anyhow::Result;
use assignment2_transposed_conv::data::{
    find_flower_data, load_flower_data, synthetic_flower_data, FlowerData,
};
use assignment2_transposed_conv::evaluate::{flower_iou, score, segment};
use assignment2_transposed_conv::model::Variant;
use assignment2_transposed_conv::training::{run, train_variant, RunConfig, TrainSettings};
use candle::Device;
use common::data::shared_data_set;
use common::device::DeviceChoice;

fn settings(epochs: usize) -> TrainSettings {
    TrainSettings {
        epochs,
        batch_size: 8,
        lr: 0.01,
        seed: 5,
        progress: false,
    }
}

/// Trains `variant` briefly and checks the loss falls and the training accuracy
/// ends above `min_accuracy`; gives the flower IoU on the scoring image.
fn learns(
    data: &FlowerData,
    variant: Variant,
    epochs: usize,
    min_accuracy: f64,
    out: &Path,
) -> Result<f64> {
    let trained = train_variant(variant, &data.train, &settings(epochs), out, &Device::Cpu)?;
    let epochs = &trained.history.epochs;
    let (first, last) = (&epochs[0], &epochs[epochs.len() - 1]);
    assert!(
        last.train_loss < 0.8 * first.train_loss,
        "{variant}: loss {} -> {}",
        first.train_loss,
        last.train_loss
    );
    let accuracy = last.metric.unwrap_or(0.0);
    assert!(
        accuracy > min_accuracy,
        "{variant}: train pixel accuracy {accuracy}"
    );
    let mask = segment(&trained.model, &data.image, &Device::Cpu)?;
    assert_eq!(mask.dim(), data.mask.dim(), "full-resolution mask");
    Ok(flower_iou(&score(&mask, &data.mask, 2)?))
}

#[test]
fn learns_on_generated_data() -> Result<()> {
    let data = synthetic_flower_data(0);
    let dir = tempfile::tempdir()?;
    for variant in Variant::ALL {
        learns(&data, variant, 6, 0.8, &dir.path().join(variant.name()))?;
    }
    Ok(())
}

#[test]
fn learns_on_the_lecture_patches() -> Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let data = load_flower_data(&root)?;
    assert_eq!(data.train.len(), 38);
    assert_eq!(data.image.dim(), (3, 427, 640));
    let dir = tempfile::tempdir()?;
    let iou = learns(&data, Variant::Skip, 8, 0.85, dir.path())?;
    // A short run already finds most of the flower at full resolution.
    assert!(iou > 0.6, "flower IoU after 8 epochs: {iou}");
    Ok(())
}

#[test]
fn a_whole_run_writes_its_outputs() -> Result<()> {
    let data_dir = tempfile::tempdir()?;
    // A tiny real-layout data set written from the generated stand-in.
    let data = synthetic_flower_data(1);
    common::data::pairs::write_pairs_layout(
        data.train.as_ref(),
        &data_dir.path().join("TrainingImages"),
        &data_dir.path().join("TrainingLabels"),
    )?;
    common::data::image_io::save_image(&data_dir.path().join("flower.jpg"), &data.image)?;
    common::data::image_io::save_palette_mask(
        &data_dir.path().join("flower_mask.png"),
        &data.mask,
    )?;
    let out = tempfile::tempdir()?;
    let cfg = RunConfig {
        data_dir: Some(data_dir.path().to_path_buf()),
        out_dir: out.path().join("run"),
        variants: vec![Variant::Transposed, Variant::Bilinear],
        epochs: 2,
        device: DeviceChoice::Cpu,
        progress: false,
        ..RunConfig::default()
    };
    let report = run(&cfg)?;
    assert_eq!(report.image_size, [93, 127]);
    assert_eq!(report.variants.len(), 2);
    assert_eq!(report.variants["bilinear"].parameters, 5154);
    for file in ["config.json", "metrics.json", "loss.png", "masks.png"] {
        assert!(cfg.out_dir.join(file).is_file(), "{file}");
    }
    for file in [
        "mask.png",
        "overlay.png",
        "panel.png",
        "loss.png",
        "history.csv",
        "checkpoint.safetensors",
    ] {
        assert!(
            cfg.out_dir.join("transposed").join(file).is_file(),
            "transposed/{file}"
        );
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.out_dir.join("metrics.json"))?)?;
    for key in [
        "flower_iou",
        "flower_pixel_accuracy",
        "train_pixel_accuracy",
        "parameters",
        "train_seconds",
    ] {
        assert!(metrics["variants"]["transposed"][key].is_number(), "{key}");
    }
    // The side-by-side picture: reference + 2 masks of 127 px, 4 px apart.
    let masks = image::open(cfg.out_dir.join("masks.png"))?;
    assert_eq!((masks.width(), masks.height()), (3 * 127 + 2 * 4, 93));
    Ok(())
}

#[test]
fn bad_data_folders_are_named_in_the_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = format!("{:#}", find_flower_data(Some(dir.path()), 0).unwrap_err());
    assert!(
        err.contains("--data-dir")
            && err.contains("lacks TrainingImages, TrainingLabels, flower.jpg, flower_mask.png"),
        "{err}"
    );
    // A reference mask of the wrong size.
    let data = synthetic_flower_data(2);
    common::data::pairs::write_pairs_layout(
        data.train.as_ref(),
        &dir.path().join("TrainingImages"),
        &dir.path().join("TrainingLabels"),
    )?;
    common::data::image_io::save_image(&dir.path().join("flower.jpg"), &data.image)?;
    let small = ndarray::Array2::<u8>::zeros((5, 5));
    common::data::image_io::save_palette_mask(&dir.path().join("flower_mask.png"), &small)?;
    let err = format!("{:#}", load_flower_data(dir.path()).unwrap_err());
    assert!(
        err.contains("flower_mask.png") && err.contains("is 5x5 but flower.jpg is 93x127"),
        "{err}"
    );
    Ok(())
}

#[test]
fn bad_settings_stop_the_run_before_any_work() {
    let out = std::env::temp_dir().join("a2-never-written");
    let bad = [
        (
            RunConfig {
                epochs: 0,
                ..RunConfig::default()
            },
            "epochs (0) and batch size (8) must be at least 1",
        ),
        (
            RunConfig {
                lr: -1.0,
                ..RunConfig::default()
            },
            "learning rate must be a positive number, got -1",
        ),
        (
            RunConfig {
                variants: vec![],
                ..RunConfig::default()
            },
            "no model variant to train",
        ),
    ];
    for (cfg, message) in bad {
        let cfg = RunConfig {
            out_dir: out.clone(),
            ..cfg
        };
        let err = run(&cfg).unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
    assert!(
        !out.exists(),
        "nothing may be written for a bad configuration"
    );
}
