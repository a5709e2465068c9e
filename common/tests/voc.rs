//! Tests of `common::data::voc`: the VOC-layout reader on generated layouts (always)
//! and on the CamVid copy in ../shared/data (when present), and every bad input
//! it must refuse with a clear message.

use std::path::Path;

use common::data::image_io::save_palette_mask;
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::voc::{write_voc_layout, Split, VocDataset, VOC_CLASSES};
use common::data::{shared_data_set, Dataset, InMemoryDataset, IGNORE_LABEL};
use common::Result;
use ndarray::Array2;

fn error_text<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// 6 generated samples of 24x32 with 4 classes: 4 in train, 2 in val.
fn generated_layout(root: &Path) -> Result<InMemoryDataset> {
    let cfg = SyntheticConfig {
        n_samples: 6,
        height: 24,
        width: 32,
        n_classes: 4,
        seed: 7,
    };
    let ds = synthetic_dataset(&cfg);
    write_voc_layout(&ds, root, 4)?;
    Ok(ds)
}

#[test]
fn generated_layout_reads_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = generated_layout(dir.path())?;
    let train = VocDataset::open(dir.path(), Split::Train)?;
    let val = VocDataset::open(dir.path(), Split::Val)?;
    assert_eq!((train.len(), val.len()), (4, 2));
    assert_eq!(train.class_names(), ds.class_names());
    assert_eq!(train.n_classes(), 4);
    assert_eq!(val.ids(), ["synth_0004", "synth_0005"]);
    for (voc, offset) in [(&train, 0), (&val, 4)] {
        for index in 0..voc.len() {
            let sample = voc.get(index)?;
            let original = ds.get(index + offset)?;
            assert_eq!(sample.id, original.id);
            // Masks are lossless; images went through JPEG (quality 95).
            assert_eq!(sample.mask, original.mask);
            let mean_err = (&sample.image - &original.image)
                .mapv(f32::abs)
                .mean()
                .unwrap_or(1.0);
            assert!(
                mean_err < 0.05,
                "{}: mean image error {mean_err}",
                sample.id
            );
        }
    }
    // Past the end is an error, not a panic.
    assert!(error_text(val.get(2)).contains("has 2"));
    Ok(())
}

#[test]
fn split_names_parse_and_print() -> Result<()> {
    assert_eq!("train".parse::<Split>()?, Split::Train);
    assert_eq!("val".parse::<Split>()?, Split::Val);
    assert_eq!(Split::Val.to_string(), "val");
    let message = error_text("test".parse::<Split>());
    assert!(message.contains("\"test\""), "{message}");
    Ok(())
}

#[test]
fn without_classes_txt_the_voc_names_are_used() -> Result<()> {
    let dir = tempfile::tempdir()?;
    generated_layout(dir.path())?;
    std::fs::remove_file(dir.path().join("classes.txt"))?;
    let voc = VocDataset::open(dir.path(), Split::Train)?;
    assert_eq!(voc.n_classes(), 21);
    assert_eq!(voc.class_names()[15], "person");
    assert_eq!(VOC_CLASSES[20], "tvmonitor");
    Ok(())
}

#[test]
fn missing_and_empty_split_files_are_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    generated_layout(dir.path())?;
    let split_file = dir.path().join("ImageSets/Segmentation/val.txt");
    std::fs::write(&split_file, "\n  \n")?;
    let message = error_text(VocDataset::open(dir.path(), Split::Val));
    assert!(
        message.contains("val.txt") && message.contains("lists no ids"),
        "{message}"
    );
    std::fs::remove_file(&split_file)?;
    let message = error_text(VocDataset::open(dir.path(), Split::Val));
    assert!(
        message.contains("val.txt") && message.contains("not found"),
        "{message}"
    );
    let message = error_text(VocDataset::open(&dir.path().join("nowhere"), Split::Val));
    assert!(
        message.contains("nowhere") && message.contains("not a folder"),
        "{message}"
    );
    let empty_classes = dir.path().join("classes.txt");
    std::fs::write(&empty_classes, "")?;
    let message = error_text(VocDataset::open(dir.path(), Split::Train));
    assert!(
        message.contains("classes.txt") && message.contains("no class"),
        "{message}"
    );
    Ok(())
}

#[test]
fn listed_id_missing_on_disk_is_an_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    generated_layout(dir.path())?;
    std::fs::remove_file(dir.path().join("JPEGImages/synth_0002.jpg"))?;
    let message = error_text(VocDataset::open(dir.path(), Split::Train));
    assert!(
        message.contains("\"synth_0002\"") && message.contains("JPEGImages/synth_0002.jpg"),
        "{message}"
    );
    // The val split does not list it and still opens.
    assert_eq!(VocDataset::open(dir.path(), Split::Val)?.len(), 2);
    std::fs::remove_file(dir.path().join("SegmentationClass/synth_0005.png"))?;
    let message = error_text(VocDataset::open(dir.path(), Split::Val));
    assert!(
        message.contains("SegmentationClass/synth_0005.png"),
        "{message}"
    );
    Ok(())
}

#[test]
fn corrupt_and_truncated_images_are_errors_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    generated_layout(dir.path())?;
    let image = dir.path().join("JPEGImages/synth_0001.jpg");
    std::fs::write(&image, b"garbage, not a JPEG")?;
    let voc = VocDataset::open(dir.path(), Split::Train)?;
    let message = error_text(voc.get(1));
    assert!(
        message.contains("synth_0001.jpg") && message.contains("corrupt"),
        "{message}"
    );
    // A mask PNG cut short.
    let mask = dir.path().join("SegmentationClass/synth_0003.png");
    let bytes = std::fs::read(&mask)?;
    std::fs::write(&mask, &bytes[..bytes.len() / 2])?;
    let message = error_text(voc.get(3));
    assert!(
        message.contains("synth_0003.png") && message.contains("truncated"),
        "{message}"
    );
    // The untouched samples still read.
    assert!(voc.get(0).is_ok() && voc.get(2).is_ok());
    Ok(())
}

#[test]
fn mask_size_mismatch_and_bad_labels_are_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    generated_layout(dir.path())?;
    let voc = VocDataset::open(dir.path(), Split::Train)?;
    // Image is 24x32; write a 24x31 mask.
    let mask_path = dir.path().join("SegmentationClass/synth_0000.png");
    save_palette_mask(&mask_path, &Array2::zeros((24, 31)))?;
    let message = error_text(voc.get(0));
    assert!(
        message.contains("24x31") && message.contains("24x32"),
        "{message}"
    );
    assert!(
        message.contains("synth_0000.png") && message.contains("synth_0000.jpg"),
        "{message}"
    );
    // Label 4 with 4 classes (0..3) is out of range; 255 is allowed.
    let mut mask = Array2::<u8>::zeros((24, 32));
    mask[[0, 0]] = IGNORE_LABEL;
    save_palette_mask(&mask_path, &mask)?;
    assert_eq!(voc.get(0)?.mask[[0, 0]], IGNORE_LABEL);
    mask[[5, 5]] = 4;
    save_palette_mask(&mask_path, &mask)?;
    let message = error_text(voc.get(0));
    assert!(
        message.contains("label 4") && message.contains("synth_0000.png"),
        "{message}"
    );
    Ok(())
}

#[test]
fn writer_refuses_bad_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = synthetic_dataset(&SyntheticConfig {
        n_samples: 2,
        height: 8,
        width: 8,
        ..SyntheticConfig::default()
    });
    let message = error_text(write_voc_layout(&ds, dir.path(), 3));
    assert!(
        message.contains("n_train = 3") && message.contains("2 samples"),
        "{message}"
    );
    let mut twins = ds.clone();
    twins.samples[1].id = twins.samples[0].id.clone();
    let message = error_text(write_voc_layout(&twins, dir.path(), 1));
    assert!(message.contains("twice"), "{message}");
    let mut slash = ds.clone();
    slash.samples[0].id = "../escape".into();
    let message = error_text(write_voc_layout(&slash, dir.path(), 1));
    assert!(message.contains("../escape"), "{message}");
    let empty = InMemoryDataset::default();
    assert!(error_text(write_voc_layout(&empty, dir.path(), 0)).contains("empty"));
    Ok(())
}

/// The CamVid copy: 367 train and 101 val ids, 11 classes, labels < 11 or 255.
#[test]
fn camvid_voc_layout_opens() -> Result<()> {
    let Some(root) = shared_data_set("camvid-voc") else {
        return Ok(());
    };
    let train = VocDataset::open(&root, Split::Train)?;
    let val = VocDataset::open(&root, Split::Val)?;
    assert_eq!((train.len(), val.len()), (367, 101));
    assert_eq!(train.n_classes(), 11);
    assert_eq!(train.class_names()[0], "sky");
    for voc in [&train, &val] {
        for index in 0..2 {
            let sample = voc.get(index)?;
            assert_eq!(sample.size(), (360, 480));
            assert_eq!(sample.mask.dim(), (360, 480));
            assert!(sample.mask.iter().all(|&v| v < 11 || v == IGNORE_LABEL));
            // Road scenes show several classes, not one colour-index blob.
            let distinct = (0..11u8)
                .filter(|c| sample.mask.iter().any(|v| v == c))
                .count();
            assert!(distinct >= 4, "{}: only {distinct} classes", sample.id);
            assert!(sample.image.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }
    Ok(())
}
