//! Fast CPU convolution, pooling, BatchNorm and ReLU: im2col + `gemm` kernels and fused
//! element-wise passes as candle custom ops, with backward passes built from the same
//! kernels, and a switch back to candle's own ops. (Bilinear resizing has its kernel here
//! too, used by `nn::resize_bilinear`.)
//!
//! [`conv2d`], [`conv2d_bias`], [`conv_transpose2d`], [`add_channel_bias`],
//! [`max_pool2d`], [`relu`], [`batch_norm_train`] and [`batch_norm_relu_train`] run the
//! custom ops for f32/f64 tensors on the CPU (made contiguous first) and candle's ops
//! otherwise (CUDA, f16/bf16), or everywhere when `SEGKIT_CANDLE_OPS=1` is set or
//! [`set_force_candle_ops`]`(true)` was called. Weight
//! layouts follow PyTorch: conv `(c_out, c_in, kh, kw)`, transposed conv
//! `(c_in, c_out, kh, kw)`.

mod activation;
mod adam;
mod bias;
mod conv;
mod norm;
mod pool;
mod resize;
mod storage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use candle::{DType, Tensor};

pub use adam::AdamStep;
use conv::{ConvBiasFwd, ConvBwdInput, ConvFwd, ConvGeom};
pub(crate) use resize::{Resize, ResizeGeom};

/// Environment variable that, when `1`, makes every kernel use candle's own ops.
pub const CANDLE_OPS_ENV: &str = "SEGKIT_CANDLE_OPS";

fn force_flag() -> &'static AtomicBool {
    static FORCE: OnceLock<AtomicBool> = OnceLock::new();
    FORCE.get_or_init(|| {
        AtomicBool::new(std::env::var(CANDLE_OPS_ENV).is_ok_and(|v| v.trim() == "1"))
    })
}

/// Forces candle's own ops (`true`) or allows the fast custom ops again (`false`), for
/// the whole process; overrides `SEGKIT_CANDLE_OPS`.
pub fn set_force_candle_ops(force: bool) {
    force_flag().store(force, Ordering::Relaxed);
}

/// Whether candle's own ops are forced (by [`set_force_candle_ops`] or `SEGKIT_CANDLE_OPS=1`).
pub fn candle_ops_forced() -> bool {
    force_flag().load(Ordering::Relaxed)
}

/// Whether [`conv2d`], [`conv_transpose2d`] and [`max_pool2d`] would run the fast custom
/// op for this tensor: on the CPU, f32 or f64, and candle's ops not forced.
pub fn uses_fast_path(xs: &Tensor) -> bool {
    !candle_ops_forced() && xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// One Adam / AdamW step of a variable in place, on the fast path: `param` and its moments
/// `m`, `v` are updated by three element-wise passes and no new tensor. Gives `false`, and
/// changes nothing, where the fast path does not apply (not the CPU, not f32/f64, candle's
/// ops forced, a non-contiguous tensor or mixed dtypes): the caller then uses candle's ops.
pub fn adam_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamStep,
) -> candle::Result<bool> {
    let same_dtype = [grad, m, v].iter().all(|t| t.dtype() == param.dtype());
    let contiguous = [param, m, v].iter().all(|t| t.is_contiguous());
    if !uses_fast_path(param) || !same_dtype || !contiguous {
        return Ok(false);
    }
    adam::adam_step_in_place(param, &grad.contiguous()?, m, v, step)?;
    Ok(true)
}

/// Stride, padding and dilation of a 2-D convolution (the same for both axes; no groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
        }
    }
}

/// Stride, padding, output padding and dilation of a 2-D transposed convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    pub stride: usize,
    pub padding: usize,
    pub output_padding: usize,
    pub dilation: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            output_padding: 0,
            dilation: 1,
        }
    }
}

/// Checks the ranks, dtypes and devices of an input and a kernel; returns their dims.
fn dims(op: &str, xs: &Tensor, kernel: &Tensor) -> candle::Result<([usize; 4], [usize; 4])> {
    let (Ok(x), Ok(k)) = (xs.dims4(), kernel.dims4()) else {
        candle::bail!(
            "{op}: input {:?} and kernel {:?} must both have rank 4",
            xs.dims(),
            kernel.dims()
        )
    };
    if xs.dtype() != kernel.dtype() {
        candle::bail!(
            "{op}: input is {:?} but kernel is {:?}",
            xs.dtype(),
            kernel.dtype()
        )
    }
    if !xs.device().same_device(kernel.device()) {
        candle::bail!("{op}: input and kernel are on different devices")
    }
    Ok(([x.0, x.1, x.2, x.3], [k.0, k.1, k.2, k.3]))
}

/// Output size of a conv along one axis, or `None` when the dilated kernel does not fit.
fn conv_out(size: usize, k: usize, p: &Conv2dParams) -> Option<usize> {
    let span = p.dilation * (k - 1) + 1;
    (size + 2 * p.padding >= span).then(|| (size + 2 * p.padding - span) / p.stride + 1)
}

/// 2-D cross-correlation (PyTorch's `conv2d` without bias, `groups = 1`).
///
/// Differentiable w.r.t. both `xs` and `kernel` (to any order on the fast path).
///
/// # Shapes
/// `xs (N, C_in, H, W)`, `kernel (C_out, C_in, KH, KW)` -> `(N, C_out, OH, OW)` with
/// `OH = (H + 2 padding - dilation (KH - 1) - 1) / stride + 1`.
pub fn conv2d(xs: &Tensor, kernel: &Tensor, params: &Conv2dParams) -> candle::Result<Tensor> {
    conv2d_bias(xs, kernel, None, params)
}

/// [`conv2d`] plus a per-channel bias, fused on the fast path (the bias is added while the
/// output is hot and its gradient is a direct per-channel sum). Differentiable w.r.t. all
/// three arguments.
///
/// # Shapes
/// `xs (N, C_in, H, W)`, `kernel (C_out, C_in, KH, KW)`, `bias (C_out)` -> `(N, C_out, OH, OW)`.
pub fn conv2d_bias(
    xs: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv2dParams,
) -> candle::Result<Tensor> {
    let ([n, c_in, h, w], [c_out, k_c_in, kh, kw]) = dims("conv2d", xs, kernel)?;
    if params.stride == 0 || params.dilation == 0 {
        candle::bail!("conv2d: stride and dilation must be at least 1, got {params:?}")
    }
    if c_in != k_c_in {
        candle::bail!(
            "conv2d: input {:?} has {c_in} channels but kernel {:?} expects {k_c_in}",
            xs.dims(),
            kernel.dims()
        )
    }
    if kh == 0 || kw == 0 {
        candle::bail!("conv2d: kernel {:?} has an empty window", kernel.dims())
    }
    let (Some(oh), Some(ow)) = (conv_out(h, kh, params), conv_out(w, kw, params)) else {
        candle::bail!(
            "conv2d: kernel {kh}x{kw} with dilation {} does not fit input {h}x{w} padded by {}",
            params.dilation,
            params.padding
        )
    };
    if let Some(b) = bias {
        if b.dims() != [c_out] || b.dtype() != xs.dtype() {
            candle::bail!(
                "conv2d: bias {:?} {:?} must be a {:?} vector of the {c_out} output channels",
                b.dims(),
                b.dtype(),
                xs.dtype()
            )
        }
    }
    if !uses_fast_path(xs) {
        let ys = xs.conv2d(kernel, params.padding, params.stride, params.dilation, 1)?;
        return match bias {
            Some(b) => ys.broadcast_add(&b.reshape((1, c_out, 1, 1))?),
            None => Ok(ys),
        };
    }
    let geom = ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        oh,
        ow,
        stride: params.stride,
        padding: params.padding,
        dilation: params.dilation,
    };
    match bias {
        Some(b) => {
            xs.contiguous()?
                .apply_op3(&kernel.contiguous()?, &b.contiguous()?, ConvBiasFwd(geom))
        }
        None => ConvFwd::apply(geom, xs, kernel),
    }
}

/// 2-D transposed convolution (PyTorch's `conv_transpose2d` without bias, `groups = 1`):
/// the input gradient of [`conv2d`] with the same kernel.
///
/// # Shapes
/// `xs (N, C_in, H, W)`, `kernel (C_in, C_out, KH, KW)` -> `(N, C_out, OH, OW)` with
/// `OH = (H - 1) stride - 2 padding + dilation (KH - 1) + output_padding + 1`.
pub fn conv_transpose2d(
    xs: &Tensor,
    kernel: &Tensor,
    params: &ConvTranspose2dParams,
) -> candle::Result<Tensor> {
    let ([n, c_in, h, w], [k_c_in, c_out, kh, kw]) = dims("conv_transpose2d", xs, kernel)?;
    let ConvTranspose2dParams {
        stride,
        padding,
        output_padding,
        dilation,
    } = *params;
    if stride == 0 || dilation == 0 {
        candle::bail!("conv_transpose2d: stride and dilation must be at least 1, got {params:?}")
    }
    if output_padding >= stride && output_padding >= dilation {
        candle::bail!(
            "conv_transpose2d: output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}"
        )
    }
    if c_in != k_c_in {
        candle::bail!(
            "conv_transpose2d: input {:?} has {c_in} channels but kernel {:?} expects {k_c_in}",
            xs.dims(),
            kernel.dims()
        )
    }
    if kh == 0 || kw == 0 {
        candle::bail!(
            "conv_transpose2d: kernel {:?} has an empty window",
            kernel.dims()
        )
    }
    let out = |size: usize, k: usize| {
        let full = (size.max(1) - 1) * stride + dilation * (k - 1) + output_padding + 1;
        (size > 0 && full > 2 * padding).then(|| full - 2 * padding)
    };
    let (Some(oh), Some(ow)) = (out(h, kh), out(w, kw)) else {
        candle::bail!(
            "conv_transpose2d: input {h}x{w} with kernel {kh}x{kw}, stride {stride} and padding {padding} gives an empty output"
        )
    };
    if !uses_fast_path(xs) {
        return xs.conv_transpose2d(kernel, padding, output_padding, stride, dilation);
    }
    // Seen as the conv it is the input gradient of: that conv maps (N, C_out, OH, OW)
    // to (N, C_in, H, W) with the same kernel, read as (c_out' = C_in, c_in' = C_out).
    let geom = ConvGeom {
        n,
        c_in: c_out,
        h: oh,
        w: ow,
        c_out: c_in,
        kh,
        kw,
        oh: h,
        ow: w,
        stride,
        padding,
        dilation,
    };
    ConvBwdInput::apply(geom, xs, kernel)
}

/// `xs + bias`, the `(C)` bias broadcast over `(N, C, H, W)`: one pass on the fast path,
/// whose bias gradient is a vectorised sum per channel (candle's `broadcast_add` backward
/// is a strided reduction over three axes); `broadcast_add` otherwise.
///
/// # Shapes
/// `xs (N, C, H, W)`, `bias (C)` -> `(N, C, H, W)`.
pub fn add_channel_bias(xs: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    let Ok((_, c, _, _)) = xs.dims4() else {
        candle::bail!("add_channel_bias: input {:?} must have rank 4", xs.dims())
    };
    if bias.dims() != [c] {
        candle::bail!(
            "add_channel_bias: bias {:?} must have the {c} channels of the input {:?}",
            bias.dims(),
            xs.dims()
        )
    }
    if uses_fast_path(xs) && bias.dtype() == xs.dtype() && bias.device().is_cpu() {
        return xs
            .contiguous()?
            .apply_op2(&bias.contiguous()?, bias::AddChannelBias);
    }
    // (C) -> (1, C, 1, 1)
    xs.broadcast_add(&bias.reshape((1, c, 1, 1))?)
}

/// Max pooling with a `k x k` window and stride `k`; the gradient goes to the first
/// maximum of each window only (as PyTorch). Trailing rows/columns that do not fill a
/// window are dropped.
///
/// # Shapes
/// `(N, C, H, W)` -> `(N, C, H / k, W / k)`.
pub fn max_pool2d(xs: &Tensor, k: usize) -> candle::Result<Tensor> {
    let Ok((n, c, h, w)) = xs.dims4() else {
        candle::bail!("max_pool2d: input {:?} must have rank 4", xs.dims())
    };
    if k == 0 || k > h || k > w {
        candle::bail!("max_pool2d: window {k} does not fit input {h}x{w}")
    }
    if uses_fast_path(xs) {
        return xs.contiguous()?.apply_op1(pool::MaxPool::new(k));
    }
    // candle's max_pool2d backward is wrong (scales by 1/k^2): reshape and max instead.
    let (oh, ow) = (h / k, w / k);
    xs.narrow(2, 0, oh * k)?
        .narrow(3, 0, ow * k)?
        .reshape((n, c, oh, k, ow, k))?
        .max(5)?
        .max(3)
}

/// `max(0, x)` (NaN kept, as PyTorch), differentiable to first order on the fast path; the
/// gradient is zero where the output is not positive, as PyTorch's (candle's own ReLU,
/// used on the other paths, passes the gradient at exactly 0).
///
/// # Shapes
/// any -> the same.
pub fn relu(xs: &Tensor) -> candle::Result<Tensor> {
    if uses_fast_path(xs) {
        xs.contiguous()?.apply_op1(activation::Relu)
    } else {
        xs.relu()
    }
}

/// [`batch_norm_train`] followed by a ReLU, `(max(0, y), mean, var)`: one fused op on the
/// fast path (the ReLU costs neither a pass nor candle's ReLU backward), the two ops
/// otherwise.
///
/// # Shapes
/// `xs (N, C, H, W)`, `gamma (C)`, `beta (C)` -> `(N, C, H, W)`, `(C)`, `(C)`.
pub fn batch_norm_relu_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle::Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_impl(xs, gamma, beta, eps, true)
}

/// Training-mode batch normalisation over `(N, C, H, W)` with batch statistics: returns
/// `(y, mean, var)` where `y = (x - mean) / sqrt(var + eps) * gamma + beta` and `mean`,
/// `var` `(C)` are the per-channel batch mean and biased variance (detached; for running
/// statistics PyTorch uses the unbiased `var * M / (M - 1)`, `M = N H W`). Differentiable
/// w.r.t. `xs`, `gamma` and `beta` (first order on the fast path).
///
/// # Shapes
/// `xs (N, C, H, W)`, `gamma (C)`, `beta (C)` -> `(N, C, H, W)`, `(C)`, `(C)`.
pub fn batch_norm_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle::Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_impl(xs, gamma, beta, eps, false)
}

fn batch_norm_train_impl(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    fuse_relu: bool,
) -> candle::Result<(Tensor, Tensor, Tensor)> {
    let Ok((_, c, _, _)) = xs.dims4() else {
        candle::bail!("batch_norm_train: input {:?} must have rank 4", xs.dims())
    };
    if gamma.dims() != [c] || beta.dims() != [c] {
        candle::bail!(
            "batch_norm_train: gamma {:?} and beta {:?} must have the {c} channels of input {:?}",
            gamma.dims(),
            beta.dims(),
            xs.dims()
        )
    }
    if gamma.dtype() != xs.dtype() || beta.dtype() != xs.dtype() {
        candle::bail!(
            "batch_norm_train: input is {:?} but gamma is {:?} and beta {:?}",
            xs.dtype(),
            gamma.dtype(),
            beta.dtype()
        )
    }
    if eps.is_nan() || eps <= 0.0 {
        candle::bail!("batch_norm_train: eps must be positive, got {eps}")
    }
    if uses_fast_path(xs) {
        let stats = std::sync::Arc::new(OnceLock::new());
        let op = norm::BatchNormFwd {
            eps,
            relu: fuse_relu,
            stats: stats.clone(),
        };
        let ys = xs
            .contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        let Some(st) = stats.get() else {
            candle::bail!("batch_norm_train: the op computed no statistics")
        };
        let mean = Tensor::from_slice(&st.mean, c, xs.device())?.to_dtype(xs.dtype())?;
        let var = Tensor::from_slice(&st.var, c, xs.device())?.to_dtype(xs.dtype())?;
        return Ok((ys, mean, var));
    }
    // (N, C, H, W) -> per-channel (1, C, 1, 1) statistics from candle ops.
    let mean = xs.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centred = xs.broadcast_sub(&mean)?;
    let var = centred
        .sqr()?
        .mean_keepdim(0)?
        .mean_keepdim(2)?
        .mean_keepdim(3)?;
    let normed = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let shape = (1, c, 1, 1);
    let ys = normed
        .broadcast_mul(&gamma.reshape(shape)?)?
        .broadcast_add(&beta.reshape(shape)?)?;
    let ys = if fuse_relu { ys.relu()? } else { ys };
    Ok((
        ys,
        mean.flatten_all()?.detach(),
        var.flatten_all()?.detach(),
    ))
}
