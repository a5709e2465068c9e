//! The settings: the defaults the program had before the configs moved into one
//! place (pinned here), every flag with help text, and `config.json` round trips.

use std::path::PathBuf;

use assignment1_classify_to_segment::config::{
    default_run, Config, EvaluateConfig, PredictConfig, SavedConfig, PROGRAM,
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
    assert_eq!(default_run(), default_out);
    assert_eq!(EvaluateConfig::default().run_dir, default_out);
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
