//! CamVid (Brostow et al., "Semantic object classes in video: a high-definition ground
//! truth database") as the SegNet tutorial ships it (Badrinarayanan et al., "SegNet"),
//! read as it is, with no conversion step:
//!
//! ```text
//! root/train/<id>.png   root/trainannot/<id>.png   root/train.txt
//! root/val/<id>.png     root/valannot/<id>.png     root/val.txt
//! root/test/<id>.png    root/testannot/<id>.png    root/test.txt
//! ```
//!
//! A list file holds one `image annot` pair a line, written as paths on the SegNet
//! authors' machine (`/SegNet/CamVid/train/0001TP_006690.png
//! /SegNet/CamVid/trainannot/0001TP_006690.png`): each is read as its last two
//! components under `root`. Annotations are grey PNGs of class indices 0..10 and
//! 11 = void, which becomes 255 (ignore).

use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

use super::image_io::{load_image, load_palette_mask};
use super::voc::{check_sample, Split};
use super::{Dataset, Sample, IGNORE_LABEL};
use crate::Result;

/// The 11 CamVid classes of the SegNet tutorial; index = label value.
pub const CAMVID_CLASSES: [&str; 11] = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
];

/// The annotation value of unlabelled pixels; read as [`IGNORE_LABEL`].
pub const CAMVID_VOID: u8 = 11;

/// Which list file to read: `train.txt`, `val.txt` or `test.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CamVidSplit {
    Train,
    Val,
    Test,
}

impl CamVidSplit {
    /// The list file's stem, `"train"`, `"val"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            CamVidSplit::Train => "train",
            CamVidSplit::Val => "val",
            CamVidSplit::Test => "test",
        }
    }
}

impl fmt::Display for CamVidSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Split> for CamVidSplit {
    fn from(split: Split) -> Self {
        match split {
            Split::Train => CamVidSplit::Train,
            Split::Val => CamVidSplit::Val,
        }
    }
}

/// True when `root` looks like the SegNet CamVid layout (`train.txt`, `train/`, `trainannot/`).
pub fn is_camvid_root(root: &Path) -> bool {
    root.join("train.txt").is_file()
        && root.join("train").is_dir()
        && root.join("trainannot").is_dir()
}

/// The SegNet CamVid root in `dir`: `dir` itself or its `CamVid/` (the tutorial's folder).
pub fn find_camvid_root(dir: &Path) -> Result<PathBuf> {
    [dir.to_path_buf(), dir.join("CamVid")]
        .into_iter()
        .find(|root| is_camvid_root(root))
        .with_context(|| {
            format!(
                "{dir:?} is not a SegNet CamVid folder: it needs train.txt, train/ and trainannot/ \
                 (or CamVid/ with them)"
            )
        })
}

/// One listed sample: its id (the image's file stem) and the two files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    id: String,
    image: PathBuf,
    annot: PathBuf,
}

/// One split of a SegNet CamVid folder. Images and annotations are read on `get`, so
/// opening is cheap; `open` checks that every listed file exists.
#[derive(Debug, Clone)]
pub struct CamVidDataset {
    root: PathBuf,
    split: CamVidSplit,
    pairs: Vec<Pair>,
    class_names: Vec<String>,
}

impl CamVidDataset {
    /// Opens `split` under `root`. Errors name the list file when it is missing,
    /// unreadable, lists nothing or holds a line that is not an `image annot` pair, and
    /// name the file when a listed image or annotation does not exist.
    pub fn open(root: &Path, split: impl Into<CamVidSplit>) -> Result<Self> {
        let split = split.into();
        if !root.is_dir() {
            bail!("CamVid root {root:?} is not a folder");
        }
        let list = root.join(format!("{split}.txt"));
        if !list.is_file() {
            bail!("list file {list:?} not found (SegNet CamVid root {root:?})");
        }
        let text = std::fs::read_to_string(&list)
            .with_context(|| format!("cannot read list file {list:?}"))?;
        let pairs = parse_list(root, &list, &text)?;
        check_listed_files(&list, &pairs)?;
        Ok(CamVidDataset {
            root: root.to_path_buf(),
            split,
            pairs,
            class_names: CAMVID_CLASSES.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The folder this set was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The split this set reads.
    pub fn split(&self) -> CamVidSplit {
        self.split
    }

    /// The ids (image file stems) of this split, in the order of its list file.
    pub fn ids(&self) -> Vec<&str> {
        self.pairs.iter().map(|p| p.id.as_str()).collect()
    }

    /// The image and annotation files of sample `index`.
    pub fn paths(&self, index: usize) -> Option<(&Path, &Path)> {
        self.pairs
            .get(index)
            .map(|p| (p.image.as_path(), p.annot.as_path()))
    }
}

impl Dataset for CamVidDataset {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Reads image and annotation of sample `index` (void 11 -> 255); errors on a
    /// corrupt file, an annotation value above 11, or sizes that differ.
    fn get(&self, index: usize) -> Result<Sample> {
        let pair = self.pairs.get(index).with_context(|| {
            format!(
                "sample {index} asked for, but {:?} split {} has {}",
                self.root,
                self.split,
                self.pairs.len()
            )
        })?;
        let mask = load_annotation(&pair.annot)?;
        let sample = Sample {
            id: pair.id.clone(),
            image: load_image(&pair.image)?,
            mask,
        };
        check_sample(&sample, &pair.image, &pair.annot, self.n_classes())?;
        Ok(sample)
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

/// A grey annotation PNG as labels: 0..10 kept, [`CAMVID_VOID`] -> [`IGNORE_LABEL`];
/// any other value is an error naming the file.
pub fn load_annotation(path: &Path) -> Result<ndarray::Array2<u8>> {
    let raw = load_palette_mask(path)?;
    if let Some(&bad) = raw.iter().find(|&&v| v > CAMVID_VOID) {
        bail!(
            "annotation {path:?} holds value {bad}, but CamVid annotations are 0..10 \
             (classes) and 11 (void)"
        );
    }
    Ok(raw.mapv(|v| if v == CAMVID_VOID { IGNORE_LABEL } else { v }))
}

/// The pairs of a list file's `text`; errors name `list` and the line.
fn parse_list(root: &Path, list: &Path, text: &str) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{list:?} line {}", index + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [image, annot] = fields[..] else {
            bail!(
                "{}: expected two paths `image annot`, found {:?}",
                at(),
                line
            );
        };
        let image = resolve(root, image).with_context(at)?;
        let annot = resolve(root, annot).with_context(at)?;
        let id = image
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .with_context(|| format!("{}: image path {image:?} has no file name", at()))?;
        pairs.push(Pair { id, image, annot });
    }
    if pairs.is_empty() {
        bail!("list file {list:?} lists no image");
    }
    Ok(pairs)
}

/// `root/<folder>/<file>` from the last two components of a listed path.
fn resolve(root: &Path, listed: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = Path::new(listed)
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    match parts[..] {
        [.., folder, file] if folder != ".." && file != ".." => Ok(root.join(folder).join(file)),
        _ => bail!("listed path {listed:?} is not <folder>/<file>"),
    }
}

/// Errors naming the first listed file that does not exist (and how many are missing).
fn check_listed_files(list: &Path, pairs: &[Pair]) -> Result<()> {
    let missing: Vec<&Path> = pairs
        .iter()
        .flat_map(|p| [p.image.as_path(), p.annot.as_path()])
        .filter(|path| !path.is_file())
        .collect();
    if let Some(first) = missing.first() {
        bail!(
            "{first:?}, listed in {list:?}, does not exist ({} missing file(s) in all)",
            missing.len()
        );
    }
    Ok(())
}

/// Writes any data set of at most 11 classes into the SegNet CamVid layout under
/// `root`: the first `n_train` samples go to `train.txt`, the next `n_val` to
/// `val.txt`, the rest to `test.txt`; images as RGB PNGs, annotations as 8-bit grey
/// PNGs with 255 written as void 11. List lines use the SegNet authors' absolute paths
/// (`/SegNet/CamVid/train/<id>.png ...`), as the real list files do.
pub fn write_camvid_layout(
    ds: &dyn Dataset,
    root: &Path,
    n_train: usize,
    n_val: usize,
) -> Result<()> {
    if ds.n_classes() > CAMVID_CLASSES.len() {
        bail!(
            "cannot write a CamVid layout to {root:?}: the set has {} classes, at most 11 fit",
            ds.n_classes()
        );
    }
    if n_train + n_val > ds.len() {
        bail!(
            "cannot write a CamVid layout to {root:?}: {n_train} train + {n_val} val but the set has {} samples",
            ds.len()
        );
    }
    let mut ids = Vec::with_capacity(ds.len());
    let mut lists = [String::new(), String::new(), String::new()];
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        super::voc::check_file_id(&sample.id, &ids)?;
        let (list, split) = if index < n_train {
            (0, CamVidSplit::Train)
        } else if index < n_train + n_val {
            (1, CamVidSplit::Val)
        } else {
            (2, CamVidSplit::Test)
        };
        let file = format!("{}.png", sample.id);
        super::image_io::save_image(&root.join(split.name()).join(&file), &sample.image)?;
        let annot = sample
            .mask
            .mapv(|v| if v == IGNORE_LABEL { CAMVID_VOID } else { v });
        save_grey_png(&root.join(format!("{split}annot")).join(&file), &annot)?;
        lists[list].push_str(&format!(
            "/SegNet/CamVid/{split}/{file} /SegNet/CamVid/{split}annot/{file}\n"
        ));
        ids.push(sample.id);
    }
    for (split, text) in [CamVidSplit::Train, CamVidSplit::Val, CamVidSplit::Test]
        .into_iter()
        .zip(lists)
    {
        let path = root.join(format!("{split}.txt"));
        crate::atomic_write::write_atomically(&path, |out| {
            std::io::Write::write_all(out, text.as_bytes())
                .with_context(|| format!("cannot write {path:?}"))
        })?;
    }
    Ok(())
}

/// Writes `values` as an 8-bit grey PNG (through a temp file renamed into place).
fn save_grey_png(path: &Path, values: &ndarray::Array2<u8>) -> Result<()> {
    let (h, w) = values.dim();
    let grey = image::GrayImage::from_raw(w as u32, h as u32, values.iter().copied().collect())
        .with_context(|| format!("cannot save {path:?}: pixel buffer does not match {w}x{h}"))?;
    crate::atomic_write::write_atomically(path, |out| {
        grey.write_with_encoder(image::codecs::png::PngEncoder::new(out))
            .with_context(|| format!("cannot encode {path:?}"))
    })
}
