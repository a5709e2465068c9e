//! A fresh clone with no data and no shared folder downloads the flower set by its
//! download list (here the clone's own `data/manifests/cmput328-flower.tsv`, naming
//! zips and a photo made in the test and served on 127.0.0.1), unpacks the zips,
//! makes the photo's reference mask by the colour rule (the list has none, and this
//! program scores against it), and trains on what it fetched.

#[path = "../../common/tests/support/flower_mirror.rs"]
mod flower_mirror;
mod support;

use std::path::Path;

use anyhow::Result;
use assignment2_transposed_conv::config::PROGRAM;
use assignment2_transposed_conv::data::{TRAIN_IMAGES, TRAIN_LABELS};
use flower_mirror::{download_and_run, flower_photo, zipped_folders};

/// `seg/TrainingImages.zip`, `seg/TrainingLabels.zip` (generated pairs) and `seg/flower.jpg`.
fn set_files(staging: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    support::write_flower_layout(staging, 3, 8)?;
    let mut files = zipped_folders(staging, &[TRAIN_IMAGES, TRAIN_LABELS])?;
    files.push(("seg/flower.jpg".to_owned(), flower_photo(staging)?));
    Ok(files)
}

#[test]
fn a_fresh_clone_downloads_the_flower_set_then_trains_on_it() -> Result<()> {
    let run = download_and_run(
        env!("CARGO_BIN_EXE_assignment2-transposed-conv"),
        set_files,
        &["--epochs", "1", "--batch-size", "4", "--model", "bilinear"],
        &format!("{PROGRAM}/seed42"),
    )?;
    assert_eq!(run.data.join(TRAIN_IMAGES).read_dir()?.count(), 8);
    assert_eq!(run.data.join(TRAIN_LABELS).read_dir()?.count(), 8);
    Ok(())
}
