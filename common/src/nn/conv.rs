//! Conv2d and ConvTranspose2d layers: thin structs holding PyTorch-shaped weights
//! (`weight`, `bias`) and a config; the forward goes through [`super::ops`].
//!
//! Initialisation follows PyTorch's default (`kaiming_uniform_(a=sqrt(5))`): weight
//! and bias uniform in `±1/sqrt(fan_in)`, with `fan_in = weight.size(1) * k * k`
//! (for a transposed conv that is `C_out * k * k`, as in PyTorch).

use super::ops;
use candle::{bail, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// Configuration of a [`Conv2d`] (PyTorch `nn.Conv2d` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvConfig {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    /// Whether the layer has a `bias` of shape `(C_out)`.
    pub bias: bool,
}

impl Default for ConvConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

/// Configuration of a [`ConvTranspose2d`] (PyTorch `nn.ConvTranspose2d` arguments, groups 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTransposeConfig {
    pub stride: usize,
    pub padding: usize,
    pub output_padding: usize,
    pub dilation: usize,
    /// Whether the layer has a `bias` of shape `(C_out)`.
    pub bias: bool,
}

impl Default for ConvTransposeConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
            bias: true,
        }
    }
}

/// A 2-D convolution layer; `weight (C_out, C_in / groups, k, k)`, `bias (C_out)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvConfig,
}

impl Conv2d {
    /// Builds a layer from existing tensors (checked for consistent shapes).
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvConfig) -> Result<Self> {
        let (c_out, _, _, _) = weight.dims4()?;
        check_bias("Conv2d", bias.as_ref(), c_out)?;
        let config = ConvConfig {
            bias: bias.is_some(),
            ..config
        };
        Ok(Self {
            weight,
            bias,
            config,
        })
    }

    /// The `(C_out, C_in / groups, k, k)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `(C_out)` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ConvConfig {
        &self.config
    }
}

impl Module for Conv2d {
    /// # Shapes
    /// `(N, C_in, H, W) -> (N, C_out, H', W')`, `H' = floor((H + 2p - d(k-1) - 1) / s) + 1`
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::conv2d_bias(xs, &self.weight, self.bias.as_ref(), &self.config)
    }
}

/// A 2-D transposed convolution layer; `weight (C_in, C_out, k, k)`, `bias (C_out)`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvTransposeConfig,
}

impl ConvTranspose2d {
    /// Builds a layer from existing tensors (checked for consistent shapes).
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: ConvTransposeConfig) -> Result<Self> {
        let (_, c_out, _, _) = weight.dims4()?;
        check_bias("ConvTranspose2d", bias.as_ref(), c_out)?;
        let config = ConvTransposeConfig {
            bias: bias.is_some(),
            ..config
        };
        Ok(Self {
            weight,
            bias,
            config,
        })
    }

    /// The `(C_in, C_out, k, k)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `(C_out)` bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ConvTransposeConfig {
        &self.config
    }
}

impl Module for ConvTranspose2d {
    /// # Shapes
    /// `(N, C_in, H, W) -> (N, C_out, H', W')`, `H' = (H - 1) s - 2p + d(k-1) + output_padding + 1`
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = ops::conv_transpose2d(xs, &self.weight, &self.config)?;
        match &self.bias {
            Some(b) => crate::kernels::add_channel_bias(&ys, b),
            None => Ok(ys),
        }
    }
}

/// An error naming `layer` unless `bias`, when given, has shape `(c_out)`.
fn check_bias(layer: &str, bias: Option<&Tensor>, c_out: usize) -> Result<()> {
    match bias {
        Some(b) if b.dims() != [c_out] => bail!(
            "{layer}: bias shape {:?} does not match {c_out} output channels",
            b.dims()
        ),
        _ => Ok(()),
    }
}

/// PyTorch's default init bound `1 / sqrt(fan_in)`.
fn kaiming_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A `k x k` [`Conv2d`] from `c_in` to `c_out` channels with variables `weight`
/// (and `bias` when `config.bias`) under `vb`.
pub fn conv2d(
    c_in: usize,
    c_out: usize,
    k: usize,
    config: ConvConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if config.groups == 0 || c_in % config.groups != 0 || c_out % config.groups != 0 {
        bail!(
            "conv2d: {c_in} input and {c_out} output channels are not divisible by groups {}",
            config.groups
        );
    }
    let fan_in = c_in / config.groups * k * k;
    let weight = vb.get_with_hints(
        (c_out, c_in / config.groups, k, k),
        "weight",
        kaiming_uniform(fan_in),
    )?;
    let bias = if config.bias {
        Some(vb.get_with_hints(c_out, "bias", kaiming_uniform(fan_in))?)
    } else {
        None
    };
    Conv2d::new(weight, bias, config)
}

/// A `k x k` [`ConvTranspose2d`] from `c_in` to `c_out` channels with variables
/// `weight (c_in, c_out, k, k)` (and `bias` when `config.bias`) under `vb`.
pub fn conv_transpose2d(
    c_in: usize,
    c_out: usize,
    k: usize,
    config: ConvTransposeConfig,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    // PyTorch computes fan_in from weight.size(1) = c_out for transposed convs.
    let fan_in = c_out * k * k;
    let weight = vb.get_with_hints((c_in, c_out, k, k), "weight", kaiming_uniform(fan_in))?;
    let bias = if config.bias {
        Some(vb.get_with_hints(c_out, "bias", kaiming_uniform(fan_in))?)
    } else {
        None
    };
    ConvTranspose2d::new(weight, bias, config)
}
