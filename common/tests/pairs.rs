//! Tests of `common::data::pairs`: image and mask folders paired by stem, palette
//! and thresholded grey masks, on generated folders (always) and on the flower
//! patches and ISBI membranes in ../shared/data (when present).

use std::path::Path;

use common::data::image_io::{save_image, save_palette_mask};
use common::data::pairs::{write_pairs_layout, MaskFormat, PairsDataset};
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::{shared_data_set, Dataset};
use common::Result;
use ndarray::{Array2, Array3};

fn error_text<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Writes `<stem>.jpg` grey masks (white disc of radius 5 at the centre of
/// 16x16) and matching RGB `<stem>.png` images.
fn write_grey_pairs(image_dir: &Path, mask_dir: &Path, stems: &[&str]) -> Result<Array2<u8>> {
    std::fs::create_dir_all(image_dir)?;
    std::fs::create_dir_all(mask_dir)?;
    let inside = |y: usize, x: usize| {
        let (dy, dx) = (y as f32 - 7.5, x as f32 - 7.5);
        dy * dy + dx * dx <= 25.0
    };
    let white_disc = Array3::from_shape_fn(
        (3, 16, 16),
        |(_, y, x)| if inside(y, x) { 1.0 } else { 0.0 },
    );
    for stem in stems {
        save_image(
            &image_dir.join(format!("{stem}.png")),
            &Array3::from_elem((3, 16, 16), 0.5),
        )?;
        save_image(&mask_dir.join(format!("{stem}.jpg")), &white_disc)?;
    }
    Ok(Array2::from_shape_fn((16, 16), |(y, x)| {
        u8::from(inside(y, x))
    }))
}

#[test]
fn generated_pairs_layout_reads_back_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = synthetic_dataset(&SyntheticConfig {
        n_samples: 5,
        height: 20,
        width: 28,
        n_classes: 4,
        seed: 3,
    });
    let (image_dir, mask_dir) = (dir.path().join("images"), dir.path().join("masks"));
    write_pairs_layout(&ds, &image_dir, &mask_dir)?;
    let pairs = PairsDataset::open(
        &image_dir,
        &mask_dir,
        MaskFormat::Palette,
        ds.class_names.clone(),
    )?;
    assert_eq!(pairs.len(), 5);
    assert_eq!(pairs.ids()[0], "synth_0000");
    for index in 0..pairs.len() {
        let sample = pairs.get(index)?;
        let original = ds.get(index)?;
        assert_eq!(sample.id, original.id);
        assert_eq!(sample.mask, original.mask);
        // PNG images: exact to half a level of 1/255.
        let max_err = (&sample.image - &original.image)
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(max_err <= 0.5 / 255.0 + 1e-6, "{}: {max_err}", sample.id);
    }
    assert!(error_text(pairs.get(5)).contains("has 5"));
    Ok(())
}

#[test]
fn grey_masks_threshold_to_zero_and_one_sorted_by_stem() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (image_dir, mask_dir) = (dir.path().join("img"), dir.path().join("lbl"));
    let expected = write_grey_pairs(&image_dir, &mask_dir, &["b", "a", "c"])?;
    let pairs = PairsDataset::open(
        &image_dir,
        &mask_dir,
        MaskFormat::Grey { threshold: 128 },
        names(&["background", "flower"]),
    )?;
    assert_eq!(pairs.ids(), ["a", "b", "c"]);
    let sample = pairs.get(1)?;
    assert_eq!(sample.id, "b");
    assert_eq!(sample.mask, expected);
    Ok(())
}

#[test]
fn unpaired_stems_are_listed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (image_dir, mask_dir) = (dir.path().join("img"), dir.path().join("lbl"));
    write_grey_pairs(&image_dir, &mask_dir, &["a", "b"])?;
    save_image(&image_dir.join("lonely.png"), &Array3::zeros((3, 4, 4)))?;
    save_palette_mask(&mask_dir.join("orphan.png"), &Array2::zeros((4, 4)))?;
    // Files of other kinds are not images and are passed over.
    std::fs::write(image_dir.join("notes.txt"), "not an image")?;
    let message = error_text(PairsDataset::open(
        &image_dir,
        &mask_dir,
        MaskFormat::Grey { threshold: 128 },
        names(&["background", "flower"]),
    ));
    assert!(
        message.contains("images without a mask") && message.contains("lonely"),
        "{message}"
    );
    assert!(
        message.contains("masks without an image") && message.contains("orphan"),
        "{message}"
    );
    assert!(!message.contains("notes"), "{message}");
    Ok(())
}

#[test]
fn bad_folders_and_class_lists_are_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (image_dir, mask_dir) = (dir.path().join("img"), dir.path().join("lbl"));
    write_grey_pairs(&image_dir, &mask_dir, &["a"])?;
    let grey = MaskFormat::Grey { threshold: 128 };
    let two = names(&["background", "flower"]);
    let message = error_text(PairsDataset::open(
        &dir.path().join("nope"),
        &mask_dir,
        grey,
        two.clone(),
    ));
    assert!(
        message.contains("nope") && message.contains("cannot read folder"),
        "{message}"
    );
    let message = error_text(PairsDataset::open(&image_dir, &mask_dir, grey, vec![]));
    assert!(message.contains("no class names"), "{message}");
    let message = error_text(PairsDataset::open(
        &image_dir,
        &mask_dir,
        grey,
        names(&["only"]),
    ));
    assert!(message.contains("labels 0 and 1"), "{message}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let message = error_text(PairsDataset::open(&empty, &mask_dir, grey, two.clone()));
    assert!(
        message.contains("empty") && message.contains("holds no"),
        "{message}"
    );
    // Two files with one stem in a folder.
    save_image(&image_dir.join("a.jpg"), &Array3::zeros((3, 16, 16)))?;
    let message = error_text(PairsDataset::open(&image_dir, &mask_dir, grey, two));
    assert!(message.contains("share the stem \"a\""), "{message}");
    Ok(())
}

#[test]
fn size_mismatch_bad_label_and_corrupt_mask_are_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (image_dir, mask_dir) = (dir.path().join("img"), dir.path().join("lbl"));
    std::fs::create_dir_all(&image_dir)?;
    std::fs::create_dir_all(&mask_dir)?;
    for stem in ["big", "label", "corrupt"] {
        save_image(
            &image_dir.join(format!("{stem}.png")),
            &Array3::zeros((3, 6, 6)),
        )?;
    }
    save_palette_mask(&mask_dir.join("big.png"), &Array2::zeros((7, 6)))?;
    let mut bad_label = Array2::<u8>::zeros((6, 6));
    bad_label[[2, 3]] = 9;
    save_palette_mask(&mask_dir.join("label.png"), &bad_label)?;
    std::fs::write(mask_dir.join("corrupt.png"), b"\x89PNG\r\n\x1a\n broken")?;
    let pairs = PairsDataset::open(
        &image_dir,
        &mask_dir,
        MaskFormat::Palette,
        names(&["a", "b"]),
    )?;
    assert_eq!(pairs.ids(), ["big", "corrupt", "label"]);
    let message = error_text(pairs.get(0));
    assert!(
        message.contains("7x6") && message.contains("6x6") && message.contains("big.png"),
        "{message}"
    );
    let message = error_text(pairs.get(1));
    assert!(
        message.contains("corrupt.png") && message.contains("PNG") && message.contains("truncated"),
        "{message}"
    );
    let message = error_text(pairs.get(2));
    assert!(
        message.contains("label 9") && message.contains("label.png"),
        "{message}"
    );
    Ok(())
}

/// The 38 lecture patch masks (grey JPEGs) threshold to exactly {0, 1}, both present.
#[test]
fn flower_training_labels_threshold_to_zero_one() -> Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let pairs = PairsDataset::open(
        &root.join("TrainingImages"),
        &root.join("TrainingLabels"),
        MaskFormat::Grey { threshold: 128 },
        names(&["background", "flower"]),
    )?;
    assert_eq!(pairs.len(), 38);
    let mut counts = [0usize; 2];
    for index in 0..pairs.len() {
        let sample = pairs.get(index)?;
        assert_eq!(sample.size(), (32, 32));
        for &v in &sample.mask {
            assert!(v <= 1, "{}: value {v}", sample.id);
            counts[v as usize] += 1;
        }
    }
    assert!(counts[0] > 0 && counts[1] > 0, "counts {counts:?}");
    Ok(())
}

/// ISBI 2012: 255 cell interior -> 1, 0 membrane -> 0; cells are most of the pixels.
#[test]
fn isbi_membranes_pair_up() -> Result<()> {
    let Some(root) = shared_data_set("isbi2012-membrane") else {
        return Ok(());
    };
    let pairs = PairsDataset::open(
        &root.join("train/image"),
        &root.join("train/label"),
        MaskFormat::Grey { threshold: 128 },
        names(&["membrane", "cell"]),
    )?;
    assert_eq!(pairs.len(), 30);
    let sample = pairs.get(0)?;
    assert_eq!(sample.size(), (512, 512));
    let cell = sample.mask.iter().filter(|&&v| v == 1).count() as f64 / (512.0 * 512.0);
    assert!(sample.mask.iter().all(|&v| v <= 1));
    assert!((0.6..0.9).contains(&cell), "cell fraction {cell}");
    // Grey image: the three channels are equal.
    assert_eq!(
        sample.image.index_axis(ndarray::Axis(0), 0),
        sample.image.index_axis(ndarray::Axis(0), 2)
    );
    Ok(())
}
