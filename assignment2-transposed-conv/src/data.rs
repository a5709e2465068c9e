//! The lecture's data: 38 pairs of 32x32 patches and grey masks (`TrainingImages/`,
//! `TrainingLabels/`, white = flower, read by the rule `common::data::mask_rule` finds:
//! JPEG grey, so luma >= 128) to train on, and `flower.jpg` with
//! `flower_mask.png` to score on (never trained on). Also the dihedral-group
//! augmentation (flips and 90-degree rotations) and the generated stand-in used
//! when the real data cannot be found (see [`find_flower_data`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use common::data::flower_mask::{ensure_flower_mask, FLOWER_IMAGE, FLOWER_MASK};
use common::data::image_io::{load_image, load_palette_mask};
use common::data::locate::{locate_noting, DataSetSpec, Located};
use common::data::manifest::ManifestSet;
use common::data::pairs::PairsDataset;
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::transforms::Transform;
use common::data::{Dataset, Sample};
use common::workspace::workspace_data_dir;
use common::Result;
use ndarray::{Array2, Array3, Axis};
use rand::Rng;

/// Folder name of the data set (under `data/` or the shared data folder).
pub const DATA_SET: &str = "cmput328-flower";
/// Training patches.
pub const TRAIN_IMAGES: &str = "TrainingImages";
/// Training masks, same file names as the patches.
pub const TRAIN_LABELS: &str = "TrainingLabels";
/// The photo to segment (scoring only).
pub const SCORE_IMAGE: &str = FLOWER_IMAGE;
/// The name of its pictures (`predictions/flower_panel.png`, ...).
pub const SCORE_NAME: &str = "flower";
/// Its reference mask, palette PNG with 0 = background, 1 = flower (scoring only).
pub const SCORE_MASK: &str = FLOWER_MASK;

/// Everything one run needs: the training pairs and the image to score.
#[derive(Clone)]
pub struct FlowerData {
    /// The training pairs (32x32 patches for the real set).
    pub train: Arc<dyn Dataset>,
    /// `(3, H, W)` RGB 0..1 image to segment at full resolution.
    pub image: Array3<f32>,
    /// `(H, W)` reference mask of `image`, 0 = background, 1 = flower.
    pub mask: Array2<u8>,
}

impl std::fmt::Debug for FlowerData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowerData")
            .field("train", &self.train.len())
            .field("image", &self.image.dim())
            .finish()
    }
}

/// The class names: index 0 background, 1 flower.
pub fn class_names() -> Vec<String> {
    vec!["background".to_owned(), "flower".to_owned()]
}

/// Checks that `root` holds the four parts of the data set; the error lists what is missing.
pub fn check_root(root: &Path) -> Result<()> {
    let missing: Vec<&str> = [TRAIN_IMAGES, TRAIN_LABELS]
        .iter()
        .filter(|dir| !root.join(dir).is_dir())
        .chain(
            [SCORE_IMAGE, SCORE_MASK]
                .iter()
                .filter(|file| !root.join(file).is_file()),
        )
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!(
            "data folder {root:?} lacks {} (expected {TRAIN_IMAGES}/, {TRAIN_LABELS}/, {SCORE_IMAGE} and {SCORE_MASK})",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Reads the real data set from `root` (see [`check_root`]).
pub fn load_flower_data(root: &Path) -> Result<FlowerData> {
    check_root(root)?;
    let train = PairsDataset::open_detecting(
        &root.join(TRAIN_IMAGES),
        &root.join(TRAIN_LABELS),
        class_names(),
    )?;
    if let Some(rule) = train.mask_rule() {
        eprintln!("{}", rule.description());
    }
    let image = load_image(&root.join(SCORE_IMAGE))?;
    let mask_path = root.join(SCORE_MASK);
    let mask = load_palette_mask(&mask_path)?;
    let (_, h, w) = image.dim();
    if mask.dim() != (h, w) {
        bail!(
            "mask {mask_path:?} is {}x{} but {SCORE_IMAGE} is {h}x{w}",
            mask.nrows(),
            mask.ncols()
        );
    }
    if let Some(bad) = mask.iter().find(|&&v| v > 1) {
        bail!("mask {mask_path:?} holds label {bad}; expected 0 (background) or 1 (flower)");
    }
    Ok(FlowerData {
        train: Arc::new(train),
        image,
        mask,
    })
}

/// The generated stand-in: 38 textured 32x32 scenes with discs (class 1) to
/// train on and one larger 93x127 scene (odd and unaligned sizes) to score on.
pub fn synthetic_flower_data(seed: u64) -> FlowerData {
    let mut train = synthetic_dataset(&SyntheticConfig {
        n_samples: 38,
        height: 32,
        width: 32,
        n_classes: 2,
        seed,
    });
    train.class_names = class_names();
    let scene = synthetic_dataset(&SyntheticConfig {
        n_samples: 1,
        height: 93,
        width: 127,
        n_classes: 2,
        seed: seed.wrapping_add(1),
    });
    let Sample { image, mask, .. } = scene.samples.into_iter().next().unwrap_or_else(|| Sample {
        id: String::new(),
        image: Array3::zeros((3, 93, 127)),
        mask: Array2::zeros((93, 127)),
    });
    FlowerData {
        train: Arc::new(train),
        image,
        mask,
    }
}

/// The set's download list, carried by the binary (`data/manifests/cmput328-flower.tsv`).
pub const MANIFEST: ManifestSet = ManifestSet {
    name: DATA_SET,
    text: include_str!("../../data/manifests/cmput328-flower.tsv"),
};

/// The download hook: fetches [`MANIFEST`] into `data/cmput328-flower/`, then makes
/// the scene's reference mask, which the list does not hold, by its colour rule.
fn download_flower(data: &Path) -> Result<PathBuf> {
    let root = MANIFEST.fetch(data)?;
    ensure_flower_mask(&root)?;
    Ok(root)
}

/// What [`common::data::locate::locate`] needs to know of the set: its folder name,
/// [`find_root`] and the download by [`MANIFEST`].
pub fn spec() -> DataSetSpec<'static> {
    DataSetSpec {
        names: &[DATA_SET],
        title: "the CMPUT 328 flower data (TrainingImages/, TrainingLabels/, flower.jpg, flower_mask.png)",
        find_root: &find_root,
        download: Some(&download_flower),
    }
}

/// `dir` itself when it holds the data set (see [`check_root`]).
pub fn find_root(dir: &Path) -> Result<PathBuf> {
    check_root(dir)?;
    Ok(dir.to_path_buf())
}

/// Finds the data set in the search order of [`common::data::locate`] and reads it;
/// when no place holds it, the generated stand-in of `seed`. A `data_dir` that does
/// not hold the data set is an error. The caller prints the [`Located::banner`].
pub fn find_flower_data(data_dir: Option<&Path>, seed: u64) -> Result<(FlowerData, Located)> {
    let offline_help = MANIFEST.offline_help(&workspace_data_dir());
    let located = locate_noting(&spec(), data_dir, Some(&offline_help))?;
    let data = match &located.root {
        Some(root) => load_flower_data(root)?,
        None => synthetic_flower_data(seed),
    };
    Ok((data, located))
}

/// Element `k` (0..8) of the dihedral group of the square applied to a
/// `(C, H, W)` array: `k % 4` quarter turns counter-clockwise, then a left-right
/// flip when `k >= 4`. Height and width swap for odd turns.
pub fn dihedral_image(image: &Array3<f32>, k: usize) -> Array3<f32> {
    let mut view = image.view();
    for _ in 0..k % 4 {
        // Counter-clockwise quarter turn: transpose, then reverse the rows.
        view.swap_axes(1, 2);
        view.invert_axis(Axis(1));
    }
    if k % 8 >= 4 {
        view.invert_axis(Axis(2));
    }
    view.as_standard_layout().into_owned()
}

/// [`dihedral_image`] for an `(H, W)` mask.
pub fn dihedral_mask(mask: &Array2<u8>, k: usize) -> Array2<u8> {
    let mut view = mask.view();
    for _ in 0..k % 4 {
        view.swap_axes(0, 1);
        view.invert_axis(Axis(0));
    }
    if k % 8 >= 4 {
        view.invert_axis(Axis(1));
    }
    view.as_standard_layout().into_owned()
}

/// Element `k` of the dihedral group applied to image and mask alike.
pub fn dihedral(sample: Sample, k: usize) -> Sample {
    Sample {
        image: dihedral_image(&sample.image, k),
        mask: dihedral_mask(&sample.mask, k),
        id: sample.id,
    }
}

/// A transform that applies one of the 8 dihedral elements, drawn uniformly.
/// Batches of non-square samples would mix sizes, so those are an error.
pub fn dihedral_transform() -> Transform {
    Arc::new(|sample: Sample, rng| {
        let (h, w) = sample.size();
        if h != w {
            bail!(
                "sample {:?} is {h}x{w}: rotations need square samples to batch",
                sample.id
            );
        }
        let k = rng.random_range(0..8);
        Ok(dihedral(sample, k))
    })
}
