//! Max pooling that keeps its indices, and max-unpooling with them (SegNet's
//! decoder, Badrinarayanan et al. 2017; DeconvNet's "switches", Noh et al. 2015):
//! PyTorch's `F.max_pool2d(x, k, return_indices=True)` and
//! `F.max_unpool2d(y, idx, k, output_size=...)`.
//!
//! Both are built from candle ops that run on any device and whose backward is
//! right, so there is no custom kernel: the indices are the argmax of each window
//! (no gradient), the pooled values are the input read at them (`gather`, whose
//! backward is a `scatter_add` of the gradient back into the plane), and the
//! unpooling is a `gather` too, from the pooled values with one zero appended: each
//! output position reads the value put there, or the zero.
//!
//! Why not unpool by `zeros.scatter_add(idx, y)`: candle 0.11's backward of
//! `scatter_add` builds the gradient of the zeros it adds into with a `scatter` of
//! a source shaped like those zeros, which fails ("shape mismatch in scatter")
//! whenever the output plane is larger than the pooled one, i.e. always here.

use candle::{bail, DType, Device, Result, Tensor, D};

/// `k x k` max pooling with stride `k` (floor: trailing rows and columns that do
/// not fill a window are dropped; the first maximum of a window wins ties) and the
/// index of each maximum in its input `(H, W)` plane, `row * W + col` (PyTorch's
/// `return_indices=True`), as `u32`.
///
/// The gradient of the values goes whole to the input element at the index.
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
    if u32::try_from(h * w).is_err() {
        bail!("max_pool2d_with_indices: a {h}x{w} plane has more elements than u32 indices reach");
    }
    let indices = window_maxima(&xs.detach(), k)?;
    // (N, C, H*W) read at (N, C, Ho*Wo) -> (N, C, Ho, Wo)
    let values = xs
        .reshape((n, c, h * w))?
        .gather(&indices.reshape((n, c, ho * wo))?, D::Minus1)?
        .reshape((n, c, ho, wo))?;
    Ok((values, indices))
}

/// The plane index `row * W + col` of the first maximum of every `k x k` window.
///
/// # Shapes
/// `(N, C, H, W) -> (N, C, H / k, W / k)` (u32)
fn window_maxima(xs: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    let (ho, wo) = (h / k, w / k);
    // (N, C, Ho*k, Wo*k) -> (N, C, Ho, k, Wo, k) -> (N, C, Ho, Wo, k, k) -> (N, C, Ho, Wo, k*k)
    let windows = xs
        .narrow(2, 0, ho * k)?
        .narrow(3, 0, wo * k)?
        .reshape((n, c, ho, k, wo, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, k * k))?;
    // (N, C, Ho, Wo): position p of the first maximum inside its window, row-major.
    let in_window = windows.argmax(D::Minus1)?;
    // Window position p is (p / k, p % k) from the window's corner: plane offset (p / k) * W + p % k.
    let offsets: Vec<u32> = (0..k * k).map(|p| ((p / k) * w + p % k) as u32).collect();
    let offsets = Tensor::from_vec(offsets, k * k, xs.device())?
        .index_select(&in_window.flatten_all()?, 0)?
        .reshape((n, c, ho, wo))?;
    // The corner of window (i, j) is (i k, j k): plane index i k W + j k.
    let corners: Vec<u32> = (0..ho)
        .flat_map(|i| (0..wo).map(move |j| (i * k * w + j * k) as u32))
        .collect();
    offsets.broadcast_add(&Tensor::from_vec(corners, (1, 1, ho, wo), xs.device())?)
}

/// Puts every value of `xs` back at its index in an `(H, W)` plane of zeros
/// (PyTorch `F.max_unpool2d(xs, indices, k, output_size=(H, W))`); `size` is
/// `(H, W)`, or `None` for PyTorch's default `(h * k, w * k)`. As in PyTorch a
/// given size must lie strictly within `k` of the default (so an odd input's pool
/// unpools back to the odd size), and every index must fall inside the plane.
///
/// `indices` are the plane indices of [`max_pool2d_with_indices`] (`u32`, or
/// PyTorch's `i64`). Should two values share an index, one of them is kept, as
/// PyTorch's assignment does. The gradient of `xs` is the output gradient read at
/// the indices.
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
    let (oh, ow) = unpool_size((h, w), k, size)?;
    let flat_idx = plane_indices(indices, oh * ow)?.reshape((n, c, h * w))?;
    let inverse = inverse_indices(&flat_idx, h * w, oh * ow, xs.device())?;
    // (N, C, h*w) plus one zero -> (N, C, h*w + 1), read at (N, C, H*W) -> (N, C, H, W)
    xs.reshape((n, c, h * w))?
        .pad_with_zeros(D::Minus1, 0, 1)?
        .gather(&inverse, D::Minus1)?
        .reshape((n, c, oh, ow))
}

/// The output `(H, W)` of unpooling an `(h, w)` map by `k`: `size`, checked as
/// PyTorch does (`h k - k < H < h k + k`), or `(h k, w k)`.
fn unpool_size(
    (h, w): (usize, usize),
    k: usize,
    size: Option<(usize, usize)>,
) -> Result<(usize, usize)> {
    if k == 0 {
        bail!("max_unpool2d: kernel size must be at least 1, got 0");
    }
    let (oh, ow) = size.unwrap_or((h * k, w * k));
    let near = |out: usize, inp: usize| out + k > inp * k && out < inp * k + k;
    if !(near(oh, h) && near(ow, w)) {
        bail!(
            "max_unpool2d: output size {oh}x{ow} is not within {k} of {}x{}",
            h * k,
            w * k
        );
    }
    if u32::try_from(oh * ow).is_err() {
        bail!("max_unpool2d: a {oh}x{ow} plane has more elements than u32 indices reach");
    }
    Ok((oh, ow))
}

/// `indices` as `u32`, after checking their type and that all lie in `0..plane`.
fn plane_indices(indices: &Tensor, plane: usize) -> Result<Tensor> {
    let (lowest, highest) = match indices.dtype() {
        DType::U32 => (0.0, indices.max_all()?.to_scalar::<u32>()? as f64),
        DType::I64 => (
            indices.min_all()?.to_scalar::<i64>()? as f64,
            indices.max_all()?.to_scalar::<i64>()? as f64,
        ),
        dtype => bail!("max_unpool2d: indices must be u32 or i64, got {dtype:?}"),
    };
    if lowest < 0.0 || highest >= plane as f64 {
        bail!("max_unpool2d: indices run from {lowest} to {highest}, outside a plane of {plane} elements");
    }
    indices.to_dtype(DType::U32)
}

/// For every output position `q` of each plane, the input position whose index is
/// `q`, or `h*w` (the appended zero) where none is.
///
/// # Shapes
/// `(N, C, h*w)` -> `(N, C, H*W)` (u32)
fn inverse_indices(flat_idx: &Tensor, len: usize, plane: usize, dev: &Device) -> Result<Tensor> {
    let (n, c, _) = flat_idx.dims3()?;
    let positions = Tensor::arange(0u32, len as u32, dev)?
        .reshape((1, 1, len))?
        .broadcast_as((n, c, len))?
        .contiguous()?;
    Tensor::full(len as u32, (n, c, plane), dev)?.scatter(flat_idx, &positions, D::Minus1)
}
