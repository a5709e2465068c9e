//! The VOC-layout data (`JPEGImages/`, `SegmentationClass/`,
//! `ImageSets/Segmentation/{train,val}.txt`): found by `common::data::locate` as
//! `VOCdevkit/VOC2012` (PASCAL VOC 2012) or `camvid-voc` (the shared CamVid copy), with
//! PASCAL VOC 2012 downloaded only when `--download` asks for it, else a generated
//! VOC-layout set of coloured shapes, announced loudly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use common::data::locate::{locate, DataSetSpec, Download, Located};
use common::data::synthetic::{synthetic_dataset, write_voc_layout, SyntheticConfig};
use common::data::voc::{Split, VocDataset};
use common::data::Dataset;

use crate::config::Config;

/// The official PASCAL VOC 2012 train+val archive (about 2 GB).
pub const VOC2012_URL: &str =
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar";

/// The folder names of the data set in a data folder, tried in order.
pub const DATA_SET_NAMES: &[&str] = &["VOCdevkit/VOC2012", "camvid-voc"];

/// The generated set's folder inside the cache folder.
pub const GENERATED_DIR: &str = "generated-voc";

/// True when `root` looks like a VOC-layout root (images, labels, split files).
pub fn is_voc_root(root: &Path) -> bool {
    root.join("JPEGImages").is_dir()
        && root.join("SegmentationClass").is_dir()
        && root.join("ImageSets/Segmentation/train.txt").is_file()
}

/// The VOC-layout root in `dir`: `dir` itself, or its `VOCdevkit/VOC2012` or `VOC2012`.
pub fn find_voc_root(dir: &Path) -> anyhow::Result<PathBuf> {
    [
        dir.to_path_buf(),
        dir.join("VOCdevkit/VOC2012"),
        dir.join("VOC2012"),
    ]
    .into_iter()
    .find(|root| is_voc_root(root))
    .with_context(|| {
        format!(
            "{dir:?} is not a VOC-layout folder: it needs JPEGImages/, SegmentationClass/ and \
             ImageSets/Segmentation/train.txt (or VOCdevkit/VOC2012/ with them)"
        )
    })
}

/// Downloads and unpacks PASCAL VOC 2012 into `data` (the workspace's `data/`).
pub fn download_voc2012(data: &Path) -> anyhow::Result<PathBuf> {
    eprintln!(
        "downloading PASCAL VOC 2012 (about 2 GB) from {VOC2012_URL} into {data:?}; this takes a while"
    );
    let archive = data.join("VOCtrainval_11-May-2012.tar");
    let archive = common::data::fetch::download(VOC2012_URL, &archive, None)?;
    common::data::fetch::extract(&archive, data)?;
    Ok(data.join("VOCdevkit/VOC2012"))
}

/// Where the data is: the search order of `common::data::locate` over
/// [`DATA_SET_NAMES`]; PASCAL VOC 2012 is downloaded only when `download` is set.
pub fn locate_voc(data_dir: Option<&Path>, download: bool) -> anyhow::Result<Located> {
    let fetch: Download = &download_voc2012;
    let spec = DataSetSpec {
        names: DATA_SET_NAMES,
        title: "a VOC-layout data set (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)",
        find_root: &find_voc_root,
        download: download.then_some(fetch),
    };
    locate(&spec, data_dir)
}

/// The two splits of the located data, at most `max_images` images each.
#[derive(Debug)]
pub struct VocData {
    pub located: Located,
    /// The VOC-layout root read (the generated set's folder for generated data).
    pub root: PathBuf,
    pub train: VocDataset,
    pub val: VocDataset,
    pub n_train: usize,
    pub n_val: usize,
}

impl VocData {
    /// The class names of the set (`classes.txt`, else VOC's 21).
    pub fn class_names(&self) -> &[String] {
        self.train.class_names()
    }

    /// The dataset of `split` and the number of its images to use.
    pub fn split(&self, split: Split) -> (&VocDataset, usize) {
        match split {
            Split::Train => (&self.train, self.n_train),
            Split::Val => (&self.val, self.n_val),
        }
    }
}

/// Finds the data (printing its banner once), writes the generated set into the cache
/// folder when nothing was found, and opens both splits (`--max-images` of each).
pub fn open(cfg: &Config) -> anyhow::Result<VocData> {
    let located = locate_voc(cfg.run.data_dir.as_deref(), cfg.download)?;
    eprintln!("{}", located.banner);
    let root = match &located.root {
        Some(root) => root.clone(),
        None => {
            let root = cfg.cache_dir.join(GENERATED_DIR);
            eprintln!("generated VOC-layout set of coloured shapes in {root:?}");
            write_generated_voc(&root, cfg.seed)?;
            root
        }
    };
    let train = VocDataset::open(&root, Split::Train)?;
    let val = VocDataset::open(&root, Split::Val)?;
    let cap = |n: usize| cfg.max_images.map_or(n, |m| m.min(n));
    let (n_train, n_val) = (cap(train.len()), cap(val.len()));
    if n_train == 0 || n_val == 0 {
        bail!("{root:?} leaves no image to train or evaluate on ({n_train} train, {n_val} val)");
    }
    eprintln!(
        "data: {} classes, {n_train} train / {n_val} val images",
        train.class_names().len()
    );
    Ok(VocData {
        located,
        root,
        train,
        val,
        n_train,
        n_val,
    })
}

/// Writes a small generated set (48 train, 16 val images of 96x128, background
/// and five shape classes) in VOC layout under `root`, unless it is already there.
pub fn write_generated_voc(root: &Path, seed: u64) -> anyhow::Result<()> {
    if is_voc_root(root) && root.join("ImageSets/Segmentation/val.txt").is_file() {
        return Ok(());
    }
    let cfg = SyntheticConfig {
        n_samples: 64,
        height: 96,
        width: 128,
        n_classes: 6,
        seed,
    };
    let ds = synthetic_dataset(&cfg);
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {root:?}"))?;
    write_voc_layout(&ds, root, 48)
        .with_context(|| format!("writing the generated set to {root:?}"))
}
