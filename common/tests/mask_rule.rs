//! Pair folders read each mask by what it is: palette indices, small grey values,
//! or a threshold for 0/255 and JPEG masks; a class no mask holds is an error.

use std::path::Path;

use anyhow::Result;
use common::data::image_io::{save_image, save_palette_mask};
use common::data::pairs::{MaskFormat, PairsDataset};
use common::data::Dataset;
use image::GrayImage;
use ndarray::{Array2, Array3};

/// Two classes, as the binary sets use them.
fn binary() -> Vec<String> {
    vec!["background".into(), "foreground".into()]
}

/// A 4x6 mask whose right half is `on` and left half `off`.
fn halves(off: u8, on: u8) -> Array2<u8> {
    Array2::from_shape_fn((4, 6), |(_, x)| if x >= 3 { on } else { off })
}

/// Writes `mask` as an 8-bit grey PNG or JPEG (by extension).
fn save_grey(path: &Path, mask: &Array2<u8>) -> Result<()> {
    let (h, w) = mask.dim();
    let grey = GrayImage::from_raw(w as u32, h as u32, mask.iter().copied().collect())
        .expect("buffer matches its size");
    grey.save(path)?;
    Ok(())
}

/// A folder pair `images/` + `masks/` with one grey image per mask, written by `write`.
fn pair_folders(
    dir: &Path,
    masks: &[(&str, Array2<u8>)],
    write: &dyn Fn(&Path, &Array2<u8>) -> Result<()>,
    mask_ext: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir.join("images"))?;
    std::fs::create_dir_all(dir.join("masks"))?;
    for (stem, mask) in masks {
        let image = Array3::from_elem((3, 4, 6), 0.5f32);
        save_image(&dir.join(format!("images/{stem}.png")), &image)?;
        write(&dir.join(format!("masks/{stem}.{mask_ext}")), mask)?;
    }
    Ok(())
}

fn open(dir: &Path, classes: Vec<String>) -> Result<PairsDataset> {
    PairsDataset::open_detecting(&dir.join("images"), &dir.join("masks"), classes)
}

fn error_of(result: Result<PairsDataset>) -> String {
    format!("{:#}", result.expect_err("opening should fail"))
}

/// The case: palette PNGs holding 0 and 1 are indices, not dark grey.
#[test]
fn palette_masks_of_zero_and_one_give_both_classes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    pair_folders(
        dir.path(),
        &[("a", halves(0, 1))],
        &|p, m| save_palette_mask(p, m),
        "png",
    )?;
    let pairs = open(dir.path(), binary())?;
    assert_eq!(pairs.format(), MaskFormat::Palette);
    let rule = pairs.mask_rule().expect("a detected rule").description();
    assert!(rule.contains("palette") && rule.contains("masks"), "{rule}");
    assert_eq!(pairs.get(0)?.mask, halves(0, 1));
    Ok(())
}

#[test]
fn grey_masks_of_zero_and_255_are_thresholded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    pair_folders(dir.path(), &[("a", halves(0, 255))], &save_grey, "png")?;
    let pairs = open(dir.path(), binary())?;
    assert_eq!(pairs.format(), MaskFormat::Grey { threshold: 128 });
    let rule = pairs.mask_rule().expect("a detected rule").description();
    assert!(rule.contains(">= 128"), "{rule}");
    assert_eq!(pairs.get(0)?.mask, halves(0, 1));
    Ok(())
}

#[test]
fn grey_masks_of_small_values_are_the_classes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let classes = vec!["a".into(), "b".into(), "c".into()];
    let masks = [("x", halves(0, 2)), ("y", halves(1, 255))];
    pair_folders(dir.path(), &masks, &save_grey, "png")?;
    let pairs = open(dir.path(), classes)?;
    assert_eq!(pairs.format(), MaskFormat::Palette);
    let rule = pairs.mask_rule().expect("a detected rule").description();
    assert!(rule.contains("0, 1, 2, 255"), "{rule}");
    assert_eq!(pairs.get(1)?.mask, halves(1, 255));
    Ok(())
}

/// JPEG masks are not exactly 0 and 255 near edges: thresholded, as the flower patches.
#[test]
fn jpeg_masks_are_thresholded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    pair_folders(dir.path(), &[("a", halves(0, 255))], &save_grey, "jpg")?;
    let pairs = open(dir.path(), binary())?;
    assert_eq!(pairs.format(), MaskFormat::Grey { threshold: 128 });
    let mask = pairs.get(0)?.mask;
    assert_eq!(mask.column(0).iter().max(), Some(&0));
    assert_eq!(mask.column(5).iter().min(), Some(&1));
    Ok(())
}

#[test]
fn a_class_in_no_mask_is_an_error_naming_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let masks = [("a", halves(0, 0)), ("b", halves(0, 0))];
    pair_folders(dir.path(), &masks, &|p, m| save_palette_mask(p, m), "png")?;
    let message = error_of(open(dir.path(), binary()));
    assert!(
        message.contains("class 1 (foreground) occurs in no mask") && message.contains("masks"),
        "{message}"
    );
    Ok(())
}

#[test]
fn mixed_storage_and_too_many_values_are_errors() -> Result<()> {
    let mixed = tempfile::tempdir()?;
    pair_folders(
        mixed.path(),
        &[("a", halves(0, 1))],
        &|p, m| save_palette_mask(p, m),
        "png",
    )?;
    save_image(
        &mixed.path().join("images/b.png"),
        &Array3::from_elem((3, 4, 6), 0.5),
    )?;
    save_grey(&mixed.path().join("masks/b.png"), &halves(0, 255))?;
    let message = error_of(open(mixed.path(), binary()));
    assert!(message.contains("mix palette PNGs"), "{message}");

    let grey = tempfile::tempdir()?;
    pair_folders(grey.path(), &[("a", halves(0, 200))], &save_grey, "png")?;
    let three = vec!["a".into(), "b".into(), "c".into()];
    let message = error_of(open(grey.path(), three));
    assert!(
        message.contains("0, 200") && message.contains("3 classes"),
        "{message}"
    );
    Ok(())
}
