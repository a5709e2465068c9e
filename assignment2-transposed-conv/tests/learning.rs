//! Short learning runs: on the generated stand-in (always) and on the real
//! lecture patches (when present) the loss falls and the pixel accuracy rises;
//! bad data folders give clear errors; bad settings stop a run before any work.

use anyhow::Result;
use assignment2_transposed_conv::config::{Config, Models};
use assignment2_transposed_conv::data::{
    find_flower_data, load_flower_data, synthetic_flower_data, FlowerData,
};
use assignment2_transposed_conv::evaluate::{flower_iou, score};
use assignment2_transposed_conv::model::Variant;
use assignment2_transposed_conv::predict::segment;
use assignment2_transposed_conv::run::run;
use assignment2_transposed_conv::training::{train_variant, TrainSettings};
use candle::Device;
use common::data::shared_data_set;
use common::run_dir::RunDir;

/// Short-run settings for `variant`: a high learning rate (0.01) for a quick fit,
/// except for `dilated`, which gets the program's default 0.003: at 0.01 Adam's
/// first steps move all five identity-initialised context layers at once, the
/// first epoch's loss rises to 1.24 and the training accuracy is still 0.76 after
/// 6 epochs (measured); at 0.003 it reaches 0.95.
fn settings(variant: Variant, epochs: usize) -> TrainSettings {
    let lr = match variant {
        Variant::Dilated => 0.003,
        _ => 0.01,
    };
    TrainSettings {
        epochs,
        batch_size: 8,
        lr,
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
    out: &RunDir,
) -> Result<f64> {
    let trained = train_variant(
        variant,
        &data.train,
        &settings(variant, epochs),
        out,
        &Device::Cpu,
    )?;
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
        let out = RunDir::create_empty(dir.path().join(variant.name()))?;
        learns(&data, variant, 6, 0.8, &out)?;
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
    let iou = learns(&data, Variant::Skip, 8, 0.85, &RunDir::open(dir.path())?)?;
    // A short run already finds most of the flower at full resolution.
    assert!(iou > 0.6, "flower IoU after 8 epochs: {iou}");
    Ok(())
}

#[test]
fn unpool_and_dilated_reach_090_on_the_flower_with_the_defaults() -> Result<()> {
    // Issue 16's bar: each new net, trained as the default run trains it, finds the
    // flower at full resolution with IoU >= 0.90 (the run measures about 0.98).
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let data = load_flower_data(&root)?;
    let settings = TrainSettings {
        progress: false,
        ..TrainSettings::from(&Config::default())
    };
    let dir = tempfile::tempdir()?;
    for variant in [Variant::Unpool, Variant::Dilated] {
        let out = RunDir::create_empty(dir.path().join(variant.name()))?;
        let trained = train_variant(variant, &data.train, &settings, &out, &Device::Cpu)?;
        let mask = segment(&trained.model, &data.image, &Device::Cpu)?;
        let iou = flower_iou(&score(&mask, &data.mask, 2)?);
        assert!(iou >= 0.90, "{variant}: flower IoU {iou}");
    }
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
            Config {
                epochs: 0,
                ..Config::default()
            },
            "epochs (0) and batch size (8) must be at least 1",
        ),
        (
            Config {
                lr: -1.0,
                ..Config::default()
            },
            "learning rate must be a positive number, got -1",
        ),
        (
            Config {
                model: Models::List(vec![]),
                ..Config::default()
            },
            "no model variant to train",
        ),
    ];
    for (mut cfg, message) in bad {
        cfg.run.out = Some(out.clone());
        let err = run(&cfg).unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
    assert!(
        !out.exists(),
        "nothing may be written for a bad configuration"
    );
}
