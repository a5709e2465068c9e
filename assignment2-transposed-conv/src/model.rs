//! The three segmentation nets of the lecture's second step (course notebooks
//! "ImSegByConvTranspose" and "ImSegByConvTransSkipConnection"): two conv + pool
//! stages take the image to 1/4 of its size ([`SegNet`]'s encoder), and one of
//! three decoders brings the class scores back to the input's exact size:
//!
//! - [`TransposedDecoder`]: one 7x7 transposed convolution of stride 4 (padding 2,
//!   output padding 1), straight from the pool-2 features to the class scores;
//! - [`SkipDecoder`]: a 4x4 stride-2 transposed convolution to the pool-1
//!   resolution, plus the pool-1 features (the skip connection), then a second
//!   4x4 stride-2 transposed convolution to full size (as in FCN-16s/8s);
//! - [`BilinearDecoder`]: a 1x1 convolution scores the pool-2 features and a
//!   bilinear resize (PyTorch `align_corners=False`) brings them to full size.
//!
//! Any input size works: the image is padded (edge pixels repeated) to a multiple
//! of [`SIZE_MULTIPLE`], and the scores are cropped back.
//!
//! A new variant is a [`Variant`] arm (in [`Variant::ALL`] and [`Variant::name`]),
//! a struct implementing [`Decoder`], and one arm each in [`Variant::decoder`] and
//! [`parameter_count`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use candle::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use common::nn::{
    conv2d, conv_transpose2d, max_pool2d, relu, resize_bilinear, Conv2d, ConvConfig,
    ConvTranspose2d, ConvTransposeConfig,
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

    /// The lower-case name used on the command line and as the variant's folder.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Transposed => "transposed",
            Variant::Skip => "skip",
            Variant::Bilinear => "bilinear",
        }
    }

    /// The decoder of this variant for `n_classes` classes; its variables sit
    /// directly under `vb` (`up.*`, `up1.*` and `up2.*`, or `score.*`).
    pub fn decoder(self, n_classes: usize, vb: VarBuilder) -> Result<Arc<dyn Decoder>> {
        Ok(match self {
            Variant::Transposed => Arc::new(TransposedDecoder::new(n_classes, vb)?),
            Variant::Skip => Arc::new(SkipDecoder::new(n_classes, vb)?),
            Variant::Bilinear => Arc::new(BilinearDecoder::new(n_classes, vb)?),
        })
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
            .ok_or_else(|| anyhow::anyhow!("unknown model {s:?}: use {}", variant_names(" or ")))
    }
}

/// The variants' names, `"transposed, skip or bilinear"` for `last = " or "`.
pub fn variant_names(last: &str) -> String {
    let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
    match names.split_last() {
        Some((tail, [])) => (*tail).to_owned(),
        Some((tail, head)) => format!("{}{last}{tail}", head.join(", ")),
        None => String::new(),
    }
}

/// What the encoder gives a decoder.
#[derive(Debug, Clone)]
pub struct Features {
    /// `(N, C1, H/2, W/2)`: after the first conv + ReLU + 2x2 max-pool.
    pub pool1: Tensor,
    /// `(N, C2, H/4, W/4)`: after the second.
    pub pool2: Tensor,
    /// `(H, W)` of the (aligned) input, the size the scores must have.
    pub size: (usize, usize),
}

/// A decoder: from the encoder's features back to full-size class scores.
pub trait Decoder: fmt::Debug + Send + Sync {
    /// Class scores (logits).
    ///
    /// # Shapes
    /// [`Features`] of an `(N, 3, H, W)` input -> `(N, K, H, W)`
    fn decode(&self, features: &Features) -> Result<Tensor>;
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

/// `transposed`: pool-2 features -> one 7x7 stride-4 transposed conv -> scores.
#[derive(Debug, Clone)]
pub struct TransposedDecoder {
    up: ConvTranspose2d,
}

impl TransposedDecoder {
    pub fn new(n_classes: usize, vb: VarBuilder) -> Result<Self> {
        let up = conv_transpose2d(
            CHANNELS_2,
            n_classes,
            TRANSPOSED_KERNEL,
            TRANSPOSED_CONFIG,
            vb.pp("up"),
        )?;
        Ok(Self { up })
    }
}

impl Decoder for TransposedDecoder {
    fn decode(&self, features: &Features) -> Result<Tensor> {
        // (N, C2, H/4, W/4) -> (N, K, H, W)
        self.up.forward(&features.pool2)
    }
}

/// `skip`: 4x4 stride-2 transposed conv (C2 -> C1) + pool-1 features, ReLU, then a
/// 4x4 stride-2 transposed conv (C1 -> K).
#[derive(Debug, Clone)]
pub struct SkipDecoder {
    up1: ConvTranspose2d,
    up2: ConvTranspose2d,
}

impl SkipDecoder {
    pub fn new(n_classes: usize, vb: VarBuilder) -> Result<Self> {
        let up1 = conv_transpose2d(
            CHANNELS_2,
            CHANNELS_1,
            SKIP_KERNEL,
            SKIP_CONFIG,
            vb.pp("up1"),
        )?;
        let up2 = conv_transpose2d(
            CHANNELS_1,
            n_classes,
            SKIP_KERNEL,
            SKIP_CONFIG,
            vb.pp("up2"),
        )?;
        Ok(Self { up1, up2 })
    }
}

impl Decoder for SkipDecoder {
    fn decode(&self, features: &Features) -> Result<Tensor> {
        // (N, C2, H/4, W/4) -> (N, C1, H/2, W/2), plus the pool-1 features
        let fused = relu(&(self.up1.forward(&features.pool2)? + &features.pool1)?)?;
        // (N, C1, H/2, W/2) -> (N, K, H, W)
        self.up2.forward(&fused)
    }
}

/// `bilinear`: a 1x1 conv scores the pool-2 features, a bilinear resize brings
/// them to full size.
#[derive(Debug, Clone)]
pub struct BilinearDecoder {
    score: Conv2d,
}

impl BilinearDecoder {
    pub fn new(n_classes: usize, vb: VarBuilder) -> Result<Self> {
        let score = conv2d(
            CHANNELS_2,
            n_classes,
            1,
            ConvConfig::default(),
            vb.pp("score"),
        )?;
        Ok(Self { score })
    }
}

impl Decoder for BilinearDecoder {
    fn decode(&self, features: &Features) -> Result<Tensor> {
        let (h, w) = features.size;
        // (N, C2, H/4, W/4) -> (N, K, H/4, W/4) -> (N, K, H, W)
        resize_bilinear(&self.score.forward(&features.pool2)?, h, w)
    }
}

/// A segmentation net: two conv + ReLU + 2x2 max-pool stages and a [`Variant`]'s decoder.
#[derive(Debug, Clone)]
pub struct SegNet {
    variant: Variant,
    n_classes: usize,
    conv1: Conv2d,
    conv2: Conv2d,
    decoder: Arc<dyn Decoder>,
}

impl SegNet {
    /// Builds the net of `variant` for `n_classes` classes; variables `conv1.*`,
    /// `conv2.*` and the decoder's (see [`Variant::decoder`]) under `vb`.
    pub fn new(variant: Variant, n_classes: usize, vb: VarBuilder) -> Result<Self> {
        if n_classes < 2 {
            candle::bail!("a segmentation net needs at least 2 classes, got {n_classes}");
        }
        let same = ConvConfig {
            padding: 1,
            ..ConvConfig::default()
        };
        Ok(Self {
            variant,
            n_classes,
            conv1: conv2d(3, CHANNELS_1, 3, same, vb.pp("conv1"))?,
            conv2: conv2d(CHANNELS_1, CHANNELS_2, 3, same, vb.pp("conv2"))?,
            decoder: variant.decoder(n_classes, vb)?,
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

    /// The encoder on an input whose height and width are multiples of [`SIZE_MULTIPLE`].
    fn encode(&self, xs: &Tensor) -> Result<Features> {
        let (_, _, h, w) = xs.dims4()?;
        // (N, 3, H, W) -> (N, C1, H/2, W/2)
        let pool1 = max_pool2d(&relu(&self.conv1.forward(xs)?)?, 2)?;
        // (N, C1, H/2, W/2) -> (N, C2, H/4, W/4)
        let pool2 = max_pool2d(&relu(&self.conv2.forward(&pool1)?)?, 2)?;
        Ok(Features {
            pool1,
            pool2,
            size: (h, w),
        })
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
            return self.decoder.decode(&self.encode(xs)?);
        }
        // (N, 3, H, W) -> (N, 3, H + pad_h, W + pad_w)
        let padded = xs.pad_with_same(2, 0, pad_h)?.pad_with_same(3, 0, pad_w)?;
        // (N, K, H + pad_h, W + pad_w) -> (N, K, H, W)
        self.decoder
            .decode(&self.encode(&padded)?)?
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
