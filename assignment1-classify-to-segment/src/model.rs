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

use candle::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use common::nn::{conv2d, convolutionalize_linear, max_pool2d, Conv2d, ConvConfig};

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

/// 2x2 max pooling: in training the gradient-correct pool of `common::nn` (candle's
/// own `max_pool2d` scales its gradient by 1/4); at inference candle's faster
/// kernel, which computes the same forward values (floor on odd sizes, like PyTorch).
fn pool(xs: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        max_pool2d(xs, 2)
    } else {
        xs.max_pool2d(2)
    }
}

/// A stride-1, unpadded convolution as im2col + one matrix product.
///
/// common-gap: candle 0.11's CPU `conv2d` (which `common::nn::Conv2d` calls) and its
/// backward compute one short dot product per output value; for these thin layers
/// (3 -> 8 -> 16 channels) that measured 50-100x slower than im2col + matmul, which
/// would make training and the sliding window far too slow. Every op here (narrow,
/// stack, reshape, matmul) has a correct backward. The weights stay in the
/// `common::nn::Conv2d` (PyTorch layout `(C_out, C_in, k, k)`).
///
/// # Shapes
/// `(N, C_in, H, W) -> (N, C_out, H-k+1, W-k+1)`
fn conv_forward(conv: &Conv2d, xs: &Tensor) -> Result<Tensor> {
    let (c_out, c_in, k, _) = conv.weight().dims4()?;
    let (n, c, h, w) = xs.dims4()?;
    if c != c_in || h < k || w < k {
        candle::bail!(
            "convolution with weight {:?} cannot take an input of shape {:?}",
            conv.weight().dims(),
            xs.dims()
        );
    }
    let (ho, wo) = (h - k + 1, w - k + 1);
    let cols = if k == 1 {
        xs.reshape((n, c, h * w))?
    } else {
        let mut shifts = Vec::with_capacity(k * k);
        for ky in 0..k {
            for kx in 0..k {
                shifts.push(xs.narrow(2, ky, ho)?.narrow(3, kx, wo)?);
            }
        }
        // k*k x (N, C, Ho, Wo) -> (N, C, k*k, Ho, Wo) -> (N, C*k*k, Ho*Wo), the
        // column order of the weight flattened as (C, ky, kx)
        Tensor::stack(&shifts, 2)?.reshape((n, c * k * k, ho * wo))?
    };
    // (C_out, C*k*k) x (N, C*k*k, Ho*Wo) -> (N, C_out, Ho*Wo) -> (N, C_out, Ho, Wo)
    let weight = conv.weight().reshape((c_out, c_in * k * k))?;
    let ys = weight
        .broadcast_matmul(&cols)?
        .reshape((n, c_out, ho, wo))?;
    match conv.bias() {
        // (C_out) -> (1, C_out, 1, 1)
        Some(b) => ys.broadcast_add(&b.reshape((1, c_out, 1, 1))?),
        None => Ok(ys),
    }
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
    fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let xs = pool(&conv_forward(&self.conv1, xs)?.elu(ELU_ALPHA)?, train)?;
        pool(&conv_forward(&self.conv2, &xs)?.elu(ELU_ALPHA)?, train)
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

    /// Logits of a batch of patches; `train` picks the gradient-correct pooling.
    ///
    /// # Shapes
    /// `(N, 3, 32, 32) -> (N, 2)`
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        match xs.dims() {
            &[_, 3, h, w] if h == PATCH_SIZE && w == PATCH_SIZE => {}
            dims => candle::bail!(
                "the classifier takes (N, 3, {PATCH_SIZE}, {PATCH_SIZE}) patches, got shape {dims:?}; \
                 use the FCN for larger images"
            ),
        }
        // (N, 3, 32, 32) -> (N, C2, 5, 5) -> (N, C2*25), flattened in (C, H, W) order
        let mut xs = self.trunk.forward(xs, train)?.flatten_from(1)?;
        for (i, layer) in self.dense.iter().enumerate() {
            xs = layer.forward(&xs)?;
            if i + 1 < self.dense.len() {
                xs = xs.elu(ELU_ALPHA)?;
            }
        }
        Ok(xs)
    }

    /// The fully convolutional twin with the same numbers: the first dense layer
    /// (over `C2 x 5 x 5`) becomes a 5x5 convolution, later ones 1x1 convolutions.
    pub fn to_fcn(&self) -> Result<Fcn> {
        let mut in_shape = (self.spec.conv2, FEATURE_SIZE, FEATURE_SIZE);
        let mut head = Vec::with_capacity(self.dense.len());
        for layer in &self.dense {
            let conv = convolutionalize_linear(layer, in_shape)?;
            in_shape = (conv.weight().dim(0)?, 1, 1);
            head.push(conv);
        }
        Ok(Fcn {
            trunk: self.trunk.clone(),
            head,
        })
    }
}

impl Module for Classifier {
    /// Inference logits: `(N, 3, 32, 32) -> (N, 2)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_t(xs, false)
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
        let mut xs = self.trunk.forward(xs, false)?;
        for (i, conv) in self.head.iter().enumerate() {
            xs = conv_forward(conv, &xs)?;
            if i + 1 < self.head.len() {
                xs = xs.elu(ELU_ALPHA)?;
            }
        }
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device, Var};
    use candle_nn::VarMap;
    use common::init::seeded_var_builder;

    /// im2col + matmul gives candle's convolution, forward and weight gradient.
    #[test]
    fn im2col_conv_matches_candle_conv() -> Result<()> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 4, DType::F32, &device);
        let conv = conv2d(3, 4, KERNEL, ConvConfig::default(), vb)?;
        let xs = Var::from_tensor(&Tensor::rand(-1f32, 1f32, (2, 3, 9, 11), &device)?)?;
        let ours = conv_forward(&conv, &xs)?;
        let theirs = conv.forward(&xs)?;
        assert_eq!(ours.dims(), &[2, 4, 5, 7]);
        let diff = (&ours - &theirs)?.abs()?.flatten_all()?.max(0)?;
        assert!(diff.to_scalar::<f32>()? < 1e-5);
        // d(sum(y^2))/d(weight) and d/d(input) agree too.
        let g_ours = ours.sqr()?.sum_all()?.backward()?;
        let g_theirs = theirs.sqr()?.sum_all()?.backward()?;
        for t in [conv.weight(), xs.as_tensor()] {
            let (a, b) = (g_ours.get(t).unwrap(), g_theirs.get(t).unwrap());
            let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "gradient differs by {diff}");
        }
        Ok(())
    }
}
