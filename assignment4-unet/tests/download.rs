//! A fresh clone with no data and no shared folder downloads ISBI 2012 by its
//! manifest, from a mirror on 127.0.0.1 that serves the shared byte copies
//! (`$SEGKIT_MIRROR`), and then trains on it: the program's real download path,
//! end to end. Needs the shared ISBI set (CI always has it); says so and skips otherwise.

#[path = "../../common/tests/support/http.rs"]
mod http;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use assignment4_unet::data::{ISBI_NAME, MANIFEST};
use common::data::locate::DATA_DIR_ENV;
use common::data::manifest::MIRROR_ENV;
use common::data::SHARED_DATA_ENV;

/// Routes serving every manifest file from the shared copy, at its URL's path.
fn mirror_routes(shared: &Path) -> Result<HashMap<String, http::Route>> {
    let manifest = MANIFEST.manifest()?;
    let prefix = manifest.common_prefix();
    let mut routes = HashMap::new();
    for entry in &manifest.entries {
        let local = shared.join(entry.path.trim_start_matches(&prefix));
        let body = std::fs::read(&local).with_context(|| format!("reading {local:?}"))?;
        routes.insert(entry.url_path().to_owned(), http::Route::plain(body));
    }
    Ok(routes)
}

#[test]
fn a_fresh_clone_downloads_isbi_from_a_mirror_then_trains_on_it() -> Result<()> {
    let Some(shared) = common::data::shared_data_set(ISBI_NAME) else {
        eprintln!("skipped: no shared {ISBI_NAME} to serve as the mirror");
        return Ok(());
    };
    http::bypass_proxy_for_loopback();
    let server = http::serve(mirror_routes(&shared)?)?;
    let temp = tempfile::tempdir()?;
    let clone = temp.path().canonicalize()?;
    std::fs::write(clone.join("Cargo.toml"), "[workspace]\nmembers = []\n")?;
    let nowhere = clone.join("nowhere");
    let output = Command::new(env!("CARGO_BIN_EXE_assignment4-unet"))
        .current_dir(&clone)
        .env(SHARED_DATA_ENV, &nowhere)
        .env(DATA_DIR_ENV, &nowhere)
        .env(MIRROR_ENV, server.base())
        .env_remove("SEGKIT_OFFLINE")
        .env_remove("HF_HUB_OFFLINE")
        .args([
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "1",
        ])
        .args(["--crop", "64", "--width", "4", "--n-val", "2"])
        .args(["--device", "cpu", "--quiet"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr:\n{stderr}");

    let data = clone.join("data").join(ISBI_NAME);
    assert_eq!(std::fs::read_dir(data.join("train/label"))?.count(), 30);
    assert!(!clone.join(format!("data/.{ISBI_NAME}.partial")).exists());
    assert_eq!(server.requests().len(), 90, "one request per file");
    assert!(stderr.contains("downloading isbi2012-membrane"), "{stderr}");
    assert!(!stderr.contains("GENERATED DATA"), "{stderr}");
    assert!(
        stderr.contains("luma >= 128"),
        "the mask rule is said:\n{stderr}"
    );
    let metrics = clone.join("runs/assignment4-unet/seed0/metrics.json");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics)?)?;
    assert_eq!(report["data"]["origin"], "downloaded", "{report}");
    Ok(())
}
