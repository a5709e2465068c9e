//! A fresh clone with no data and no shared folder downloads the flower set by its
//! download list (here the clone's own `data/manifests/cmput328-flower.tsv`, naming
//! zips and a photo made in the test and served on 127.0.0.1), unpacks the zips,
//! makes the photo's mask by the colour rule, and trains on what it fetched.

#[path = "../../common/tests/support/flower_mirror.rs"]
mod flower_mirror;

use std::process::Command;

use anyhow::Result;
use assignment1_classify_to_segment::data::{generated_data, FLOWER};
use common::data::image_io::save_image;
use common::data::locate::DATA_DIR_ENV;
use common::data::SHARED_DATA_ENV;
use flower_mirror::{clone_with_mirror, files_of, flower_photo, zip_folder, SET};

/// `seg/Positive.zip`, `seg/Negative.zip` (generated 32x32 patches) and `seg/flower.jpg`.
fn set_files(staging: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>> {
    let (patches, _) = generated_data(48, 5);
    for (i, patch) in patches.iter().enumerate() {
        let folder = if patch.mask[[0, 0]] == FLOWER {
            "Positive"
        } else {
            "Negative"
        };
        save_image(
            &staging.join(folder).join(format!("{i:03}.png")),
            &patch.image,
        )?;
    }
    let mut files = Vec::new();
    for folder in ["Positive", "Negative"] {
        let zip = zip_folder(folder, &files_of(&staging.join(folder))?)?;
        files.push((format!("seg/{folder}.zip"), zip));
    }
    files.push(("seg/flower.jpg".to_owned(), flower_photo(staging)?));
    Ok(files)
}

#[test]
fn a_fresh_clone_downloads_the_flower_set_then_trains_on_it() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let root = temp.path().canonicalize()?;
    let clone = root.join("clone");
    std::fs::create_dir_all(&clone)?;
    let (server, manifest) = clone_with_mirror(&clone, set_files(&root)?)?;
    let nowhere = root.join("nowhere");
    let output = Command::new(env!("CARGO_BIN_EXE_assignment1-classify-to-segment"))
        .current_dir(&clone)
        .env(SHARED_DATA_ENV, &nowhere)
        .env(DATA_DIR_ENV, &nowhere)
        .env_remove("SEGKIT_OFFLINE")
        .env_remove("SEGKIT_MIRROR")
        .args(["--epochs", "1", "--stride1-region", "16", "--no-compare"])
        .args(["--device", "cpu", "--quiet"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr:\n{stderr}");

    let data = clone.join("data").join(SET);
    assert!(data.join("Positive").read_dir()?.count() > 0);
    assert!(data.join("Negative").read_dir()?.count() > 0);
    assert!(data.join("flower_mask.png").is_file(), "{stderr}");
    assert_eq!(server.requests().len(), 3, "one request per file");
    let list = manifest.display().to_string();
    assert!(stderr.contains(&list), "the list read is named:\n{stderr}");
    assert!(stderr.contains("by the colour rule"), "{stderr}");
    assert!(!stderr.contains("GENERATED DATA"), "{stderr}");
    let metrics = clone.join("runs/assignment1-classify-to-segment/seed0/metrics.json");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics)?)?;
    assert_eq!(report["data"]["origin"], "downloaded", "{report}");
    Ok(())
}
