//! The settings: the defaults the program had before the configs moved into one
//! place (pinned here), every flag with help text, and `config.json` round trips.

use std::path::PathBuf;

use assignment1_classify_to_segment::config::{
    Config, EvaluateConfig, PredictConfig, SavedConfig, DEFAULT_SEED, PROGRAM,
};
use assignment1_classify_to_segment::model::Arch;
use clap::Args;
use common::device::DeviceChoice;

type Result<T> = anyhow::Result<T>;

#[test]
fn defaults_are_the_programs_defaults() {
    let cfg = Config::default();
    assert_eq!(cfg.seed, 0);
    assert_eq!(cfg.arch, Arch::Default);
    assert_eq!((cfg.epochs, cfg.batch_size), (10, 32));
    assert_eq!(
        (cfg.lr, cfg.label_smoothing, cfg.val_fraction),
        (0.003, 0.1, 0.2)
    );
    assert!(!cfg.no_compare);
    assert_eq!((cfg.window_batch, cfg.stride1_region), (256, 128));
    assert_eq!(cfg.generated_patches, 400);
    assert_eq!(cfg.run.device, DeviceChoice::Auto);
    assert_eq!(
        (cfg.run.out.clone(), cfg.run.data_dir.clone()),
        (None, None)
    );
    // The default run folder: runs/<program>/seed<seed>, and evaluate/predict read it.
    let default_out = PathBuf::from("runs/assignment1-classify-to-segment/seed0");
    assert_eq!(cfg.run.out_dir(PROGRAM, cfg.seed), default_out);
    let evaluate = EvaluateConfig::default();
    assert_eq!(
        evaluate.saved.run_folder(PROGRAM, DEFAULT_SEED),
        default_out
    );
    assert_eq!(evaluate.run_folder(), default_out);
    assert_eq!(evaluate.out_dir(), default_out.join("evaluate"));
    assert_eq!(evaluate.saved.device, DeviceChoice::Auto);
    assert_eq!(evaluate.data_dir, None);
}

#[test]
fn every_flag_has_help_text() {
    let commands = [
        Config::augment_args(clap::Command::new("train")),
        EvaluateConfig::augment_args(clap::Command::new("evaluate")),
        PredictConfig::augment_args(clap::Command::new("predict")),
    ];
    for command in commands {
        for arg in command.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                !help.trim().is_empty(),
                "{} --{} has no help",
                command.get_name(),
                arg.get_id()
            );
        }
    }
}

#[test]
fn saved_config_round_trips_and_records_the_widths() -> Result<()> {
    let cfg = Config {
        arch: Arch::Lecture,
        epochs: 3,
        ..Config::default()
    };
    let saved = SavedConfig::new(&cfg);
    let json = serde_json::to_value(&saved)?;
    // The widths sit at the top level, where checkpoints of every version keep them.
    assert_eq!(json["arch_spec"]["conv1"], 2);
    assert_eq!(json["epochs"], 3);
    assert_eq!(serde_json::from_value::<SavedConfig>(json)?, saved);
    Ok(())
}

#[test]
fn evaluate_and_predict_read_the_same_flags_as_before() -> Result<()> {
    use clap::FromArgMatches;
    let matches = EvaluateConfig::augment_args(clap::Command::new("evaluate"))
        .try_get_matches_from([
            "evaluate",
            "--run",
            "r",
            "--out",
            "o",
            "--data-dir",
            "d",
            "--device",
            "cpu",
            "--quiet",
        ])?;
    let cfg = EvaluateConfig::from_arg_matches(&matches)?;
    assert_eq!(cfg.run_folder(), PathBuf::from("r"));
    assert_eq!(cfg.out_dir(), PathBuf::from("o"));
    assert_eq!(cfg.data_dir, Some(PathBuf::from("d")));
    assert_eq!(
        (cfg.saved.device, cfg.saved.quiet),
        (DeviceChoice::Cpu, true)
    );

    let command = PredictConfig::augment_args(clap::Command::new("predict"));
    let matches = command
        .clone()
        .try_get_matches_from(["predict", "--image", "x.jpg", "--run", "r"])?;
    let cfg = PredictConfig::from_arg_matches(&matches)?;
    assert_eq!(
        cfg.checkpoint_path(),
        PathBuf::from("r/checkpoint.safetensors")
    );
    assert_eq!(cfg.out_dir(), PathBuf::from("r/predict"));
    assert_eq!((cfg.window_batch, cfg.stride1_region), (256, 0));
    let matches =
        command.try_get_matches_from(["predict", "--image", "x.jpg", "--checkpoint", "c"])?;
    let cfg = PredictConfig::from_arg_matches(&matches)?;
    assert_eq!(cfg.checkpoint_path(), PathBuf::from("c"));
    assert_eq!(
        cfg.out_dir(),
        PathBuf::from("runs/assignment1-classify-to-segment/seed0/predict")
    );
    Ok(())
}

#[test]
fn run_help_names_the_default_folder() {
    for command in [
        EvaluateConfig::augment_args(clap::Command::new("evaluate")),
        PredictConfig::augment_args(clap::Command::new("predict")),
    ] {
        let name = command.get_name().to_string();
        let help = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id);
            arg.and_then(|a| a.get_help()).map(|h| h.to_string())
        };
        let run = help("run_folder").unwrap_or_default();
        assert!(
            run.contains("[default: runs/assignment1-classify-to-segment/seed0]"),
            "{name}: {run}"
        );
        let out = help("out").unwrap_or_default();
        assert!(out.contains(&format!("<run>/{name}")), "{name}: {out}");
    }
}
