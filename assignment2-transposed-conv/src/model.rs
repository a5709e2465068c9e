//! The three segmentation nets of the lecture's second step (course notebooks
//! "ImSegByConvTranspose" and "ImSegByConvTransSkipConnection"): two conv + pool
//! stages take the image to 1/4 of its size, and one of three decoders brings the
//! class scores back to the input's exact size:
//!
//! - [`Variant::Transposed`]: one 7x7 transposed convolution of stride 4 (padding 2,
//!   output padding 1), straight from the pool-2 features to the class scores;
//! - [`Variant::Skip`]: a 4x4 stride-2 transposed convolution to the pool-1
//!   resolution, plus the pool-1 features (the skip connection), then a second
//!   4x4 stride-2 transposed convolution to full size (as in FCN-16s/8s);
//! - [`Variant::Bilinear`]: a 1x1 convolution scores the pool-2 features and a
//!   bilinear resize (PyTorch `align_corners=False`) brings them to full size.
//!
//! Any input size works: the image is padded (edge pixels repeated) to a multiple
//! of [`SIZE_MULTIPLE`], and the scores are cropped back.

use std::fmt;
use std::str::FromStr;

use candle::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use common::nn::{
    conv2d, conv_transpose2d, max_pool2d, resize_bilinear, Conv2d, ConvConfig, ConvTranspose2d,
    ConvTransposeConfig,
};
use serde::{Deserialize, Serialize};

/// Height and width the encoder needs to be divisible by (two 2x2 pools).
pub const SIZE_MULTIPLE: usize = 4;
/// Channels after the first conv stage.
pub const CHANNELS_1: usize = 16;
/// Channels after the second conv stage.
pub const CHANNELS_2: usize = 32;

/// Which decoder brings the coarse scores back to full resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// One 7x7 stride-4 transposed convolution (the lecture's net).
    Transposed,
    /// Two stride-2 transposed convolutions with the pool-1 features added between them.
    Skip,
    /// A 1x1 score convolution and bilinear upsampling.
    Bilinear,
}

impl Variant {
    /// All variants, in the order a default run trains them.
    pub const ALL: [Variant; 3] = [Variant::Transposed, Variant::Skip, Variant::Bilinear];

    /// The lower-case name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Transposed => "transposed",
            Variant::Skip => "skip",
            Variant::Bilinear => "bilinear",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s.to_ascii_lowercase())
            .ok_or_else(|| anyhow::anyhow!("unknown model {s:?}: use transposed, skip or bilinear"))
    }
}

/// Output size of a transposed convolution along one axis, the rule the slides
/// teach: `(in - 1) * stride - 2 * padding + kernel + output_padding`, or `None`
/// when that is not positive.
pub fn transposed_out_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Option<usize> {
    let full = (input.checked_sub(1)?) * stride + kernel + output_padding;
    full.checked_sub(2 * padding).filter(|&size| size > 0)
}

/// Output size of a convolution along one axis: `floor((in + 2p - k) / s) + 1`,
/// or `None` when the kernel does not fit.
pub fn conv_out_size(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input + 2 * padding;
    (stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

/// The decoder of one variant.
#[derive(Debug, Clone)]
enum Decoder {
    Transposed {
        up: ConvTranspose2d,
    },
    Skip {
        up1: ConvTranspose2d,
        up2: ConvTranspose2d,
    },
    Bilinear {
        score: Conv2d,
    },
}

/// A segmentation net: two conv + ReLU + 2x2 max-pool stages and a [`Variant`]'s decoder.
#[derive(Debug, Clone)]
pub struct SegNet {
    variant: Variant,
    n_classes: usize,
    conv1: Conv2d,
    conv2: Conv2d,
    decoder: Decoder,
}

/// The 7x7 stride-4 transposed convolution: `(h - 1) * 4 - 2 * 2 + 7 + 1 = 4h`.
pub const TRANSPOSED_CONFIG: ConvTransposeConfig = ConvTransposeConfig {
    stride: 4,
    padding: 2,
    output_padding: 1,
    dilation: 1,
    bias: true,
};
/// Kernel size of [`TRANSPOSED_CONFIG`].
pub const TRANSPOSED_KERNEL: usize = 7;

/// The 4x4 stride-2 transposed convolutions of the skip net: `(h - 1) * 2 - 2 + 4 = 2h`.
pub const SKIP_CONFIG: ConvTransposeConfig = ConvTransposeConfig {
    stride: 2,
    padding: 1,
    output_padding: 0,
    dilation: 1,
    bias: true,
};
/// Kernel size of [`SKIP_CONFIG`].
pub const SKIP_KERNEL: usize = 4;

impl SegNet {
    /// Builds the net of `variant` for `n_classes` classes; variables `conv1.*`,
    /// `conv2.*` and `up.*` / `up1.*`, `up2.*` / `score.*` under `vb`.
    pub fn new(variant: Variant, n_classes: usize, vb: VarBuilder) -> Result<Self> {
        if n_classes < 2 {
            candle::bail!("a segmentation net needs at least 2 classes, got {n_classes}");
        }
        let same = ConvConfig {
            padding: 1,
            ..ConvConfig::default()
        };
        let conv1 = conv2d(3, CHANNELS_1, 3, same, vb.pp("conv1"))?;
        let conv2 = conv2d(CHANNELS_1, CHANNELS_2, 3, same, vb.pp("conv2"))?;
        let decoder = match variant {
            Variant::Transposed => Decoder::Transposed {
                up: conv_transpose2d(
                    CHANNELS_2,
                    n_classes,
                    TRANSPOSED_KERNEL,
                    TRANSPOSED_CONFIG,
                    vb.pp("up"),
                )?,
            },
            Variant::Skip => Decoder::Skip {
                up1: conv_transpose2d(
                    CHANNELS_2,
                    CHANNELS_1,
                    SKIP_KERNEL,
                    SKIP_CONFIG,
                    vb.pp("up1"),
                )?,
                up2: conv_transpose2d(
                    CHANNELS_1,
                    n_classes,
                    SKIP_KERNEL,
                    SKIP_CONFIG,
                    vb.pp("up2"),
                )?,
            },
            Variant::Bilinear => Decoder::Bilinear {
                score: conv2d(
                    CHANNELS_2,
                    n_classes,
                    1,
                    ConvConfig::default(),
                    vb.pp("score"),
                )?,
            },
        };
        Ok(Self {
            variant,
            n_classes,
            conv1,
            conv2,
            decoder,
        })
    }

    /// The decoder variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Number of classes the net scores.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Class scores of an input whose height and width are multiples of
    /// [`SIZE_MULTIPLE`].
    fn forward_aligned(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        // (N, 3, H, W) -> (N, C1, H/2, W/2)
        let pool1 = max_pool2d(&self.conv1.forward(xs)?.relu()?, 2)?;
        // (N, C1, H/2, W/2) -> (N, C2, H/4, W/4)
        let pool2 = max_pool2d(&self.conv2.forward(&pool1)?.relu()?, 2)?;
        match &self.decoder {
            // (N, C2, H/4, W/4) -> (N, K, H, W)
            Decoder::Transposed { up } => up.forward(&pool2),
            Decoder::Skip { up1, up2 } => {
                // (N, C2, H/4, W/4) -> (N, C1, H/2, W/2), plus the pool-1 features
                let fused = (up1.forward(&pool2)? + pool1)?.relu()?;
                // (N, C1, H/2, W/2) -> (N, K, H, W)
                up2.forward(&fused)
            }
            Decoder::Bilinear { score } => {
                // (N, C2, H/4, W/4) -> (N, K, H/4, W/4) -> (N, K, H, W)
                resize_bilinear(&score.forward(&pool2)?, h, w)
            }
        }
    }
}

impl Module for SegNet {
    /// Class scores (logits) for every pixel.
    ///
    /// # Shapes
    /// `(N, 3, H, W) -> (N, K, H, W)` for any `H, W >= 1`: the input is padded at
    /// the bottom and right (edge pixels repeated) to multiples of
    /// [`SIZE_MULTIPLE`], and the scores are cropped back to `H x W`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        if c != 3 {
            candle::bail!(
                "SegNet expects (N, 3, H, W) RGB images, got shape {:?}",
                xs.dims()
            );
        }
        if n == 0 || h == 0 || w == 0 {
            candle::bail!("SegNet got an empty input of shape {:?}", xs.dims());
        }
        let (pad_h, pad_w) = (padding_to_multiple(h), padding_to_multiple(w));
        if pad_h == 0 && pad_w == 0 {
            return self.forward_aligned(xs);
        }
        // (N, 3, H, W) -> (N, 3, H + pad_h, W + pad_w)
        let padded = xs.pad_with_same(2, 0, pad_h)?.pad_with_same(3, 0, pad_w)?;
        // (N, K, H + pad_h, W + pad_w) -> (N, K, H, W)
        self.forward_aligned(&padded)?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }
}

/// Rows (or columns) to add so that `size` becomes a multiple of [`SIZE_MULTIPLE`].
pub fn padding_to_multiple(size: usize) -> usize {
    size.next_multiple_of(SIZE_MULTIPLE) - size
}

/// Number of scalar parameters of a net of `variant` for `n_classes` classes,
/// from the layer shapes (weights plus biases).
pub fn parameter_count(variant: Variant, n_classes: usize) -> usize {
    let conv = |c_in: usize, c_out: usize, k: usize| c_in * c_out * k * k + c_out;
    let encoder = conv(3, CHANNELS_1, 3) + conv(CHANNELS_1, CHANNELS_2, 3);
    encoder
        + match variant {
            Variant::Transposed => conv(CHANNELS_2, n_classes, TRANSPOSED_KERNEL),
            Variant::Skip => {
                conv(CHANNELS_2, CHANNELS_1, SKIP_KERNEL) + conv(CHANNELS_1, n_classes, SKIP_KERNEL)
            }
            Variant::Bilinear => conv(CHANNELS_2, n_classes, 1),
        }
}
