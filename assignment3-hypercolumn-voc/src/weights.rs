//! Which VGG weights a run uses: `--weights FILE`; else the course's shared VGG16 (HED,
//! Caffe preprocessing) unless VGG11 was asked for; else the hub cache or a hub download
//! (`hf-hub`, through `common::weights`) of the timm copy of torchvision's weights; else
//! random weights, said loudly. A hub file that is cut short or holds other tensors
//! stops the run with an error naming it. What was chosen is recorded ([`WeightsInfo`])
//! so `evaluate` and `predict` load the same.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle::Device;
use common::weights::{
    explicit_weights, hub_weights, shared_weights_dir, HubLookup, HubSettings, WeightsOrigin,
};
use serde::{Deserialize, Serialize};

use crate::config::BackboneArgs;
use crate::model::{Arch, Backbone};

/// The shared VGG16 conv stack (HED, Caffe preprocessing) looked for by default.
pub const SHARED_VGG16_FILE: &str = "vgg16-hed-bsds500.safetensors";

/// Where the backbone's weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsSource {
    /// `--weights`.
    Given,
    /// The course's shared folder.
    Shared,
    /// The Hugging Face hub cache.
    HubCache,
    /// Downloaded from the hub by this run.
    HubDownload,
    /// Seeded random weights (nothing else was found).
    Random,
}

/// The backbone a run used, as `metrics.json` and the checkpoints record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsInfo {
    pub arch: Arch,
    /// The file read; `None` for random weights.
    pub path: Option<PathBuf>,
    pub source: WeightsSource,
    /// The preprocessing the weights expect (`caffe` or `imagenet`).
    pub normalization: String,
}

impl std::fmt::Display for WeightsInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            WeightsSource::Given => "--weights",
            WeightsSource::Shared => "the course's shared weights",
            WeightsSource::HubCache => "from the hub cache",
            WeightsSource::HubDownload => "downloaded from the hub",
            WeightsSource::Random => "random",
        };
        match &self.path {
            Some(path) => write!(f, "{} from {path:?} ({source})", self.arch),
            None => write!(f, "{} ({source})", self.arch),
        }
    }
}

/// Loads the backbone the module documentation describes, reaching the hub as the
/// environment says ([`HubSettings::from_env`]).
pub fn resolve_backbone(
    args: &BackboneArgs,
    seed: u64,
    device: &Device,
) -> anyhow::Result<(Backbone, WeightsInfo)> {
    resolve_backbone_with(args, seed, device, &HubSettings::from_env())
}

/// [`resolve_backbone`] with the hub settings given.
pub fn resolve_backbone_with(
    args: &BackboneArgs,
    seed: u64,
    device: &Device,
    hub: &HubSettings,
) -> anyhow::Result<(Backbone, WeightsInfo)> {
    if let Some(path) = &args.weights {
        let resolved = explicit_weights(path)?;
        return load(&resolved.path, args.arch, WeightsSource::Given, device);
    }
    if args.arch != Some(Arch::Vgg11) {
        if let Some(path) = shared_weights_dir().map(|d| d.join(SHARED_VGG16_FILE)) {
            if path.is_file() {
                return load(&path, Some(Arch::Vgg16), WeightsSource::Shared, device);
            }
        }
    }
    let arch = args.arch.unwrap_or(Arch::Vgg11);
    let file = arch.hub_file();
    match hub_weights(&file, &arch.weight_shapes(), hub)? {
        HubLookup::Found(resolved) => {
            let source = match resolved.origin {
                WeightsOrigin::HubDownload => WeightsSource::HubDownload,
                _ => WeightsSource::HubCache,
            };
            load(&resolved.path, Some(arch), source, device)
        }
        HubLookup::Unavailable(why) => {
            eprintln!(
                "\n!!! No pretrained {arch} weights: {why}.\n\
                 !!! Pass --weights FILE.safetensors (torchvision names), or put {} in the \
                 hub cache, or run once with network.\n\
                 !!! USING RANDOM {arch} WEIGHTS: the pipeline runs, but its features mean little.\n",
                file.repo
            );
            random(arch, seed, device)
        }
    }
}

/// The backbone a run recorded (`--weights`/`--arch` in `args` take precedence); seeded
/// random weights are drawn again from `seed`.
pub fn reload_backbone(
    recorded: &WeightsInfo,
    args: &BackboneArgs,
    seed: u64,
    device: &Device,
) -> anyhow::Result<(Backbone, WeightsInfo)> {
    if args.weights.is_some() {
        return resolve_backbone(args, seed, device);
    }
    match &recorded.path {
        Some(path) => {
            let arch = args.arch.or(Some(recorded.arch));
            load(path, arch, recorded.source, device)
                .context("the weights the run recorded; pass --weights to use others")
        }
        None => random(args.arch.unwrap_or(recorded.arch), seed, device),
    }
}

/// `path` as `arch` (or the configuration the file holds).
fn load(
    path: &Path,
    arch: Option<Arch>,
    source: WeightsSource,
    device: &Device,
) -> anyhow::Result<(Backbone, WeightsInfo)> {
    let arch = match arch {
        Some(arch) => arch,
        None => Arch::detect(&common::weights::tensor_shapes(path)?).with_context(|| {
            format!(
                "{path:?} holds neither a VGG11 nor a VGG16 conv stack with torchvision \
                 names (features.N.weight); pass --arch to see which tensors are missing"
            )
        })?,
    };
    let backbone = Backbone::load(path, arch, device)?;
    let info = WeightsInfo {
        arch,
        path: Some(path.to_path_buf()),
        source,
        normalization: backbone.normalization().to_string(),
    };
    Ok((backbone, info))
}

fn random(arch: Arch, seed: u64, device: &Device) -> anyhow::Result<(Backbone, WeightsInfo)> {
    let backbone = Backbone::random(arch, seed, device)?;
    let info = WeightsInfo {
        arch,
        path: None,
        source: WeightsSource::Random,
        normalization: backbone.normalization().to_string(),
    };
    Ok((backbone, info))
}
