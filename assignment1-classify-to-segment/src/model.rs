//! The 32x32 patch classifier of the lecture ("ImSegFromClassification") and its
//! fully convolutional twin: the dense layers become convolutions (Long, Shelhamer
//! & Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation"), so
//! the same weights take an image of any size and give a map of class scores with
//! stride 4 and a 32x32 receptive field.
//!
//! Layers: conv 5x5 + ELU, max-pool 2, conv 5x5 + ELU, max-pool 2, dense layers
//! (ELU between them) to 2 logits (0 = background, 1 = flower). With unpadded
//! convolutions a patch goes 32 -> 28 -> 14 -> 10 -> 5, so the first dense layer
//! reads a `C x 5 x 5` map and becomes a 5x5 convolution; later ones become 1x1.

use std::path::Path;

use anyhow::Context;
use candle::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use common::checkpoint::{load_checkpoint, load_into_varmap};
use common::init::seeded_var_builder;
use common::nn::{
    conv2d, convolutionalize_linear, max_pool2d, receptive_field_table, Conv2d, ConvConfig, Layer,
    ReceptiveField,
};
use serde::{Deserialize, Serialize};

/// Side of the square patches the classifier reads.
pub const PATCH_SIZE: usize = 32;
/// Side of the square convolution kernels.
pub const KERNEL: usize = 5;
/// Distance in input pixels between neighbouring cells of the FCN's output (two 2x2 pools).
pub const STRIDE: usize = 4;
/// Side of the input window one FCN output cell sees.
pub const RECEPTIVE_FIELD: usize = PATCH_SIZE;
/// Side of the feature map the first dense layer reads: 32 -> 28 -> 14 -> 10 -> 5.
pub const FEATURE_SIZE: usize = 5;
/// Classes: 0 = background, 1 = flower.
pub const N_CLASSES: usize = 2;
/// Class names, index = label.
pub const CLASS_NAMES: [&str; N_CLASSES] = ["background", "flower"];
/// ELU's alpha (PyTorch's default).
const ELU_ALPHA: f64 = 1.0;

/// Which classifier to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The lecture's preset: conv 5x5 (2) + ELU, pool, conv 5x5 (4) + ELU, pool, dense -> 2.
    Lecture,
    /// A wider net: conv 5x5 (8), conv 5x5 (16), dense 32 + ELU, dense -> 2.
    Default,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Lecture => "lecture",
            Self::Default => "default",
        })
    }
}

/// The widths of a classifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchSpec {
    /// Filters of the first 5x5 convolution.
    pub conv1: usize,
    /// Filters of the second 5x5 convolution.
    pub conv2: usize,
    /// Widths of the hidden dense layers (ELU after each) before the 2 logits.
    pub hidden: Vec<usize>,
}

impl Arch {
    /// The widths of this preset.
    pub fn spec(self) -> ArchSpec {
        match self {
            Self::Lecture => ArchSpec {
                conv1: 2,
                conv2: 4,
                hidden: vec![],
            },
            Self::Default => ArchSpec {
                conv1: 8,
                conv2: 16,
                hidden: vec![32],
            },
        }
    }
}

/// The number of FCN output cells along a side of `size` input pixels, layer by
/// layer as the network computes it: conv 5 (-4), pool 2 (floor /2), conv 5 (-4),
/// pool 2 (floor /2), the dense layer as a 5x5 conv (-4). `None` below 32.
pub fn fcn_output_size(size: usize) -> Option<usize> {
    let after_conv1 = size.checked_sub(KERNEL - 1)?;
    let after_conv2 = (after_conv1 / 2).checked_sub(KERNEL - 1)?;
    let out = (after_conv2 / 2).checked_sub(FEATURE_SIZE - 1)?;
    (out > 0).then_some(out)
}

/// The output size rule in words, for the program's log.
pub fn output_size_rule() -> String {
    format!(
        "FCN on an H x W input (H, W >= {PATCH_SIZE}): floor((floor((H-4)/2) - 4)/2) - 4 = floor((H-32)/4) + 1 rows, \
         the same for W; effective stride {STRIDE}, receptive field {RECEPTIVE_FIELD}x{RECEPTIVE_FIELD}; \
         cell (i, j) sees the crop whose corner is ({STRIDE}i, {STRIDE}j)"
    )
}

/// The FCN's layers for the receptive-field recurrence
/// (`common::nn::receptive_field`): conv 5x5, pool 2, conv 5x5, pool 2, the first
/// dense layer as a 5x5 convolution, the later ones as 1x1 convolutions.
pub fn fcn_layers(spec: &ArchSpec) -> Vec<Layer> {
    let mut layers = vec![
        Layer::conv("conv1", KERNEL, 1, 1, 0),
        Layer::pool("pool1", 2),
        Layer::conv("conv2", KERNEL, 1, 1, 0),
        Layer::pool("pool2", 2),
        Layer::conv("fc1", FEATURE_SIZE, 1, 1, 0),
    ];
    layers.extend((0..spec.hidden.len()).map(|i| Layer::conv(&format!("fc{}", i + 2), 1, 1, 1, 0)));
    layers
}

/// The FCN's receptive-field table: field [`RECEPTIVE_FIELD`] (32) at stride
/// [`STRIDE`] (4), as the lecture says: 5, 6, 6 + 4*2 = 14, 16, 16 + 4*4 = 32.
pub fn receptive_field(spec: &ArchSpec) -> anyhow::Result<ReceptiveField> {
    receptive_field_table(&fcn_layers(spec))
}

/// The two conv + ELU + pool stages shared by the classifier and the FCN.
#[derive(Debug, Clone)]
struct Trunk {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl Trunk {
    /// # Shapes
    /// `(N, 3, H, W) -> (N, C2, floor((floor((H-4)/2)-4)/2), same for W)`
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = max_pool2d(&self.conv1.forward(xs)?.elu(ELU_ALPHA)?, 2)?;
        max_pool2d(&self.conv2.forward(&xs)?.elu(ELU_ALPHA)?, 2)
    }
}

/// The patch classifier: `(N, 3, 32, 32)` RGB in 0..1 -> `(N, 2)` logits.
#[derive(Debug, Clone)]
pub struct Classifier {
    trunk: Trunk,
    dense: Vec<Linear>,
    spec: ArchSpec,
}

impl Classifier {
    /// Builds the classifier with variables `conv1`, `conv2`, `fc1`, `fc2`, ... under `vb`.
    pub fn new(spec: &ArchSpec, vb: VarBuilder) -> Result<Self> {
        if spec.conv1 == 0 || spec.conv2 == 0 || spec.hidden.contains(&0) {
            candle::bail!("every layer needs at least one unit, got {spec:?}");
        }
        let config = ConvConfig::default();
        let conv1 = conv2d(3, spec.conv1, KERNEL, config, vb.pp("conv1"))?;
        let conv2 = conv2d(spec.conv1, spec.conv2, KERNEL, config, vb.pp("conv2"))?;
        let mut widths = vec![spec.conv2 * FEATURE_SIZE * FEATURE_SIZE];
        widths.extend(&spec.hidden);
        widths.push(N_CLASSES);
        let dense = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("fc{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            trunk: Trunk { conv1, conv2 },
            dense,
            spec: spec.clone(),
        })
    }

    /// The widths this classifier was built with.
    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    /// The fully convolutional twin with the same numbers (see [`convolutionalize`]).
    pub fn to_fcn(&self) -> Result<Fcn> {
        Ok(Fcn {
            trunk: self.trunk.clone(),
            head: convolutionalize(&self.dense, self.spec.conv2)?,
        })
    }
}

/// The dense layers as convolutions: the first one, over the flattened
/// `channels x 5 x 5` feature map, becomes a 5x5 convolution; each later one, over
/// a vector, a 1x1 convolution. Same weights, reshaped (`common::nn::convolutionalize`).
///
/// # Shapes
/// weights `(out, channels*25) -> (out, channels, 5, 5)`, then `(out, in) -> (out, in, 1, 1)`
pub fn convolutionalize(dense: &[Linear], channels: usize) -> Result<Vec<Conv2d>> {
    // BEGIN SOLUTION a1.convolutionalize the first dense layer reads (channels, 5, 5), each later one a (width, 1, 1) vector
    let mut in_shape = (channels, FEATURE_SIZE, FEATURE_SIZE);
    let mut head = Vec::with_capacity(dense.len());
    for layer in dense {
        let conv = convolutionalize_linear(layer, in_shape)?;
        in_shape = (conv.weight().dim(0)?, 1, 1);
        head.push(conv);
    }
    Ok(head)
    // END SOLUTION
}

impl Module for Classifier {
    /// Logits of a batch of patches (the same in training and inference).
    ///
    /// # Shapes
    /// `(N, 3, 32, 32) -> (N, 2)`
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match xs.dims() {
            &[_, 3, h, w] if h == PATCH_SIZE && w == PATCH_SIZE => {}
            dims => candle::bail!(
                "the classifier takes (N, 3, {PATCH_SIZE}, {PATCH_SIZE}) patches, got shape {dims:?}; \
                 use the FCN for larger images"
            ),
        }
        // BEGIN SOLUTION a1.classifier_forward the trunk, flatten in (C, H, W) order, then the dense layers with ELU between them
        // (N, 3, 32, 32) -> (N, C2, 5, 5) -> (N, C2*25), flattened in (C, H, W) order
        let mut xs = self.trunk.forward(xs)?.flatten_from(1)?;
        for (i, layer) in self.dense.iter().enumerate() {
            xs = layer.forward(&xs)?;
            if i + 1 < self.dense.len() {
                xs = xs.elu(ELU_ALPHA)?;
            }
        }
        Ok(xs)
        // END SOLUTION
    }
}

/// The classifier made fully convolutional (inference only).
#[derive(Debug, Clone)]
pub struct Fcn {
    trunk: Trunk,
    head: Vec<Conv2d>,
}

impl Module for Fcn {
    /// Logit maps; cell `(i, j)` equals the classifier's logits on the 32x32 crop
    /// whose corner is `(4i, 4j)`.
    ///
    /// # Shapes
    /// `(N, 3, H, W) -> (N, 2, floor((H-32)/4)+1, floor((W-32)/4)+1)`, H, W >= 32
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match xs.dims() {
            &[_, 3, h, w] if h >= PATCH_SIZE && w >= PATCH_SIZE => {}
            dims => candle::bail!(
                "the FCN takes (N, 3, H, W) images with H, W >= {PATCH_SIZE}, got shape {dims:?}"
            ),
        }
        // BEGIN SOLUTION a1.fcn the trunk, then the convolutionalized head with ELU between its layers
        let mut xs = self.trunk.forward(xs)?;
        for (i, conv) in self.head.iter().enumerate() {
            xs = conv.forward(&xs)?;
            if i + 1 < self.head.len() {
                xs = xs.elu(ELU_ALPHA)?;
            }
        }
        Ok(xs)
        // END SOLUTION
    }
}

/// A classifier with fresh weights drawn from `seed`.
pub fn new_classifier(
    spec: &ArchSpec,
    seed: u64,
    device: &Device,
) -> anyhow::Result<(Classifier, VarMap)> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
    let classifier = Classifier::new(spec, vb)?;
    Ok((classifier, varmap))
}

/// Rebuilds the classifier a training run saved in the checkpoint `path`; its
/// widths come from the `arch_spec` the checkpoint records.
pub fn load_classifier(path: &Path, device: &Device) -> anyhow::Result<Classifier> {
    let checkpoint = load_checkpoint(path, device)?;
    let spec: ArchSpec = serde_json::from_value(checkpoint.meta.config["arch_spec"].clone())
        .with_context(|| {
            format!("checkpoint {path:?} does not record the classifier's arch_spec")
        })?;
    let (classifier, varmap) = new_classifier(&spec, 0, device)?;
    load_into_varmap(&varmap, &checkpoint.model)
        .with_context(|| format!("checkpoint {path:?} does not fit a classifier {spec:?}"))?;
    Ok(classifier)
}
