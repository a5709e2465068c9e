//! Max pooling that keeps its indices, and max-unpooling with them (SegNet's
//! decoder, DeconvNet's "switches"): PyTorch's `F.max_pool2d(x, k,
//! return_indices=True)` and `F.max_unpool2d(y, idx, k, output_size=...)`.
//!
//! Built from candle ops whose backward is right (no custom kernel): the pool is
//! [`crate::nn::max_pool2d`] (argmax + gather) and the indices are computed from
//! the same argmax; the unpool is `zeros.scatter_add(idx, y)` along the flattened
//! `(H, W)` plane, whose backward is `grad.gather(idx)` (each pooled value gets the
//! gradient of the one place it was put back, zeros elsewhere get none).

use candle::{bail, DType, Result, Tensor, D};

/// `k x k` max pooling with stride `k` (floor, first maximum on ties, as
/// [`crate::nn::max_pool2d`]) and the index of each maximum in its `(H, W)` plane,
/// `row * W + col` of the input (PyTorch's `return_indices=True`), as `u32`.
///
/// # Shapes
/// `(N, C, H, W) -> ((N, C, H / k, W / k), (N, C, H / k, W / k))`
pub fn max_pool2d_with_indices(xs: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = match xs.dims() {
        &[n, c, h, w] => (n, c, h, w),
        dims => bail!("max_pool2d_with_indices expects an (N, C, H, W) tensor, got shape {dims:?}"),
    };
    if k == 0 {
        bail!("max_pool2d_with_indices: kernel size must be at least 1, got 0");
    }
    let (ho, wo) = (h / k, w / k);
    if ho == 0 || wo == 0 {
        bail!("max_pool2d_with_indices: input {h}x{w} is smaller than the {k}x{k} window");
    }
    let values = crate::nn::max_pool2d(xs, k)?;
    // (N, C, Ho*k, Wo*k) -> (N, C, Ho, Wo, k*k): the windows, as max_pool2d reads them.
    let windows = xs
        .detach()
        .narrow(2, 0, ho * k)?
        .narrow(3, 0, wo * k)?
        .reshape((n, c, ho, k, wo, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, k * k))?;
    // (N, C, Ho, Wo) position of the first maximum inside its window.
    let in_window = windows
        .argmax_keepdim(D::Minus1)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    let plane = ho * wo;
    let indices: Vec<u32> = in_window
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let (p, at) = (p as usize, i % plane);
            let (row, col) = ((at / wo) * k + p / k, (at % wo) * k + p % k);
            (row * w + col) as u32
        })
        .collect();
    let indices = Tensor::from_vec(indices, (n, c, ho, wo), xs.device())?;
    Ok((values, indices))
}

/// Puts every value of `xs` back at its index in an `(H, W)` plane of zeros
/// (PyTorch `F.max_unpool2d(xs, indices, k, output_size=(H, W))`); `size` is
/// `(H, W)`, or `None` for `(h * k, w * k)` with `k` the pool's size `k`.
///
/// `indices` are the `u32` (or `i64`) plane indices of [`max_pool2d_with_indices`].
/// The gradient of `xs` is the output gradient read at the indices.
///
/// # Shapes
/// `(N, C, h, w)`, `(N, C, h, w)` -> `(N, C, H, W)`
pub fn max_unpool2d(
    xs: &Tensor,
    indices: &Tensor,
    k: usize,
    size: Option<(usize, usize)>,
) -> Result<Tensor> {
    let (n, c, h, w) = match xs.dims() {
        &[n, c, h, w] => (n, c, h, w),
        dims => bail!("max_unpool2d expects an (N, C, h, w) tensor, got shape {dims:?}"),
    };
    if indices.dims() != xs.dims() {
        bail!(
            "max_unpool2d: indices of shape {:?} do not match the input's {:?}",
            indices.dims(),
            xs.dims()
        );
    }
    if k == 0 {
        bail!("max_unpool2d: kernel size must be at least 1, got 0");
    }
    let (oh, ow) = size.unwrap_or((h * k, w * k));
    // PyTorch accepts sizes within one stride of the default: h*k - k < H < h*k + k.
    let near = |out: usize, inp: usize| out + k > inp * k && out < inp * k + k;
    if !(near(oh, h) && near(ow, w)) {
        bail!(
            "max_unpool2d: output size {oh}x{ow} is not within {k} of {}x{}",
            h * k,
            w * k
        );
    }
    let indices = match indices.dtype() {
        DType::U32 | DType::I64 => indices.clone(),
        dtype => bail!("max_unpool2d: indices must be u32 or i64, got {dtype:?}"),
    };
    let flat_idx = indices.reshape((n, c, h * w))?;
    if flat_idx
        .to_dtype(DType::F64)?
        .max_all()?
        .to_scalar::<f64>()?
        >= (oh * ow) as f64
    {
        bail!("max_unpool2d: an index is outside the {oh}x{ow} output plane");
    }
    let zeros = Tensor::zeros((n, c, oh * ow), xs.dtype(), xs.device())?;
    // (N, C, H*W) <- (N, C, h*w) at the indices -> (N, C, H, W)
    zeros
        .scatter_add(&flat_idx, &xs.reshape((n, c, h * w))?, D::Minus1)?
        .reshape((n, c, oh, ow))
}
