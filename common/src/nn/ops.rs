//! The one place every convolution forward goes through: the fast CPU kernels of
//! [`crate::kernels`] on the CPU (f32/f64, groups 1), candle's ops elsewhere or when
//! `SEGKIT_CANDLE_OPS=1` forces them.

use super::conv::{ConvConfig, ConvTransposeConfig};
use crate::kernels::{self, Conv2dParams, ConvTranspose2dParams};
use candle::{bail, Result, Tensor};

/// Output size of a convolution along one axis:
/// `floor((in + 2p - d(k-1) - 1) / s) + 1`, or `None` when the kernel does not fit.
pub fn conv_out_size(input: usize, k: usize, p: &ConvConfig) -> Option<usize> {
    let span = p.dilation * (k.max(1) - 1) + 1;
    let padded = input + 2 * p.padding;
    (p.stride > 0 && padded >= span).then(|| (padded - span) / p.stride + 1)
}

/// Output size of a transposed convolution along one axis:
/// `(in - 1) s - 2p + d(k-1) + output_padding + 1`, or `None` when negative.
pub fn conv_transpose_out_size(input: usize, k: usize, p: &ConvTransposeConfig) -> Option<usize> {
    let full = (input.max(1) - 1) * p.stride + p.dilation * (k.max(1) - 1) + p.output_padding + 1;
    full.checked_sub(2 * p.padding).filter(|&o| o > 0)
}

/// 2-D convolution (cross-correlation, like PyTorch), bias NOT added (`p.bias` is ignored here; the layer adds it).
///
/// Two candle 0.11 backward bugs are avoided here (see the comments in the body):
/// grouped convolutions and different unused remainders along H and W.
///
/// # Shapes
/// `xs (N, C_in, H, W)`, `weight (C_out, C_in / groups, k, k)` -> `(N, C_out, H', W')`
/// with `H' = floor((H + 2p - d(k-1) - 1) / s) + 1`.
pub fn conv2d(xs: &Tensor, weight: &Tensor, p: &ConvConfig) -> Result<Tensor> {
    let (_, c_in, h, w) = conv_checks(xs, weight, p)?;
    let (_, _, kh, kw) = weight.dims4()?;
    if p.groups == 1 && kernels::uses_fast_path(xs) {
        return kernels::conv2d(xs, weight, &conv_params(p));
    }
    if p.groups > 1 {
        // candle's conv2d backward ignores `groups` (it hard-codes 1): run one
        // group-1 convolution per group and concatenate, so narrow/cat carry the
        // gradient. (C_in/g channels, C_out/g filters each.)
        let c_out = weight.dim(0)?;
        if c_out % p.groups != 0 {
            bail!(
                "conv2d: {c_out} output channels are not divisible by groups {}",
                p.groups
            );
        }
        let single = ConvConfig { groups: 1, ..*p };
        let (c_in_g, c_out_g) = (c_in / p.groups, c_out / p.groups);
        let parts = (0..p.groups)
            .map(|g| {
                conv2d(
                    &xs.narrow(1, g * c_in_g, c_in_g)?,
                    &weight.narrow(0, g * c_out_g, c_out_g)?,
                    &single,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        return Tensor::cat(&parts, 1);
    }
    // candle's conv2d backward derives ONE output_padding from the height and uses
    // it for the width too, so the input gradient has the wrong shape (an error)
    // when the strided windows leave a different number of unused trailing rows
    // than columns. Then pad explicitly and drop the unused tail first, so the
    // convolution covers its input exactly (padding 0, no remainder); the pad and
    // narrow ops carry the gradient back.
    let unused =
        |size: usize, k: usize| (size + 2 * p.padding - p.dilation * (k - 1) - 1) % p.stride;
    let (r_h, r_w) = (unused(h, kh), unused(w, kw));
    if r_h != r_w {
        let padded = xs
            .pad_with_zeros(2, p.padding, p.padding)?
            .pad_with_zeros(3, p.padding, p.padding)?;
        // (N, C, H + 2p, W + 2p) -> (N, C, H + 2p - r_h, W + 2p - r_w)
        let exact =
            padded
                .narrow(2, 0, h + 2 * p.padding - r_h)?
                .narrow(3, 0, w + 2 * p.padding - r_w)?;
        return exact.conv2d(weight, 0, p.stride, p.dilation, 1);
    }
    xs.conv2d(weight, p.padding, p.stride, p.dilation, 1)
}

/// 2-D transposed convolution, bias NOT added (`p.bias` is ignored here) (PyTorch `F.conv_transpose2d`, groups 1).
///
/// candle's backward for this op was checked against central differences with
/// stride 2, padding and output padding (input and weight gradients,
/// `common/tests/nn_conv.rs`), so candle's op is used directly.
///
/// # Shapes
/// `xs (N, C_in, H, W)`, `weight (C_in, C_out, k, k)` -> `(N, C_out, H', W')`
/// with `H' = (H - 1) s - 2p + d(k-1) + output_padding + 1`.
pub fn conv_transpose2d(xs: &Tensor, weight: &Tensor, p: &ConvTransposeConfig) -> Result<Tensor> {
    let (_, c_in, h, w) = xs.dims4()?;
    let (c_in_k, _, kh, kw) = weight.dims4()?;
    if c_in != c_in_k {
        bail!(
            "conv_transpose2d: input has {c_in} channels but the weight {:?} expects {c_in_k}",
            weight.dims()
        );
    }
    if p.stride == 0 || p.dilation == 0 {
        bail!("conv_transpose2d: stride and dilation must be at least 1, got {p:?}");
    }
    if p.output_padding >= p.stride.max(p.dilation) {
        bail!(
            "conv_transpose2d: output_padding {} must be smaller than stride {} or dilation {}",
            p.output_padding,
            p.stride,
            p.dilation
        );
    }
    if conv_transpose_out_size(h, kh, p).is_none() || conv_transpose_out_size(w, kw, p).is_none() {
        bail!("conv_transpose2d: padding {} leaves no output for a {h}x{w} input and {kh}x{kw} kernel", p.padding);
    }
    if kernels::uses_fast_path(xs) {
        let params = ConvTranspose2dParams {
            stride: p.stride,
            padding: p.padding,
            output_padding: p.output_padding,
            dilation: p.dilation,
        };
        return kernels::conv_transpose2d(xs, weight, &params);
    }
    xs.conv_transpose2d(weight, p.padding, p.output_padding, p.stride, p.dilation)
}

/// [`conv2d`] plus an optional per-channel bias; on the fast path the bias add and
/// its gradient are fused into the convolution kernel.
///
/// # Shapes
/// `xs (N, C_in, H, W)`, `weight (C_out, C_in / groups, k, k)`, `bias (C_out)` -> `(N, C_out, H', W')`.
pub fn conv2d_bias(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: &ConvConfig,
) -> Result<Tensor> {
    match bias {
        Some(bias) if p.groups == 1 && kernels::uses_fast_path(xs) => {
            // Validates exactly as the unfused path does, then runs the fused kernel.
            conv_checks(xs, weight, p)?;
            kernels::conv2d_bias(xs, weight, Some(bias), &conv_params(p))
        }
        // (C_out) -> (1, C_out, 1, 1)
        Some(bias) => conv2d(xs, weight, p)?.broadcast_add(&bias.reshape((1, (), 1, 1))?),
        None => conv2d(xs, weight, p),
    }
}

fn conv_params(p: &ConvConfig) -> Conv2dParams {
    Conv2dParams {
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
    }
}

/// The argument checks every convolution makes, with messages that name the sizes;
/// returns the input's `(N, C_in, H, W)`.
fn conv_checks(
    xs: &Tensor,
    weight: &Tensor,
    p: &ConvConfig,
) -> Result<(usize, usize, usize, usize)> {
    let (n, c_in, h, w) = xs.dims4()?;
    let (_, c_in_k, kh, kw) = weight.dims4()?;
    if p.groups == 0 || c_in != c_in_k * p.groups {
        bail!(
            "conv2d: input has {c_in} channels but the weight {:?} with groups {} expects {}",
            weight.dims(),
            p.groups,
            c_in_k * p.groups
        );
    }
    if p.stride == 0 || p.dilation == 0 {
        bail!("conv2d: stride and dilation must be at least 1, got {p:?}");
    }
    if conv_out_size(h, kh, p).is_none() || conv_out_size(w, kw, p).is_none() {
        bail!(
            "conv2d: input {h}x{w} is too small for a {kh}x{kw} kernel with padding {}, dilation {}, stride {}",
            p.padding,
            p.dilation,
            p.stride
        );
    }
    Ok((n, c_in, h, w))
}
