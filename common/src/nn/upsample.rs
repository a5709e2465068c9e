//! Nearest and bilinear up-sampling with correct gradients.
//!
//! Nearest: candle's `upsample_nearest2d` backward overwrites the input's gradient
//! instead of adding to it; here it is a broadcast + reshape, whose backward sums.
//! Bilinear: candle's `upsample_bilinear2d` has no backward; here it is a separable
//! kernel on the CPU and `A_h · X · A_wᵀ` otherwise, both with the interpolation
//! coefficients of PyTorch's
//! `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.

use candle::{bail, DType, Device, Result, Tensor};

/// Nearest-neighbour up-sampling by an integer `factor` (PyTorch
/// `F.interpolate(x, scale_factor=factor, mode="nearest")`).
///
/// The backward ADDS the summed gradient of each `factor x factor` block into the
/// input's gradient, so it is right when the input also feeds another op.
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, H * factor, W * factor)`
pub fn upsample_nearest2d(xs: &Tensor, factor: usize) -> Result<Tensor> {
    let (n, c, h, w) = match xs.dims() {
        &[n, c, h, w] => (n, c, h, w),
        dims => bail!("upsample_nearest2d expects an (N, C, H, W) tensor, got shape {dims:?}"),
    };
    if factor == 0 {
        bail!("upsample_nearest2d: factor must be at least 1, got 0");
    }
    // (N, C, H, W) -> (N, C, H, 1, W, 1) -> (N, C, H, f, W, f) -> (N, C, H*f, W*f)
    xs.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, factor, w, factor))?
        .reshape((n, c, h * factor, w * factor))
}

/// Where output coordinate `i` of a 1-D linear interpolation reads: input `i0` with
/// weight `1 - lambda` and input `i1` with weight `lambda`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearTap {
    pub i0: usize,
    pub i1: usize,
    pub lambda: f64,
}

/// The taps of 1-D linear interpolation from `in_size` to `out_size` samples with
/// PyTorch's `align_corners=False` rule: output `i` samples the input at
/// `max(0, (i + 0.5) * in_size / out_size - 0.5)`, mixing the two neighbours `floor`
/// and `floor + 1` (clamped to the last input) by the fractional part. Both sizes must be
/// positive (callers check).
pub fn linear_taps(in_size: usize, out_size: usize) -> Vec<LinearTap> {
    let scale = in_size as f64 / out_size as f64;
    (0..out_size)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_size.saturating_sub(1));
            LinearTap {
                i0,
                i1: (i0 + 1).min(in_size.saturating_sub(1)),
                lambda: src - i0 as f64,
            }
        })
        .collect()
}

/// The `(out_size, in_size)` matrix of 1-D linear interpolation with the coefficients of
/// [`linear_taps`]. Each row sums to 1.
pub fn bilinear_matrix(
    in_size: usize,
    out_size: usize,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    if in_size == 0 || out_size == 0 {
        bail!("bilinear_matrix: sizes must be positive, got in {in_size}, out {out_size}");
    }
    let mut m = vec![0f64; out_size * in_size];
    for (i, tap) in linear_taps(in_size, out_size).into_iter().enumerate() {
        m[i * in_size + tap.i0] += 1.0 - tap.lambda;
        m[i * in_size + tap.i1] += tap.lambda;
    }
    Tensor::from_vec(m, (out_size, in_size), device)?.to_dtype(dtype)
}

/// Bilinear resize to any `h x w`, equal to PyTorch
/// `F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)`, with a
/// gradient. On the CPU for f32/f64 (see [`crate::kernels::uses_fast_path`]) one
/// separable pass each way (`kernels`' resize op); otherwise two matrix products,
/// `A_h · X · A_wᵀ`.
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, h, w)`
pub fn resize_bilinear(xs: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, c, h_in, w_in) = match xs.dims() {
        &[n, c, h_in, w_in] => (n, c, h_in, w_in),
        dims => bail!("resize_bilinear expects an (N, C, H, W) tensor, got shape {dims:?}"),
    };
    if h == 0 || w == 0 {
        bail!("resize_bilinear: output size must be positive, got {h}x{w}");
    }
    if h_in == 0 || w_in == 0 {
        bail!("resize_bilinear: input size must be positive, got {h_in}x{w_in}");
    }
    if crate::kernels::uses_fast_path(xs) {
        let geom = crate::kernels::ResizeGeom {
            n,
            c,
            h_in,
            w_in,
            h,
            w,
        };
        return xs.contiguous()?.apply_op1(crate::kernels::Resize(geom));
    }
    resize_bilinear_by_matrices(xs, h, w)
}

/// The other path of [`resize_bilinear`] (CUDA, f16/bf16, `SEGKIT_CANDLE_OPS=1`), on any
/// device: `A_h · X · A_wᵀ` with the [`bilinear_matrix`]es, differentiable by candle.
/// Public so that tests compare the CPU kernel against it.
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, h, w)`
pub fn resize_bilinear_by_matrices(xs: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, c, h_in, w_in) = xs.dims4()?;
    let a_h = bilinear_matrix(h_in, h, xs.device(), xs.dtype())?; // (h, H)
    let a_w_t = bilinear_matrix(w_in, w, xs.device(), xs.dtype())?
        .t()?
        .contiguous()?; // (W, w)
                        // (N*C*H, W) · (W, w) -> (N*C*H, w) -> (N*C, H, w)
    let ys = xs
        .reshape((n * c * h_in, w_in))?
        .matmul(&a_w_t)?
        .reshape((n * c, h_in, w))?;
    // (h, H) · (N*C, H, w) -> (N*C, h, w) -> (N, C, h, w)
    a_h.broadcast_matmul(&ys)?.reshape((n, c, h, w))
}
