//! The data a run reads, chosen by `--dataset voc|camvid|DIR` and found by
//! `common::data::locate`, in either of two layouts: the VOC layout (`JPEGImages/`,
//! `SegmentationClass/`, `ImageSets/Segmentation/{train,val}.txt`: PASCAL VOC 2012 as
//! `VOCdevkit/VOC2012`, or the shared CamVid copy `camvid-voc`) or CamVid as the SegNet
//! tutorial ships it (`camvid-segnet`: `train/ trainannot/ val/ valannot/` and list
//! files). CamVid (187 MB) is downloaded by its manifest when no set is found; PASCAL
//! VOC 2012 (2 GB) only after a yes. Else a generated VOC-layout set of coloured
//! shapes, announced loudly.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use common::data::camvid::{find_camvid_root, CamVidDataset};
use common::data::fetch::{fetch_archive, ArchiveSource};
use common::data::locate::{
    confirm_download, locate_noting, Consent, DataSetSpec, Download, Located,
};
use common::data::manifest::{FetchOptions, ManifestSet};
use common::data::synthetic::{synthetic_dataset, write_voc_layout, SyntheticConfig};
use common::data::voc::{Split, VocDataset};
use common::data::{Dataset, Sample};
use common::workspace::workspace_data_dir;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The official PASCAL VOC 2012 train+val archive.
pub const VOC2012_URL: &str =
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar";
/// Its size in bytes (1.9 GiB).
pub const VOC2012_BYTES: u64 = 1_999_639_040;
/// Its sha256.
pub const VOC2012_SHA256: &str = "e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb";
/// Its file name, kept in `data/`.
pub const VOC2012_TAR: &str = "VOCtrainval_11-May-2012.tar";
/// The environment variable naming a mirror of [`VOC2012_URL`].
pub const VOC_URL_ENV: &str = "SEGKIT_VOC_URL";
/// Where PASCAL VOC 2012 is in a data folder (and inside its tar).
pub const VOC2012_DIR: &str = "VOCdevkit/VOC2012";

/// The folder of CamVid in the SegNet layout, downloaded by [`CAMVID_MANIFEST`].
pub const CAMVID_SEGNET: &str = "camvid-segnet";
/// The shared CamVid copy in the VOC layout.
pub const CAMVID_VOC: &str = "camvid-voc";

/// CamVid as the SegNet tutorial ships it, carried by the binary
/// (`data/manifests/camvid-segnet.tsv`: 1405 files, 187 MB, into `data/camvid-segnet/`).
pub const CAMVID_MANIFEST: ManifestSet = ManifestSet {
    name: CAMVID_SEGNET,
    text: include_str!("../../data/manifests/camvid-segnet.tsv"),
};

/// The folder names tried in each data folder with no `--dataset`, in order.
pub const DATA_SET_NAMES: &[&str] = &[VOC2012_DIR, CAMVID_SEGNET, CAMVID_VOC];

/// The generated set's folder inside the cache folder.
pub const GENERATED_DIR: &str = "generated-voc";

/// Which data set to read (`--dataset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSetChoice {
    /// PASCAL VOC 2012 (`VOCdevkit/VOC2012`), downloaded (2 GB) after a yes.
    Voc,
    /// CamVid (`camvid-segnet` or `camvid-voc`), downloaded (187 MB) by its manifest.
    Camvid,
    /// A folder holding either layout.
    Dir(PathBuf),
}

impl FromStr for DataSetChoice {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "voc" => Ok(DataSetChoice::Voc),
            "camvid" => Ok(DataSetChoice::Camvid),
            "" => bail!("--dataset needs voc, camvid or a folder"),
            dir => Ok(DataSetChoice::Dir(PathBuf::from(dir))),
        }
    }
}

impl fmt::Display for DataSetChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSetChoice::Voc => f.write_str("voc"),
            DataSetChoice::Camvid => f.write_str("camvid"),
            DataSetChoice::Dir(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// The two layouts a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Voc,
    SegNetCamVid,
}

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
        dir.join(VOC2012_DIR),
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

/// The root of either layout in `dir` and which layout it is; the error explains both.
pub fn find_root(dir: &Path) -> anyhow::Result<(Layout, PathBuf)> {
    let voc = match find_voc_root(dir) {
        Ok(root) => return Ok((Layout::Voc, root)),
        Err(err) => err,
    };
    match find_camvid_root(dir) {
        Ok(root) => Ok((Layout::SegNetCamVid, root)),
        Err(_) => bail!(
            "{voc}; nor is it CamVid in the SegNet layout (train.txt, train/, trainannot/, \
             val.txt, val/, valannot/)"
        ),
    }
}

/// Where PASCAL VOC 2012 comes from: the official host, or `$SEGKIT_VOC_URL` (a
/// mirror of the same file: size and hash are checked all the same).
pub fn voc2012_source() -> ArchiveSource {
    let url = std::env::var(VOC_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| VOC2012_URL.to_string());
    ArchiveSource {
        url,
        sha256: VOC2012_SHA256.to_string(),
        bytes: VOC2012_BYTES,
        file_name: VOC2012_TAR.to_string(),
    }
}

/// The download hook of PASCAL VOC 2012: asks first ([`confirm_download`]; `yes` is
/// `--download`) unless the whole tar is in `data` already, then
/// [`fetch_archive`] into `data/` and `data/VOCdevkit/VOC2012`.
pub fn download_voc(source: &ArchiveSource, data: &Path, yes: bool) -> anyhow::Result<PathBuf> {
    if !source.is_downloaded(data) {
        let what = format!(
            "PASCAL VOC 2012 ({}, from {})",
            source.file_name, source.url
        );
        let consent = Consent {
            what: &what,
            bytes: source.bytes,
            into: data,
            flag: "--download",
        };
        confirm_download(&consent, yes)?;
    }
    eprintln!(
        "downloading PASCAL VOC 2012 ({:.1} GB) from {} into {data:?}; an interrupted download resumes",
        source.bytes as f64 / 1e9,
        source.url
    );
    fetch_archive(
        source,
        data,
        Path::new(VOC2012_DIR),
        &FetchOptions::default(),
    )
}

/// What the banner adds for PASCAL VOC 2012 when downloads are off.
fn voc_offline_help(source: &ArchiveSource, data: &Path) -> String {
    format!(
        "PASCAL VOC 2012 is {} ({:.1} GB, sha256 {}) from {}; put it in {data:?} (a run that \
         may use the network checks and unpacks it without downloading) or unpack it there \
         so that {:?} exists",
        source.file_name,
        source.bytes as f64 / 1e9,
        source.sha256,
        source.url,
        data.join(VOC2012_DIR)
    )
}

/// Where the data is: `--data-dir` (either layout), else the search of
/// `common::data::locate` for the `--dataset` chosen, with its download (see the
/// module documentation). `downloads` off (`evaluate`) never fetches or asks.
pub fn locate_data(cfg: &Config, downloads: bool) -> anyhow::Result<Located> {
    let given = given_dir(cfg)?;
    let voc_source = voc2012_source();
    let data = workspace_data_dir();
    let fetch_voc = |dir: &Path| download_voc(&voc_source, dir, cfg.download);
    let fetch_camvid = |dir: &Path| CAMVID_MANIFEST.fetch(dir);
    let either = |dir: &Path| find_root(dir).map(|(_, root)| root);
    let voc = cfg.dataset == Some(DataSetChoice::Voc);
    let find: &dyn Fn(&Path) -> anyhow::Result<PathBuf> =
        if voc { &find_voc_root } else { &either };
    let download: Download = if voc { &fetch_voc } else { &fetch_camvid };
    let (names, title, help): (&[&str], &str, String) = match &cfg.dataset {
        Some(DataSetChoice::Voc) => (
            &[VOC2012_DIR],
            "PASCAL VOC 2012 (VOCdevkit/VOC2012: JPEGImages/, SegmentationClass/, ImageSets/)",
            voc_offline_help(&voc_source, &data),
        ),
        Some(DataSetChoice::Camvid) => (
            &[CAMVID_SEGNET, CAMVID_VOC],
            "CamVid (camvid-segnet: the SegNet layout, or camvid-voc: the VOC layout)",
            CAMVID_MANIFEST.offline_help(&data),
        ),
        _ => (
            DATA_SET_NAMES,
            "a data set (PASCAL VOC 2012 as VOCdevkit/VOC2012, CamVid as camvid-segnet or camvid-voc)",
            CAMVID_MANIFEST.offline_help(&data),
        ),
    };
    let spec = DataSetSpec {
        names,
        title,
        find_root: find,
        download: downloads.then_some(download),
    };
    locate_noting(&spec, given.as_deref(), Some(&help))
}

/// `--data-dir` or `--dataset DIR` (not both).
fn given_dir(cfg: &Config) -> anyhow::Result<Option<PathBuf>> {
    match (&cfg.run.data_dir, &cfg.dataset) {
        (Some(given), Some(DataSetChoice::Dir(dir))) if given != dir => {
            bail!("--data-dir {given:?} and --dataset {dir:?} name two folders: give one")
        }
        (Some(given), _) => Ok(Some(given.clone())),
        (None, Some(DataSetChoice::Dir(dir))) => Ok(Some(dir.clone())),
        (None, _) => Ok(None),
    }
}

/// One split of either layout, or a block of one (`--tune`).
#[derive(Debug, Clone)]
pub enum SplitSet {
    Voc(VocDataset),
    CamVid(CamVidDataset),
    /// The images `range` of a split, renumbered from 0.
    Part(Box<SplitSet>, std::ops::Range<usize>),
}

impl SplitSet {
    /// Opens `split` of the layout under `root`.
    pub fn open(layout: Layout, root: &Path, split: Split) -> anyhow::Result<Self> {
        Ok(match layout {
            Layout::Voc => SplitSet::Voc(VocDataset::open(root, split)?),
            Layout::SegNetCamVid => SplitSet::CamVid(CamVidDataset::open(root, split)?),
        })
    }

    /// `--tune`'s two blocks of a training split: its first 80% to train on, and
    /// its last 20% (at least one image) to score in val's place.
    pub fn tuning_blocks(self) -> (SplitSet, SplitSet) {
        let n = self.len();
        let held = (n / 5).max(1).min(n.saturating_sub(1));
        let base = Box::new(self);
        (
            SplitSet::Part(base.clone(), 0..n - held),
            SplitSet::Part(base, n - held..n),
        )
    }

    fn inner(&self) -> &dyn Dataset {
        match self {
            SplitSet::Voc(ds) => ds,
            SplitSet::CamVid(ds) => ds,
            SplitSet::Part(base, _) => base.inner(),
        }
    }
}

impl Dataset for SplitSet {
    fn len(&self) -> usize {
        match self {
            SplitSet::Part(_, range) => range.len(),
            _ => self.inner().len(),
        }
    }

    fn get(&self, index: usize) -> common::Result<Sample> {
        match self {
            SplitSet::Part(base, range) if index < range.len() => base.get(range.start + index),
            SplitSet::Part(_, range) => {
                anyhow::bail!("image {index} of a block of {} images", range.len())
            }
            _ => self.inner().get(index),
        }
    }

    fn class_names(&self) -> &[String] {
        self.inner().class_names()
    }
}

/// The two splits of the located data, at most `max_images` images each.
#[derive(Debug)]
pub struct VocData {
    pub located: Located,
    /// The root read (the generated set's folder for generated data).
    pub root: PathBuf,
    pub layout: Layout,
    pub train: SplitSet,
    pub val: SplitSet,
    pub n_train: usize,
    pub n_val: usize,
}

impl VocData {
    /// The class names of the set (`classes.txt`, VOC's 21 or CamVid's 11).
    pub fn class_names(&self) -> &[String] {
        self.train.class_names()
    }

    /// The dataset of `split` and the number of its images to use.
    pub fn split(&self, split: Split) -> (&SplitSet, usize) {
        match split {
            Split::Train => (&self.train, self.n_train),
            Split::Val => (&self.val, self.n_val),
        }
    }
}

/// Finds the data (printing its banner once, downloading as the module documentation
/// says), writes the generated set into the cache folder when nothing was found, and
/// opens both splits (`--max-images` of each).
pub fn open(cfg: &Config) -> anyhow::Result<VocData> {
    open_located(cfg, locate_data(cfg, true)?)
}

/// [`open`] without any download or question (`evaluate` on a saved run).
pub fn open_without_download(cfg: &Config) -> anyhow::Result<VocData> {
    open_located(cfg, locate_data(cfg, false)?)
}

fn open_located(cfg: &Config, located: Located) -> anyhow::Result<VocData> {
    eprintln!("{}", located.banner);
    let (layout, root) = match &located.root {
        Some(root) => find_root(root)?,
        None => {
            let root = cfg.cache_dir.join(GENERATED_DIR);
            eprintln!("generated VOC-layout set of coloured shapes in {root:?}");
            write_generated_voc(&root, cfg.seed)?;
            (Layout::Voc, root)
        }
    };
    let mut train = SplitSet::open(layout, &root, Split::Train)?;
    let mut val = SplitSet::open(layout, &root, Split::Val)?;
    if cfg.tune {
        (train, val) = train.tuning_blocks();
        eprintln!(
            "--tune: training on the first {} training images, scoring the last {} in val's place",
            train.len(),
            val.len()
        );
    }
    let cap = |n: usize| cfg.max_images.map_or(n, |m| m.min(n));
    let (n_train, n_val) = (cap(train.len()), cap(val.len()));
    if n_train == 0 || n_val == 0 {
        bail!("{root:?} leaves no image to train or evaluate on ({n_train} train, {n_val} val)");
    }
    let kind = match layout {
        Layout::Voc => "VOC layout",
        Layout::SegNetCamVid => "SegNet CamVid layout",
    };
    eprintln!(
        "data: {kind}, {} classes, {n_train} train / {n_val} val images",
        train.class_names().len()
    );
    Ok(VocData {
        located,
        root,
        layout,
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
