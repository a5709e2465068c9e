//! `RunDir`: the folder layout a run writes, its JSON files, and `cli::defaults`.

use anyhow::Result;
use common::cli::{defaults, RunArgs, SavedRunArgs};
use common::device::DeviceChoice;
use common::run_dir::RunDir;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Toy {
    epochs: usize,
    name: String,
}

#[test]
fn creates_the_layout_and_round_trips_json() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let config = Toy {
        epochs: 3,
        name: "toy".into(),
    };
    let run = RunDir::create(temp.path().join("runs/prog/seed0"), &config)?;
    assert_eq!(run.read_json::<Toy>("config.json")?, config);
    assert_eq!(run.config(), run.path().join("config.json"));
    assert_eq!(run.checkpoint(), run.path().join("checkpoint.safetensors"));
    assert_eq!(run.history_csv(), run.path().join("history.csv"));
    assert_eq!(run.loss_png(), run.path().join("loss.png"));
    assert_eq!(run.predictions(), run.path().join("predictions"));
    run.write_metrics(&serde_json::json!({ "iou": 0.5 }))?;
    assert_eq!(
        run.read_json::<serde_json::Value>("metrics.json")?["iou"],
        0.5
    );

    let phase = run.child("head")?;
    assert!(phase.path().is_dir());
    assert_eq!(phase.path(), run.path().join("head"));

    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(run.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    Ok(())
}

#[test]
fn errors_name_the_file() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let missing = temp.path().join("nope");
    let err = RunDir::open(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );

    let run = RunDir::create_empty(temp.path().join("old"))?;
    run.write_bytes("config.json", b"{\"epochs\": \"three\"}")?;
    let err = format!("{:#}", run.read_json::<Toy>("config.json").unwrap_err());
    assert!(
        err.contains("config.json") && err.contains("older format"),
        "{err}"
    );
    // A file where the folder should be: one error, and the file is untouched.
    let blocked = temp.path().join("blocked");
    std::fs::write(&blocked, "keep")?;
    assert!(RunDir::create(
        &blocked,
        &Toy {
            epochs: 1,
            name: "x".into()
        }
    )
    .is_err());
    assert_eq!(std::fs::read_to_string(&blocked)?, "keep");
    Ok(())
}

#[test]
fn shared_flags_default_from_their_attributes() {
    let args: RunArgs = defaults();
    assert_eq!(args, RunArgs::default());
    assert_eq!(args.device, DeviceChoice::Auto);
    assert!(args.out.is_none() && args.data_dir.is_none() && !args.quiet);
    assert_eq!(
        args.out_dir("prog", 7),
        std::path::Path::new("runs/prog/seed7")
    );
}

#[test]
fn saved_run_flags_name_the_run_and_its_outputs() {
    let args = SavedRunArgs::default();
    assert_eq!(
        args.run_folder("prog", 42),
        std::path::Path::new("runs/prog/seed42")
    );
    assert_eq!(
        args.out_dir("prog", 42, "evaluate"),
        std::path::Path::new("runs/prog/seed42/evaluate")
    );
    let given = SavedRunArgs::quiet("elsewhere/run1");
    assert!(given.quiet && !given.progress());
    assert_eq!(
        given.out_dir("prog", 42, "predict"),
        std::path::Path::new("elsewhere/run1/predict")
    );
    let err = given.open_run("prog", 42).unwrap_err().to_string();
    assert!(
        err.contains("elsewhere/run1") && err.contains("does not exist"),
        "{err}"
    );
}
