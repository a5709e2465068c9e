//! The three commands on a tiny data set: a whole training run writes its files
//! and `metrics.json`; `evaluate` re-scores the saved nets to the same figures;
//! `predict` segments an image of any size; old, broken or missing run folders
//! give one clear error.

mod support;

use std::path::Path;

use anyhow::Result;
use assignment2_transposed_conv::config::{Config, EvaluateConfig, Models, PredictConfig};
use assignment2_transposed_conv::evaluate::evaluate;
use assignment2_transposed_conv::model::Variant;
use assignment2_transposed_conv::predict::predict;
use assignment2_transposed_conv::report::Report;
use assignment2_transposed_conv::run::run;
use common::cli::{RunArgs, SavedRunArgs};
use common::device::DeviceChoice;

/// Flags for a quiet CPU run reading `data_dir` and writing `out`.
fn args(data_dir: &Path, out: Option<&Path>) -> RunArgs {
    RunArgs {
        out: out.map(Path::to_path_buf),
        data_dir: Some(data_dir.to_path_buf()),
        device: DeviceChoice::Cpu,
        quiet: true,
    }
}

/// Flags for a quiet CPU `evaluate` or `predict` reading the run folder `run` and writing `out`.
fn reading(run: &Path, out: Option<&Path>) -> SavedRunArgs {
    SavedRunArgs {
        out: out.map(Path::to_path_buf),
        device: DeviceChoice::Cpu,
        ..SavedRunArgs::quiet(run)
    }
}

/// Trains `transposed` and `bilinear` for `epochs` epochs on the tiny set in `data_dir`.
fn train(data_dir: &Path, out: &Path, epochs: usize) -> Result<(Config, Report)> {
    train_models(
        data_dir,
        out,
        epochs,
        vec![Variant::Transposed, Variant::Bilinear],
    )
}

/// Trains `models` for `epochs` epochs on the tiny set in `data_dir`.
fn train_models(
    data_dir: &Path,
    out: &Path,
    epochs: usize,
    models: Vec<Variant>,
) -> Result<(Config, Report)> {
    let cfg = Config {
        run: args(data_dir, Some(out)),
        model: Models::List(models),
        epochs,
        ..Config::default()
    };
    let report = run(&cfg)?;
    Ok((cfg, report))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

#[test]
fn a_whole_run_writes_its_outputs_and_evaluate_and_predict_read_them() -> Result<()> {
    let data_dir = tempfile::tempdir()?;
    support::write_flower_layout(data_dir.path(), 1, 38)?;
    let temp = tempfile::tempdir()?;
    let out = temp.path().join("run");
    let (cfg, report) = train(data_dir.path(), &out, 2)?;
    assert_eq!(report.setting.image_size, [93, 127]);
    assert_eq!(report.variants.len(), 2);
    assert_eq!(report.variants["bilinear"].scores.parameters, 5154);
    for file in [
        "config.json",
        "metrics.json",
        "loss.png",
        "masks.png",
        "probabilities.png",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for file in [
        "predictions/flower_mask.png",
        "predictions/flower_overlay.png",
        "predictions/flower_panel.png",
        "predictions/flower_probability.png",
        "loss.png",
        "history.csv",
        "history.json",
        "checkpoint.safetensors",
    ] {
        assert!(
            out.join("transposed").join(file).is_file(),
            "transposed/{file}"
        );
    }
    let metrics = read_json(&out.join("metrics.json"))?;
    for key in [
        "flower_iou",
        "flower_pixel_accuracy",
        "train_pixel_accuracy",
        "parameters",
        "train_seconds",
        "probability_roughness",
    ] {
        assert!(metrics["variants"]["transposed"][key].is_number(), "{key}");
    }
    // The receptive-field table: 7x7 stride-4 transposed conv after two pools.
    let field = &metrics["variants"]["transposed"]["receptive_field"];
    assert_eq!(field["receptive_field"], 16);
    assert_eq!(field["coarsest_jump"], 4);
    assert_eq!(field["layers"][4]["name"], "up");
    assert_eq!(field["layers"][4]["kind"], "transposed_conv");
    assert_eq!(metrics["data"]["origin"], "given");
    // config.json is the config, and reads back as it.
    let saved: Config = serde_json::from_value(read_json(&out.join("config.json"))?)?;
    assert_eq!(saved, cfg);
    // The side-by-side picture: reference + 2 masks of 127 px, 4 px apart.
    let masks = image::open(out.join("masks.png"))?;
    assert_eq!((masks.width(), masks.height()), (3 * 127 + 2 * 4, 93));
    // The probability maps: 2 of 127 px, 4 px apart.
    let maps = image::open(out.join("probabilities.png"))?;
    assert_eq!((maps.width(), maps.height()), (2 * 127 + 4, 93));
    // The panel: image | truth | prediction.
    let panel = image::open(out.join("bilinear/predictions/flower_panel.png"))?;
    assert_eq!((panel.width(), panel.height()), (3 * 127 + 2 * 4, 93));

    // evaluate: the saved nets give the run's figures again.
    let evaluated = evaluate(&EvaluateConfig {
        saved: reading(&out, None),
        model: Models::All,
        data_dir: Some(data_dir.path().to_path_buf()),
    })?;
    assert_eq!(evaluated.variants.len(), 2);
    for (name, trained) in &report.variants {
        assert_eq!(evaluated.variants[name], trained.scores, "{name}");
    }
    assert!(out.join("evaluate/metrics.json").is_file());
    assert!(out
        .join("evaluate/transposed/predictions/flower_panel.png")
        .is_file());

    // predict: any size, no truth, so the panel is image | prediction.
    let odd = temp.path().join("odd.png");
    common::data::image_io::save_image(&odd, &ndarray::Array3::from_elem((3, 21, 34), 0.5))?;
    let folders = predict(&PredictConfig {
        images: vec![odd],
        saved: reading(&out, None),
        model: Models::List(vec![Variant::Bilinear]),
        data_dir: Some(data_dir.path().to_path_buf()),
    })?;
    assert_eq!(folders, vec![out.join("predict/bilinear/predictions")]);
    let panel = image::open(folders[0].join("odd_panel.png"))?;
    assert_eq!((panel.width(), panel.height()), (2 * 34 + 4, 21));
    let mask = image::open(folders[0].join("odd_mask.png"))?;
    assert_eq!((mask.width(), mask.height()), (34, 21));
    Ok(())
}

#[test]
fn the_unpool_and_dilated_nets_evaluate_to_their_run_figures() -> Result<()> {
    // Their checkpoints read back (the identity initialisation of the context
    // module must not overwrite loaded weights) and score as in the run.
    let data_dir = tempfile::tempdir()?;
    support::write_flower_layout(data_dir.path(), 3, 8)?;
    let temp = tempfile::tempdir()?;
    let out = temp.path().join("run");
    let models = vec![Variant::Unpool, Variant::Dilated];
    let (_, report) = train_models(data_dir.path(), &out, 2, models)?;
    assert_eq!(report.variants["unpool"].scores.parameters, 12066);
    assert_eq!(
        report.variants["dilated"]
            .scores
            .receptive_field
            .receptive_field,
        74
    );
    let evaluated = evaluate(&EvaluateConfig {
        saved: reading(&out, None),
        model: Models::All,
        data_dir: Some(data_dir.path().to_path_buf()),
    })?;
    assert_eq!(evaluated.variants.len(), 2);
    for (name, trained) in &report.variants {
        assert_eq!(evaluated.variants[name], trained.scores, "{name}");
    }
    Ok(())
}

#[test]
fn old_broken_and_missing_run_folders_give_one_clear_error() -> Result<()> {
    let data_dir = tempfile::tempdir()?;
    support::write_flower_layout(data_dir.path(), 2, 8)?;
    let temp = tempfile::tempdir()?;
    let out = temp.path().join("run");
    let (_, report) = train(data_dir.path(), &out, 1)?;
    let evaluate_run = |model: Models| {
        evaluate(&EvaluateConfig {
            saved: reading(&out, Some(&temp.path().join("evaluated"))),
            model,
            data_dir: Some(data_dir.path().to_path_buf()),
        })
    };

    // A folder of the format before RunDir (config.json {"run": ..., "data": "real: ..."},
    // pictures beside the checkpoint) still evaluates: only the checkpoints are read.
    std::fs::write(
        out.join("config.json"),
        r#"{"run": {"epochs": 1}, "data": "generated", "device": "cpu", "train_samples": 8}"#,
    )?;
    let evaluated = evaluate_run(Models::All)?;
    assert_eq!(
        evaluated.variants["bilinear"],
        report.variants["bilinear"].scores
    );

    // A net that is not there.
    let err = format!("{:#}", evaluate_run("skip".parse()?).unwrap_err());
    assert!(
        err.contains("skip/checkpoint.safetensors") && err.contains("not found"),
        "{err}"
    );
    // Another variant's checkpoint under skip/: the weights do not fit.
    std::fs::create_dir_all(out.join("skip"))?;
    std::fs::copy(
        out.join("transposed/checkpoint.safetensors"),
        out.join("skip/checkpoint.safetensors"),
    )?;
    let err = format!("{:#}", evaluate_run("skip".parse()?).unwrap_err());
    assert!(
        err.contains("skip/checkpoint.safetensors")
            && err.contains("older format")
            && err.contains("missing keys"),
        "{err}"
    );
    // A checkpoint that is not one.
    std::fs::write(out.join("skip/checkpoint.safetensors"), b"not a checkpoint")?;
    let err = format!("{:#}", evaluate_run("skip".parse()?).unwrap_err());
    assert!(
        err.contains("skip/checkpoint.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );

    // A run folder without any net, and one that does not exist.
    let empty = temp.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let err = format!(
        "{:#}",
        evaluate(&EvaluateConfig {
            saved: SavedRunArgs::quiet(empty),
            ..EvaluateConfig::default()
        })
        .unwrap_err()
    );
    assert!(
        err.contains("holds no saved net") && err.contains("train first"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        predict(&PredictConfig {
            saved: SavedRunArgs::quiet(temp.path().join("nowhere")),
            ..PredictConfig::default()
        })
        .unwrap_err()
    );
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );
    Ok(())
}
