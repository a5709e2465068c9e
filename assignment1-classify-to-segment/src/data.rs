//! The lecture's data: 32x32 flower (`Positive/`) and background (`Negative/`)
//! patches and the photo `flower.jpg` with its reference mask; where to find them,
//! a seeded stratified train/validation split, and a generated stand-in set.
//!
//! A patch is a [`Sample`] whose 32x32 mask holds its label on every pixel
//! (0 = background, 1 = flower), so the shared loader (which wants a mask of the
//! image's size) batches patches as it batches segmentation samples.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle::{Device, Tensor};
use common::data::flower_mask::{ensure_flower_mask, FLOWER_IMAGE, FLOWER_MASK};
use common::data::image_io::{load_image, load_palette_mask};
use common::data::locate::{locate_noting, DataSetSpec, Located};
use common::data::manifest::ManifestSet;
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::Sample;
use common::workspace::workspace_data_dir;
use ndarray::{s, Array2, Array3};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::model::PATCH_SIZE;

/// The data set's folder name (under `data/` or the shared data folder).
pub const DATA_SET: &str = "cmput328-flower";
/// Label of a flower patch.
pub const FLOWER: u8 = 1;
/// Label of a background patch.
pub const BACKGROUND: u8 = 0;

/// The set's download list, carried by the binary (`data/manifests/cmput328-flower.tsv`).
pub const MANIFEST: ManifestSet = ManifestSet {
    name: DATA_SET,
    text: include_str!("../../data/manifests/cmput328-flower.tsv"),
};

/// The download hook: fetches [`MANIFEST`] into `data/cmput328-flower/`, then makes
/// the scene's reference mask, which the list does not hold, by its colour rule.
fn download_flower(data: &Path) -> anyhow::Result<PathBuf> {
    let root = MANIFEST.fetch(data)?;
    ensure_flower_mask(&root)?;
    Ok(root)
}

/// Finds the data set in the shared search order ([`common::data::locate::locate`]):
/// `data_dir` when given (it must hold `Positive/` and `Negative/`), `$SEGKIT_DATA_DIR`,
/// the workspace's `data/cmput328-flower`, the shared data folder, a download by
/// [`MANIFEST`]; else the generated set.
pub fn locate_data(data_dir: Option<&Path>) -> anyhow::Result<Located> {
    let find_root = |dir: &Path| check_layout(dir).map(|()| dir.to_path_buf());
    let spec = DataSetSpec {
        names: &[DATA_SET],
        title: "the flower patches (Positive/, Negative/, flower.jpg, flower_mask.png)",
        find_root: &find_root,
        download: Some(&download_flower),
    };
    let offline_help = MANIFEST.offline_help(&workspace_data_dir());
    locate_noting(&spec, data_dir, Some(&offline_help))
}

/// The data of a run: the patches split for training and validation, and the
/// scene to segment.
#[derive(Debug, Clone)]
pub struct Data {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub scene: Scene,
}

/// Reads (or, for the generated set, makes) the patches and the scene and splits
/// the patches as `cfg` says (`val_fraction`, `seed`, `generated_patches`): the
/// same call gives `evaluate` the validation patches its training run held back.
pub fn load_data(located: &Located, cfg: &Config) -> anyhow::Result<Data> {
    let (patches, scene) = match &located.root {
        Some(root) => (load_patches(root)?, load_scene(root)?),
        None => generated_data(cfg.generated_patches, cfg.seed),
    };
    let (train, val) = split_train_val(patches, cfg.val_fraction, cfg.seed)?;
    Ok(Data { train, val, scene })
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

/// Stacks patches into a `(N, 3, 32, 32)` tensor and their `(N,)` u32 labels.
pub fn patch_batch(patches: &[Sample], device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
    let mut pixels = Vec::with_capacity(patches.len() * 3 * PATCH_SIZE * PATCH_SIZE);
    for p in patches {
        let (c, h, w) = p.image.dim();
        if (c, h, w) != (3, PATCH_SIZE, PATCH_SIZE) {
            anyhow::bail!(
                "patch {:?} is {c}x{h}x{w}, expected 3x{PATCH_SIZE}x{PATCH_SIZE}",
                p.id
            );
        }
        pixels.extend(p.image.iter().copied());
    }
    let labels: Vec<u32> = patches.iter().map(|p| u32::from(label_of(p))).collect();
    let images = Tensor::from_vec(pixels, (patches.len(), 3, PATCH_SIZE, PATCH_SIZE), device)?;
    let labels = Tensor::from_vec(labels, patches.len(), device)?;
    Ok((images, labels))
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
    let image_path = root.join(FLOWER_IMAGE);
    let image = load_image(&image_path)?;
    let mask_path = root.join(FLOWER_MASK);
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
    let patches = cut_patches(&scenes.samples, n_patches / 2, seed);
    (patches, generated_scene(seed))
}

/// Up to `per_class` background and `per_class` flower patches cut at random
/// places of `scenes` (64 tries per scene), backgrounds first.
fn cut_patches(scenes: &[Sample], per_class: usize, seed: u64) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let (mut flowers, mut backgrounds) = (Vec::new(), Vec::new());
    for (i, scene) in scenes.iter().enumerate() {
        let (h, w) = scene.size();
        for _ in 0..64 {
            let (y, x) = (
                rng.random_range(0..=h - PATCH_SIZE),
                rng.random_range(0..=w - PATCH_SIZE),
            );
            let Some(label) = centre_label(&scene.mask, y, x) else {
                continue;
            };
            let bucket = if label == FLOWER {
                &mut flowers
            } else {
                &mut backgrounds
            };
            if bucket.len() >= per_class.max(1) {
                continue;
            }
            let crop = scene
                .image
                .slice(s![.., y..y + PATCH_SIZE, x..x + PATCH_SIZE])
                .to_owned();
            bucket.push(patch(format!("synth_{i:04}_{y}_{x}"), crop, label));
        }
    }
    backgrounds.extend(flowers);
    backgrounds
}

/// The label of the patch at `(y, x)` from the central 8x8 block of its mask:
/// flower when at least half is disc, background when none is, else `None`.
fn centre_label(mask: &Array2<u8>, y: usize, x: usize) -> Option<u8> {
    let centre = mask.slice(s![y + 12..y + 20, x + 12..x + 20]);
    match centre.iter().filter(|&&v| v != 0).count() {
        0 => Some(BACKGROUND),
        c if c >= 32 => Some(FLOWER),
        _ => None,
    }
}

/// The generated 160x224 scene to segment, with its mask.
fn generated_scene(seed: u64) -> Scene {
    let scene = synthetic_dataset(&SyntheticConfig {
        n_samples: 1,
        height: 160,
        width: 224,
        n_classes: 2,
        seed: seed.wrapping_add(1_000_003),
    })
    .samples
    .remove(0);
    Scene {
        name: "generated".into(),
        image: scene.image,
        mask: Some(scene.mask.mapv(|v| u8::from(v != 0))),
    }
}
