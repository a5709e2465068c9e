//! A folder of images and a folder of masks matched by file stem: the CMPUT 328
//! flower patches (`tr0.jpg` + `tr0.jpg`), ISBI 2012 membranes (`0.png` + `0.png`)
//! and similar sets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::image_io::{
    load_grey_mask, load_image, load_palette_mask, save_image, save_palette_mask,
};
use super::mask_rule::{detect_mask_rule, MaskRule};
use super::voc::{check_file_id, check_sample};
use super::{Dataset, Sample};
use crate::Result;

/// How a mask file stores its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormat {
    /// Palette PNG of class indices (or 8-bit grey PNG read as its values).
    Palette,
    /// Any grey or colour image: luma `>= threshold` is class 1, else class 0.
    Grey { threshold: u8 },
}

/// The file extensions read as images or masks (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Images and masks from two folders, paired by file stem and sorted by stem.
#[derive(Debug, Clone)]
pub struct PairsDataset {
    /// `(stem, image path, mask path)`, sorted by stem.
    pairs: Vec<(String, PathBuf, PathBuf)>,
    format: MaskFormat,
    class_names: Vec<String>,
    /// The rule found by [`PairsDataset::open_detecting`], if that opened the set.
    rule: Option<MaskRule>,
}

impl PairsDataset {
    /// Pairs every `.png`/`.jpg`/`.jpeg` in `image_dir` with the file of the same
    /// stem in `mask_dir`. Errors when a folder cannot be read or holds no image,
    /// when two files in one folder share a stem, when a stem has an image but no
    /// mask or a mask but no image (the error lists the stems), or when
    /// `class_names` is empty.
    pub fn open(
        image_dir: &Path,
        mask_dir: &Path,
        format: MaskFormat,
        class_names: Vec<String>,
    ) -> Result<Self> {
        if class_names.is_empty() {
            bail!("pairs data set {image_dir:?}: no class names given");
        }
        if let MaskFormat::Grey { .. } = format {
            if class_names.len() < 2 {
                bail!("pairs data set {image_dir:?}: grey masks give labels 0 and 1, but only {} class name given", class_names.len());
            }
        }
        let images = files_by_stem(image_dir)?;
        let masks = files_by_stem(mask_dir)?;
        if images.is_empty() {
            bail!("image folder {image_dir:?} holds no .png, .jpg or .jpeg file");
        }
        let without_mask: Vec<&str> = images
            .keys()
            .filter(|stem| !masks.contains_key(*stem))
            .map(String::as_str)
            .collect();
        let without_image: Vec<&str> = masks
            .keys()
            .filter(|stem| !images.contains_key(*stem))
            .map(String::as_str)
            .collect();
        if !without_mask.is_empty() || !without_image.is_empty() {
            bail!(
                "images and masks do not pair up: images without a mask in {mask_dir:?}: {}; masks without an image in {image_dir:?}: {}",
                list_stems(&without_mask),
                list_stems(&without_image)
            );
        }
        // BTreeMap iterates in stem order.
        let pairs = images
            .into_iter()
            .map(|(stem, image)| {
                let mask = masks[&stem].clone();
                (stem, image, mask)
            })
            .collect();
        Ok(PairsDataset {
            pairs,
            format,
            class_names,
            rule: None,
        })
    }

    /// Like [`PairsDataset::open`], with the mask format found by looking at every
    /// mask ([`detect_mask_rule`]): palette indices, small grey values, or a
    /// threshold at 128 for 0/255 and JPEG masks of two classes. Errors also when a
    /// class occurs in no mask.
    pub fn open_detecting(
        image_dir: &Path,
        mask_dir: &Path,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let mut pairs = Self::open(image_dir, mask_dir, MaskFormat::Palette, class_names)?;
        let masks: Vec<&Path> = pairs.pairs.iter().map(|(_, _, m)| m.as_path()).collect();
        let rule = detect_mask_rule(mask_dir, &masks, &pairs.class_names)?;
        pairs.format = rule.format;
        pairs.rule = Some(rule);
        Ok(pairs)
    }

    /// The stems, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.pairs
            .iter()
            .map(|(stem, _, _)| stem.as_str())
            .collect()
    }

    /// `(image path, mask path)` of sample `index`, if it exists.
    pub fn paths(&self, index: usize) -> Option<(&Path, &Path)> {
        self.pairs
            .get(index)
            .map(|(_, image, mask)| (image.as_path(), mask.as_path()))
    }

    /// How the masks are read.
    pub fn format(&self) -> MaskFormat {
        self.format
    }

    /// The rule [`PairsDataset::open_detecting`] found (`None` after [`PairsDataset::open`]).
    pub fn mask_rule(&self) -> Option<&MaskRule> {
        self.rule.as_ref()
    }
}

impl Dataset for PairsDataset {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Reads image and mask of sample `index`; errors on a corrupt file, a mask
    /// whose size differs from the image, or a label that is neither a class nor 255.
    fn get(&self, index: usize) -> Result<Sample> {
        let (stem, image_path, mask_path) = self.pairs.get(index).with_context(|| {
            format!(
                "sample {index} asked for, but the set has {}",
                self.pairs.len()
            )
        })?;
        let mask = match self.format {
            MaskFormat::Palette => load_palette_mask(mask_path)?,
            MaskFormat::Grey { threshold } => load_grey_mask(mask_path, threshold)?,
        };
        let sample = Sample {
            id: stem.clone(),
            image: load_image(image_path)?,
            mask,
        };
        check_sample(&sample, image_path, mask_path, self.n_classes())?;
        Ok(sample)
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

/// Writes any data set as `image_dir/<id>.png` (RGB, lossless) and
/// `mask_dir/<id>.png` (palette), the layout [`PairsDataset`] reads with
/// [`MaskFormat::Palette`]. Ids must be non-empty, unique file stems.
pub fn write_pairs_layout(ds: &dyn Dataset, image_dir: &Path, mask_dir: &Path) -> Result<()> {
    for dir in [image_dir, mask_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {dir:?}"))?;
    }
    let mut ids = Vec::with_capacity(ds.len());
    for index in 0..ds.len() {
        let sample = ds.get(index)?;
        check_file_id(&sample.id, &ids)?;
        save_image(&image_dir.join(format!("{}.png", sample.id)), &sample.image)?;
        save_palette_mask(&mask_dir.join(format!("{}.png", sample.id)), &sample.mask)?;
        ids.push(sample.id);
    }
    Ok(())
}

/// The image files of `dir` keyed by stem; two files with one stem are an error.
fn files_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read folder {dir:?}"))?;
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list folder {dir:?}"))?
            .path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if !is_image || !path.is_file() {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            bail!("file {path:?} has a name that is not UTF-8");
        };
        if let Some(other) = files.insert(stem.to_owned(), path.clone()) {
            bail!("files {other:?} and {path:?} share the stem {stem:?}; keep one");
        }
    }
    Ok(files)
}

/// `"a, b, c"`, at most 10 stems then a count; `"none"` when empty.
fn list_stems(stems: &[&str]) -> String {
    if stems.is_empty() {
        return "none".to_owned();
    }
    let shown = stems[..stems.len().min(10)].join(", ");
    if stems.len() > 10 {
        format!("{shown} and {} more", stems.len() - 10)
    } else {
        shown
    }
}
