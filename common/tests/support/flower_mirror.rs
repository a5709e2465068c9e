//! A fresh clone that downloads the flower set from 127.0.0.1, for the download tests
//! of assignments 1 and 2: the set's files made in the test (zips of a folder's
//! pictures, `flower.jpg`), served by [`http`], and listed in the clone's own
//! `data/manifests/cmput328-flower.tsv` (which a program reads instead of its built-in
//! copy), so the real download path runs end to end on files of known hashes.
//! Include with `#[path = "../../common/tests/support/flower_mirror.rs"] mod flower_mirror;`
//! (needs `zip`, `sha2` and `tempfile` as dev-dependencies).
#![allow(dead_code)]

#[path = "http.rs"]
pub mod http;

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use common::data::locate::DATA_DIR_ENV;
use common::data::SHARED_DATA_ENV;
use sha2::{Digest, Sha256};

/// The set's folder name and manifest stem.
pub const SET: &str = "cmput328-flower";

/// A zip of `files` (name -> bytes) under the folder `folder/`, as the course's zips are.
pub fn zip_folder(folder: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        writer.start_file(
            format!("{folder}/{name}"),
            zip::write::SimpleFileOptions::default(),
        )?;
        writer.write_all(bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// `seg/<folder>.zip` of every file of `staging/<folder>/`, for each of `folders`.
pub fn zipped_folders(staging: &Path, folders: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    folders
        .iter()
        .map(|folder| {
            let zip = zip_folder(folder, &files_of(&staging.join(folder))?)?;
            Ok((format!("seg/{folder}.zip"), zip))
        })
        .collect()
}

/// Every file of `dir` (not recursive), sorted by name, as (name, bytes).
pub fn files_of(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        files.push((name, std::fs::read(&path)?));
    }
    files.sort();
    Ok(files)
}

/// A clone folder (a `[workspace]` manifest, no data) whose download list for the
/// flower set names `files` (repository path such as `seg/Positive.zip` -> bytes),
/// served from the returned server.
pub fn clone_with_mirror(
    clone: &Path,
    files: Vec<(String, Vec<u8>)>,
) -> Result<(http::Server, PathBuf)> {
    std::fs::write(clone.join("Cargo.toml"), "[workspace]\nmembers = []\n")?;
    let mut routes = HashMap::new();
    let mut lines = vec!["# url\tsha256\tbytes\tpath".to_owned()];
    for (path, bytes) in &files {
        let sha: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        lines.push(format!("URL/{path}\t{sha}\t{}\t{path}", bytes.len()));
        routes.insert(path.clone(), http::Route::plain(bytes.clone()));
    }
    let server = http::serve(routes)?;
    let manifest = clone.join("data/manifests").join(format!("{SET}.tsv"));
    std::fs::create_dir_all(manifest.parent().unwrap_or(clone))?;
    std::fs::write(
        &manifest,
        lines.join("\n").replace("URL", server.base()) + "\n",
    )?;
    Ok((server, manifest))
}

/// A 48x64 RGB JPEG: a red disc (the flower) on green, so the colour rule finds it.
pub fn flower_photo(staging: &Path) -> Result<Vec<u8>> {
    let (h, w) = (48usize, 64usize);
    let image = ndarray::Array3::from_shape_fn((3, h, w), |(c, y, x)| {
        let (dy, dx) = (y as f32 - 24.0, x as f32 - 30.0);
        let flower = dy * dy + dx * dx < 15.0 * 15.0;
        let rgb = if flower {
            [0.85, 0.2, 0.25]
        } else {
            [0.2, 0.5, 0.25]
        };
        rgb[c]
    });
    let path = staging.join("flower.jpg");
    common::data::image_io::save_image(&path, &image)?;
    Ok(std::fs::read(path)?)
}

/// A program run from a fresh clone that downloaded the flower set.
pub struct FreshRun {
    /// Holds the clone; dropped, it is deleted.
    pub temp: tempfile::TempDir,
    /// The clone's `data/cmput328-flower/`.
    pub data: PathBuf,
    pub stderr: String,
}

/// Runs the program `exe` with `args` from a fresh clone (no data, the shared folder and
/// `$SEGKIT_DATA_DIR` pointing nowhere) whose download list names the files
/// `make_files` writes (given a staging folder), and checks what every such run must
/// give: success, one request per file, the list it read named, the photo's mask made
/// by the colour rule, no generated data, and `origin: downloaded` in the run folder
/// `runs/<run>/metrics.json`.
pub fn download_and_run(
    exe: &str,
    make_files: impl FnOnce(&Path) -> Result<Vec<(String, Vec<u8>)>>,
    args: &[&str],
    run: &str,
) -> Result<FreshRun> {
    let temp = tempfile::tempdir()?;
    let root = temp.path().canonicalize()?;
    let clone = root.join("clone");
    std::fs::create_dir_all(&clone)?;
    let files = make_files(&root.join("staging"))?;
    let n_files = files.len();
    let (server, manifest) = clone_with_mirror(&clone, files)?;
    let nowhere = root.join("nowhere");
    let output = Command::new(exe)
        .current_dir(&clone)
        .env(SHARED_DATA_ENV, &nowhere)
        .env(DATA_DIR_ENV, &nowhere)
        .env_remove("SEGKIT_OFFLINE")
        .env_remove("SEGKIT_MIRROR")
        .args(args)
        .args(["--device", "cpu", "--quiet"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "stderr:\n{stderr}");

    let data = clone.join("data").join(SET);
    assert!(data.join("flower_mask.png").is_file(), "{stderr}");
    assert_eq!(server.requests().len(), n_files, "one request per file");
    let list = manifest.display().to_string();
    assert!(stderr.contains(&list), "the list read is named:\n{stderr}");
    assert!(stderr.contains("by the colour rule"), "{stderr}");
    assert!(!stderr.contains("GENERATED DATA"), "{stderr}");
    let metrics = clone.join("runs").join(run).join("metrics.json");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics)?)?;
    assert_eq!(report["data"]["origin"], "downloaded", "{report}");
    Ok(FreshRun { temp, data, stderr })
}
