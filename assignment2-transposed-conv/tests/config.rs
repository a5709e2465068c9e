//! The settings: the defaults of the command line (written once, in the clap
//! attributes), `--model` values, `config.json` read back, and the default run
//! folders of the subcommands.

use std::path::PathBuf;

use anyhow::Result;
use assignment2_transposed_conv::config::{
    Config, EvaluateConfig, Models, PredictConfig, DEFAULT_SEED, PROGRAM,
};
use assignment2_transposed_conv::model::Variant;
use common::cli::SavedRunArgs;
use common::device::DeviceChoice;

#[test]
fn defaults_are_the_lectures_settings() {
    let cfg = Config::default();
    assert_eq!(
        (cfg.seed, cfg.epochs, cfg.batch_size, cfg.lr),
        (42, 20, 8, 0.003)
    );
    assert_eq!(cfg.model, Models::All);
    assert_eq!(cfg.model.variants(), Variant::ALL.to_vec());
    assert_eq!(cfg.run.device, DeviceChoice::Auto);
    assert!(!cfg.run.quiet && cfg.run.out.is_none() && cfg.run.data_dir.is_none());
    assert_eq!(
        cfg.out_dir(),
        PathBuf::from("runs/assignment2-transposed-conv/seed42")
    );
    assert_eq!(PROGRAM, "assignment2-transposed-conv");
    assert_eq!(DEFAULT_SEED, cfg.seed);
}

#[test]
fn subcommands_read_the_default_run_and_write_inside_it() {
    let evaluate = EvaluateConfig::default();
    assert_eq!(
        evaluate.saved.run_folder(PROGRAM, DEFAULT_SEED),
        PathBuf::from("runs/assignment2-transposed-conv/seed42")
    );
    assert_eq!(
        evaluate.out_dir(),
        PathBuf::from("runs/assignment2-transposed-conv/seed42/evaluate")
    );
    let predict = PredictConfig {
        saved: SavedRunArgs {
            run_folder: Some("elsewhere".into()),
            ..SavedRunArgs::default()
        },
        ..PredictConfig::default()
    };
    assert_eq!(predict.out_dir(), PathBuf::from("elsewhere/predict"));
    assert!(predict.images.is_empty());
}

#[test]
fn model_lists_parse_and_print() -> Result<()> {
    assert_eq!("all".parse::<Models>()?, Models::All);
    let two: Models = "transposed, Bilinear".parse()?;
    assert_eq!(
        two,
        Models::List(vec![Variant::Transposed, Variant::Bilinear])
    );
    assert_eq!(two.to_string(), "transposed,bilinear");
    let err = "skip,deconv".parse::<Models>().unwrap_err().to_string();
    assert!(
        err.contains("\"deconv\"") && err.contains("transposed, skip, bilinear, unpool or dilated"),
        "{err}"
    );
    Ok(())
}

#[test]
fn config_json_reads_back_as_the_config() -> Result<()> {
    let cfg = Config {
        model: Models::List(vec![Variant::Skip]),
        seed: 7,
        ..Config::default()
    };
    let json = serde_json::to_value(&cfg)?;
    assert_eq!(json["model"], "skip");
    assert_eq!(json["device"], "auto");
    assert_eq!(serde_json::from_value::<Config>(json)?, cfg);
    // The config.json of runs before this format is not a Config.
    let old = serde_json::json!({"run": {"epochs": 20}, "data": "generated"});
    assert!(serde_json::from_value::<Config>(old).is_err());
    Ok(())
}

/// `evaluate FLAGS` as clap reads them.
#[derive(clap::Parser)]
struct Evaluate {
    #[command(flatten)]
    cfg: EvaluateConfig,
}

/// `predict FLAGS` as clap reads them.
#[derive(clap::Parser)]
struct Predict {
    #[command(flatten)]
    cfg: PredictConfig,
}

#[test]
fn subcommand_flags_keep_their_names() -> Result<()> {
    use clap::Parser;
    let evaluate = Evaluate::try_parse_from([
        "evaluate",
        "--run",
        "r",
        "--out",
        "o",
        "--model",
        "skip",
        "--data-dir",
        "d",
        "--device",
        "cpu",
        "--quiet",
    ])?
    .cfg;
    assert_eq!(
        evaluate.saved,
        SavedRunArgs {
            run_folder: Some("r".into()),
            out: Some("o".into()),
            device: DeviceChoice::Cpu,
            quiet: true,
        }
    );
    assert_eq!(evaluate.out_dir(), PathBuf::from("o"));
    assert_eq!(
        (evaluate.model, evaluate.data_dir),
        (Models::List(vec![Variant::Skip]), Some(PathBuf::from("d")))
    );
    let predict = Predict::try_parse_from(["predict", "a.png", "b.jpg", "--run", "r"])?.cfg;
    assert_eq!(predict.images, vec![PathBuf::from("a.png"), "b.jpg".into()]);
    assert_eq!(predict.out_dir(), PathBuf::from("r/predict"));
    Ok(())
}

#[test]
fn subcommand_help_explains_every_flag() -> Result<()> {
    for (command, out_default) in [("evaluate", "<run>/evaluate"), ("predict", "<run>/predict")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_assignment2-transposed-conv"))
            .args([command, "--help"])
            .output()?;
        assert!(output.status.success(), "{command} --help");
        let help = String::from_utf8(output.stdout)?;
        for flag in [
            "--run <DIR>",
            "--model",
            "--out",
            "--data-dir",
            "--device",
            "--quiet",
        ] {
            // Each flag's line is followed by its explanation.
            let after = help
                .split_once(flag)
                .map(|(_, rest)| rest.lines().nth(1).unwrap_or("").trim().to_owned());
            assert!(
                after.is_some_and(|text| !text.is_empty()),
                "{command}: {flag} unexplained in\n{help}"
            );
        }
        assert!(
            help.contains("[default: runs/assignment2-transposed-conv/seed42]"),
            "{command}: {help}"
        );
        assert!(
            help.contains(&format!("[default: {out_default}]")),
            "{command}: {help}"
        );
    }
    Ok(())
}
