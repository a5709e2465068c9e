//! The lecture's data: 32x32 flower (`Positive/`) and background (`Negative/`)
//! patches and the photo `flower.jpg` with its reference mask; where to find them,
//! a seeded stratified train/validation split, and a generated stand-in set.
//!
//! A patch is a [`Sample`] whose 32x32 mask holds its label on every pixel
//! (0 = background, 1 = flower), so the shared loader (which wants a mask of the
//! image's size) batches patches as it batches segmentation samples.

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::data::image_io::{load_image, load_palette_mask};
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::{shared_data_dir, Sample};
use ndarray::{s, Array2, Array3};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::model::PATCH_SIZE;

/// The data set's folder name (under `data/` or the shared data folder).
pub const DATA_SET: &str = "cmput328-flower";
/// Label of a flower patch.
pub const FLOWER: u8 = 1;
/// Label of a background patch.
pub const BACKGROUND: u8 = 0;

/// Where the run's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The real data set in this folder.
    Real(PathBuf),
    /// Nothing found: the generated stand-in set.
    Generated,
}

/// Finds the data set: `data_dir` when given (it must hold `Positive/` and
/// `Negative/`), else the workspace's `data/cmput328-flower`, else the shared
/// data folder (`$SEGKIT_SHARED_DATA` or `../shared/data`). No public URL of the
/// patches is known to download from, so the last resort is the generated set,
/// announced loudly on stderr.
pub fn locate_data(data_dir: Option<&Path>) -> anyhow::Result<DataSource> {
    if let Some(dir) = data_dir {
        check_layout(dir)?;
        return Ok(DataSource::Real(dir.to_path_buf()));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(DATA_SET);
    let shared = shared_data_dir().map(|d| d.join(DATA_SET));
    for dir in std::iter::once(workspace).chain(shared) {
        if check_layout(&dir).is_ok() {
            return Ok(DataSource::Real(dir));
        }
    }
    eprintln!(
        "\n*** data set {DATA_SET:?} not found: put it in data/{DATA_SET}/ (Positive/, Negative/, \
         flower.jpg, flower_mask.png; see data/README.md), pass --data-dir, or set \
         SEGKIT_SHARED_DATA. RUNNING ON THE GENERATED STAND-IN SET INSTEAD ***\n"
    );
    Ok(DataSource::Generated)
}

/// Checks that `dir` holds the `Positive/` and `Negative/` patch folders.
fn check_layout(dir: &Path) -> anyhow::Result<()> {
    for sub in ["Positive", "Negative"] {
        if !dir.join(sub).is_dir() {
            anyhow::bail!(
                "data folder {dir:?} has no {sub}/ folder of 32x32 patches (expected the {DATA_SET} layout, see data/README.md)"
            );
        }
    }
    Ok(())
}

/// Reads every image of `Positive/` (label 1) and `Negative/` (label 0), sorted
/// by file name; each must be 32x32.
pub fn load_patches(root: &Path) -> anyhow::Result<Vec<Sample>> {
    check_layout(root)?;
    let mut patches = Vec::new();
    for (sub, label) in [("Negative", BACKGROUND), ("Positive", FLOWER)] {
        let dir = root.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {dir:?}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            anyhow::bail!("{dir:?} holds no .png or .jpg patch");
        }
        for path in files {
            let image = load_image(&path)?;
            let (_, h, w) = image.dim();
            if (h, w) != (PATCH_SIZE, PATCH_SIZE) {
                anyhow::bail!("patch {path:?} is {h}x{w}, expected {PATCH_SIZE}x{PATCH_SIZE}");
            }
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            patches.push(patch(format!("{sub}/{stem}"), image, label));
        }
    }
    Ok(patches)
}

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// A patch sample: the image and a mask of its size holding its label everywhere.
pub fn patch(id: String, image: Array3<f32>, label: u8) -> Sample {
    let (_, h, w) = image.dim();
    Sample {
        id,
        image,
        mask: Array2::from_elem((h, w), label),
    }
}

/// The label of a patch sample (its top-left mask pixel; all are equal).
pub fn label_of(sample: &Sample) -> u8 {
    sample.mask[[0, 0]]
}

/// A seeded split keeping the class balance: `val_fraction` of each class goes
/// to validation (at least one sample of a class with two or more).
pub fn split_train_val(
    patches: Vec<Sample>,
    val_fraction: f64,
    seed: u64,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    if !(0.0..1.0).contains(&val_fraction) {
        anyhow::bail!("validation fraction must be in [0, 1), got {val_fraction}");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for label in [BACKGROUND, FLOWER] {
        let mut class: Vec<Sample> = patches
            .iter()
            .filter(|p| label_of(p) == label)
            .cloned()
            .collect();
        class.shuffle(&mut rng);
        let mut n_val = (class.len() as f64 * val_fraction).round() as usize;
        if val_fraction > 0.0 && class.len() >= 2 {
            n_val = n_val.clamp(1, class.len() - 1);
        }
        train.extend(class.split_off(n_val));
        val.extend(class);
    }
    if train.is_empty() {
        anyhow::bail!("no training patch left after the split");
    }
    Ok((train, val))
}

/// The image to segment and, when known, its reference mask (0 = background, 1 = flower).
#[derive(Debug, Clone)]
pub struct Scene {
    /// A name for messages and output files.
    pub name: String,
    /// `(3, H, W)` RGB in 0..1.
    pub image: Array3<f32>,
    /// `(H, W)` reference mask.
    pub mask: Option<Array2<u8>>,
}

/// Reads `flower.jpg` and, when present, `flower_mask.png` from `root`.
pub fn load_scene(root: &Path) -> anyhow::Result<Scene> {
    let image_path = root.join("flower.jpg");
    let image = load_image(&image_path)?;
    let mask_path = root.join("flower_mask.png");
    let mask = if mask_path.exists() {
        let mask = load_palette_mask(&mask_path)?;
        let (_, h, w) = image.dim();
        if mask.dim() != (h, w) {
            anyhow::bail!(
                "mask {mask_path:?} is {}x{} but image {image_path:?} is {h}x{w}",
                mask.nrows(),
                mask.ncols()
            );
        }
        Some(mask.mapv(|v| u8::from(v != 0)))
    } else {
        eprintln!("no {mask_path:?}: the segmentation is not scored");
        None
    };
    Ok(Scene {
        name: "flower".into(),
        image,
        mask,
    })
}

/// The generated stand-in: textured discs (the "flowers") on textured
/// backgrounds from `common::data::synthetic`, cut into 32x32 patches labelled
/// flower when at least half of their central 8x8 block is disc and background
/// when none of it is, plus one larger generated scene to segment.
pub fn generated_data(n_patches: usize, seed: u64) -> (Vec<Sample>, Scene) {
    let scenes = synthetic_dataset(&SyntheticConfig {
        n_samples: n_patches.div_ceil(8).max(1),
        height: 96,
        width: 96,
        n_classes: 2,
        seed,
    });
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let (mut flowers, mut backgrounds) = (Vec::new(), Vec::new());
    let half = n_patches / 2;
    // Up to 64 tries per scene for each wanted patch.
    for (i, scene) in scenes.samples.iter().enumerate() {
        let (h, w) = scene.size();
        for _ in 0..64 {
            let (y, x) = (
                rng.random_range(0..=h - PATCH_SIZE),
                rng.random_range(0..=w - PATCH_SIZE),
            );
            let centre = scene.mask.slice(s![y + 12..y + 20, x + 12..x + 20]);
            let covered = centre.iter().filter(|&&v| v != 0).count();
            let label = match covered {
                0 => BACKGROUND,
                c if c >= 32 => FLOWER,
                _ => continue,
            };
            let bucket = if label == FLOWER {
                &mut flowers
            } else {
                &mut backgrounds
            };
            if bucket.len() >= half.max(1) {
                continue;
            }
            let crop = scene
                .image
                .slice(s![.., y..y + PATCH_SIZE, x..x + PATCH_SIZE])
                .to_owned();
            let id = format!("synth_{i:04}_{y}_{x}");
            bucket.push(patch(id, crop, label));
        }
    }
    let mut patches = backgrounds;
    patches.extend(flowers);
    let scene = synthetic_dataset(&SyntheticConfig {
        n_samples: 1,
        height: 160,
        width: 224,
        n_classes: 2,
        seed: seed.wrapping_add(1_000_003),
    })
    .samples
    .remove(0);
    let scene = Scene {
        name: "generated".into(),
        image: scene.image,
        mask: Some(scene.mask.mapv(|v| u8::from(v != 0))),
    };
    (patches, scene)
}
