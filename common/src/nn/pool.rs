//! Max pooling with PyTorch's gradient: the whole gradient goes to one maximum.
//!
//! candle's `max_pool2d` backward scales the gradient at the maximum by 1/(k*k);
//! this version is built from `reshape`, `argmax` and `gather` so it runs on any
//! device and its backward (`gather` -> `scatter_add`) is right.

use candle::{bail, Result, Tensor, D};

/// `k x k` max pooling with stride `k` (PyTorch `F.max_pool2d(x, k)`).
///
/// Trailing rows and columns that do not fill a window are dropped (floor), as in
/// PyTorch. The backward puts the whole gradient of a window on one element.
///
/// Ties: when several elements of a window share the maximum, the gradient goes to
/// the FIRST of them in row-major window order, which is what PyTorch does on CPU.
/// (Candle's `max` reduction would instead give the full gradient to EVERY tied
/// element, duplicating it; hence `argmax` + `gather` here. On CPU candle's `argmax`
/// keeps the first maximum; `common/tests/nn_resample.rs` checks this.)
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, H / k, W / k)`
pub fn max_pool2d(xs: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = match xs.dims() {
        &[n, c, h, w] => (n, c, h, w),
        dims => bail!("max_pool2d expects an (N, C, H, W) tensor, got shape {dims:?}"),
    };
    if k == 0 {
        bail!("max_pool2d: kernel size must be at least 1, got 0");
    }
    let (ho, wo) = (h / k, w / k);
    if ho == 0 || wo == 0 {
        bail!("max_pool2d: input {h}x{w} is smaller than the {k}x{k} window");
    }
    if crate::kernels::uses_fast_path(xs) {
        // The CPU kernel saves the argmax; same semantics (first maximum, floor).
        return crate::kernels::max_pool2d(xs, k);
    }
    // Drop the rows/columns that do not fill a window (floor, like PyTorch).
    let xs = xs.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?;
    // (N, C, Ho*k, Wo*k) -> (N, C, Ho, k, Wo, k) -> (N, C, Ho, Wo, k, k) -> (N, C, Ho, Wo, k*k)
    let windows = xs
        .reshape((n, c, ho, k, wo, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, k * k))?;
    // (N, C, Ho, Wo, 1) index of the first maximum of each window; no gradient.
    let idx = windows.argmax_keepdim(D::Minus1)?;
    // (N, C, Ho, Wo, 1) -> (N, C, Ho, Wo)
    windows.gather(&idx, D::Minus1)?.squeeze(D::Minus1)
}
