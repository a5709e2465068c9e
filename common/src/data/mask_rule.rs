//! Which rule turns a folder's mask files into class labels, found by looking at
//! the masks themselves: palette PNGs give their indices, grey masks holding only
//! small values give those values, and 0/255 or JPEG masks of a two-class set are
//! thresholded at 128. A class that no mask holds is an error, not a silent 0.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::image_io::{load_luma, load_palette_mask, mask_storage, MaskStorage};
use super::pairs::MaskFormat;
use super::IGNORE_LABEL;
use crate::Result;

/// The grey level from which a thresholded mask pixel is class 1.
pub const GREY_THRESHOLD: u8 = 128;

/// The rule found for a folder of masks, and the sentence that says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRule {
    pub format: MaskFormat,
    /// The folder the rule was found for.
    pub mask_dir: PathBuf,
    /// The rule in words, e.g. "palette PNGs, each pixel's index is its class".
    pub how: String,
}

impl MaskRule {
    /// The sentence for the run's first lines: `masks in "<dir>": <how>`.
    pub fn description(&self) -> String {
        format!("masks in {:?}: {}", self.mask_dir, self.how)
    }
}

/// What the masks of a folder hold, gathered over all of them.
struct Survey {
    /// The storages seen, each with one file that has it.
    storages: Vec<(MaskStorage, PathBuf)>,
    /// Every pixel value seen (palette index, grey value or luma).
    values: BTreeSet<u8>,
}

/// Finds the rule for `masks` (all files of one folder `mask_dir`) and a set with
/// `class_names`; errors, naming the folder, when the masks mix palette and other
/// files, hold more values than there are classes, or leave a class out entirely.
pub fn detect_mask_rule(
    mask_dir: &Path,
    masks: &[&Path],
    class_names: &[String],
) -> Result<MaskRule> {
    let survey = survey(masks)?;
    let rule = choose_rule(mask_dir, &survey, class_names.len())?;
    check_every_class_occurs(mask_dir, &rule, &survey.values, class_names)?;
    Ok(rule)
}

/// Reads every mask once and records its storage and values.
fn survey(masks: &[&Path]) -> Result<Survey> {
    let mut survey = Survey {
        storages: Vec::new(),
        values: BTreeSet::new(),
    };
    for &path in masks {
        let storage = mask_storage(path)?;
        let pixels = match storage {
            MaskStorage::PalettePng | MaskStorage::GreyPng => load_palette_mask(path)?,
            MaskStorage::Other => load_luma(path)?,
        };
        survey.values.extend(pixels.iter().copied());
        if !survey.storages.iter().any(|(seen, _)| *seen == storage) {
            survey.storages.push((storage, path.to_path_buf()));
        }
    }
    Ok(survey)
}

/// The rule that fits the survey (see the module docs).
fn choose_rule(mask_dir: &Path, survey: &Survey, n_classes: usize) -> Result<MaskRule> {
    let only = |storage| survey.storages.iter().all(|(seen, _)| *seen == storage);
    let has_palette = survey
        .storages
        .iter()
        .any(|(seen, _)| *seen == MaskStorage::PalettePng);
    if has_palette && !only(MaskStorage::PalettePng) {
        let files: Vec<String> = survey
            .storages
            .iter()
            .map(|(storage, path)| format!("{path:?} ({storage:?})"))
            .collect();
        bail!(
            "masks in {mask_dir:?} mix palette PNGs with other files ({}); store them one way",
            files.join(", ")
        );
    }
    let said = |format, how: &str| MaskRule {
        format,
        mask_dir: mask_dir.to_path_buf(),
        how: how.to_owned(),
    };
    if has_palette {
        return Ok(said(
            MaskFormat::Palette,
            "palette PNGs, each pixel's index is its class (255 = ignore)",
        ));
    }
    let labels: Vec<u8> = survey
        .values
        .iter()
        .copied()
        .filter(|&v| v != IGNORE_LABEL)
        .collect();
    let small = labels.iter().all(|&v| usize::from(v) < n_classes);
    let binary_255 = n_classes == 2 && survey.values.contains(&255);
    if only(MaskStorage::GreyPng) && small && !binary_255 {
        let how = format!(
            "grey PNGs holding only the values {}, each value is its class (255 = ignore)",
            list(&survey.values)
        );
        return Ok(said(MaskFormat::Palette, &how));
    }
    if n_classes == 2 {
        let how = format!(
            "grey or JPEG masks holding values {}..={}: luma >= {GREY_THRESHOLD} is class 1, below is class 0",
            survey.values.first().copied().unwrap_or(0),
            survey.values.last().copied().unwrap_or(0)
        );
        let threshold = GREY_THRESHOLD;
        return Ok(said(MaskFormat::Grey { threshold }, &how));
    }
    bail!(
        "masks in {mask_dir:?} hold the values {}, but the set has {n_classes} classes: store class \
         indices 0..{n_classes} (255 = ignore) in palette or 8-bit grey PNGs",
        list(&survey.values)
    )
}

/// Errors when some class of `class_names` occurs in no mask under `rule`.
fn check_every_class_occurs(
    mask_dir: &Path,
    rule: &MaskRule,
    values: &BTreeSet<u8>,
    class_names: &[String],
) -> Result<()> {
    let present: BTreeSet<usize> = match rule.format {
        MaskFormat::Palette => values
            .iter()
            .filter(|&&v| v != IGNORE_LABEL)
            .map(|&v| usize::from(v))
            .collect(),
        MaskFormat::Grey { threshold } => values
            .iter()
            .map(|&v| usize::from(v >= threshold))
            .collect(),
    };
    if let Some(bad) = present.iter().find(|&&c| c >= class_names.len()) {
        bail!(
            "masks in {mask_dir:?} hold label {bad}, but the set has {} classes ({})",
            class_names.len(),
            class_names.join(", ")
        );
    }
    let missing: Vec<String> = (0..class_names.len())
        .filter(|c| !present.contains(c))
        .map(|c| format!("{c} ({})", class_names[c]))
        .collect();
    if !missing.is_empty() {
        bail!(
            "class {} occurs in no mask of {mask_dir:?} (read as {}); check the masks",
            missing.join(", "),
            rule.how
        );
    }
    Ok(())
}

/// `"0, 1, 255"`, at most 12 values then a count.
fn list(values: &BTreeSet<u8>) -> String {
    let shown: Vec<String> = values.iter().take(12).map(u8::to_string).collect();
    match values.len() {
        n if n > 12 => format!("{} and {} more", shown.join(", "), n - 12),
        _ => shown.join(", "),
    }
}
