//! Data look-up tests: layouts recognised or refused with a reason, the seeded
//! hold-back split, the repeated set, the generated fallback, and the real ISBI
//! 2012 set (25 + 5 images of 512x512, labels 0/1, about 78% cell) when present.

use std::sync::Arc;

use anyhow::Result;
use assignment4_unet::data::{
    detect_layout, hold_back, locate_data, open_splits, Layout, Repeated, ISBI_CLASSES,
};
use common::data::locate::{Located, Origin};
use common::data::{Dataset, InMemoryDataset, Sample};
use ndarray::{Array2, Array3};

fn numbered(n: usize) -> InMemoryDataset {
    InMemoryDataset {
        samples: (0..n)
            .map(|i| Sample {
                id: format!("{i}"),
                image: Array3::zeros((3, 2, 2)),
                mask: Array2::from_elem((2, 2), (i % 2) as u8),
            })
            .collect(),
        class_names: vec!["a".into(), "b".into()],
    }
}

fn ids(ds: &InMemoryDataset) -> Vec<String> {
    ds.samples.iter().map(|s| s.id.clone()).collect()
}

#[test]
fn hold_back_is_seeded_and_disjoint() -> Result<()> {
    let (train, val) = hold_back(numbered(30), 5, 7)?;
    assert_eq!((train.len(), val.len()), (25, 5));
    let (train2, val2) = hold_back(numbered(30), 5, 7)?;
    assert_eq!(ids(&val), ids(&val2));
    assert_eq!(ids(&train), ids(&train2));
    assert!(ids(&val).iter().all(|id| !ids(&train).contains(id)));
    let (_, other) = hold_back(numbered(30), 5, 8)?;
    assert_ne!(
        ids(&val),
        ids(&other),
        "another seed should hold back other images"
    );
    let err = hold_back(numbered(3), 3, 0).unwrap_err().to_string();
    assert!(err.contains("cannot hold back 3 of 3"), "{err}");
    Ok(())
}

#[test]
fn layouts_are_recognised_or_refused_with_a_reason() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let err = detect_layout(&root.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );
    let err = detect_layout(root).unwrap_err().to_string();
    assert!(err.contains("known layouts"), "{err}");
    std::fs::create_dir_all(root.join("images"))?;
    std::fs::create_dir_all(root.join("masks"))?;
    assert_eq!(
        detect_layout(root)?,
        Layout::Pairs {
            images: root.join("images"),
            masks: root.join("masks")
        }
    );
    std::fs::create_dir_all(root.join("train/image"))?;
    std::fs::create_dir_all(root.join("train/label"))?;
    assert_eq!(detect_layout(root)?, Layout::Isbi(root.to_path_buf()));
    Ok(())
}

#[test]
fn repeated_set_cycles_through_the_base() -> Result<()> {
    let repeated = Repeated::new(Arc::new(numbered(3)), 4);
    assert_eq!(repeated.len(), 12);
    assert_eq!(repeated.get(7)?.id, "1");
    assert_eq!(repeated.class_names(), ["a", "b"]);
    assert!(repeated.get(12).is_err());
    Ok(())
}

#[test]
fn generated_fallback_has_two_classes_and_a_held_back_part() -> Result<()> {
    let generated = Located {
        origin: Origin::Generated,
        root: None,
        banner: String::new(),
    };
    let splits = open_splits(generated, 5, 0)?;
    assert!(splits.data.is_generated());
    assert_eq!((splits.train.len(), splits.val.len()), (25, 5));
    assert_eq!(splits.train.n_classes(), 2);
    let labels: Vec<u8> = splits.train.samples[0].mask.iter().copied().collect();
    assert!(labels.iter().all(|&l| l <= 1) && labels.contains(&0));
    Ok(())
}

#[test]
fn tuning_splits_leave_the_held_back_images_out() -> Result<()> {
    let generated = || Located {
        origin: Origin::Generated,
        root: None,
        banner: String::new(),
    };
    let splits = open_splits(generated(), 5, 0)?;
    let held_back: Vec<String> = splits.val.samples.iter().map(|s| s.id.clone()).collect();
    let tuning = open_splits(generated(), 5, 0)?.tuning(5, 0)?;
    assert_eq!((tuning.train.len(), tuning.val.len()), (20, 5));
    let ids = |ds: &common::data::InMemoryDataset| -> Vec<String> {
        ds.samples.iter().map(|s| s.id.clone()).collect()
    };
    let (train, scored) = (ids(&tuning.train), ids(&tuning.val));
    for id in &held_back {
        assert!(!train.contains(id) && !scored.contains(id), "{id} leaked");
    }
    assert!(scored.iter().all(|id| !train.contains(id)));
    // Every scored image is one of the run's own training images.
    assert!(scored.iter().all(|id| ids(&splits.train).contains(id)));
    Ok(())
}

#[test]
fn real_isbi_set_opens_with_membranes_as_class_zero() -> Result<()> {
    let Some(isbi) = common::data::shared_data_set("isbi2012-membrane") else {
        return Ok(());
    };
    let splits = open_splits(locate_data(Some(&isbi))?, 5, 0)?;
    assert!(!splits.data.is_generated());
    assert_eq!(splits.data.origin, Origin::Given);
    assert_eq!(splits.title, "ISBI 2012 membranes");
    assert_eq!((splits.train.len(), splits.val.len()), (25, 5));
    assert_eq!(splits.train.class_names, ISBI_CLASSES);
    let sample = &splits.val.samples[0];
    assert_eq!(sample.size(), (512, 512));
    // Grey images: the three channels are equal.
    assert_eq!(
        sample.image.index_axis(ndarray::Axis(0), 0),
        sample.image.index_axis(ndarray::Axis(0), 2)
    );
    // Labels 0 (membrane) and 1 (cell); cell interior is about 78% of the pixels.
    let all = splits.train.samples.iter().chain(&splits.val.samples);
    let (mut cell, mut total) = (0usize, 0usize);
    for s in all {
        assert!(s.mask.iter().all(|&l| l <= 1));
        cell += s.mask.iter().filter(|&&l| l == 1).count();
        total += s.mask.len();
    }
    let fraction = cell as f64 / total as f64;
    assert!((0.74..0.82).contains(&fraction), "cell fraction {fraction}");
    Ok(())
}

/// A pair folder whose masks are palette PNGs of 0 and 1 (the usual binary mask)
/// keeps its foreground: the masks are read by what they are, not thresholded.
#[test]
fn palette_pair_masks_keep_their_foreground() -> Result<()> {
    use common::data::image_io::{save_image, save_palette_mask};
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    for i in 0..3 {
        let mask = Array2::from_shape_fn((8, 8), |(y, _)| u8::from(y >= 4));
        save_image(
            &root.join(format!("images/{i}.png")),
            &Array3::zeros((3, 8, 8)),
        )?;
        save_palette_mask(&root.join(format!("masks/{i}.png")), &mask)?;
    }
    let given = Located {
        origin: Origin::Given,
        root: Some(root.to_path_buf()),
        banner: String::new(),
    };
    let splits = open_splits(given, 1, 0)?;
    let foreground: usize = (0..splits.train.len())
        .map(|i| {
            splits.train.samples[i]
                .mask
                .iter()
                .filter(|&&l| l == 1)
                .count()
        })
        .sum();
    assert_eq!(foreground, 2 * 32);
    Ok(())
}
