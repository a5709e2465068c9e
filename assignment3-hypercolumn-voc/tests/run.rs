//! End-to-end runs: the whole pipeline on a generated VOC-layout set with a
//! random VGG11 (always), and on a few real CamVid images with the shared VGG16
//! (when present); both must learn and write every output. `evaluate` and `predict`
//! then read the run folder back.

use std::path::{Path, PathBuf};

use anyhow::Result;
use assignment3_hypercolumn_voc::config::{parse_size, Config, EvaluateConfig, PredictConfig};
use assignment3_hypercolumn_voc::data::write_generated_voc;
use assignment3_hypercolumn_voc::evaluate::evaluate;
use assignment3_hypercolumn_voc::model::{Arch, Backbone};
use assignment3_hypercolumn_voc::predict::predict;
use assignment3_hypercolumn_voc::report::Report;
use assignment3_hypercolumn_voc::run::run;
use candle::Device;
use common::cli::{RunArgs, SavedRunArgs};
use common::data::image_io::load_image;
use common::run_dir::RunDir;
use common::train::History;

/// `--quiet`, `--out out` and, when given, `--data-dir data`.
fn run_args(out: &Path, data: Option<PathBuf>) -> RunArgs {
    RunArgs {
        out: Some(out.to_path_buf()),
        data_dir: data,
        quiet: true,
        ..RunArgs::default()
    }
}

/// The history of phase `name` of the run in `out`.
fn history(out: &Path, name: &str) -> Result<History> {
    History::load(&RunDir::open(out.join(name))?)
}

fn check_outputs(out: &Path, report: &Report) -> Result<()> {
    for file in ["config.json", "metrics.json", "loss.png", "confusion.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    for phase in ["head", "finetune"] {
        for file in [
            "checkpoint.safetensors",
            "history.csv",
            "history.json",
            "loss.png",
        ] {
            assert!(
                out.join(phase).join(file).is_file(),
                "{phase}/{file} missing"
            );
        }
    }
    // One history schema: the run folder has none of its own.
    assert!(!out.join("history.csv").exists());
    assert!(std::fs::read_dir(out.join("predictions"))?.count() >= 2);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json"))?)?;
    for key in [
        "pixel_accuracy",
        "mean_accuracy",
        "mean_iou",
        "fw_iou",
        "iou_per_class",
        "n_sampled_features",
        "feature_dim",
        "data",
        "backbone",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json lacks {key}");
    }
    // The per-class IoU is written once.
    assert!(metrics.get("per_class_iou").is_none());
    assert_eq!(metrics["feature_dim"], 1472);
    assert_eq!(metrics["n_sampled_features"], report.n_sampled_features);
    assert_eq!(
        metrics["iou_per_class"].as_object().map(|m| m.len()),
        Some(report.class_names.len())
    );
    // Both phases learn: the training loss falls.
    for phase in ["head", "finetune"] {
        let history = history(out, phase)?;
        let first = history
            .epochs
            .first()
            .map(|e| e.train_loss)
            .unwrap_or(f64::NAN);
        let last = history.last_train_loss().unwrap_or(f64::NAN);
        assert!(
            last < first,
            "{phase}: train loss went from {first} to {last}"
        );
    }
    let checkpoint = common::checkpoint::load_checkpoint(
        &out.join("finetune/checkpoint.safetensors"),
        &Device::Cpu,
    )?;
    for key in ["fc1.weight", "fc3.bias", "norm.mean", "norm.std"] {
        assert!(checkpoint.model.contains_key(key), "checkpoint lacks {key}");
    }
    Ok(())
}

#[test]
fn whole_pipeline_on_generated_data_with_random_vgg11() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("generated");
    write_generated_voc(&data, 0)?;
    let weights = dir.path().join("vgg11-random.safetensors");
    Backbone::random(Arch::Vgg11, 5, &Device::Cpu)?.save(&weights)?;
    let out = dir.path().join("out");
    let mut cfg = Config {
        run: run_args(&out, Some(data.clone())),
        cache_dir: dir.path().join("cache"),
        head_epochs: 15,
        finetune_epochs: 2,
        input_size: (48, 64),
        hidden: 32,
        panels: 2,
        ..Config::default()
    };
    cfg.backbone.weights = Some(weights);
    let report = run(&cfg)?;
    assert_eq!(report.backbone.arch, Arch::Vgg11);
    check_outputs(&out, &report)?;
    // config.json is the Config, read back whole.
    assert_eq!(RunDir::open(&out)?.read_json::<Config>("config.json")?, cfg);
    // 48 images with 1..3 shapes (background + 5 classes), up to 3 pixels each per class.
    assert!(
        report.n_sampled_features > 48 * 3 * 2,
        "{}",
        report.n_sampled_features
    );
    assert!(report.n_sampled_features <= 48 * 3 * 6);
    let scores = &report.scores;
    eprintln!(
        "generated: mIoU {:.3}, pixel accuracy {:.3}",
        scores.mean_iou, scores.pixel_accuracy
    );
    assert!(
        scores.pixel_accuracy > 0.8,
        "pixel accuracy {}",
        scores.pixel_accuracy
    );
    assert!(scores.mean_iou > 0.3, "mIoU {}", scores.mean_iou);

    // `evaluate` on val reproduces the run's own figures from the saved head.
    let evaluated = evaluate(&EvaluateConfig {
        saved: SavedRunArgs::quiet(&out),
        ..EvaluateConfig::default()
    })?;
    assert!((evaluated.scores.mean_iou - scores.mean_iou).abs() < 1e-9);
    assert_eq!(evaluated.scores.pixels, scores.pixels);
    assert!(out.join("evaluate/metrics.json").is_file());
    assert!(out.join("evaluate/confusion.png").is_file());

    // `predict` segments image files: a panel and a coloured mask each.
    let image = first_image(&data.join("JPEGImages"))?;
    let predicted = predict(&PredictConfig {
        images: vec![image.clone()],
        saved: SavedRunArgs::quiet(&out),
        ..PredictConfig::default()
    })?;
    assert_eq!(predicted.images.len(), 1);
    let written = &predicted.images[0];
    assert!(written.panel.is_file() && written.mask.is_file());
    assert!(written.panel.starts_with(out.join("predict/predictions")));
    let (_, h, w) = load_image(&image)?.dim();
    let gap = common::viz::PANEL_GAP as usize;
    assert_eq!(load_image(&written.panel)?.dim(), (3, h, 2 * w + gap));
    let total: f64 = written.class_fractions.values().sum();
    assert!((total - 1.0).abs() < 1e-9, "class fractions sum to {total}");
    assert!(out.join("predict/predictions.json").is_file());

    // A second run with the same settings reuses the sampled features.
    let again_out = dir.path().join("again");
    let again = Config {
        run: run_args(&again_out, Some(data)),
        finetune_epochs: 0,
        head_epochs: 2,
        ..cfg.clone()
    };
    let second = run(&again)?;
    assert_eq!(second.n_sampled_features, report.n_sampled_features);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again_out.join("metrics.json"))?)?;
    assert!(
        metrics["timings"].get("train_extraction_s").is_none(),
        "train images were read again"
    );
    // Without fine-tuning the head phase holds the final head.
    let evaluated = evaluate(&EvaluateConfig {
        saved: SavedRunArgs::quiet(&again_out),
        ..EvaluateConfig::default()
    })?;
    assert!((evaluated.scores.mean_iou - second.scores.mean_iou).abs() < 1e-9);

    // `evaluate` scores the images the run used (its --max-images) unless told otherwise.
    let small_out = dir.path().join("small");
    let small = run(&Config {
        run: run_args(&small_out, again.run.data_dir.clone()),
        max_images: Some(5),
        ..again.clone()
    })?;
    let evaluated = evaluate(&EvaluateConfig {
        saved: SavedRunArgs::quiet(&small_out),
        ..EvaluateConfig::default()
    })?;
    assert_eq!((small.n_val_images, evaluated.n_images), (5, 5));
    assert!((evaluated.scores.mean_iou - small.scores.mean_iou).abs() < 1e-9);
    Ok(())
}

fn first_image(dir: &Path) -> Result<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no image in {dir:?}"))
}

/// A small VOC-layout copy of CamVid: every `step_train`-th train and every
/// `step_val`-th val image (spread over the sequences, not consecutive frames).
fn camvid_subset(source: &Path, root: &Path, step_train: usize, step_val: usize) -> Result<()> {
    for folder in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        std::fs::create_dir_all(root.join(folder))?;
    }
    std::fs::copy(source.join("classes.txt"), root.join("classes.txt"))?;
    for (split, step) in [("train", step_train), ("val", step_val)] {
        let list =
            std::fs::read_to_string(source.join(format!("ImageSets/Segmentation/{split}.txt")))?;
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| !l.trim().is_empty())
            .step_by(step)
            .collect();
        for id in &ids {
            for (folder, ext) in [("JPEGImages", "jpg"), ("SegmentationClass", "png")] {
                let name = format!("{folder}/{id}.{ext}");
                std::fs::copy(source.join(&name), root.join(&name))?;
            }
        }
        std::fs::write(
            root.join(format!("ImageSets/Segmentation/{split}.txt")),
            ids.join("\n"),
        )?;
    }
    Ok(())
}

#[test]
fn short_real_camvid_run_learns() -> Result<()> {
    let Some(camvid) = common::data::shared_data_set("camvid-voc") else {
        return Ok(());
    };
    let Some(weights) = common::weights::shared_weights_dir()
        .map(|d| d.join("vgg16-hed-bsds500.safetensors"))
        .filter(|p| p.is_file())
    else {
        eprintln!("skipped: shared VGG16 weights not found");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("camvid-subset");
    // 367 / 30 -> 13 train images, 101 / 20 -> 6 val images.
    camvid_subset(&camvid, &data, 30, 20)?;
    let out = dir.path().join("out");
    let mut cfg = Config {
        run: run_args(&out, Some(data)),
        cache_dir: dir.path().join("cache"),
        head_epochs: 20,
        finetune_epochs: 3,
        input_size: (96, 128),
        hidden: 64,
        finetune_batch_size: 2,
        panels: 2,
        ..Config::default()
    };
    cfg.backbone.weights = Some(weights);
    let report = run(&cfg)?;
    assert_eq!(report.backbone.arch, Arch::Vgg16);
    check_outputs(&out, &report)?;
    let scores = &report.scores;
    eprintln!(
        "camvid: mIoU {:.3} (head alone {:.3}), pixel accuracy {:.3}",
        scores.mean_iou, report.head_only_mean_iou, scores.pixel_accuracy
    );
    // Fine-tuning on whole images lowers the val loss of the head alone.
    let head_val = history(&out, "head")?
        .epochs
        .last()
        .and_then(|e| e.val_loss);
    let tuned_val = history(&out, "finetune")?
        .epochs
        .last()
        .and_then(|e| e.val_loss);
    match (head_val, tuned_val) {
        (Some(head), Some(tuned)) => assert!(tuned < head, "val loss {head} -> {tuned}"),
        other => panic!("missing val losses {other:?}"),
    }
    // 11 classes: chance is about 9% pixel accuracy; road and sky alone are 50%.
    assert!(
        scores.pixel_accuracy > 0.6,
        "pixel accuracy {}",
        scores.pixel_accuracy
    );
    assert!(scores.mean_iou > 0.2, "mIoU {}", scores.mean_iou);
    Ok(())
}

#[test]
fn bad_settings_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = Config {
        run: run_args(&dir.path().join("out"), Some(dir.path().to_path_buf())),
        ..Config::default()
    };
    let err = format!("{:#}", run(&cfg).unwrap_err());
    assert!(err.contains("is not a VOC-layout folder"), "{err}");
    let err = run(&Config {
        input_size: (8, 64),
        ..cfg.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("too small"), "{err}");
    let data = dir.path().join("generated");
    write_generated_voc(&data, 0)?;
    let mut missing = Config {
        run: run_args(&dir.path().join("out"), Some(data)),
        ..cfg
    };
    missing.backbone.weights = Some(dir.path().join("nope.safetensors"));
    let err = run(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.safetensors\" not found"), "{err}");
    assert_eq!(parse_size("180x240")?, (180, 240));
    let err = parse_size("180 by 240").unwrap_err().to_string();
    assert!(err.contains("HEIGHTxWIDTH"), "{err}");
    assert!(parse_size("0x5").is_err());
    Ok(())
}

#[test]
fn evaluate_and_predict_refuse_other_folders_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let evaluate_in = |folder: &Path| {
        evaluate(&EvaluateConfig {
            saved: SavedRunArgs::quiet(folder),
            ..EvaluateConfig::default()
        })
        .map(|_| ())
    };
    // Not a run folder at all.
    let err = format!("{:#}", evaluate_in(&dir.path().join("absent")).unwrap_err());
    assert!(err.contains("does not exist"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let err = format!("{:#}", evaluate_in(&empty).unwrap_err());
    assert!(
        err.contains("holds no head/ or finetune/ checkpoint"),
        "{err}"
    );

    // A run folder of the format before this one: phase checkpoints whose record is
    // the old `{"config": ..., "arch": ...}` object.
    let old = dir.path().join("old");
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle::DType::F32, &Device::Cpu);
    vb.get(4, "fc1.bias")?;
    let meta = common::checkpoint::CheckpointMeta {
        epoch: 3,
        step: 0,
        seed: 0,
        config: serde_json::json!({"config": {"head_epochs": 15}, "arch": "vgg16"}),
    };
    let path = old.join("finetune").join("checkpoint.safetensors");
    common::checkpoint::save_checkpoint(&path, &varmap, &Default::default(), &meta)?;
    let err = format!("{:#}", evaluate_in(&old).unwrap_err());
    assert!(err.contains("older format"), "{err}");
    let err = predict(&PredictConfig {
        images: vec![path],
        saved: SavedRunArgs::quiet(&old),
        ..PredictConfig::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("older format"), "{err:#}");

    // predict names the image that is missing.
    let err = predict(&PredictConfig {
        images: vec![dir.path().join("nope.jpg")],
        saved: SavedRunArgs::quiet(&empty),
        ..PredictConfig::default()
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("nope.jpg\" not found"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn defaults_are_the_homeworks() {
    let cfg = Config::default();
    assert_eq!(
        (cfg.head_epochs, cfg.finetune_epochs, cfg.seed),
        (15, 15, 0)
    );
    assert_eq!(cfg.input_size, (180, 240));
    assert_eq!(cfg.feature_size(), (180, 240));
    assert_eq!((cfg.samples_per_class, cfg.hidden), (3, 128));
    assert!(!cfg.test_flip && !cfg.quick && !cfg.tune);
    assert_eq!((cfg.head_lr, cfg.head_batch_size), (1e-3, 128));
    assert_eq!((cfg.finetune_lr, cfg.finetune_batch_size), (3e-3, 4));
    assert_eq!(cfg.weight_decay, 1e-4);
    assert_eq!(
        cfg.class_weights,
        assignment3_hypercolumn_voc::training::ClassWeighting::SqrtMedian
    );
    assert_eq!((cfg.panels, cfg.max_cache_gib), (6, 8.0));
    assert!(!cfg.cache_taps && !cfg.download && cfg.backbone.weights.is_none());
    assert_eq!(
        cfg.out_dir(),
        Path::new("runs/assignment3-hypercolumn-voc/seed0")
    );
    assert_eq!(
        EvaluateConfig::default().out_dir(),
        Path::new("runs/assignment3-hypercolumn-voc/seed0/evaluate")
    );
}

#[test]
fn quick_keeps_the_homeworks_first_settings() {
    let quick = Config::quick();
    assert!(quick.quick);
    assert_eq!((quick.head_epochs, quick.finetune_epochs), (15, 3));
    assert_eq!(quick.input_size, (180, 240));
    assert_eq!(quick.feature_size(), (90, 120));
    assert_eq!((quick.samples_per_class, quick.hidden), (3, 128));
    assert_eq!(quick.finetune_lr, 1e-3);
    assert!(!quick.test_flip);
    // Everything else is the default run's.
    let full = Config::default();
    let as_full = Config {
        quick: false,
        finetune_epochs: full.finetune_epochs,
        finetune_lr: full.finetune_lr,
        ..quick
    };
    assert_eq!(as_full, full);
}

#[test]
fn flags_given_beside_quick_still_win() -> Result<()> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }
    let cli = <Cli as clap::Parser>::try_parse_from([
        "a3",
        "--quick",
        "--finetune-epochs",
        "5",
        "--test-flip",
        "true",
    ])
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(cli.config.finetune_epochs, 5);
    assert!(cli.config.test_flip);
    assert_eq!(cli.config.input_size, (180, 240));
    Ok(())
}
