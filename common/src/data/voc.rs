//! The PASCAL VOC segmentation directory layout (Everingham et al., "The PASCAL
//! Visual Object Classes Challenge"), also used here for CamVid:
//!
//! ```text
//! root/JPEGImages/<id>.jpg                 RGB images
//! root/SegmentationClass/<id>.png          palette PNGs of class indices, 255 = ignore
//! root/ImageSets/Segmentation/train.txt    one id a line
//! root/ImageSets/Segmentation/val.txt
//! root/classes.txt                         optional, one class name a line (else the 21 VOC names)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};

use super::image_io::{load_image, load_palette_mask, save_image, save_palette_mask};
use super::{Dataset, Sample, IGNORE_LABEL};
use crate::Result;

/// The 21 PASCAL VOC class names; index = label value.
pub const VOC_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// Which list of ids to read: `ImageSets/Segmentation/{train,val}.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    /// The name used in the split file name, `"train"` or `"val"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            other => bail!("unknown split {other:?}: expected \"train\" or \"val\""),
        }
    }
}

/// One split of a VOC-layout folder. Images and masks are read on `get`, so
/// opening is cheap; `open` checks that every listed file exists.
#[derive(Debug, Clone)]
pub struct VocDataset {
    root: PathBuf,
    split: Split,
    ids: Vec<String>,
    class_names: Vec<String>,
}

impl VocDataset {
    /// Opens `split` of the VOC layout under `root`. Errors when the split file is
    /// missing or lists no id, when `classes.txt` exists but is empty, or when a
    /// listed id lacks its image or mask (the error names the id and the path).
    pub fn open(root: &Path, split: Split) -> Result<Self> {
        if !root.is_dir() {
            bail!("VOC root {root:?} is not a folder");
        }
        let class_names = read_class_names(root)?;
        let split_file = split_file(root, split);
        if !split_file.is_file() {
            bail!("split file {split_file:?} not found (VOC root {root:?})");
        }
        let text = std::fs::read_to_string(&split_file)
            .with_context(|| format!("cannot read split file {split_file:?}"))?;
        let ids: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            bail!("split file {split_file:?} lists no ids");
        }
        let dataset = VocDataset {
            root: root.to_path_buf(),
            split,
            ids,
            class_names,
        };
        let mut missing = Vec::new();
        for id in &dataset.ids {
            for path in [dataset.image_path(id), dataset.mask_path(id)] {
                if !path.is_file() {
                    missing.push((id.clone(), path));
                }
            }
        }
        if let Some((id, path)) = missing.first() {
            bail!(
                "id {id:?} listed in {split_file:?} has no file {path:?} ({} missing file(s) in all)",
                missing.len()
            );
        }
        Ok(dataset)
    }

    /// The ids of this split, in the order of the split file.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The folder this set was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The split this set reads.
    pub fn split(&self) -> Split {
        self.split
    }

    /// `root/JPEGImages/<id>.jpg`.
    pub fn image_path(&self, id: &str) -> PathBuf {
        self.root.join("JPEGImages").join(format!("{id}.jpg"))
    }

    /// `root/SegmentationClass/<id>.png`.
    pub fn mask_path(&self, id: &str) -> PathBuf {
        self.root
            .join("SegmentationClass")
            .join(format!("{id}.png"))
    }
}

impl Dataset for VocDataset {
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Reads image and mask of sample `index`; errors on a corrupt file, a mask
    /// whose size differs from the image, or a label that is neither a class nor 255.
    fn get(&self, index: usize) -> Result<Sample> {
        let id = self.ids.get(index).with_context(|| {
            format!(
                "sample {index} asked for, but {:?} split {} has {}",
                self.root,
                self.split,
                self.ids.len()
            )
        })?;
        let image_path = self.image_path(id);
        let mask_path = self.mask_path(id);
        let sample = Sample {
            id: id.clone(),
            image: load_image(&image_path)?,
            mask: load_palette_mask(&mask_path)?,
        };
        check_sample(&sample, &image_path, &mask_path, self.n_classes())?;
        Ok(sample)
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

/// Checks that the mask is as large as the image and that every label is a
/// class index below `n_classes` or [`IGNORE_LABEL`].
pub(crate) fn check_sample(
    sample: &Sample,
    image_path: &Path,
    mask_path: &Path,
    n_classes: usize,
) -> Result<()> {
    let (ih, iw) = sample.size();
    let (mh, mw) = sample.mask.dim();
    if (mh, mw) != (ih, iw) {
        bail!("mask {mask_path:?} is {mh}x{mw} (HxW) but image {image_path:?} is {ih}x{iw}");
    }
    if let Some(&bad) = sample
        .mask
        .iter()
        .find(|&&v| usize::from(v) >= n_classes && v != IGNORE_LABEL)
    {
        bail!(
            "mask {mask_path:?} holds label {bad}, but there are {n_classes} classes (labels 0..{}) and 255 = ignore",
            n_classes.saturating_sub(1)
        );
    }
    Ok(())
}

/// `root/ImageSets/Segmentation/<split>.txt`.
fn split_file(root: &Path, split: Split) -> PathBuf {
    root.join("ImageSets")
        .join("Segmentation")
        .join(format!("{split}.txt"))
}

/// The names in `root/classes.txt` (one a line, blank lines skipped), else [`VOC_CLASSES`].
fn read_class_names(root: &Path) -> Result<Vec<String>> {
    let path = root.join("classes.txt");
    if !path.exists() {
        return Ok(VOC_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path:?}"))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        bail!("class list {path:?} names no class");
    }
    if names.len() > usize::from(IGNORE_LABEL) {
        bail!(
            "class list {path:?} names {} classes; at most 255 fit u8 labels beside 255 = ignore",
            names.len()
        );
    }
    Ok(names)
}

/// Writes any data set into a VOC layout under `root`: the first `n_train`
/// samples go to `train.txt`, the rest to `val.txt`; images as JPEG (quality 95,
/// so they read back to within a few levels, not exactly), masks as palette PNGs,
/// and `classes.txt` from the set's class names. Sample ids become file names, so
/// they must be non-empty, unique, and free of path separators and white space.
pub fn write_voc_layout(ds: &dyn Dataset, root: &Path, n_train: usize) -> Result<()> {
    if ds.is_empty() {
        bail!("cannot write a VOC layout to {root:?}: the data set is empty");
    }
    if n_train > ds.len() {
        bail!(
            "cannot write a VOC layout to {root:?}: n_train = {n_train} but the set has {} samples",
            ds.len()
        );
    }
    let image_dir = root.join("JPEGImages");
    let mask_dir = root.join("SegmentationClass");
    let sets_dir = root.join("ImageSets").join("Segmentation");
    for dir in [&image_dir, &mask_dir, &sets_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {dir:?}"))?;
    }
    let mut ids = Vec::with_capacity(ds.len());
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        check_file_id(&sample.id, &ids)?;
        save_image(&image_dir.join(format!("{}.jpg", sample.id)), &sample.image)?;
        save_palette_mask(&mask_dir.join(format!("{}.png", sample.id)), &sample.mask)?;
        ids.push(sample.id);
    }
    let (train, val) = ids.split_at(n_train);
    for (split, list) in [(Split::Train, train), (Split::Val, val)] {
        let path = split_file(root, split);
        let text: String = list.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(&path, text).with_context(|| format!("cannot write {path:?}"))?;
    }
    let classes: String = ds
        .class_names()
        .iter()
        .map(|name| format!("{name}\n"))
        .collect();
    let classes_path = root.join("classes.txt");
    std::fs::write(&classes_path, classes)
        .with_context(|| format!("cannot write {classes_path:?}"))?;
    Ok(())
}

/// Errors unless `id` can serve as a file stem and a line of a split file and is
/// not among `seen`.
pub(crate) fn check_file_id(id: &str, seen: &[String]) -> Result<()> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || id
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_whitespace())
    {
        bail!("sample id {id:?} cannot be a file name (empty, path separator or white space)");
    }
    if seen.iter().any(|s| s == id) {
        bail!("sample id {id:?} occurs twice; ids must be unique to become file names");
    }
    Ok(())
}
