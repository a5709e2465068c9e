//! Short training runs that must learn (generated membrane-like images always,
//! the real ISBI 2012 images when present), the files a run writes, `evaluate`
//! and `predict` from its checkpoint (odd image sizes kept), resume, bad options.

use std::path::{Path, PathBuf};

use anyhow::Result;
use assignment4_unet::evaluate::{evaluate_checkpoint, EvaluateOptions};
use assignment4_unet::predict::{load_model, predict_files};
use assignment4_unet::training::{check_options, train, TrainOptions};
use common::device::DeviceChoice;
use image::{GrayImage, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writes an ISBI-like layout (`train/image`, `train/label`) of `n` grey `size x
/// size` images: bright cells split by dark, 2-3 px membranes on a jittered grid,
/// with noise; labels 0 on membranes, 255 inside cells, as ISBI's.
fn write_membrane_layout(root: &Path, n: usize, size: u32) -> Result<()> {
    let (images, labels) = (root.join("train/image"), root.join("train/label"));
    std::fs::create_dir_all(&images)?;
    std::fs::create_dir_all(&labels)?;
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..n {
        let (oy, ox) = (rng.random_range(0..12), rng.random_range(0..12));
        let label = GrayImage::from_fn(size, size, |x, y| {
            let membrane = (y + oy) % 12 < 2 || (x + ox + y / 6) % 12 < 3;
            Luma([if membrane { 0 } else { 255 }])
        });
        let image = GrayImage::from_fn(size, size, |x, y| {
            let base = if label.get_pixel(x, y)[0] == 0 {
                60.0
            } else {
                180.0
            };
            Luma([(base + rng.random_range(-40.0f32..40.0)) as u8])
        });
        image.save(images.join(format!("{i}.png")))?;
        label.save(labels.join(format!("{i}.png")))?;
    }
    Ok(())
}

fn small_options(data_dir: PathBuf, out_dir: PathBuf) -> TrainOptions {
    TrainOptions {
        data_dir: Some(data_dir),
        out_dir,
        epochs: 2,
        steps_per_epoch: 12,
        batch_size: 4,
        crop: 32,
        width: 4,
        bilinear: false,
        lr: 1e-2,
        warmup_steps: 2,
        n_val: 2,
        seed: 5,
        device: DeviceChoice::Cpu,
        resume: false,
        progress: false,
        ..TrainOptions::default()
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn short_run_on_generated_membranes_learns_and_writes_its_files() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    write_membrane_layout(&data, 8, 48)?;
    let out = tmp.path().join("run");
    let report = train(&small_options(data.clone(), out.clone()))?;

    // 2 epochs of 12 steps; the loss of the last steps is well below the first's.
    let losses = &report.step_losses;
    assert_eq!(losses.len(), 24);
    let (first, last) = (mean(&losses[..4]), mean(&losses[20..]));
    assert!(last < 0.8 * first, "loss {first:.3} -> {last:.3}");
    // Membranes are about 35% of the pixels: predicting "cell" everywhere scores
    // about 0.65 pixel accuracy and membrane Dice 0.
    let m = &report.metrics;
    assert!(
        m.pixel_accuracy > 0.8,
        "pixel accuracy {}",
        m.pixel_accuracy
    );
    assert!(m.class_dice(0) > 0.6, "membrane Dice {}", m.class_dice(0));
    assert!(!report.synthetic);

    for file in [
        "config.json",
        "history.csv",
        "history.json",
        "loss.png",
        "metrics.json",
        "checkpoint.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json"))?)?;
    for key in [
        "dice",
        "iou",
        "pixel_accuracy",
        "n_parameters",
        "dice_per_class",
        "iou_per_class",
    ] {
        assert!(!json[key].is_null(), "metrics.json lacks {key}");
    }
    assert_eq!(json["dice_per_class"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["n_parameters"].as_u64(), Some(m.n_parameters as u64));
    let predictions: Vec<_> = std::fs::read_dir(out.join("predictions"))?.collect();
    assert_eq!(
        predictions.len(),
        2 * 3,
        "mask, overlay and panel per held-back image"
    );

    // `evaluate` on the checkpoint holds back the same images and finds the same figures.
    let evaluated = evaluate_checkpoint(&EvaluateOptions {
        checkpoint: out.join("checkpoint.safetensors"),
        data_dir: Some(data.clone()),
        out_dir: tmp.path().join("eval"),
        n_val: None,
        seed: None,
        device: DeviceChoice::Cpu,
    })?;
    assert!((evaluated.pixel_accuracy - m.pixel_accuracy).abs() < 1e-9);
    assert_eq!(evaluated.dice_per_class, m.dice_per_class);

    // `predict` keeps odd sizes: a 37x23 crop of an image gives a 37x23 mask.
    let odd = tmp.path().join("odd.png");
    image::open(data.join("train/image/0.png"))?
        .crop_imm(3, 5, 23, 37)
        .save(&odd)?;
    let loaded = load_model(&out.join("checkpoint.safetensors"), &candle::Device::Cpu)?;
    let written = predict_files(
        &loaded.model,
        &[odd],
        &tmp.path().join("pred"),
        &candle::Device::Cpu,
    )?;
    let mask = common::data::image_io::load_palette_mask(&written[0])?;
    assert_eq!(mask.dim(), (37, 23));
    assert!(tmp.path().join("pred/odd_overlay.png").is_file());
    Ok(())
}

#[test]
fn resume_continues_after_the_saved_epoch() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    write_membrane_layout(&data, 6, 32)?;
    let out = tmp.path().join("run");
    let mut opts = small_options(data, out.clone());
    opts.epochs = 1;
    opts.steps_per_epoch = 3;
    let first = train(&opts)?;
    opts.epochs = 2;
    opts.resume = true;
    let resumed = train(&opts)?;
    // The resumed run keeps epoch 1's steps and adds epoch 2's.
    assert_eq!(resumed.step_losses.len(), 6);
    for (a, b) in resumed.step_losses[..3].iter().zip(&first.step_losses) {
        // history.json round-trips the f64 losses to within the last digit.
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    Ok(())
}

#[test]
fn short_run_on_real_isbi_learns() -> Result<()> {
    let Some(isbi) = common::data::shared_data_set("isbi2012-membrane") else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let mut opts = small_options(isbi, tmp.path().join("run"));
    opts.crop = 48;
    opts.epochs = 1;
    opts.steps_per_epoch = 16;
    opts.n_val = 2;
    let report = train(&opts)?;
    let losses = &report.step_losses;
    let (first, last) = (mean(&losses[..4]), mean(&losses[12..]));
    assert!(last < 0.9 * first, "loss {first:.3} -> {last:.3}");
    // Evaluated on the 2 held-back whole 512x512 images.
    assert_eq!(report.metrics.n_images, 2);
    assert!(report.metrics.pixel_accuracy.is_finite());
    Ok(())
}

#[test]
fn bad_options_and_paths_are_errors_that_say_why() -> Result<()> {
    let base = TrainOptions::default();
    let err = check_options(&TrainOptions {
        crop: 100,
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--crop must be a multiple of 16"), "{err}");
    let err = check_options(&TrainOptions {
        lr: -1.0,
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--lr"), "{err}");
    let err = check_options(&TrainOptions {
        batch_size: 0,
        ..base.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--batch-size"), "{err}");

    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("nowhere");
    let err = train(&TrainOptions {
        data_dir: Some(missing.clone()),
        ..base.clone()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("nowhere"), "{err:#}");
    let err = format!(
        "{:#}",
        load_model(&tmp.path().join("none.safetensors"), &candle::Device::Cpu).unwrap_err()
    );
    assert!(
        err.contains("none.safetensors") && err.contains("not found"),
        "{err}"
    );
    // A folder of the wrong layout is named with what was expected.
    std::fs::create_dir_all(tmp.path().join("empty"))?;
    let err = format!(
        "{:#}",
        train(&TrainOptions {
            data_dir: Some(tmp.path().join("empty")),
            ..base
        })
        .unwrap_err()
    );
    assert!(err.contains("known layouts"), "{err}");
    Ok(())
}
