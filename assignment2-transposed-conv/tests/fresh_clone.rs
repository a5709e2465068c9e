//! A binary copied to another folder and run from a fresh clone's root finds
//! `data/` there: nothing of the build machine's source tree is baked in. The
//! clone is a temp folder with a `[workspace]` manifest and a tiny data set in
//! `data/cmput328-flower/`; the shared folder and `$SEGKIT_DATA_DIR` point nowhere.

mod support;

use std::process::Command;

use anyhow::Result;
use assignment2_transposed_conv::config::PROGRAM;
use assignment2_transposed_conv::data::DATA_SET;
use common::data::locate::DATA_DIR_ENV;
use common::data::SHARED_DATA_ENV;

#[test]
fn a_copied_binary_run_from_a_fresh_clone_reads_its_data_and_writes_its_runs() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let temp_path = temp.path().canonicalize()?;
    let bin_dir = temp_path.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let binary = bin_dir.join(PROGRAM);
    std::fs::copy(env!("CARGO_BIN_EXE_assignment2-transposed-conv"), &binary)?;

    let clone = temp_path.join("clone");
    std::fs::create_dir_all(&clone)?;
    std::fs::write(clone.join("Cargo.toml"), "[workspace]\nmembers = []\n")?;
    let data_root = clone.join("data").join(DATA_SET);
    support::write_flower_layout(&data_root, 3, 8)?;

    let nowhere = temp_path.join("nowhere");
    let output = Command::new(&binary)
        .current_dir(&clone)
        .env(SHARED_DATA_ENV, &nowhere)
        .env(DATA_DIR_ENV, &nowhere)
        .args(["--epochs", "1", "--batch-size", "4", "--model", "bilinear"])
        .args(["--device", "cpu", "--quiet"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The banner names the clone's data/ and says it is the workspace's.
    let banner = format!("data: {data_root:?} (the workspace's data/)");
    assert!(stderr.contains(&banner), "no {banner:?} in\n{stderr}");
    assert!(!stderr.contains("GENERATED DATA"), "{stderr}");

    // The run folder is the clone's runs/<program>/seed42, and metrics.json says so too.
    let run = clone.join("runs").join(PROGRAM).join("seed42");
    assert!(
        stdout.contains(&format!(
            "outputs in {}",
            run.strip_prefix(&clone)?.display()
        )),
        "{stdout}"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json"))?)?;
    assert_eq!(metrics["data"]["origin"], "workspace");
    assert_eq!(
        metrics["data"]["root"],
        data_root.to_string_lossy().as_ref()
    );
    assert!(run.join("bilinear/checkpoint.safetensors").is_file());
    assert!(run.join("bilinear/predictions/flower_panel.png").is_file());
    assert!(
        !bin_dir.join("runs").exists(),
        "nothing is written beside the binary"
    );
    Ok(())
}
