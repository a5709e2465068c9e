//! The three commands end to end on a small data folder in the real layout (made
//! from the generated set): `run` trains and measures, `evaluate` measures the
//! saved run again and must give the same figures, `predict` segments the photo
//! with the saved checkpoint. Also old run folders, bad folders, and the binary's
//! subcommands (`segment` is still accepted).

use std::path::{Path, PathBuf};
use std::process::Command;

use assignment1_classify_to_segment::config::{Config, EvaluateConfig, PredictConfig, SavedConfig};
use assignment1_classify_to_segment::data::{generated_data, locate_data, FLOWER};
use assignment1_classify_to_segment::evaluate::evaluate;
use assignment1_classify_to_segment::model::{new_classifier, Arch};
use assignment1_classify_to_segment::predict::predict;
use assignment1_classify_to_segment::run::run;
use candle::Device;
use common::checkpoint::{save_checkpoint, CheckpointMeta};
use common::cli::{RunArgs, SavedRunArgs};
use common::data::image_io::{save_image, save_palette_mask};
use common::data::locate::Origin;
use common::device::DeviceChoice;
use common::run_dir::RunDir;

type Result<T> = anyhow::Result<T>;

/// Writes the generated set as `Positive/`, `Negative/`, `flower.jpg` and
/// `flower_mask.png` under `root`.
fn write_data_folder(root: &Path) -> Result<()> {
    let (patches, scene) = generated_data(96, 21);
    for (i, p) in patches.iter().enumerate() {
        let sub = if p.mask[[0, 0]] == FLOWER {
            "Positive"
        } else {
            "Negative"
        };
        save_image(&root.join(sub).join(format!("{i:03}.png")), &p.image)?;
    }
    save_image(&root.join("flower.jpg"), &scene.image)?;
    save_palette_mask(&root.join("flower_mask.png"), &scene.mask.expect("a mask"))?;
    Ok(())
}

fn cpu(out: Option<PathBuf>, data_dir: Option<PathBuf>) -> RunArgs {
    RunArgs {
        out,
        data_dir,
        device: DeviceChoice::Cpu,
        quiet: true,
    }
}

/// Reads the run folder `run` on the CPU, quietly, writing into `<run>/<command>`.
fn saved_cpu(run: impl Into<PathBuf>) -> SavedRunArgs {
    SavedRunArgs {
        device: DeviceChoice::Cpu,
        ..SavedRunArgs::quiet(run)
    }
}

#[test]
fn evaluate_and_predict_reproduce_the_training_runs_figures() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("flowers");
    write_data_folder(&data)?;
    let run_path = dir.path().join("run");
    let cfg = Config {
        run: cpu(Some(run_path.clone()), Some(data.clone())),
        arch: Arch::Lecture,
        epochs: 2,
        stride1_region: 24,
        ..Config::default()
    };
    let trained = run(&cfg)?;
    assert_eq!(trained.data.origin, Origin::Given);
    for file in [
        "config.json",
        "history.csv",
        "history.json",
        "loss.png",
        "metrics.json",
        "checkpoint.safetensors",
        "predictions/flower_panel.png",
        "predictions/flower_stride1_mask.png",
    ] {
        assert!(run_path.join(file).is_file(), "{file} missing");
    }
    let saved: SavedConfig = RunDir::open(&run_path)?.read_json("config.json")?;
    assert_eq!(saved, SavedConfig::new(&cfg));

    let again = evaluate(&EvaluateConfig {
        saved: saved_cpu(&run_path),
        data_dir: Some(data.clone()),
    })?;
    let (a, b) = (&trained.evaluation, &again.evaluation);
    assert_eq!(a.val_patches, b.val_patches);
    assert_eq!(a.val, b.val);
    assert!(a.val.is_some());
    assert_eq!(
        a.fcn_vs_classifier_on_patches_max_abs_diff,
        b.fcn_vs_classifier_on_patches_max_abs_diff
    );
    assert_eq!(a.scene.score, b.scene.score);
    let stride1 = |e: &assignment1_classify_to_segment::report::Evaluation| {
        e.scene.comparison.as_ref().map(|c| c.stride1_score)
    };
    assert_eq!(stride1(a), stride1(b));
    assert!(stride1(a).flatten().is_some());
    for file in ["config.json", "metrics.json", "predictions/flower_mask.png"] {
        assert!(run_path.join("evaluate").join(file).is_file(), "{file}");
    }

    let predicted = predict(&PredictConfig {
        saved: saved_cpu(&run_path),
        checkpoint: None,
        image: data.join("flower.jpg"),
        mask: Some(data.join("flower_mask.png")),
        compare: false,
        window_batch: 256,
        stride1_region: 0,
    })?;
    assert_eq!(predicted.scene.score, a.scene.score);
    assert!(run_path.join("predict/metrics.json").is_file());
    Ok(())
}

/// `config.json` as the program wrote it before the configs were unified.
const OLD_CONFIG: &str = r#"{
  "arch": "lecture", "arch_spec": { "conv1": 2, "conv2": 4, "hidden": [] },
  "batch_size": 32, "compare": true, "data": "real", "data_dir": null, "device": "auto",
  "epochs": 10, "generated_patches": 400, "label_smoothing": 0.1, "learning_rate": 0.003,
  "out": "runs/assignment1-classify-to-segment/lecture-seed0", "progress": false,
  "seed": 0, "stride1_region": 128, "val_fraction": 0.2, "window_batch": 256
}"#;

#[test]
fn old_run_folders_predict_or_say_they_are_old() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let old = RunDir::create_empty(dir.path().join("lecture-seed0"))?;
    old.write_bytes("config.json", OLD_CONFIG.as_bytes())?;
    let (_, varmap) = new_classifier(&Arch::Lecture.spec(), 0, &Device::Cpu)?;
    let meta = CheckpointMeta {
        epoch: 10,
        step: 170,
        seed: 0,
        config: serde_json::from_str(OLD_CONFIG)?,
    };
    save_checkpoint(&old.checkpoint(), &varmap, &Default::default(), &meta)?;

    // predict needs only the checkpoint, whose metadata has always held arch_spec.
    let (_, scene) = generated_data(8, 1);
    let image = dir.path().join("photo.png");
    save_image(&image, &scene.image)?;
    let predicted = predict(&PredictConfig {
        saved: saved_cpu(old.path()),
        checkpoint: None,
        image,
        mask: None,
        compare: false,
        window_batch: 256,
        stride1_region: 0,
    })?;
    assert_eq!(predicted.scene.image_size, (160, 224));

    // evaluate needs the split of the run's config: one clear error.
    let err = evaluate(&EvaluateConfig {
        saved: saved_cpu(old.path()),
        data_dir: None,
    })
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("config.json") && message.contains("older format"),
        "{message}"
    );
    Ok(())
}

#[test]
fn bad_folders_are_errors_that_name_them() -> Result<()> {
    let err = evaluate(&EvaluateConfig {
        saved: saved_cpu("/nonexistent/run"),
        data_dir: None,
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("\"/nonexistent/run\" does not exist"),
        "{err:#}"
    );
    let err = locate_data(Some(Path::new("/nonexistent/flowers"))).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("/nonexistent/flowers") && message.contains("Positive/"),
        "{message}"
    );
    Ok(())
}

#[test]
fn the_binary_has_train_evaluate_predict_and_the_old_segment() -> Result<()> {
    let binary = env!("CARGO_BIN_EXE_assignment1-classify-to-segment");
    for (args, expected) in [
        (&["--help"][..], "evaluate"),
        (&["train", "--help"], "--epochs"),
        (&["evaluate", "--help"], "--run"),
        (&["predict", "--help"], "--image"),
        (&["segment", "--help"], "--checkpoint"),
    ] {
        let output = Command::new(binary).args(args).output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(text.contains(expected), "{args:?}: {text}");
    }
    // A flag of the default command cannot be mixed with a subcommand.
    let output = Command::new(binary)
        .args(["--epochs", "1", "evaluate"])
        .output()?;
    assert!(!output.status.success());
    Ok(())
}
