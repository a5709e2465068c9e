//! Where the VOC-layout data comes from: `--data-dir`, the workspace's
//! `data/VOCdevkit/VOC2012`, the shared CamVid copy (`$SEGKIT_SHARED_DATA/camvid-voc`
//! or `../shared/data/camvid-voc`), a download of PASCAL VOC 2012 when asked for
//! (`--download`), else a generated VOC-layout set, announced loudly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use common::data::synthetic::{synthetic_dataset, write_voc_layout, SyntheticConfig};

/// The official PASCAL VOC 2012 train+val archive (about 2 GB).
pub const VOC2012_URL: &str =
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar";

/// The shared real data set used when no VOC is at hand.
pub const SHARED_SET: &str = "camvid-voc";

/// Where the data of a run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataOrigin {
    /// `--data-dir`.
    Given,
    /// `data/VOCdevkit/VOC2012` in the workspace (downloaded earlier or just now).
    Workspace,
    /// The shared CamVid copy in VOC layout.
    Shared,
    /// Generated shapes written in VOC layout.
    Generated,
}

/// A VOC-layout root and where it came from.
#[derive(Debug, Clone)]
pub struct DataChoice {
    pub root: PathBuf,
    pub origin: DataOrigin,
}

/// The workspace's `data/` folder.
pub fn workspace_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
}

/// True when `root` looks like a VOC-layout root (images, labels, split files).
pub fn is_voc_root(root: &Path) -> bool {
    root.join("JPEGImages").is_dir()
        && root.join("SegmentationClass").is_dir()
        && root.join("ImageSets/Segmentation/train.txt").is_file()
}

/// Finds the data as the module documentation says. `generated_dir` is where a
/// generated set goes; `download` allows fetching VOC 2012 into `data/`.
pub fn locate_data(
    data_dir: Option<&Path>,
    download: bool,
    generated_dir: &Path,
    seed: u64,
) -> anyhow::Result<DataChoice> {
    if let Some(dir) = data_dir {
        for root in [
            dir.to_path_buf(),
            dir.join("VOCdevkit/VOC2012"),
            dir.join("VOC2012"),
        ] {
            if is_voc_root(&root) {
                return Ok(DataChoice {
                    root,
                    origin: DataOrigin::Given,
                });
            }
        }
        bail!(
            "--data-dir {dir:?} is not a VOC-layout folder: it needs JPEGImages/, \
             SegmentationClass/ and ImageSets/Segmentation/train.txt (or VOCdevkit/VOC2012/ with them)"
        );
    }
    let workspace_voc = workspace_data_dir().join("VOCdevkit/VOC2012");
    if is_voc_root(&workspace_voc) {
        return Ok(DataChoice {
            root: workspace_voc,
            origin: DataOrigin::Workspace,
        });
    }
    if let Some(root) = common::data::shared_data_dir().map(|d| d.join(SHARED_SET)) {
        if is_voc_root(&root) {
            return Ok(DataChoice {
                root,
                origin: DataOrigin::Shared,
            });
        }
    }
    if download {
        let data = workspace_data_dir();
        eprintln!(
            "downloading PASCAL VOC 2012 (about 2 GB) from {VOC2012_URL} into {data:?}; \
             this takes a while"
        );
        let archive = common::data::fetch::download(
            VOC2012_URL,
            &data.join("VOCtrainval_11-May-2012.tar"),
            None,
        )?;
        common::data::fetch::extract(&archive, &data)?;
        if is_voc_root(&workspace_voc) {
            return Ok(DataChoice {
                root: workspace_voc,
                origin: DataOrigin::Workspace,
            });
        }
        bail!("the VOC 2012 archive {archive:?} did not give {workspace_voc:?}");
    }
    eprintln!(
        "\n!!! No VOC-layout data found. Looked for: --data-dir DIR, {workspace_voc:?}, \
         $SEGKIT_SHARED_DATA/{SHARED_SET} or ../shared/data/{SHARED_SET}.\n\
         !!! Put PASCAL VOC 2012 at data/VOCdevkit/VOC2012 (or run with --download to fetch \
         it, about 2 GB), or pass --data-dir.\n\
         !!! RUNNING ON A GENERATED VOC-LAYOUT DATA SET INSTEAD (coloured shapes in {generated_dir:?}): \
         the figures below say nothing about real images.\n"
    );
    write_generated_voc(generated_dir, seed)?;
    Ok(DataChoice {
        root: generated_dir.to_path_buf(),
        origin: DataOrigin::Generated,
    })
}

/// Writes a small generated set (48 train, 16 val images of 96x128, background
/// and five shape classes) in VOC layout under `root`, unless it is already there.
pub fn write_generated_voc(root: &Path, seed: u64) -> anyhow::Result<()> {
    if is_voc_root(root) && root.join("ImageSets/Segmentation/val.txt").is_file() {
        return Ok(());
    }
    let cfg = SyntheticConfig {
        n_samples: 64,
        height: 96,
        width: 128,
        n_classes: 6,
        seed,
    };
    let ds = synthetic_dataset(&cfg);
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {root:?}"))?;
    write_voc_layout(&ds, root, 48)
        .with_context(|| format!("writing the generated set to {root:?}"))
}
