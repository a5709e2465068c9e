//! The five segmentation nets of the lecture's second step (course notebooks
//! "ImSegByConvTranspose" and "ImSegByConvTransSkipConnection", and the lecture's
//! other two ways to full resolution): conv + pool stages take the image to a
//! coarser grid ([`SegNet`]'s encoder), and one of five decoders brings the class
//! scores back to the input's exact size:
//!
//! - [`TransposedDecoder`]: one 7x7 transposed convolution of stride 4 (padding 2,
//!   output padding 1), straight from the pool-2 features to the class scores;
//! - [`SkipDecoder`]: a 4x4 stride-2 transposed convolution to the pool-1
//!   resolution, plus the pool-1 features (the skip connection), then a second
//!   4x4 stride-2 transposed convolution to full size (as in FCN-16s/8s);
//! - [`BilinearDecoder`]: a 1x1 convolution scores the pool-2 features and a
//!   bilinear resize (PyTorch `align_corners=False`) brings them to full size;
//! - [`UnpoolDecoder`]: the encoder's pools keep the index of each maximum, and the
//!   decoder puts the features back there (max-unpooling) and convolves, twice
//!   (SegNet's decoder, Badrinarayanan, Kendall & Cipolla 2017, made small);
//! - [`DilatedDecoder`]: no second pool; Yu & Koltun's basic context module (2016),
//!   3x3 convolutions of dilation 1, 1, 2, 4, 8, identity-initialised, grows the
//!   field at the pool-1 resolution, a 1x1 convolution scores, and one bilinear
//!   step of 2 gives full size.
//!
//! Any input size works: the image is padded (edge pixels repeated) to a multiple
//! of [`SIZE_MULTIPLE`], and the scores are cropped back. [`receptive_field`]
//! gives each net's layers to the receptive-field recurrence.
//!
//! A new variant is a [`Variant`] arm (in [`Variant::ALL`] and [`Variant::name`]),
//! a struct implementing [`Decoder`], and one arm each in [`Variant::decoder`],
//! [`Variant::pooling`], [`parameter_count`] and [`decoder_layers`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use candle::{Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use common::nn::{
    conv2d, conv_transpose2d, max_pool2d, max_pool2d_with_indices, max_unpool2d,
    receptive_field_table, relu, resize_bilinear, Conv2d, ConvConfig, ConvTranspose2d,
    ConvTransposeConfig, Layer, ReceptiveField,
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
    /// Max-unpooling with the encoder's saved indices, each followed by 3x3 convolutions.
    Unpool,
    /// One pool, a context module of dilated 3x3 convolutions, a 1x1 score, bilinear x2.
    Dilated,
}

/// How the encoder pools for a variant's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Two 2x2 max pools.
    Plain,
    /// Two 2x2 max pools that keep the index of each maximum (for unpooling).
    WithIndices,
    /// The first pool only: the decoder reads the conv-2 features at 1/2 size.
    FirstOnly,
}

impl Variant {
    /// All variants, in the order a default run trains them.
    pub const ALL: [Variant; 5] = [
        Variant::Transposed,
        Variant::Skip,
        Variant::Bilinear,
        Variant::Unpool,
        Variant::Dilated,
    ];

    /// The lower-case name used on the command line and as the variant's folder.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Transposed => "transposed",
            Variant::Skip => "skip",
            Variant::Bilinear => "bilinear",
            Variant::Unpool => "unpool",
            Variant::Dilated => "dilated",
        }
    }

    /// The decoder of this variant for `n_classes` classes; its variables sit
    /// directly under `vb` (`up.*`; `up1.*` and `up2.*`; `score.*`; `dec2.*`,
    /// `dec1.*` and `score.*`; or `ctx1.*` .. `ctx5.*` and `score.*`).
    pub fn decoder(self, n_classes: usize, vb: VarBuilder) -> Result<Arc<dyn Decoder>> {
        Ok(match self {
            Variant::Transposed => Arc::new(TransposedDecoder::new(n_classes, vb)?),
            Variant::Skip => Arc::new(SkipDecoder::new(n_classes, vb)?),
            Variant::Bilinear => Arc::new(BilinearDecoder::new(n_classes, vb)?),
            Variant::Unpool => Arc::new(UnpoolDecoder::new(n_classes, vb)?),
            Variant::Dilated => Arc::new(DilatedDecoder::new(n_classes, vb)?),
        })
    }

    /// What the encoder keeps for this variant's decoder.
    pub fn pooling(self) -> Pooling {
        match self {
            Variant::Transposed | Variant::Skip | Variant::Bilinear => Pooling::Plain,
            Variant::Unpool => Pooling::WithIndices,
            Variant::Dilated => Pooling::FirstOnly,
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
            .ok_or_else(|| anyhow::anyhow!("unknown model {s:?}: use {}", variant_names(" or ")))
    }
}

/// The variants' names, `"transposed, skip, bilinear, unpool or dilated"` for `last = " or "`.
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
    /// `(N, C2, H/2, W/2)`: after the second conv + ReLU, before its pool.
    pub conv2: Tensor,
    /// `(N, C2, H/4, W/4)`: after the second pool (none for [`Pooling::FirstOnly`]).
    pub pool2: Option<Tensor>,
    /// The pools' indices of their maxima (only for [`Pooling::WithIndices`]).
    pub indices: Option<PoolIndices>,
    /// `(H, W)` of the (aligned) input, the size the scores must have.
    pub size: (usize, usize),
}

/// Where each pool's maxima were: `row * W + col` in the pooled plane
/// (`common::nn::max_pool2d_with_indices`).
#[derive(Debug, Clone)]
pub struct PoolIndices {
    /// `(N, C1, H/2, W/2)`, into `(H, W)` planes.
    pub pool1: Tensor,
    /// `(N, C2, H/4, W/4)`, into `(H/2, W/2)` planes.
    pub pool2: Tensor,
}

impl Features {
    /// The pool-2 features, or an error naming the decoder that wanted them.
    pub fn pool2(&self, decoder: &str) -> Result<&Tensor> {
        self.pool2.as_ref().ok_or_else(|| {
            candle::Error::Msg(format!(
                "the {decoder} decoder needs the second pool's features"
            ))
        })
    }

    /// The pools' indices, or an error naming the decoder that wanted them.
    pub fn indices(&self, decoder: &str) -> Result<&PoolIndices> {
        self.indices.as_ref().ok_or_else(|| {
            candle::Error::Msg(format!("the {decoder} decoder needs the pools' indices"))
        })
    }
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

/// Channels of the unpooling decoder's convolutions.
pub const UNPOOL_CHANNELS: usize = 16;
/// Dilations of the context module's 3x3 convolutions (Yu & Koltun 2016, Table 1,
/// the first five layers: fields 3, 5, 9, 17, 33 at the module's own resolution).
pub const DILATIONS: [usize; 5] = [1, 1, 2, 4, 8];

/// A 3x3 convolution that keeps the size: padding `dilation`.
fn same_3x3(dilation: usize) -> ConvConfig {
    ConvConfig {
        padding: dilation,
        dilation,
        ..ConvConfig::default()
    }
}

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
        // BEGIN SOLUTION a2.decoders transposed: the one 7x7 stride-4 transposed convolution on the pool-2 features
        // (N, C2, H/4, W/4) -> (N, K, H, W)
        self.up.forward(features.pool2("transposed")?)
        // END SOLUTION
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
        // BEGIN SOLUTION a2.decoders skip: up1 on the pool-2 features, plus the pool-1 features (the skip), ReLU, then up2
        // (N, C2, H/4, W/4) -> (N, C1, H/2, W/2), plus the pool-1 features
        let up = self.up1.forward(features.pool2("skip")?)?;
        let fused = relu(&(up + &features.pool1)?)?;
        // (N, C1, H/2, W/2) -> (N, K, H, W)
        self.up2.forward(&fused)
        // END SOLUTION
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
        // BEGIN SOLUTION a2.decoders bilinear: score the pool-2 features with the 1x1 conv, then resize_bilinear to features.size
        let (h, w) = features.size;
        // (N, C2, H/4, W/4) -> (N, K, H/4, W/4) -> (N, K, H, W)
        resize_bilinear(&self.score.forward(features.pool2("bilinear")?)?, h, w)
        // END SOLUTION
    }
}

/// `unpool` (SegNet's decoder, small): unpool the pool-2 features with pool 2's
/// indices, 3x3 conv (C2 -> 16) + ReLU; unpool with pool 1's indices, 3x3 conv
/// (16 -> 16) + ReLU; a 1x1 conv scores. No upsampling weights are learned: the
/// pools' indices say where each feature goes, and the convolutions fill in the
/// zeros around it (each 3x3 window of an unpooled map holds at least one value).
#[derive(Debug, Clone)]
pub struct UnpoolDecoder {
    dec2: Conv2d,
    dec1: Conv2d,
    score: Conv2d,
}

impl UnpoolDecoder {
    pub fn new(n_classes: usize, vb: VarBuilder) -> Result<Self> {
        let c = UNPOOL_CHANNELS;
        Ok(Self {
            dec2: conv2d(CHANNELS_2, c, 3, same_3x3(1), vb.pp("dec2"))?,
            dec1: conv2d(c, c, 3, same_3x3(1), vb.pp("dec1"))?,
            score: conv2d(c, n_classes, 1, ConvConfig::default(), vb.pp("score"))?,
        })
    }
}

impl Decoder for UnpoolDecoder {
    fn decode(&self, features: &Features) -> Result<Tensor> {
        let indices = features.indices("unpool")?;
        let (h, w) = features.size;
        // (N, C2, H/4, W/4) -> (N, C2, H/2, W/2) -> (N, 16, H/2, W/2)
        let up2 = max_unpool2d(
            features.pool2("unpool")?,
            &indices.pool2,
            2,
            Some((h / 2, w / 2)),
        )?;
        let dec2 = relu(&self.dec2.forward(&up2)?)?;
        // (N, 16, H/2, W/2) -> (N, 16, H, W) -> (N, 16, H, W) -> (N, K, H, W)
        let up1 = max_unpool2d(&dec2, &indices.pool1, 2, Some((h, w)))?;
        self.score.forward(&relu(&self.dec1.forward(&up1)?)?)
    }
}

/// `dilated`: Yu & Koltun's basic context module on the conv-2 features at 1/2
/// size (3x3 convolutions C2 -> C2 of dilation 1, 1, 2, 4, 8, each + ReLU), a 1x1
/// conv scores, a bilinear resize by 2 gives full size.
///
/// The module is identity-initialised as in the paper (each layer starts by
/// passing its input through: weight 1 at the centre tap from a channel to itself,
/// 0 elsewhere, bias 0), so training starts from the front end's features and
/// learns context on top; the features are already >= 0 (ReLU), so the ReLUs
/// pass them unchanged too.
#[derive(Debug, Clone)]
pub struct DilatedDecoder {
    context: Vec<Conv2d>,
    score: Conv2d,
}

impl DilatedDecoder {
    pub fn new(n_classes: usize, vb: VarBuilder) -> Result<Self> {
        let context = DILATIONS
            .iter()
            .enumerate()
            .map(|(i, &d)| identity_conv3x3(CHANNELS_2, d, vb.pp(format!("ctx{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        let score = conv2d(
            CHANNELS_2,
            n_classes,
            1,
            ConvConfig::default(),
            vb.pp("score"),
        )?;
        Ok(Self { context, score })
    }
}

impl Decoder for DilatedDecoder {
    fn decode(&self, features: &Features) -> Result<Tensor> {
        let (h, w) = features.size;
        // (N, C2, H/2, W/2) -> (N, C2, H/2, W/2), five times
        let mut xs = features.conv2.clone();
        for conv in &self.context {
            xs = relu(&conv.forward(&xs)?)?;
        }
        // (N, C2, H/2, W/2) -> (N, K, H/2, W/2) -> (N, K, H, W)
        resize_bilinear(&self.score.forward(&xs)?, h, w)
    }
}

/// A 3x3 `channels -> channels` convolution of `dilation` (padding `dilation`)
/// whose new variables start as the identity (Yu & Koltun's initialisation);
/// variables already in `vb` (a checkpoint being loaded) are left as they are.
fn identity_conv3x3(channels: usize, dilation: usize, vb: VarBuilder) -> Result<Conv2d> {
    let fresh = !vb.contains_tensor("weight");
    let weight = vb.get_with_hints((channels, channels, 3, 3), "weight", Init::Const(0.0))?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
    if fresh && weight.is_variable() {
        // (C, C, 3, 3): 1 at [c, c, 1, 1].
        let mut identity = vec![0f32; channels * channels * 9];
        for c in 0..channels {
            identity[(c * channels + c) * 9 + 4] = 1.0;
        }
        let identity = Tensor::from_vec(identity, weight.shape(), weight.device())?
            .to_dtype(weight.dtype())?;
        Var::from_tensor(&weight)?.set(&identity)?;
    }
    Conv2d::new(weight, Some(bias), same_3x3(dilation))
}

/// A segmentation net: conv + ReLU + 2x2 max-pool stages and a [`Variant`]'s decoder.
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
        Ok(Self {
            variant,
            n_classes,
            conv1: conv2d(3, CHANNELS_1, 3, same_3x3(1), vb.pp("conv1"))?,
            conv2: conv2d(CHANNELS_1, CHANNELS_2, 3, same_3x3(1), vb.pp("conv2"))?,
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

    /// The encoder on an input whose height and width are multiples of
    /// [`SIZE_MULTIPLE`], pooling as the variant's decoder needs.
    fn encode(&self, xs: &Tensor) -> Result<Features> {
        let (_, _, h, w) = xs.dims4()?;
        let pooling = self.variant.pooling();
        // (N, 3, H, W) -> (N, C1, H/2, W/2)
        let (pool1, indices1) = pool(&relu(&self.conv1.forward(xs)?)?, pooling)?;
        // (N, C1, H/2, W/2) -> (N, C2, H/2, W/2)
        let conv2 = relu(&self.conv2.forward(&pool1)?)?;
        // (N, C2, H/2, W/2) -> (N, C2, H/4, W/4), unless the decoder reads conv2
        let (pool2, indices) = match pooling {
            Pooling::FirstOnly => (None, None),
            _ => {
                let (pool2, indices2) = pool(&conv2, pooling)?;
                let indices = indices1
                    .zip(indices2)
                    .map(|(pool1, pool2)| PoolIndices { pool1, pool2 });
                (Some(pool2), indices)
            }
        };
        Ok(Features {
            pool1,
            conv2,
            pool2,
            indices,
            size: (h, w),
        })
    }
}

/// A 2x2 max pool, with the indices of its maxima for [`Pooling::WithIndices`].
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, H/2, W/2)`, indices the same
fn pool(xs: &Tensor, pooling: Pooling) -> Result<(Tensor, Option<Tensor>)> {
    match pooling {
        Pooling::WithIndices => {
            let (values, indices) = max_pool2d_with_indices(xs, 2)?;
            Ok((values, Some(indices)))
        }
        Pooling::Plain | Pooling::FirstOnly => Ok((max_pool2d(xs, 2)?, None)),
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
    let c = UNPOOL_CHANNELS;
    encoder
        + match variant {
            Variant::Transposed => conv(CHANNELS_2, n_classes, TRANSPOSED_KERNEL),
            Variant::Skip => {
                conv(CHANNELS_2, CHANNELS_1, SKIP_KERNEL) + conv(CHANNELS_1, n_classes, SKIP_KERNEL)
            }
            Variant::Bilinear => conv(CHANNELS_2, n_classes, 1),
            Variant::Unpool => conv(CHANNELS_2, c, 3) + conv(c, c, 3) + conv(c, n_classes, 1),
            Variant::Dilated => {
                DILATIONS.len() * conv(CHANNELS_2, CHANNELS_2, 3) + conv(CHANNELS_2, n_classes, 1)
            }
        }
}

/// The layers of a `variant` net along its deepest path, for the receptive-field
/// recurrence (`common::nn::receptive_field`): the encoder's, then the decoder's.
pub fn net_layers(variant: Variant) -> Vec<Layer> {
    let mut layers = vec![
        Layer::conv("conv1", 3, 1, 1, 1),
        Layer::pool("pool1", 2),
        Layer::conv("conv2", 3, 1, 1, 1),
    ];
    if variant.pooling() != Pooling::FirstOnly {
        layers.push(Layer::pool("pool2", 2));
    }
    layers.extend(decoder_layers(variant));
    layers
}

/// The decoder's layers of a `variant` net (the skip net's along its deeper path:
/// the pool-1 features it adds have a smaller field).
pub fn decoder_layers(variant: Variant) -> Vec<Layer> {
    let (t, s) = (&TRANSPOSED_CONFIG, &SKIP_CONFIG);
    match variant {
        Variant::Transposed => vec![Layer::transposed_conv(
            "up",
            TRANSPOSED_KERNEL,
            t.stride,
            t.padding,
        )],
        Variant::Skip => vec![
            Layer::transposed_conv("up1", SKIP_KERNEL, s.stride, s.padding),
            Layer::transposed_conv("up2", SKIP_KERNEL, s.stride, s.padding),
        ],
        Variant::Bilinear => vec![
            Layer::conv("score", 1, 1, 1, 0),
            Layer::bilinear("resize", 4),
        ],
        Variant::Unpool => vec![
            Layer::unpool("unpool2", 2),
            Layer::conv("dec2", 3, 1, 1, 1),
            Layer::unpool("unpool1", 2),
            Layer::conv("dec1", 3, 1, 1, 1),
            Layer::conv("score", 1, 1, 1, 0),
        ],
        Variant::Dilated => {
            let mut layers: Vec<Layer> = DILATIONS
                .iter()
                .enumerate()
                .map(|(i, &d)| Layer::conv(&format!("ctx{}", i + 1), 3, 1, d, d))
                .collect();
            layers.push(Layer::conv("score", 1, 1, 1, 0));
            layers.push(Layer::bilinear("resize", 2));
            layers
        }
    }
}

/// The receptive-field table of a `variant` net: per layer kernel, stride,
/// dilation, padding, jump and field, in input pixels.
pub fn receptive_field(variant: Variant) -> anyhow::Result<ReceptiveField> {
    receptive_field_table(&net_layers(variant))
}
