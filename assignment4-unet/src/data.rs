//! Where the training images come from: the ISBI 2012 membrane set (the U-Net
//! paper's task), any folder of image/mask pairs, a VOC-layout set, or, when none
//! is found, the generated set of `common::data::synthetic`, said loudly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use common::data::pairs::{MaskFormat, PairsDataset};
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
    /// Where the samples came from, for logs and `config.json`.
    pub source: String,
    /// True when no real data was found and the generated set is used.
    pub synthetic: bool,
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

/// The data folder to use: `--data-dir`, else `<workspace>/data/isbi2012-membrane`,
/// else the shared data folder's `isbi2012-membrane`; `None` when none exists.
pub fn locate_data(data_dir: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(dir) = data_dir {
        if !dir.is_dir() {
            bail!("--data-dir {dir:?} does not exist or is not a folder");
        }
        return Ok(Some(dir.to_path_buf()));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        Some(workspace.join("data").join(ISBI_NAME)),
        common::data::shared_data_dir().map(|d| d.join(ISBI_NAME)),
    ];
    Ok(candidates.into_iter().flatten().find(|d| d.is_dir()))
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

/// Opens the data of a run (see [`locate_data`] and [`detect_layout`]): ISBI and
/// pairs sets hold back `n_val` seeded samples, VOC sets use their val split,
/// and without data the generated set is used (with a loud message).
pub fn open_splits(data_dir: Option<&Path>, n_val: usize, seed: u64) -> Result<Splits> {
    let Some(dir) = locate_data(data_dir)? else {
        eprintln!(
            "\n!!! ISBI 2012 membrane data not found: put it in data/{ISBI_NAME}/ \
             (train/image/0..29.png, train/label/0..29.png) or pass --data-dir DIR.\n\
             !!! No public download is wired in, so this run uses the GENERATED data set \
             (common::data::synthetic); its figures say nothing about ISBI.\n"
        );
        return synthetic_splits(n_val, seed);
    };
    let (all_or_split, source) = match detect_layout(&dir)? {
        Layout::Isbi(root) => {
            let ds = PairsDataset::open(
                &root.join("train/image"),
                &root.join("train/label"),
                MaskFormat::Grey { threshold: 128 },
                ISBI_CLASSES.iter().map(|s| s.to_string()).collect(),
            )
            .with_context(|| format!("opening the ISBI 2012 set in {root:?}"))?;
            (Err(read_all(&ds)?), format!("ISBI 2012 membranes {root:?}"))
        }
        Layout::Pairs { images, masks } => {
            let ds = PairsDataset::open(
                &images,
                &masks,
                MaskFormat::Grey { threshold: 128 },
                vec!["background".into(), "foreground".into()],
            )
            .with_context(|| format!("opening the image/mask pairs in {dir:?}"))?;
            (Err(read_all(&ds)?), format!("image/mask pairs {dir:?}"))
        }
        Layout::Voc(root) => {
            let train = read_all(&VocDataset::open(&root, Split::Train)?)?;
            let val = read_all(&VocDataset::open(&root, Split::Val)?)?;
            (Ok((train, val)), format!("VOC layout {root:?}"))
        }
    };
    let (train, val) = match all_or_split {
        Ok(split) => split,
        Err(all) => hold_back(all, n_val, seed).with_context(|| format!("data set {dir:?}"))?,
    };
    Ok(Splits {
        train,
        val,
        source,
        synthetic: false,
    })
}

/// The generated two-class set used when no real data is found.
pub fn synthetic_splits(n_val: usize, seed: u64) -> Result<Splits> {
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
        source: "generated (common::data::synthetic)".into(),
        synthetic: true,
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
