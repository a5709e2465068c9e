//! Short training runs that must learn (validation accuracy above 90%, loss
//! falling) on the real patches when present and on the generated ones always;
//! and the `predict` command on a saved checkpoint, end to end.

use assignment1_classify_to_segment::config::{Config, PredictConfig, SavedConfig};
use assignment1_classify_to_segment::data::{
    generated_data, label_of, load_patches, split_train_val, FLOWER,
};
use assignment1_classify_to_segment::evaluate::score_patches;
use assignment1_classify_to_segment::model::{new_classifier, Arch};
use assignment1_classify_to_segment::predict::predict;
use assignment1_classify_to_segment::scene::score_mask;
use assignment1_classify_to_segment::training::{smoothed_cross_entropy, train_classifier};
use candle::{Device, Tensor};
use common::cli::{RunArgs, SavedRunArgs};
use common::data::image_io::{save_image, save_palette_mask};
use common::data::{shared_data_set, Sample};
use common::device::DeviceChoice;
use common::run_dir::RunDir;
use ndarray::s;

type Result<T> = anyhow::Result<T>;

fn config(epochs: usize) -> Config {
    Config {
        run: RunArgs {
            device: DeviceChoice::Cpu,
            quiet: true,
            ..RunArgs::default()
        },
        arch: Arch::Default,
        epochs,
        batch_size: 16,
        lr: 0.005,
        label_smoothing: 0.1,
        seed: 7,
        ..Config::default()
    }
}

/// Trains on `train` and checks that it learned: accuracy on `val` rises above
/// 90% (from that of the initial weights) and the last epoch's loss is below the first's.
fn learns(train: Vec<Sample>, val: &[Sample], epochs: usize) -> Result<()> {
    let out = tempfile::tempdir()?;
    let run_dir = RunDir::create_empty(out.path())?;
    let device = Device::Cpu;
    let cfg = config(epochs);
    // The same initial weights train_classifier starts from (same seed).
    let (untrained, _) = new_classifier(&cfg.arch.spec(), cfg.seed, &device)?;
    let before = score_patches(&untrained, val, &device)?.accuracy;
    let trained = train_classifier(&cfg, &run_dir, train, val, &device)?;
    let first = trained.history.epochs[0].train_loss;
    let last = trained.history.last_train_loss().unwrap_or(f64::NAN);
    assert!(last < first, "loss did not fall: {first} -> {last}");
    let score = score_patches(&trained.classifier, val, &device)?;
    assert!(
        score.accuracy > 0.9 && score.accuracy > before,
        "validation accuracy {before} -> {}",
        score.accuracy
    );
    for file in ["checkpoint.safetensors", "history.csv", "loss.png"] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    Ok(())
}

#[test]
fn learns_the_real_patches() -> Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let (train, val) = split_train_val(load_patches(&root)?, 0.3, 1)?;
    // A quarter of the training patches keeps the test short; val: 195 patches.
    let train: Vec<Sample> = train.into_iter().step_by(4).collect();
    assert!(train.iter().any(|p| label_of(p) == FLOWER));
    learns(train, &val, 3)
}

#[test]
fn learns_the_generated_patches() -> Result<()> {
    let (patches, _) = generated_data(200, 4);
    let (train, val) = split_train_val(patches, 0.25, 2)?;
    learns(train, &val, 3)
}

#[test]
fn split_is_seeded_and_stratified() -> Result<()> {
    let (patches, _) = generated_data(80, 1);
    let flowers = patches.iter().filter(|p| label_of(p) == FLOWER).count();
    let (train_a, val_a) = split_train_val(patches.clone(), 0.25, 9)?;
    let (_, val_b) = split_train_val(patches.clone(), 0.25, 9)?;
    let (_, val_c) = split_train_val(patches.clone(), 0.25, 10)?;
    let ids = |v: &[Sample]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&val_a), ids(&val_b));
    assert_ne!(ids(&val_a), ids(&val_c));
    assert_eq!(train_a.len() + val_a.len(), patches.len());
    let val_flowers = val_a.iter().filter(|p| label_of(p) == FLOWER).count();
    assert_eq!(val_flowers, (flowers as f64 * 0.25).round() as usize);
    let err = split_train_val(patches, 1.0, 0).unwrap_err().to_string();
    assert!(err.contains("must be in [0, 1), got 1"), "{err}");
    Ok(())
}

#[test]
fn smoothed_cross_entropy_matches_hand_values() -> Result<()> {
    let device = Device::Cpu;
    // logits (0, ln 3): p = (1/4, 3/4). Label 1: nll = -ln(3/4) = 0.287682;
    // uniform term = -(ln(1/4) + ln(3/4)) / 2 = 0.836988.
    let logits = Tensor::new(&[[0f32, 3f32.ln()]], &device)?;
    let labels = Tensor::new(&[1u32], &device)?;
    let plain = smoothed_cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f32>()?;
    assert!((plain - 0.287_682).abs() < 1e-5, "{plain}");
    let smooth = smoothed_cross_entropy(&logits, &labels, 0.1)?.to_scalar::<f32>()?;
    let expected = 0.9 * 0.287_682 + 0.1 * 0.836_988;
    assert!((smooth - expected).abs() < 1e-5, "{smooth} vs {expected}");
    let err = smoothed_cross_entropy(&logits, &labels, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label smoothing must be in [0, 1), got 1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn predict_command_uses_a_saved_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (patches, scene) = generated_data(96, 5);
    let (train, val) = split_train_val(patches, 0.25, 0)?;
    let cfg = Config {
        arch: Arch::Lecture,
        ..config(1)
    };
    let run_dir = RunDir::create(dir.path().join("train"), &SavedConfig::new(&cfg))?;
    train_classifier(&cfg, &run_dir, train, &val, &Device::Cpu)?;

    // A 45x70 corner of the scene keeps the stride-1 sliding window short
    // (odd height: the last map row comes from padding).
    let image = dir.path().join("scene.png");
    let mask = dir.path().join("scene_mask.png");
    save_image(&image, &scene.image.slice(s![.., ..45, ..70]).to_owned())?;
    let truth = scene
        .mask
        .clone()
        .expect("generated scenes have masks")
        .slice(s![..45, ..70])
        .to_owned();
    save_palette_mask(&mask, &truth)?;
    let out = dir.path().join("predict");
    let seg = PredictConfig {
        saved: SavedRunArgs {
            run_folder: Some(run_dir.path().to_path_buf()),
            out: Some(out.clone()),
            device: cfg.run.device,
            quiet: cfg.run.quiet,
        },
        checkpoint: None,
        image: image.clone(),
        mask: Some(mask),
        compare: true,
        window_batch: 128,
        stride1_region: 0,
    };
    let report = predict(&seg)?.scene;
    let (h, w) = (45, 70);
    assert_eq!(report.mask.dim(), (h, w));
    assert_eq!(report.fcn_map_size, (h.div_ceil(4), w.div_ceil(4)));
    let comparison = report.comparison.as_ref().expect("compare was asked for");
    assert!(comparison.fcn_vs_sliding_stride4_max_abs_diff < 1e-5);
    assert!(comparison.shift_and_stitch_vs_sliding_stride1_max_abs_diff < 1e-5);
    assert_eq!(comparison.stride1_map_size, (h, w));
    // The reported score is the score of the mask it returns.
    let score = report.score.expect("a mask was given");
    assert_eq!(score, score_mask(&report.mask, &truth)?);
    for file in [
        "config.json",
        "metrics.json",
        "predictions/scene_overlay.png",
        "predictions/scene_heatmap.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    // Stride 1 compared on a centred 24x24 square only: (45-24)/2 = 10, (70-24)/2 = 23.
    let report = predict(&PredictConfig {
        stride1_region: 24,
        ..seg.clone()
    })?
    .scene;
    let comparison = report.comparison.as_ref().expect("compare was asked for");
    assert_eq!(comparison.stride1_region, (10, 23, 24, 24));
    assert!(comparison.shift_and_stitch_vs_sliding_stride1_max_abs_diff < 1e-5);

    // A checkpoint that is not one: the error names the file.
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"not a checkpoint")?;
    let err = predict(&PredictConfig {
        checkpoint: Some(bogus),
        ..seg.clone()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("bogus.safetensors"), "{err:#}");

    // A run folder without a checkpoint: the error names the missing file.
    let err = predict(&PredictConfig {
        saved: SavedRunArgs {
            run_folder: Some(dir.path().join("nowhere")),
            ..seg.saved.clone()
        },
        ..seg
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("nowhere/checkpoint.safetensors"),
        "{err:#}"
    );
    Ok(())
}
