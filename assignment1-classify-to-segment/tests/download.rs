//! A fresh clone with no data and no shared folder downloads the flower set by its
//! download list (here the clone's own `data/manifests/cmput328-flower.tsv`, naming
//! zips and a photo made in the test and served on 127.0.0.1), unpacks the zips,
//! makes the photo's mask by the colour rule, and trains on what it fetched.

#[path = "../../common/tests/support/flower_mirror.rs"]
mod flower_mirror;

use anyhow::Result;
use assignment1_classify_to_segment::data::{generated_data, FLOWER};
use common::data::image_io::save_image;
use flower_mirror::{download_and_run, flower_photo, zipped_folders};

/// `seg/Positive.zip`, `seg/Negative.zip` (generated 32x32 patches) and `seg/flower.jpg`.
fn set_files(staging: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>> {
    let (patches, _) = generated_data(48, 5);
    for (i, patch) in patches.iter().enumerate() {
        let folder = if patch.mask[[0, 0]] == FLOWER {
            "Positive"
        } else {
            "Negative"
        };
        save_image(
            &staging.join(folder).join(format!("{i:03}.png")),
            &patch.image,
        )?;
    }
    let mut files = zipped_folders(staging, &["Positive", "Negative"])?;
    files.push(("seg/flower.jpg".to_owned(), flower_photo(staging)?));
    Ok(files)
}

#[test]
fn a_fresh_clone_downloads_the_flower_set_then_trains_on_it() -> Result<()> {
    let run = download_and_run(
        env!("CARGO_BIN_EXE_assignment1-classify-to-segment"),
        set_files,
        &["--epochs", "1", "--stride1-region", "16", "--no-compare"],
        "assignment1-classify-to-segment/seed0",
    )?;
    assert!(run.data.join("Positive").read_dir()?.count() > 0);
    assert!(run.data.join("Negative").read_dir()?.count() > 0);
    Ok(())
}
