//! The frozen VGG backbone and the hypercolumn head (Hariharan et al. 2015,
//! "Hypercolumns for object segmentation and fine-grained localization";
//! Mostajabi et al. 2015, "Feedforward semantic segmentation with zoom-out features").
//!
//! The backbone is a VGG11 (configuration A) or VGG16 (configuration D) stack
//! of 3x3 convolutions (Simonyan & Zisserman 2015) with torchvision key names
//! (`features.N.weight`). Its taps are the ReLU outputs right before each of the
//! five max-pools: 64 + 128 + 256 + 512 + 512 = 1472 channels for both nets.
//!
//! The head normalises the 1472-dimensional hypercolumn, `(x - mean) / std`, and
//! classifies it with three fully connected layers; convolutionalised, the same
//! numbers become 1x1 convolutions over a whole feature map. Since the
//! normalisation, the bilinear resampling of the taps and the first 1x1
//! convolution are all linear, the first layer is computed per tap at the tap's
//! own resolution (with the normalisation folded into the weights) and only its
//! hidden-sized result is resampled: `W·norm(concat(up(tap_i))) = Σ_i up(W_i'·tap_i) + b'`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle::{DType, Device, Module, Tensor, Var};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use common::data::transforms::{resize_image, Normalization};
use common::nn::{convolutionalize_linear, relu, resize_bilinear, Conv2d, ConvConfig};
use common::weights::HubFile;
use ndarray::Array3;
use serde::{Deserialize, Serialize};

/// Number of channels of each tap (the layer before each max-pool), both VGGs.
pub const TAP_CHANNELS: [usize; 5] = [64, 128, 256, 512, 512];

/// The hypercolumn length `Z`: the sum of [`TAP_CHANNELS`].
pub const FEATURE_DIM: usize = 1472;

/// Which VGG configuration the backbone has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Configuration A: 8 convolutions.
    Vgg11,
    /// Configuration D: 13 convolutions.
    Vgg16,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Vgg11 => "vgg11",
            Arch::Vgg16 => "vgg16",
        })
    }
}

/// One 3x3 convolution of a VGG stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Its index in torchvision's `features` (conv, ReLU and pool modules all count).
    pub index: usize,
    pub c_in: usize,
    pub c_out: usize,
    /// The block (0..5) it belongs to; block `b` ends with tap `b` and a max-pool.
    pub block: usize,
}

impl Arch {
    /// The torchvision configuration: `Some(c)` = 3x3 conv to `c` channels + ReLU, `None` = 2x2 max-pool.
    fn layers(self) -> &'static [Option<usize>] {
        const M: Option<usize> = None;
        match self {
            Arch::Vgg11 => &[
                Some(64),
                M,
                Some(128),
                M,
                Some(256),
                Some(256),
                M,
                Some(512),
                Some(512),
                M,
                Some(512),
                Some(512),
                M,
            ],
            Arch::Vgg16 => &[
                Some(64),
                Some(64),
                M,
                Some(128),
                Some(128),
                M,
                Some(256),
                Some(256),
                Some(256),
                M,
                Some(512),
                Some(512),
                Some(512),
                M,
                Some(512),
                Some(512),
                Some(512),
                M,
            ],
        }
    }

    /// The convolutions with their torchvision indices: VGG11 at 0, 3, 6, 8, 11,
    /// 13, 16, 18; VGG16 at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28.
    pub fn convs(self) -> Vec<ConvSpec> {
        let mut specs = Vec::new();
        let (mut index, mut block, mut c_in) = (0, 0, 3);
        for layer in self.layers() {
            match *layer {
                Some(c_out) => {
                    specs.push(ConvSpec {
                        index,
                        c_in,
                        c_out,
                        block,
                    });
                    c_in = c_out;
                    index += 2; // conv + ReLU
                }
                None => {
                    block += 1;
                    index += 1; // max-pool
                }
            }
        }
        specs
    }

    /// The tensors a weights file must hold: `features.N.weight (C_out, C_in, 3, 3)`
    /// and `features.N.bias (C_out)`.
    pub fn weight_shapes(self) -> Vec<(String, Vec<usize>)> {
        self.convs()
            .iter()
            .flat_map(|s| {
                [
                    (
                        format!("features.{}.weight", s.index),
                        vec![s.c_out, s.c_in, 3, 3],
                    ),
                    (format!("features.{}.bias", s.index), vec![s.c_out]),
                ]
            })
            .collect()
    }

    /// The timm copy of torchvision's ImageNet weights on the Hugging Face hub.
    pub fn hub_file(self) -> HubFile {
        HubFile::new(
            &format!("timm/{self}.tv_in1k"),
            common::weights::DEFAULT_HUB_FILE,
        )
    }

    /// The configuration whose conv keys a file holds (VGG16 first: its keys
    /// `features.2`, `features.5` ... are not in VGG11).
    pub fn detect(shapes: &HashMap<String, Vec<usize>>) -> Option<Arch> {
        [Arch::Vgg16, Arch::Vgg11].into_iter().find(|arch| {
            arch.weight_shapes()
                .iter()
                .all(|(name, shape)| shapes.get(name) == Some(shape))
        })
    }
}

/// The frozen VGG convolution stack. Its tensors are plain tensors (never
/// `Var`s), so no gradient is ever tracked through it.
#[derive(Debug, Clone)]
pub struct Backbone {
    arch: Arch,
    /// `blocks[b]` = the convolutions of block `b`, each followed by ReLU.
    blocks: Vec<Vec<Conv2d>>,
    normalization: Normalization,
}

impl Backbone {
    /// Builds the stack from `features.N.{weight,bias}` tensors (see
    /// [`Arch::weight_shapes`]); the error lists missing or mis-shaped tensors.
    pub fn from_tensors(
        arch: Arch,
        tensors: &HashMap<String, Tensor>,
        normalization: Normalization,
    ) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        for (name, shape) in arch.weight_shapes() {
            match tensors.get(&name) {
                None => problems.push(format!("missing {name}")),
                Some(t) if t.dims() != shape.as_slice() => {
                    problems.push(format!("{name} is {:?}, expected {shape:?}", t.dims()))
                }
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            bail!("{arch} weights do not fit: {}", problems.join("; "));
        }
        let mut blocks = vec![Vec::new(); TAP_CHANNELS.len()];
        let config = ConvConfig {
            padding: 1,
            ..Default::default()
        };
        for spec in arch.convs() {
            let get = |what: &str| tensors[&format!("features.{}.{what}", spec.index)].detach();
            let conv = Conv2d::new(get("weight"), Some(get("bias")), config)?;
            blocks[spec.block].push(conv);
        }
        Ok(Self {
            arch,
            blocks,
            normalization,
        })
    }

    /// Loads the stack from a safetensors file with torchvision key names; the
    /// preprocessing follows the file's `__metadata__` (`input: caffe` or ImageNet).
    pub fn load(path: &Path, arch: Arch, device: &Device) -> anyhow::Result<Self> {
        let metadata = common::weights::read_metadata(path)?;
        let normalization = common::weights::input_normalization(&metadata, path)?;
        let tensors = common::weights::load_tensors(path, &arch.weight_shapes(), device)?;
        Self::from_tensors(arch, &tensors, normalization)
            .with_context(|| format!("loading {path:?}"))
    }

    /// A stack with seeded random weights (torchvision's VGG initialisation:
    /// Kaiming normal, fan-out, ReLU gain; zero bias) and ImageNet preprocessing.
    pub fn random(arch: Arch, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let varmap = candle_nn::VarMap::new();
        let vb = common::init::seeded_var_builder(&varmap, seed, DType::F32, device);
        let kaiming = Init::Kaiming {
            dist: candle_nn::init::NormalOrUniform::Normal,
            fan: candle_nn::init::FanInOut::FanOut,
            non_linearity: candle_nn::init::NonLinearity::ReLU,
        };
        let mut tensors = HashMap::new();
        for (name, shape) in arch.weight_shapes() {
            let init = if shape.len() == 4 {
                kaiming
            } else {
                Init::Const(0.0)
            };
            tensors.insert(name.clone(), vb.get_with_hints(shape, &name, init)?);
        }
        Self::from_tensors(arch, &tensors, Normalization::Imagenet)
    }

    /// Writes the stack to a safetensors file with torchvision names (no
    /// `__metadata__`, so it reads back with ImageNet preprocessing).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut tensors = HashMap::new();
        for (spec, conv) in self.arch.convs().iter().zip(self.blocks.iter().flatten()) {
            tensors.insert(
                format!("features.{}.weight", spec.index),
                conv.weight().clone(),
            );
            if let Some(bias) = conv.bias() {
                tensors.insert(format!("features.{}.bias", spec.index), bias.clone());
            }
        }
        candle::safetensors::save(&tensors, path).with_context(|| format!("cannot write {path:?}"))
    }

    /// The configuration.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The preprocessing the weights expect.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// An RGB 0..1 image resized (bilinear) to `height x width` and normalised as
    /// the weights expect, as a batch of one.
    ///
    /// # Shapes
    /// `(3, H, W)` host -> `(1, 3, height, width)`
    pub fn preprocess(
        &self,
        image: &Array3<f32>,
        height: usize,
        width: usize,
        device: &Device,
    ) -> anyhow::Result<Tensor> {
        let resized = resize_image(image, height, width);
        let normalised = self.normalization.try_apply(&resized)?;
        let tensor = common::data::image_io::image_to_tensor(&normalised, device)?;
        Ok(tensor.unsqueeze(0)?)
    }

    /// The five taps: the ReLU outputs right before each max-pool.
    ///
    /// # Shapes
    /// `(N, 3, H, W)` -> `[(N, 64, H, W), (N, 128, H/2, W/2), (N, 256, H/4, W/4),
    /// (N, 512, H/8, W/8), (N, 512, H/16, W/16)]` (sizes floored at each pool).
    pub fn taps(&self, xs: &Tensor) -> candle::Result<Vec<Tensor>> {
        let (_, c, h, w) = xs.dims4()?;
        if c != 3 || h < 16 || w < 16 {
            candle::bail!(
                "VGG input must be (N, 3, H, W) with H, W >= 16, got {:?}",
                xs.dims()
            );
        }
        // BEGIN SOLUTION a3.taps block by block (a 2x2 max-pool before every block but the first, each conv + ReLU), the block's last ReLU output is its tap
        let mut xs = xs.detach();
        let mut taps = Vec::with_capacity(self.blocks.len());
        for (block_index, block) in self.blocks.iter().enumerate() {
            if block_index > 0 {
                xs = common::nn::max_pool2d(&xs, 2)?;
            }
            for conv in block {
                xs = relu(&conv.forward(&xs)?)?;
            }
            taps.push(xs.clone());
        }
        Ok(taps)
        // END SOLUTION
    }
}

/// The per-dimension standardisation `x -> (x - mean) / std` of the hypercolumn,
/// fitted on the sampled training features.
#[derive(Debug, Clone)]
pub struct FeatureNorm {
    /// `(Z)` mean of each dimension.
    pub mean: Tensor,
    /// `(Z)` standard deviation, floored (see [`FeatureNorm::fit`]).
    pub std: Tensor,
}

/// The floor of the standard deviation, as a fraction of the median standard
/// deviation of the dimensions that vary. Dead or nearly constant dimensions
/// (the HED-tuned VGG16 has 225 exactly-zero ones) would otherwise be scaled up
/// enormously and blow up on whole images.
pub const STD_FLOOR: f32 = 0.1;

impl FeatureNorm {
    /// Mean and floored standard deviation of the rows of `features (P, Z)`.
    pub fn fit(features: &ndarray::Array2<f32>, device: &Device) -> anyhow::Result<Self> {
        let (n, z) = features.dim();
        if n == 0 {
            bail!("cannot fit the feature normalisation on 0 samples");
        }
        let mean = features.mean_axis(ndarray::Axis(0)).context("no samples")?;
        let std: Vec<f32> = features
            .columns()
            .into_iter()
            .zip(mean.iter())
            .map(|(col, &m)| {
                let var = col.iter().map(|&x| (x - m) * (x - m)).sum::<f32>() / n as f32;
                var.sqrt()
            })
            .collect();
        let mut varying: Vec<f32> = std.iter().copied().filter(|&s| s > 0.0).collect();
        varying.sort_by(f32::total_cmp);
        let median = varying.get(varying.len() / 2).copied().unwrap_or(1.0);
        let floor = (STD_FLOOR * median).max(1e-6);
        let std: Vec<f32> = std.into_iter().map(|s| s.max(floor)).collect();
        Ok(Self {
            mean: Tensor::from_vec(mean.to_vec(), z, device)?,
            std: Tensor::from_vec(std, z, device)?,
        })
    }

    /// # Shapes
    /// `(B, Z) -> (B, Z)`
    pub fn apply_rows(&self, xs: &Tensor) -> candle::Result<Tensor> {
        // BEGIN SOLUTION a3.head the mean/std first layer: (x - mean) / std for each row
        xs.broadcast_sub(&self.mean.unsqueeze(0)?)?
            .broadcast_div(&self.std.unsqueeze(0)?)
        // END SOLUTION
    }

    /// # Shapes
    /// `(N, Z, H, W) -> (N, Z, H, W)`
    pub fn apply_maps(&self, xs: &Tensor) -> candle::Result<Tensor> {
        // BEGIN SOLUTION a3.conv_head the mean/std first layer on maps: (x - mean) / std for each channel
        let mean = self.mean.reshape((1, (), 1, 1))?;
        let std = self.std.reshape((1, (), 1, 1))?;
        xs.broadcast_sub(&mean)?.broadcast_div(&std)
        // END SOLUTION
    }

    /// Puts the statistics into `varmap` as `norm.mean` and `norm.std`, so the phases'
    /// checkpoints hold the whole head. The optimisers only take the `fc*` variables,
    /// and the head computes with the plain tensors, so they stay fixed.
    pub fn register(&self, varmap: &VarMap) -> candle::Result<()> {
        let mut vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        vars.insert(NORM_MEAN.to_owned(), Var::from_tensor(&self.mean)?);
        vars.insert(NORM_STD.to_owned(), Var::from_tensor(&self.std)?);
        Ok(())
    }
}

/// The names of the normalisation statistics in a checkpoint.
pub const NORM_MEAN: &str = "norm.mean";
pub const NORM_STD: &str = "norm.std";

/// Sizes of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// `Z`, the hypercolumn length.
    pub feature_dim: usize,
    /// Width of the two hidden layers.
    pub hidden: usize,
    /// `K`, the number of classes.
    pub n_classes: usize,
}

/// The classifier on normalised hypercolumns: `Z -> hidden -> hidden -> K`,
/// ReLU between the layers (PyTorch names `fc1`, `fc2`, `fc3`).
#[derive(Debug, Clone)]
pub struct Head {
    norm: FeatureNorm,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

/// Builds the head with its layers under `vb` (`fc1`, `fc2`, `fc3`).
pub fn head(cfg: &HeadConfig, norm: FeatureNorm, vb: VarBuilder) -> candle::Result<Head> {
    if norm.mean.dims() != [cfg.feature_dim] {
        candle::bail!(
            "feature normalisation has shape {:?} but the head takes {} features",
            norm.mean.dims(),
            cfg.feature_dim
        );
    }
    Ok(Head {
        norm,
        fc1: candle_nn::linear(cfg.feature_dim, cfg.hidden, vb.pp("fc1"))?,
        fc2: candle_nn::linear(cfg.hidden, cfg.hidden, vb.pp("fc2"))?,
        fc3: candle_nn::linear(cfg.hidden, cfg.n_classes, vb.pp("fc3"))?,
    })
}

/// The head stored in `tensors` (`norm.mean`, `norm.std`, `fc1..fc3`, as a phase's
/// checkpoint holds them), its sizes read from the tensors' shapes.
pub fn head_from_tensors(
    tensors: &HashMap<String, Tensor>,
    device: &Device,
) -> anyhow::Result<Head> {
    let get = |name: &str| {
        tensors
            .get(name)
            .with_context(|| format!("the head's tensor {name} is missing"))
    };
    let norm = FeatureNorm {
        mean: get(NORM_MEAN)?.clone(),
        std: get(NORM_STD)?.clone(),
    };
    let (hidden, feature_dim) = get("fc1.weight")?.dims2()?;
    let (n_classes, _) = get("fc3.weight")?.dims2()?;
    let cfg = HeadConfig {
        feature_dim,
        hidden,
        n_classes,
    };
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
    Ok(head(&cfg, norm, vb)?)
}

impl Head {
    /// `K`, the number of classes.
    pub fn n_classes(&self) -> candle::Result<usize> {
        self.fc3.weight().dim(0)
    }

    /// Class scores of raw (not yet normalised) hypercolumns.
    ///
    /// # Shapes
    /// `(B, Z) -> (B, K)`
    pub fn forward(&self, features: &Tensor) -> candle::Result<Tensor> {
        // BEGIN SOLUTION a3.head normalise, then fc1, ReLU, fc2, ReLU, fc3
        let xs = self.norm.apply_rows(features)?;
        let xs = relu(&self.fc1.forward(&xs)?)?;
        let xs = relu(&self.fc2.forward(&xs)?)?;
        self.fc3.forward(&xs)
        // END SOLUTION
    }

    /// The same classifier as 1x1 convolutions (FCN's convolutionalisation); the
    /// convolutions share the layers' tensors, so training one trains the other.
    pub fn convolutionalize(&self) -> candle::Result<ConvHead> {
        // BEGIN SOLUTION a3.conv_head each Linear as a 1x1 convolution over its (in_features, 1, 1) input (common::nn::convolutionalize_linear)
        let in_shape = |linear: &Linear| -> candle::Result<(usize, usize, usize)> {
            Ok((linear.weight().dim(1)?, 1, 1))
        };
        Ok(ConvHead {
            norm: self.norm.clone(),
            conv1: convolutionalize_linear(&self.fc1, in_shape(&self.fc1)?)?,
            conv2: convolutionalize_linear(&self.fc2, in_shape(&self.fc2)?)?,
            conv3: convolutionalize_linear(&self.fc3, in_shape(&self.fc3)?)?,
        })
        // END SOLUTION
    }
}

/// The head as 1x1 convolutions over whole feature maps.
#[derive(Debug, Clone)]
pub struct ConvHead {
    norm: FeatureNorm,
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
}

/// A 1x1 convolution with an optional bias (`common::nn::ops::conv2d_bias`: on the CPU one
/// matrix product per image, no im2col, with the bias fused in; candle's conv2d elsewhere).
///
/// # Shapes
/// `(N, C, H, W)` with weight `(O, C, 1, 1)` -> `(N, O, H, W)`
fn conv1x1(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> candle::Result<Tensor> {
    common::nn::ops::conv2d_bias(xs, weight, bias, &ConvConfig::default())
}

impl ConvHead {
    /// `K`, the number of classes.
    pub fn n_classes(&self) -> candle::Result<usize> {
        self.conv3.weight().dim(0)
    }

    /// A copy whose tensors are cut from the variables: for evaluation, where no
    /// gradient is wanted and none should be tracked.
    pub fn detached(&self) -> candle::Result<Self> {
        let cut = |conv: &Conv2d| {
            Conv2d::new(
                conv.weight().detach(),
                conv.bias().map(Tensor::detach),
                *conv.config(),
            )
        };
        Ok(Self {
            norm: self.norm.clone(),
            conv1: cut(&self.conv1)?,
            conv2: cut(&self.conv2)?,
            conv3: cut(&self.conv3)?,
        })
    }

    /// The reference path: normalise the hypercolumn map, then the three
    /// convolutions (through [`Conv2d`]).
    ///
    /// # Shapes
    /// `(N, Z, H, W) -> (N, K, H, W)`
    pub fn forward_hypercolumns(&self, hypercolumns: &Tensor) -> candle::Result<Tensor> {
        // BEGIN SOLUTION a3.conv_head normalise the map, then conv1, ReLU, conv2, ReLU, conv3
        let xs = self.norm.apply_maps(hypercolumns)?;
        let xs = relu(&self.conv1.forward(&xs)?)?;
        let xs = relu(&self.conv2.forward(&xs)?)?;
        self.conv3.forward(&xs)
        // END SOLUTION
    }

    /// The fast path: the first layer per tap at the tap's resolution with the
    /// normalisation folded in, summed after bilinear resampling to `height x
    /// width`; no `(N, Z, H, W)` hypercolumn is ever built. Equal to
    /// [`ConvHead::forward_hypercolumns`] of [`hypercolumns`]`(taps, height, width)`.
    ///
    /// Each tap is multiplied at the smaller of its own and the output resolution
    /// (resampling and the channel product commute), so taps already resampled to
    /// `height x width` (see [`prepare_taps`]) give the same result.
    ///
    /// # Shapes
    /// `taps[i] (N, C_i, h_i, w_i)` -> `(N, K, height, width)`
    pub fn forward_taps(
        &self,
        taps: &[Tensor],
        height: usize,
        width: usize,
    ) -> candle::Result<Tensor> {
        let w1 = self.conv1.weight(); // (hidden, Z, 1, 1)
        let (hidden, z) = (w1.dim(0)?, w1.dim(1)?);
        let channels: usize = taps
            .iter()
            .map(|t| t.dim(1))
            .sum::<candle::Result<usize>>()?;
        if channels != z {
            candle::bail!("the taps have {channels} channels in all, the head takes {z}");
        }
        // Fold the normalisation: W' = W / std (per column), b' = b - W' · mean.
        // (hidden, Z) / (1, Z) -> (hidden, Z)
        let w_folded = w1
            .reshape((hidden, z))?
            .broadcast_div(&self.norm.std.unsqueeze(0)?)?;
        // (hidden, Z) · (Z, 1) -> (hidden)
        let shift = w_folded.matmul(&self.norm.mean.unsqueeze(1)?)?.squeeze(1)?;
        let b_folded = match self.conv1.bias() {
            Some(b) => (b - shift)?,
            None => shift.neg()?,
        };
        let mut sum: Option<Tensor> = None;
        let mut offset = 0;
        for tap in taps {
            let (_, c, h, w) = tap.dims4()?;
            // (hidden, C_i) -> (hidden, C_i, 1, 1)
            let w_tap = w_folded.narrow(1, offset, c)?.reshape((hidden, c, 1, 1))?;
            offset += c;
            // The folded bias rides on the first tap's convolution (fused there); that is
            // exact even when the part is resampled afterwards, as bilinear weights sum to 1.
            let bias = sum.is_none().then_some(&b_folded);
            let part = if h * w > height * width {
                conv1x1(&resize_bilinear(tap, height, width)?, &w_tap, bias)?
            } else {
                let part = conv1x1(tap, &w_tap, bias)?;
                if (h, w) == (height, width) {
                    part
                } else {
                    resize_bilinear(&part, height, width)?
                }
            };
            sum = Some(match sum {
                Some(s) => (s + part)?,
                None => part,
            });
        }
        let Some(sum) = sum else {
            candle::bail!("forward_taps needs at least one tap");
        };
        let xs = relu(&sum)?;
        let xs = relu(&conv1x1(&xs, self.conv2.weight(), self.conv2.bias())?)?;
        conv1x1(&xs, self.conv3.weight(), self.conv3.bias())
    }
}

/// The hypercolumn map: every tap resized bilinearly to `height x width` and
/// concatenated along the channels (memory-hungry; the reference for tests).
///
/// # Shapes
/// `taps[i] (N, C_i, h_i, w_i)` -> `(N, Σ C_i, height, width)`
pub fn hypercolumns(taps: &[Tensor], height: usize, width: usize) -> candle::Result<Tensor> {
    let resized = taps
        .iter()
        .map(|t| resize_bilinear(t, height, width))
        .collect::<candle::Result<Vec<_>>>()?;
    Tensor::cat(&resized, 1)
}

/// The taps as [`ConvHead::forward_taps`] needs them at `height x width`: taps
/// larger than that are resized now (it is what the hypercolumn does to them
/// anyhow, and makes them smaller to keep), the others stay as they are; all are
/// stored as `dtype` (f16 halves a cache of training taps).
pub fn prepare_taps(
    taps: &[Tensor],
    height: usize,
    width: usize,
    dtype: DType,
) -> candle::Result<Vec<Tensor>> {
    taps.iter()
        .map(|t| {
            let (_, _, h, w) = t.dims4()?;
            let t = if h * w > height * width {
                resize_bilinear(t, height, width)?
            } else {
                t.clone()
            };
            t.to_dtype(dtype)
        })
        .collect()
}
