//! Short training runs that must learn (generated membrane-like images always,
//! the real ISBI 2012 images when present), the files a run writes, `evaluate`
//! and `predict` from its run folder (odd image sizes kept), checkpoints of the
//! older format, resume, bad options.

use std::path::{Path, PathBuf};

use anyhow::Result;
use assignment4_unet::config::{Config, EvaluateConfig, PredictConfig};
use assignment4_unet::evaluate::evaluate;
use assignment4_unet::predict::{load_model, predict};
use assignment4_unet::run::run;
use common::checkpoint::{load_checkpoint, save_checkpoint};
use common::cli::{RunArgs, SavedRunArgs};
use common::device::DeviceChoice;
use common::run_dir::RunDir;
use common::train::History;
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

fn small_options(data_dir: PathBuf, out_dir: PathBuf) -> Config {
    Config {
        run: RunArgs {
            out: Some(out_dir),
            data_dir: Some(data_dir),
            device: DeviceChoice::Cpu,
            quiet: true,
        },
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
        resume: false,
        ..Config::default()
    }
}

/// The trained run in `run`, read by `evaluate`/`predict` on the CPU.
fn trained(run: &Path) -> SavedRunArgs {
    SavedRunArgs {
        device: DeviceChoice::Cpu,
        ..SavedRunArgs::quiet(run)
    }
}

/// `evaluate` of the run `saved` reads on `data`, into `out`.
fn evaluate_config(saved: SavedRunArgs, data: &Path, out: PathBuf) -> EvaluateConfig {
    EvaluateConfig {
        saved: SavedRunArgs {
            out: Some(out),
            ..saved
        },
        data_dir: Some(data.to_path_buf()),
        ..EvaluateConfig::default()
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
    let report = run(&small_options(data.clone(), out.clone()))?;

    // 2 epochs of 12 steps; the loss of the last steps is well below the first's.
    let losses = History::load(&RunDir::open(&out)?)?.step_losses();
    assert_eq!(losses.len(), 24);
    let (first, last) = (mean(&losses[..4]), mean(&losses[20..]));
    assert!(last < 0.8 * first, "loss {first:.3} -> {last:.3}");
    // Membranes are about 35% of the pixels: predicting "cell" everywhere scores
    // about 0.65 pixel accuracy and membrane Dice 0.
    let m = &report.evaluation;
    assert!(
        m.scores.pixel_accuracy > 0.8,
        "pixel accuracy {}",
        m.scores.pixel_accuracy
    );
    assert!(m.class_dice(0) > 0.6, "membrane Dice {}", m.class_dice(0));
    assert!(!report.data.is_generated());

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
    let evaluation = &json["evaluation"];
    for value in [
        &evaluation["dice"],
        &evaluation["iou"],
        &evaluation["scores"]["pixel_accuracy"],
        &json["n_parameters"],
        &evaluation["scores"]["dice_per_class"],
        &evaluation["scores"]["iou_per_class"],
    ] {
        assert!(!value.is_null(), "metrics.json lacks a figure: {json}");
    }
    let dice_per_class = evaluation["scores"]["dice_per_class"].as_object();
    assert_eq!(dice_per_class.map(|d| d.len()), Some(2));
    assert_eq!(
        json["n_parameters"].as_u64(),
        Some(report.n_parameters as u64)
    );
    assert_eq!(json["data"]["origin"], "given");
    // config.json is the run's Config: it reads back as the one that made the run.
    let saved: Config = RunDir::open(&out)?.read_json("config.json")?;
    assert_eq!(saved, small_options(data.clone(), out.clone()));
    let predictions: Vec<_> = std::fs::read_dir(out.join("predictions"))?.collect();
    assert_eq!(
        predictions.len(),
        2 * 3,
        "mask, overlay and panel per held-back image"
    );

    // `evaluate` on the run folder holds back the same images and finds the same figures.
    let eval_out = tmp.path().join("eval");
    let evaluated = evaluate(&evaluate_config(trained(&out), &data, eval_out.clone()))?;
    let e = &evaluated.evaluation;
    assert!((e.scores.pixel_accuracy - m.scores.pixel_accuracy).abs() < 1e-9);
    assert_eq!(e.scores.dice_per_class, m.scores.dice_per_class);
    assert_eq!(evaluated.held_back, report.held_back);
    assert!(eval_out.join("metrics.json").is_file());
    // Its config.json reads back as the flags that made it.
    let flags: EvaluateConfig = RunDir::open(&eval_out)?.read_json("config.json")?;
    assert_eq!(
        flags,
        evaluate_config(trained(&out), &data, eval_out.clone())
    );
    assert_eq!(
        std::fs::read_dir(eval_out.join("predictions"))?.count(),
        2 * 3
    );

    // `predict` keeps odd sizes: a 37x23 crop of an image gives a 37x23 mask.
    let odd = tmp.path().join("odd.png");
    image::open(data.join("train/image/0.png"))?
        .crop_imm(3, 5, 23, 37)
        .save(&odd)?;
    let written = predict(&PredictConfig {
        inputs: vec![odd.clone()],
        saved: trained(&out),
        checkpoint: None,
        tile: None,
        tta: None,
        membrane_threshold: None,
    })?;
    let mask = common::data::image_io::load_palette_mask(&written[0])?;
    assert_eq!(mask.dim(), (37, 23));
    // --tile 16: the same size from 3 x 2 tiles with mirrored borders.
    let tiled = predict(&PredictConfig {
        inputs: vec![odd],
        saved: SavedRunArgs {
            out: Some(tmp.path().join("tiled")),
            ..trained(&out)
        },
        checkpoint: None,
        tile: Some(16),
        tta: None,
        membrane_threshold: None,
    })?;
    let tiled_mask = common::data::image_io::load_palette_mask(&tiled[0])?;
    assert_eq!(tiled_mask.dim(), (37, 23));
    // Without --out, predictions go into <run>/predict.
    assert_eq!(written[0], out.join("predict/odd_mask.png"));
    assert!(out.join("predict/odd_overlay.png").is_file());
    let flags: PredictConfig = RunDir::open(out.join("predict"))?.read_json("config.json")?;
    assert_eq!(flags.saved, trained(&out));
    Ok(())
}

#[test]
fn checkpoints_of_the_older_format_load_or_say_so() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    write_membrane_layout(&data, 6, 32)?;
    let out = tmp.path().join("run");
    let mut cfg = small_options(data.clone(), out.clone());
    cfg.epochs = 1;
    cfg.steps_per_epoch = 3;
    // Older runs scored without test-time views, as their evaluation does.
    cfg.tta = false;
    let report = run(&cfg)?;

    // Before the run folders, the metadata held the model sizes and the old
    // `TrainOptions` under `options` (with `n_val` and `seed`, among others).
    let device = candle::Device::Cpu;
    let checkpoint = load_checkpoint(&out.join("checkpoint.safetensors"), &device)?;
    let loaded = load_model(&out.join("checkpoint.safetensors"), &device)?;
    let mut meta = checkpoint.meta.clone();
    meta.config = serde_json::json!({
        "model": report.model,
        "options": {
            "data_dir": data, "out_dir": "runs/assignment4-unet/default", "epochs": 1,
            "steps_per_epoch": 3, "batch_size": 4, "crop": 32, "width": 4, "bilinear": false,
            "lr": 1e-2, "warmup_steps": 2, "elastic": null, "n_val": 2, "seed": 5,
            "device": "cpu", "resume": false, "progress": false,
        },
        "data": "ISBI 2012 membranes", "synthetic_data": false, "crop_used": 32,
    });
    let old = tmp.path().join("old/checkpoint.safetensors");
    save_checkpoint(&old, &loaded.varmap, &checkpoint.optimizer, &meta)?;
    let old_run = EvaluateConfig {
        checkpoint: Some(old.clone()),
        ..evaluate_config(trained(Path::new("unused")), &data, tmp.path().join("eval"))
    };
    let evaluated = evaluate(&old_run)?;
    assert_eq!(evaluated.held_back, report.held_back);
    assert_eq!(
        evaluated.evaluation.scores.dice_per_class,
        report.evaluation.scores.dice_per_class
    );

    // Metadata without the net's sizes: one error naming the file and the format.
    meta.config = serde_json::json!({ "epochs": 1 });
    let bare = tmp.path().join("bare.safetensors");
    save_checkpoint(&bare, &loaded.varmap, &checkpoint.optimizer, &meta)?;
    let err = format!("{:#}", load_model(&bare, &device).unwrap_err());
    assert!(
        err.contains("bare.safetensors") && err.contains("older format"),
        "{err}"
    );
    // A run folder that does not exist is named.
    let missing = trained(&tmp.path().join("no-run"));
    let err = format!(
        "{:#}",
        evaluate(&evaluate_config(missing, &data, tmp.path().join("e2"))).unwrap_err()
    );
    assert!(
        err.contains("no-run") && err.contains("does not exist"),
        "{err}"
    );
    Ok(())
}

#[test]
fn resume_continues_after_the_saved_epoch() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    write_membrane_layout(&data, 6, 32)?;
    let out = tmp.path().join("run");
    let mut cfg = small_options(data, out.clone());
    cfg.epochs = 1;
    cfg.steps_per_epoch = 3;
    run(&cfg)?;
    let first = History::load(&RunDir::open(&out)?)?.step_losses();
    cfg.epochs = 2;
    cfg.resume = true;
    run(&cfg)?;
    let resumed = History::load(&RunDir::open(&out)?)?.step_losses();
    // The resumed run keeps epoch 1's steps and adds epoch 2's.
    assert_eq!(resumed.len(), 6);
    for (a, b) in resumed[..3].iter().zip(&first) {
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
    let out = tmp.path().join("run");
    let mut cfg = small_options(isbi, out.clone());
    cfg.crop = 48;
    cfg.epochs = 1;
    cfg.steps_per_epoch = 16;
    cfg.n_val = 2;
    let report = run(&cfg)?;
    let losses = History::load(&RunDir::open(&out)?)?.step_losses();
    let (first, last) = (mean(&losses[..4]), mean(&losses[12..]));
    assert!(last < 0.9 * first, "loss {first:.3} -> {last:.3}");
    // Evaluated on the 2 held-back whole 512x512 images.
    assert_eq!(report.evaluation.n_images, 2);
    assert!(report.evaluation.scores.pixel_accuracy.is_finite());
    Ok(())
}

#[test]
fn bad_options_and_paths_are_errors_that_say_why() -> Result<()> {
    let base = Config::default();
    let err = Config {
        crop: 100,
        ..base.clone()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(err.contains("--crop must be a multiple of 16"), "{err}");
    let err = Config {
        lr: -1.0,
        ..base.clone()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(err.contains("--lr"), "{err}");
    let err = Config {
        batch_size: 0,
        ..base.clone()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(err.contains("--batch-size"), "{err}");

    let tmp = tempfile::tempdir()?;
    let in_tmp = |data_dir: PathBuf| Config {
        run: RunArgs {
            data_dir: Some(data_dir),
            out: Some(tmp.path().join("run")),
            ..RunArgs::default()
        },
        ..base.clone()
    };
    let missing = tmp.path().join("nowhere");
    let err = run(&in_tmp(missing)).unwrap_err();
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
    let err = format!("{:#}", run(&in_tmp(tmp.path().join("empty"))).unwrap_err());
    assert!(err.contains("known layouts"), "{err}");
    // Nothing was written for runs that could not start.
    assert!(!tmp.path().join("run").exists());
    Ok(())
}

#[test]
fn defaults_are_the_documented_ones() {
    // The README's default run: 10 epochs of 50 steps of 4 crops of 256 px, width 24,
    // Adam 2e-3 with 20 warm-up steps, elastic alpha 250 / sigma 10 on half the
    // crops, 5 images held back with seed 0, scored with the eight test-time views,
    // in runs/assignment4-unet/seed0.
    let cfg = Config::default();
    assert_eq!(
        (
            cfg.epochs,
            cfg.steps_per_epoch,
            cfg.batch_size,
            cfg.crop,
            cfg.width
        ),
        (10, 50, 4, 256, 24)
    );
    assert_eq!(
        (cfg.lr, cfg.warmup_steps, cfg.n_val, cfg.seed),
        (2e-3, 20, 5, 0)
    );
    assert!(!cfg.bilinear && !cfg.resume && !cfg.no_elastic && !cfg.tune);
    assert!(cfg.tta, "test-time augmentation on by default");
    let elastic = cfg.elastic().expect("elastic deformation on by default");
    assert_eq!(
        (elastic.alpha, elastic.sigma, elastic.probability),
        (250.0, 10.0, 0.5)
    );
    assert_eq!(cfg.out_dir(), PathBuf::from("runs/assignment4-unet/seed0"));
    assert_eq!(
        EvaluateConfig::default().out_dir(),
        PathBuf::from("runs/assignment4-unet/seed0/evaluate")
    );
}

/// `evaluate` and `predict` as the command line gives them.
#[derive(clap::Parser, Debug)]
enum Cli {
    Evaluate(EvaluateConfig),
    Predict(PredictConfig),
}

fn parse(args: &[&str]) -> Cli {
    <Cli as clap::Parser>::parse_from(
        std::iter::once("assignment4-unet").chain(args.iter().copied()),
    )
}

#[test]
fn evaluate_and_predict_read_a_run_folder_or_a_checkpoint_file() -> Result<()> {
    // Without flags: the default seed's run folder, its checkpoint, outputs inside it.
    let Cli::Evaluate(cfg) = parse(&["evaluate"]) else {
        panic!("not evaluate")
    };
    assert_eq!(cfg, EvaluateConfig::default());
    assert_eq!(
        cfg.resolved().saved.run_folder,
        Some(PathBuf::from("runs/assignment4-unet/seed0"))
    );
    // --run DIR: DIR's checkpoint, outputs into DIR/evaluate.
    let tmp = tempfile::tempdir()?;
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir)?;
    let run_arg = run_dir.to_str().expect("a UTF-8 temporary path");
    let Cli::Evaluate(cfg) = parse(&["evaluate", "--run", run_arg, "--device", "cpu", "--quiet"])
    else {
        panic!("not evaluate")
    };
    assert_eq!(cfg.saved, trained(&run_dir));
    assert_eq!(
        cfg.checkpoint_file()?,
        run_dir.join("checkpoint.safetensors")
    );
    assert_eq!(cfg.out_dir(), run_dir.join("evaluate"));
    // --checkpoint FILE instead: FILE, outputs beside it (whatever --run says), unless --out.
    let Cli::Evaluate(cfg) = parse(&["evaluate", "--checkpoint", "old/ckpt.safetensors"]) else {
        panic!("not evaluate")
    };
    assert_eq!(
        cfg.checkpoint_file()?,
        PathBuf::from("old/ckpt.safetensors")
    );
    assert_eq!(cfg.out_dir(), PathBuf::from("old/evaluate"));
    let Cli::Predict(cfg) = parse(&[
        "predict",
        "a.png",
        "--run",
        run_arg,
        "--checkpoint",
        "old/ckpt.safetensors",
    ]) else {
        panic!("not predict")
    };
    assert_eq!(cfg.inputs, vec![PathBuf::from("a.png")]);
    assert_eq!(
        cfg.checkpoint_file()?,
        PathBuf::from("old/ckpt.safetensors")
    );
    assert_eq!(cfg.out_dir(), PathBuf::from("old/predict"));
    let Cli::Predict(cfg) = parse(&["predict", "a.png", "--checkpoint", "ckpt.safetensors"]) else {
        panic!("not predict")
    };
    assert_eq!(cfg.out_dir(), PathBuf::from("predict"));
    let Cli::Predict(cfg) = parse(&["predict", "a.png", "--checkpoint", "c.st", "--out", "o"])
    else {
        panic!("not predict")
    };
    assert_eq!(cfg.out_dir(), PathBuf::from("o"));
    let Cli::Predict(cfg) = parse(&["predict", "a.png", "--run", run_arg]) else {
        panic!("not predict")
    };
    assert_eq!(cfg.out_dir(), run_dir.join("predict"));
    // --help explains every flag, with the default run folder spelled out.
    for command in ["evaluate", "predict"] {
        let err = <Cli as clap::Parser>::try_parse_from(["assignment4-unet", command, "--help"])
            .unwrap_err();
        let help = err.to_string();
        for flag in [
            "--run <DIR>",
            "--checkpoint <FILE>",
            "--out",
            "--device",
            "--quiet",
        ] {
            assert!(help.contains(flag), "{command} --help lacks {flag}: {help}");
        }
        assert!(help.contains("runs/assignment4-unet/seed0"), "{help}");
        assert!(help.contains("beside --checkpoint"), "{help}");
    }
    Ok(())
}
