//! Where the training images come from: the ISBI 2012 membrane set (the U-Net
//! paper's task), any folder of image/mask pairs, a VOC-layout set, found by
//! `common::data::locate`, or, when none is found, the generated set of
//! `common::data::synthetic`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use common::data::locate::{locate_noting, DataSetSpec, Located};
use common::data::manifest::ManifestSet;
use common::data::pairs::PairsDataset;
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::voc::{Split, VocDataset};
use common::data::{Dataset, InMemoryDataset, Sample};
use common::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The folder name of the ISBI 2012 set under a data folder.
pub const ISBI_NAME: &str = "isbi2012-membrane";

/// ISBI classes: label images are black (0) on membranes, white (255) inside cells.
pub const ISBI_CLASSES: [&str; 2] = ["membrane", "cell"];

/// Side of the generated images used when no real data is found.
pub const SYNTHETIC_SIZE: usize = 128;

/// The training and held-back samples of one run, in memory.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Samples to train on.
    pub train: InMemoryDataset,
    /// Held-back samples to evaluate on (full size).
    pub val: InMemoryDataset,
    /// What the set is, for titles: `"ISBI 2012 membranes"`.
    pub title: &'static str,
    /// Where the samples came from (`metrics.json` field `data`).
    pub data: Located,
}

/// The kinds of folders `--data-dir` may point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `train/image/*.png` + `train/label/*.png` grey labels (ISBI 2012).
    Isbi(PathBuf),
    /// `JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/{train,val}.txt`.
    Voc(PathBuf),
    /// Two folders of images and masks paired by file stem:
    /// `image/` + `label/`, `images/` + `masks/`, or `image/` + `mask/`.
    Pairs { images: PathBuf, masks: PathBuf },
}

/// Recognises the layout of a data folder, or says what it expected.
pub fn detect_layout(dir: &Path) -> Result<Layout> {
    if !dir.is_dir() {
        bail!("data folder {dir:?} does not exist or is not a folder");
    }
    if dir.join("train/image").is_dir() && dir.join("train/label").is_dir() {
        return Ok(Layout::Isbi(dir.to_path_buf()));
    }
    if dir.join("JPEGImages").is_dir() && dir.join("SegmentationClass").is_dir() {
        return Ok(Layout::Voc(dir.to_path_buf()));
    }
    for (images, masks) in [("image", "label"), ("images", "masks"), ("image", "mask")] {
        if dir.join(images).is_dir() && dir.join(masks).is_dir() {
            return Ok(Layout::Pairs {
                images: dir.join(images),
                masks: dir.join(masks),
            });
        }
    }
    bail!(
        "data folder {dir:?} has none of the known layouts: train/image + train/label (ISBI 2012), \
         JPEGImages + SegmentationClass (VOC), or image + label / images + masks folders"
    )
}

impl Layout {
    /// What the set is, for titles.
    pub fn title(&self) -> &'static str {
        match self {
            Layout::Isbi(_) => "ISBI 2012 membranes",
            Layout::Voc(_) => "a VOC layout",
            Layout::Pairs { .. } => "image/mask pairs",
        }
    }
}

/// The ISBI set's download list, carried by the binary
/// (`data/manifests/isbi2012-membrane.tsv`: the 90 PNGs, 13 MB).
pub const MANIFEST: ManifestSet = ManifestSet {
    name: ISBI_NAME,
    text: include_str!("../../data/manifests/isbi2012-membrane.tsv"),
};

/// The download hook: fetches [`MANIFEST`] into `data/isbi2012-membrane/`.
fn download_isbi(data: &Path) -> Result<PathBuf> {
    MANIFEST.fetch(data)
}

/// Finds the data (see `common::data::locate`): `--data-dir`, else a folder named
/// `isbi2012-membrane` in `$SEGKIT_DATA_DIR`, the workspace's `data/` or the shared
/// data, holding one of the layouts of [`detect_layout`], else a download by
/// [`MANIFEST`]; else the generated set.
pub fn locate_data(data_dir: Option<&Path>) -> Result<Located> {
    let spec = DataSetSpec {
        names: &[ISBI_NAME],
        title: "the ISBI 2012 membrane images (train/image/0..29.png, train/label/0..29.png)",
        find_root: &|dir| detect_layout(dir).map(|_| dir.to_path_buf()),
        download: Some(&download_isbi),
    };
    let offline_help = MANIFEST.offline_help(&common::workspace::workspace_data_dir());
    locate_noting(&spec, data_dir, Some(&offline_help))
}

/// Reads every sample of `ds` into memory (the sets here are small).
pub fn read_all(ds: &dyn Dataset) -> Result<InMemoryDataset> {
    let samples = (0..ds.len())
        .map(|i| ds.get(i))
        .collect::<Result<Vec<Sample>>>()?;
    Ok(InMemoryDataset {
        samples,
        class_names: ds.class_names().to_vec(),
    })
}

/// Splits `all` into train and `n_val` held-back samples chosen with `seed`.
pub fn hold_back(
    all: InMemoryDataset,
    n_val: usize,
    seed: u64,
) -> Result<(InMemoryDataset, InMemoryDataset)> {
    let n = all.samples.len();
    if n_val == 0 || n_val >= n {
        bail!("cannot hold back {n_val} of {n} samples: need at least one for training and one for validation");
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut val_idx = order[..n_val].to_vec();
    val_idx.sort_unstable();
    let pick = |keep: &dyn Fn(usize) -> bool| InMemoryDataset {
        samples: (0..n)
            .filter(|&i| keep(i))
            .map(|i| all.samples[i].clone())
            .collect(),
        class_names: all.class_names.clone(),
    };
    let val = pick(&|i| val_idx.contains(&i));
    let train = pick(&|i| !val_idx.contains(&i));
    Ok((train, val))
}

/// The samples of a layout: the whole set, or a VOC set's own train and val splits.
enum Samples {
    All(InMemoryDataset),
    Split(InMemoryDataset, InMemoryDataset),
}

/// Reads the samples of `layout` into memory.
fn read_layout(layout: &Layout) -> Result<Samples> {
    match layout {
        Layout::Isbi(root) => {
            let classes = ISBI_CLASSES.iter().map(|s| s.to_string()).collect();
            let (images, labels) = (root.join("train/image"), root.join("train/label"));
            let ds = PairsDataset::open_detecting(&images, &labels, classes)
                .with_context(|| format!("opening the ISBI 2012 set in {root:?}"))?;
            Ok(Samples::All(read_detected(&ds)?))
        }
        Layout::Pairs { images, masks } => {
            let classes = vec!["background".into(), "foreground".into()];
            let ds = PairsDataset::open_detecting(images, masks, classes)
                .with_context(|| format!("opening the image/mask pairs {images:?} + {masks:?}"))?;
            Ok(Samples::All(read_detected(&ds)?))
        }
        Layout::Voc(root) => Ok(Samples::Split(
            read_all(&VocDataset::open(root, Split::Train)?)?,
            read_all(&VocDataset::open(root, Split::Val)?)?,
        )),
    }
}

/// Says which mask rule was found, then reads the whole set into memory.
fn read_detected(ds: &PairsDataset) -> Result<InMemoryDataset> {
    if let Some(rule) = ds.mask_rule() {
        eprintln!("{}", rule.description());
    }
    read_all(ds)
}

/// Opens the data a run found (see [`locate_data`] and [`detect_layout`]): ISBI and
/// pairs sets hold back `n_val` seeded samples, VOC sets use their val split, and
/// without data the generated set is used.
pub fn open_splits(data: Located, n_val: usize, seed: u64) -> Result<Splits> {
    let Some(root) = data.root.clone() else {
        return generated_splits(data, n_val, seed);
    };
    let layout = detect_layout(&root)?;
    let (train, val) = match read_layout(&layout)? {
        Samples::Split(train, val) => (train, val),
        Samples::All(all) => {
            hold_back(all, n_val, seed).with_context(|| format!("data set {root:?}"))?
        }
    };
    Ok(Splits {
        train,
        val,
        title: layout.title(),
        data,
    })
}

/// The splits a run trains and scores on: [`open_splits`], and with `tune`
/// (`--tune`) [`Splits::tuning`] of them.
pub fn open_run_splits(data: Located, n_val: usize, seed: u64, tune: bool) -> Result<Splits> {
    let splits = open_splits(data, n_val, seed)?;
    if !tune {
        return Ok(splits);
    }
    eprintln!("--tune: scoring {n_val} training images held back; the held-back images stay out");
    splits.tuning(n_val, seed)
}

impl Splits {
    /// The splits for choosing settings (`--tune`): the held-back samples are left
    /// out, and `n_val` of the training samples, chosen with `seed`, are held back
    /// from training and scored in their place.
    pub fn tuning(self, n_val: usize, seed: u64) -> Result<Self> {
        let (train, val) = hold_back(self.train, n_val, seed.wrapping_add(TUNE_SEED_OFFSET))
            .context("holding back training images for --tune")?;
        Ok(Self { train, val, ..self })
    }
}

/// Added to `--seed` to choose the training images `--tune` scores.
const TUNE_SEED_OFFSET: u64 = 0x7475_6e65;

/// The generated two-class set used when no real data is found.
fn generated_splits(data: Located, n_val: usize, seed: u64) -> Result<Splits> {
    let all = synthetic_dataset(&SyntheticConfig {
        n_samples: 30,
        height: SYNTHETIC_SIZE,
        width: SYNTHETIC_SIZE,
        n_classes: 2,
        seed,
    });
    let (train, val) = hold_back(all, n_val, seed)?;
    Ok(Splits {
        train,
        val,
        title: "generated data",
        data,
    })
}

/// A data set that presents `base` `repeats` times over, so that one loader
/// epoch holds many random crops of a small set.
pub struct Repeated {
    base: Arc<dyn Dataset>,
    repeats: usize,
}

impl Repeated {
    /// `base` seen `repeats` (at least 1) times per epoch.
    pub fn new(base: Arc<dyn Dataset>, repeats: usize) -> Self {
        Self {
            base,
            repeats: repeats.max(1),
        }
    }
}

impl Dataset for Repeated {
    fn len(&self) -> usize {
        self.base.len() * self.repeats
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let n = self.base.len();
        if index >= self.len() {
            bail!(
                "sample {index} asked for, but the repeated set has {} ({n} x {})",
                self.len(),
                self.repeats
            );
        }
        self.base.get(index % n)
    }

    fn class_names(&self) -> &[String] {
        self.base.class_names()
    }
}
