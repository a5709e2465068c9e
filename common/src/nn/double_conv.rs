//! U-Net's DoubleConv block (Ronneberger et al. 2015), with the parameter names of
//! milesial/Pytorch-UNet `unet_parts.py` so its PyTorch weights load as they are.

use super::batch_norm::{batch_norm2d, BatchNorm2d};
use super::conv::{conv2d, Conv2d, ConvConfig};
use candle::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

/// (conv3x3 => BN => ReLU) * 2; the convolutions have padding 1 and no bias.
///
/// Sub-modules: `double_conv.0` (conv), `double_conv.1` (BN), `double_conv.3`
/// (conv), `double_conv.4` (BN): PyTorch `nn.Sequential` indices, the ReLUs being
/// indices 2 and 5.
#[derive(Debug, Clone)]
pub struct DoubleConv {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
}

impl ModuleT for DoubleConv {
    /// # Shapes
    /// `(N, C_in, H, W) -> (N, C_out, H, W)`
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        // BEGIN SOLUTION a4.double_conv conv => BN => ReLU, twice (forward_relu_t fuses the last two)
        // BatchNorm and ReLU run as one fused kernel in training on the CPU.
        let xs = self.bn1.forward_relu_t(&self.conv1.forward(xs)?, train)?;
        self.bn2.forward_relu_t(&self.conv2.forward(&xs)?, train)
        // END SOLUTION
    }
}

/// A [`DoubleConv`] from `c_in` to `c_out` channels (mid channels = `c_out`).
pub fn double_conv(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<DoubleConv> {
    double_conv_with_mid(c_in, c_out, c_out, vb)
}

/// A [`DoubleConv`] `c_in -> c_mid -> c_out` (milesial's `mid_channels`).
pub fn double_conv_with_mid(
    c_in: usize,
    c_mid: usize,
    c_out: usize,
    vb: VarBuilder,
) -> Result<DoubleConv> {
    let vb = vb.pp("double_conv");
    let cfg = ConvConfig {
        padding: 1,
        bias: false,
        ..Default::default()
    };
    Ok(DoubleConv {
        conv1: conv2d(c_in, c_mid, 3, cfg, vb.pp("0"))?,
        bn1: batch_norm2d(c_mid, vb.pp("1"))?,
        conv2: conv2d(c_mid, c_out, 3, cfg, vb.pp("3"))?,
        bn2: batch_norm2d(c_out, vb.pp("4"))?,
    })
}
