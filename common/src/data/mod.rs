//! Image and mask I/O, data sets (VOC layout, SegNet CamVid, pairs), transforms, batching and downloads.
//!
//! Host-side samples are `ndarray` arrays; they become candle tensors only in
//! [`loader`], the one boundary between the two.

pub mod camvid;
pub mod fetch;
pub mod flower_mask;
pub mod image_io;
pub mod loader;
pub mod locate;
pub mod manifest;
pub mod mask_rule;
pub mod pairs;
pub mod synthetic;
pub mod transforms;
pub mod voc;

use ndarray::{Array2, Array3};

/// The label that marks a pixel to ignore in losses and metrics.
pub const IGNORE_LABEL: u8 = 255;

/// One image with its class-index mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// A name for messages and output files (the file stem, usually).
    pub id: String,
    /// `(3, H, W)` RGB in 0..1.
    pub image: Array3<f32>,
    /// `(H, W)` class indices; [`IGNORE_LABEL`] means ignore.
    pub mask: Array2<u8>,
}

impl Sample {
    /// `(height, width)` of the image.
    pub fn size(&self) -> (usize, usize) {
        let (_, h, w) = self.image.dim();
        (h, w)
    }
}

/// A finite, indexable set of samples with named classes.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// True when the set holds no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads sample `index` (from disk or memory); errors name the file and the problem.
    fn get(&self, index: usize) -> crate::Result<Sample>;

    /// The class names, index = label value.
    fn class_names(&self) -> &[String];

    /// Number of classes.
    fn n_classes(&self) -> usize {
        self.class_names().len()
    }
}

/// A data set held in memory (generated sets, small real sets, test fixtures).
#[derive(Debug, Clone, Default)]
pub struct InMemoryDataset {
    pub samples: Vec<Sample>,
    pub class_names: Vec<String>,
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> crate::Result<Sample> {
        self.samples.get(index).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "sample {index} asked for, but the set has {}",
                self.samples.len()
            )
        })
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }
}

/// The environment variable that points tests and demos at the real data sets
/// (`.ci/run` sets it to `../shared/data` when that folder exists).
pub const SHARED_DATA_ENV: &str = "SEGKIT_SHARED_DATA";

/// The folder of real data sets for tests: `$SEGKIT_SHARED_DATA`, else
/// `../shared/data` beside the workspace found at run time, else `None` (tests then print that they
/// skipped and run their generated-data twin only).
pub fn shared_data_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os(SHARED_DATA_ENV) {
        let dir = std::path::PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    crate::workspace::shared_beside_workspace("data")
}

/// The real data set `name` under [`shared_data_dir`], or `None` after printing
/// that the calling test skipped its real-data part.
pub fn shared_data_set(name: &str) -> Option<std::path::PathBuf> {
    let dir = shared_data_dir()
        .map(|d| d.join(name))
        .filter(|d| d.is_dir());
    if dir.is_none() {
        eprintln!("skipped: real data set {name:?} not found (set {SHARED_DATA_ENV})");
    }
    dir
}
