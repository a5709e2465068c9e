//! U-Net (Ronneberger et al. 2015) as in milesial/Pytorch-UNet (`unet_parts.py`,
//! `unet_model.py`): the same parts (`DoubleConv`, `Down`, `Up`, `OutConv`) and the
//! same variable names, so a PyTorch state dict converted to safetensors loads as is.

use candle::{DType, Device, Module, ModuleT, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::nn::{
    conv2d, conv_transpose2d, double_conv, double_conv_with_mid, max_pool2d, Conv2d, ConvConfig,
    ConvTranspose2d, ConvTransposeConfig, DoubleConv,
};

/// The reference U-Net's first width (64-128-256-512-1024).
pub const REFERENCE_WIDTH: usize = 64;

/// The sizes of a U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UNetConfig {
    /// Input channels (3 for the RGB images of `common::data`).
    pub n_channels: usize,
    /// Output classes, background included.
    pub n_classes: usize,
    /// Bilinear x2 upsampling instead of 2x2 stride-2 transposed convolutions.
    pub bilinear: bool,
    /// Channels of the first level; the levels below double it (64 in the paper).
    pub width: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            n_channels: 3,
            n_classes: 2,
            bilinear: false,
            width: REFERENCE_WIDTH,
        }
    }
}

/// Downscaling: max-pool 2 then [`DoubleConv`] (`maxpool_conv.1` in PyTorch).
#[derive(Debug, Clone)]
pub struct Down {
    conv: DoubleConv,
}

impl Down {
    /// A `Down` from `c_in` to `c_out` channels.
    pub fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        // nn.Sequential(nn.MaxPool2d(2), DoubleConv(...)): the conv is index 1.
        let conv = double_conv(c_in, c_out, vb.pp("maxpool_conv").pp("1"))?;
        Ok(Self { conv })
    }
}

impl ModuleT for Down {
    /// # Shapes
    /// `(N, C_in, H, W) -> (N, C_out, H/2, W/2)`
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        // BEGIN SOLUTION a4.parts Down: 2x2 max-pool, then the double conv
        self.conv.forward_t(&max_pool2d(xs, 2)?, train)
        // END SOLUTION
    }
}

/// How an [`Up`] doubles the resolution.
#[derive(Debug, Clone)]
enum Upsampling {
    /// Bilinear x2 (PyTorch `nn.Upsample(scale_factor=2, align_corners=True)`), no weights.
    Bilinear,
    /// 2x2 stride-2 transposed convolution halving the channels (`up`).
    Transposed(ConvTranspose2d),
}

/// Upscaling then [`DoubleConv`]: upsample x2, pad to the skip's size,
/// concatenate `[skip, up]`, double conv.
#[derive(Debug, Clone)]
pub struct Up {
    up: Upsampling,
    conv: DoubleConv,
}

impl Up {
    /// An `Up` whose input (after concatenation) has `c_in` channels, giving
    /// `c_out` channels; as in PyTorch, a bilinear `Up` is built with the already
    /// halved `c_out` and mid channels `c_in / 2`.
    pub fn new(c_in: usize, c_out: usize, bilinear: bool, vb: VarBuilder) -> Result<Self> {
        if bilinear {
            let conv = double_conv_with_mid(c_in, c_in / 2, c_out, vb.pp("conv"))?;
            Ok(Self {
                up: Upsampling::Bilinear,
                conv,
            })
        } else {
            let cfg = ConvTransposeConfig {
                stride: 2,
                bias: true,
                ..Default::default()
            };
            let up = conv_transpose2d(c_in, c_in / 2, 2, cfg, vb.pp("up"))?;
            let conv = double_conv(c_in, c_out, vb.pp("conv"))?;
            Ok(Self {
                up: Upsampling::Transposed(up),
                conv,
            })
        }
    }

    /// # Shapes
    /// `xs (N, C, h, w)`, `skip (N, C_skip, H, W)` with `H >= 2h`, `W >= 2w`
    /// -> `(N, C_out, H, W)`
    pub fn forward_t(&self, xs: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        // BEGIN SOLUTION a4.parts Up: upsample x2, pad to the skip's size, concatenate [skip, up], double conv
        let up = match &self.up {
            Upsampling::Bilinear => upsample_bilinear_align_corners(xs, 2)?,
            Upsampling::Transposed(conv) => conv.forward(xs)?,
        };
        let (_, _, h, w) = skip.dims4()?;
        let up = pad_to(&up, h, w)?;
        // (N, C_skip, H, W) ++ (N, C_up, H, W) -> (N, C_skip + C_up, H, W)
        let xs = Tensor::cat(&[skip, &up], 1)?;
        self.conv.forward_t(&xs, train)
        // END SOLUTION
    }
}

/// The last 1x1 convolution to class scores (`conv`, with bias).
#[derive(Debug, Clone)]
pub struct OutConv {
    conv: Conv2d,
}

impl OutConv {
    /// A 1x1 convolution from `c_in` channels to `n_classes` scores.
    pub fn new(c_in: usize, n_classes: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = ConvConfig {
            bias: true,
            ..Default::default()
        };
        Ok(Self {
            conv: conv2d(c_in, n_classes, 1, cfg, vb.pp("conv"))?,
        })
    }
}

impl Module for OutConv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // BEGIN SOLUTION a4.parts OutConv: the 1x1 convolution
        self.conv.forward(xs)
        // END SOLUTION
    }
}

/// The U-Net: `inc`, `down1..down4`, `up1..up4`, `outc`.
#[derive(Debug, Clone)]
pub struct UNet {
    inc: DoubleConv,
    downs: [Down; 4],
    ups: [Up; 4],
    outc: OutConv,
    config: UNetConfig,
}

impl UNet {
    /// Builds the net under `vb` with the PyTorch names.
    pub fn new(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        let UNetConfig {
            n_channels,
            n_classes,
            bilinear,
            width: w,
        } = config;
        if n_channels == 0 || n_classes == 0 || w == 0 {
            candle::bail!(
                "U-Net needs at least one input channel, one class and width 1, got {config:?}"
            );
        }
        let factor = if bilinear { 2 } else { 1 };
        let inc = double_conv(n_channels, w, vb.pp("inc"))?;
        let downs = [
            Down::new(w, 2 * w, vb.pp("down1"))?,
            Down::new(2 * w, 4 * w, vb.pp("down2"))?,
            Down::new(4 * w, 8 * w, vb.pp("down3"))?,
            Down::new(8 * w, 16 * w / factor, vb.pp("down4"))?,
        ];
        let ups = [
            Up::new(16 * w, 8 * w / factor, bilinear, vb.pp("up1"))?,
            Up::new(8 * w, 4 * w / factor, bilinear, vb.pp("up2"))?,
            Up::new(4 * w, 2 * w / factor, bilinear, vb.pp("up3"))?,
            Up::new(2 * w, w, bilinear, vb.pp("up4"))?,
        ];
        let outc = OutConv::new(w, n_classes, vb.pp("outc"))?;
        Ok(Self {
            inc,
            downs,
            ups,
            outc,
            config,
        })
    }

    /// The sizes the net was built with.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }
}

impl ModuleT for UNet {
    /// Class scores (logits) per pixel.
    ///
    /// # Shapes
    /// `(N, n_channels, H, W) -> (N, n_classes, H, W)`; `H` and `W` should be
    /// multiples of 16 (see [`crate::predict::predict_logits`] for any size).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let (_, c, h, w) = xs.dims4()?;
        if c != self.config.n_channels {
            candle::bail!(
                "U-Net built for {} input channels got {c}",
                self.config.n_channels
            );
        }
        if h < 16 || w < 16 {
            candle::bail!("U-Net needs inputs of at least 16x16 (four 2x2 pools), got {h}x{w}");
        }
        // BEGIN SOLUTION a4.unet_forward inc and four Downs, then four Ups each with its skip, then outc
        // Encoder: x1 (N, w, H, W), x2 (N, 2w, H/2, W/2), ... x5 (N, 16w/f, H/16, W/16).
        let x1 = self.inc.forward_t(xs, train)?;
        let x2 = self.downs[0].forward_t(&x1, train)?;
        let x3 = self.downs[1].forward_t(&x2, train)?;
        let x4 = self.downs[2].forward_t(&x3, train)?;
        let x5 = self.downs[3].forward_t(&x4, train)?;
        // Decoder back up to (N, w, H, W).
        let ys = self.ups[0].forward_t(&x5, &x4, train)?;
        let ys = self.ups[1].forward_t(&ys, &x3, train)?;
        let ys = self.ups[2].forward_t(&ys, &x2, train)?;
        let ys = self.ups[3].forward_t(&ys, &x1, train)?;
        self.outc.forward(&ys)
        // END SOLUTION
    }
}

/// Builds a U-Net with seeded initial weights in a fresh `VarMap`.
pub fn build_unet(config: UNetConfig, seed: u64, device: &Device) -> Result<(UNet, VarMap)> {
    let varmap = VarMap::new();
    let vb = common::init::seeded_var_builder(&varmap, seed, DType::F32, device);
    let net = UNet::new(config, vb)?;
    Ok((net, varmap))
}

/// The number of trainable parameters in `varmap` (BatchNorm running statistics
/// are buffers, not parameters, and are not counted), as PyTorch's
/// `sum(p.numel() for p in model.parameters() if p.requires_grad)`.
pub fn count_parameters(varmap: &VarMap) -> usize {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    data.iter()
        .filter(|(name, _)| !common::nn::is_batch_norm_buffer(name))
        .map(|(_, var)| var.elem_count())
        .sum()
}

/// Zero-pads `xs` at the bottom/right and top/left to `h x w`, splitting the
/// difference as PyTorch's `F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])`.
///
/// # Shapes
/// `(N, C, h0, w0) -> (N, C, h, w)` with `h >= h0`, `w >= w0`
pub fn pad_to(xs: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, h0, w0) = xs.dims4()?;
    if h0 > h || w0 > w {
        candle::bail!("cannot pad a {h0}x{w0} map to the smaller {h}x{w}");
    }
    let (dy, dx) = (h - h0, w - w0);
    let xs = if dy > 0 {
        xs.pad_with_zeros(2, dy / 2, dy - dy / 2)?
    } else {
        xs.clone()
    };
    if dx > 0 {
        xs.pad_with_zeros(3, dx / 2, dx - dx / 2)
    } else {
        Ok(xs)
    }
}

/// Bilinear upsampling by an integer `factor` with `align_corners=True`, as the
/// reference's `nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)`.
///
/// candle's `upsample_bilinear2d` has no backward and `common::nn::resize_bilinear`
/// follows `align_corners=False`, so this is `A_h · X · A_wᵀ` with align-corners
/// interpolation matrices (two matmuls, whose gradients candle knows).
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, factor*H, factor*W)`
pub fn upsample_bilinear_align_corners(xs: &Tensor, factor: usize) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let (h2, w2) = (h * factor, w * factor);
    let a_h = align_corners_matrix(h, h2, xs.device(), xs.dtype())?; // (h2, H)
    let a_w_t = align_corners_matrix(w, w2, xs.device(), xs.dtype())?
        .t()?
        .contiguous()?; // (W, w2)
                        // (N*C*H, W) · (W, w2) -> (N*C, H, w2)
    let ys = xs
        .contiguous()?
        .reshape((n * c * h, w))?
        .matmul(&a_w_t)?
        .reshape((n * c, h, w2))?;
    // (h2, H) · (N*C, H, w2) -> (N*C, h2, w2) -> (N, C, h2, w2)
    a_h.broadcast_matmul(&ys)?.reshape((n, c, h2, w2))
}

/// The `(out, in)` matrix of 1-D linear interpolation with aligned corners:
/// output `i` samples input position `i * (in - 1) / (out - 1)`.
pub fn align_corners_matrix(
    in_size: usize,
    out_size: usize,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let mut m = vec![0f32; out_size * in_size];
    for i in 0..out_size {
        let pos = if out_size > 1 {
            i as f64 * (in_size as f64 - 1.0) / (out_size as f64 - 1.0)
        } else {
            0.0
        };
        let lo = (pos.floor() as usize).min(in_size - 1);
        let hi = (lo + 1).min(in_size - 1);
        let frac = (pos - lo as f64) as f32;
        m[i * in_size + lo] += 1.0 - frac;
        m[i * in_size + hi] += frac;
    }
    Tensor::from_vec(m, (out_size, in_size), device)?.to_dtype(dtype)
}
