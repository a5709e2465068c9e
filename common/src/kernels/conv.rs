//! im2col + gemm convolution kernels for the CPU, wrapped as candle custom ops.
//!
//! One geometry ([`ConvGeom`]) describes a convolution from the forward conv's point of
//! view: `x (N, C_in, H, W) * w (C_out, C_in, KH, KW) -> y (N, C_out, OH, OW)`. Three
//! kernels cover everything, each a candle custom op whose backward is built from the
//! other two (so the gradients are themselves differentiable):
//!
//! - [`ConvFwd`]       `(x, w) -> y`: im2col of a tile of output rows, then `W @ col`;
//! - [`ConvBwdInput`]  `(gy, w) -> dx`: `W^T @ gy` tile by tile, then col2im (this is also
//!   the transposed convolution);
//! - [`ConvBwdWeight`] `(x, gy) -> dw`: `dw^T = sum col(x_n) @ gy_n^T`, with `gy_n`
//!   transposed tile by tile so that gemm reads both operands row by row (about 1.8x
//!   faster than `gy_n @ col(x_n)^T`, which makes gemm gather a transposed operand).
//!
//! The im2col buffer covers a tile of output rows of one image and holds at most
//! [`TILE_ELEMS`] elements (or one output row), so memory stays bounded for big inputs.
//! 1x1 stride-1 unpadded convolutions use the input directly, without im2col. The forward
//! and weight-gradient kernels run their (image, tile) pairs as independent rayon tasks,
//! each with a single-threaded gemm, cutting images into enough tiles that a small batch
//! still keeps every thread busy; the input gradient, whose tiles overlap in `dx`, runs
//! images in parallel when the batch divides over the threads and otherwise lets gemm
//! use the threads.

use std::cell::RefCell;

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

use super::bias::ChannelSums;
use super::storage::{run2, slice};

/// Upper bound on the elements of one im2col tile buffer (1 MiB of f32: it stays in a
/// core's L2 cache between im2col and gemm, measured 7-15% faster than 4 MiB).
pub(crate) const TILE_ELEMS: usize = 1 << 18;

/// Geometry of one convolution, seen from the forward conv
/// `x (n, c_in, h, w) * w (c_out, c_in, kh, kw) -> y (n, c_out, oh, ow)`.
///
/// `oh`/`ow` are explicit (not derived) so a transposed convolution with output padding,
/// whose "input" is larger than the conv would need, uses the same kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl ConvGeom {
    /// Rows of the im2col matrix: `c_in * kh * kw`.
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn x_image(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn y_image(&self) -> usize {
        self.c_out * self.oh * self.ow
    }
    fn x_shape(&self) -> Shape {
        Shape::from((self.n, self.c_in, self.h, self.w))
    }
    fn y_shape(&self) -> Shape {
        Shape::from((self.n, self.c_out, self.oh, self.ow))
    }
    fn w_shape(&self) -> Shape {
        Shape::from((self.c_out, self.c_in, self.kh, self.kw))
    }
    /// A 1x1 stride-1 unpadded conv: the input image already is its im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == 1
            && self.padding == 0
            && self.oh == self.h
            && self.ow == self.w
    }
    /// Output rows per im2col tile: as many as fit in [`TILE_ELEMS`], at least one.
    fn rows_per_tile(&self) -> usize {
        (TILE_ELEMS / (self.k() * self.ow).max(1)).clamp(1, self.oh.max(1))
    }
    /// Parallelise over the batch (and run gemm single-threaded) when the images divide
    /// evenly over the threads or are many; otherwise let gemm use the threads.
    fn batch_parallel(&self) -> bool {
        let threads = rayon::current_num_threads();
        threads > 1 && (self.n % threads == 0 || self.n >= 4 * threads)
    }
    /// For a stride-1 conv with a square window whose input size is the one its output
    /// implies, the input gradient is itself a forward conv: of `gy` with the
    /// [`flip_kernel`] and padding `dilation (k - 1) - padding`. That runs as fast as
    /// the forward and in parallel tiles, with no col2im; this returns its geometry.
    /// Left to col2im: strides above 1, output padding, and fewer than 8 input channels
    /// (a gemm with so few rows, like the gradient of an RGB image, is slow).
    fn input_grad_as_conv(&self) -> Option<ConvGeom> {
        let span = self.dilation * (self.kh - 1);
        let fits = self.stride == 1
            && self.kh == self.kw
            && self.padding <= span
            && self.c_in >= 8
            && !self.is_pointwise()
            && self.h + 2 * self.padding == self.oh + span
            && self.w + 2 * self.padding == self.ow + span;
        // `then`, not `then_some`: the padding is only defined when the window fits.
        fits.then(|| ConvGeom {
            c_in: self.c_out,
            h: self.oh,
            w: self.ow,
            c_out: self.c_in,
            oh: self.h,
            ow: self.w,
            padding: span - self.padding,
            ..*self
        })
    }
    /// Splits the output into (image, row tile) tasks: tiles fit in [`TILE_ELEMS`], and
    /// when the images do not divide evenly over the threads each image is cut into
    /// enough tiles for about two tasks per thread.
    fn tasks(&self) -> Tasks {
        let threads = rayon::current_num_threads().max(1);
        let min_tiles = if self.n % threads == 0 {
            1
        } else {
            (2 * threads).div_ceil(self.n.max(1))
        };
        let rows = self.rows_per_tile().min(self.oh.div_ceil(min_tiles).max(1));
        let tiles = self.oh.div_ceil(rows);
        Tasks {
            rows,
            tiles,
            count: self.n * tiles,
        }
    }
}

/// (image, row tile) tasks of a kernel; task `t` is image `t / tiles`, output rows
/// `rows * (t % tiles)..` up to `rows` of them.
#[derive(Debug, Clone, Copy)]
struct Tasks {
    rows: usize,
    tiles: usize,
    count: usize,
}

impl Tasks {
    /// `(image, first output row, end output row)` of task `t`.
    fn get(&self, t: usize, oh: usize) -> (usize, usize, usize) {
        let oh0 = (t % self.tiles) * self.rows;
        (t / self.tiles, oh0, (oh0 + self.rows).min(oh))
    }
}

/// Output positions `o` in `0..out` whose input `o * stride + offset - padding` lies in
/// `0..size`, as a half-open range.
fn valid_range(
    out: usize,
    size: usize,
    offset: usize,
    padding: usize,
    stride: usize,
) -> (usize, usize) {
    let lo = if padding > offset {
        (padding - offset).div_ceil(stride)
    } else {
        0
    };
    let limit = size + padding;
    let hi = if limit > offset {
        (limit - offset).div_ceil(stride)
    } else {
        0
    };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// Copies the receptive fields of output rows `oh0..oh1` of one image `x (c_in, h, w)`
/// into `col (c_in*kh*kw, (oh1-oh0)*ow)`, zeros where the window hangs over the padding.
fn im2col_tile<T: WithDType>(x: &[T], g: &ConvGeom, oh0: usize, oh1: usize, col: &mut [T]) {
    let lt = (oh1 - oh0) * g.ow;
    let (s, d, p) = (g.stride, g.dilation, g.padding);
    let zero = T::from_f64(0.0);
    for ci in 0..g.c_in {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            let (oh_lo, oh_hi) = valid_range(g.oh, g.h, ki * d, p, s);
            for kj in 0..g.kw {
                let r = (ci * g.kh + ki) * g.kw + kj;
                let row = &mut col[r * lt..(r + 1) * lt];
                let (ow_lo, ow_hi) = valid_range(g.ow, g.w, kj * d, p, s);
                for oh in oh0..oh1 {
                    let dst = &mut row[(oh - oh0) * g.ow..(oh - oh0 + 1) * g.ow];
                    if oh < oh_lo || oh >= oh_hi || ow_lo == ow_hi {
                        dst.fill(zero);
                        continue;
                    }
                    let ih = oh * s + ki * d - p;
                    let src = &plane[ih * g.w..(ih + 1) * g.w];
                    dst[..ow_lo].fill(zero);
                    dst[ow_hi..].fill(zero);
                    let iw0 = ow_lo * s + kj * d - p;
                    let dst = &mut dst[ow_lo..ow_hi];
                    if s == 1 {
                        dst.copy_from_slice(&src[iw0..iw0 + dst.len()]);
                    } else {
                        for (o, v) in dst.iter_mut().enumerate() {
                            *v = src[iw0 + o * s];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_tile`]: adds `col (c_in*kh*kw, (oh1-oh0)*ow)` back into the
/// image `dx (c_in, h, w)` at the positions it was read from.
fn col2im_tile<T: WithDType>(col: &[T], g: &ConvGeom, oh0: usize, oh1: usize, dx: &mut [T]) {
    let lt = (oh1 - oh0) * g.ow;
    let (s, d, p) = (g.stride, g.dilation, g.padding);
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            let (oh_lo, oh_hi) = valid_range(g.oh, g.h, ki * d, p, s);
            for kj in 0..g.kw {
                let r = (ci * g.kh + ki) * g.kw + kj;
                let row = &col[r * lt..(r + 1) * lt];
                let (ow_lo, ow_hi) = valid_range(g.ow, g.w, kj * d, p, s);
                if ow_lo == ow_hi {
                    continue;
                }
                for oh in oh0.max(oh_lo)..oh1.min(oh_hi) {
                    let src = &row[(oh - oh0) * g.ow + ow_lo..(oh - oh0) * g.ow + ow_hi];
                    let ih = oh * s + ki * d - p;
                    let iw0 = ow_lo * s + kj * d - p;
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    if s == 1 {
                        for (a, &b) in dst[iw0..iw0 + src.len()].iter_mut().zip(src) {
                            *a += b;
                        }
                    } else {
                        for (o, &b) in src.iter().enumerate() {
                            dst[iw0 + o * s] += b;
                        }
                    }
                }
            }
        }
    }
}

/// A strided view of a matrix inside a slice: element `(i, j)` is `data[i * rs + j * cs]`.
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

/// An output buffer that several rayon tasks write at once, each to its own disjoint
/// region (the callers below say why their regions are disjoint).
#[derive(Clone, Copy)]
struct SharedOut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the pointer is only used to write regions that no other task touches, while
// the `&mut [T]` it came from is borrowed by the parallel loop.
unsafe impl<T: Send> Send for SharedOut<'_, T> {}
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    fn new(out: &'a mut [T]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _borrow: std::marker::PhantomData,
        }
    }
    /// The buffer from element `offset` on.
    ///
    /// # Safety
    /// No other task may read or write the elements this task writes through the result.
    unsafe fn from(self, offset: usize) -> &'a mut [T] {
        assert!(offset <= self.len, "kernels: output offset out of range");
        // SAFETY: in bounds (checked); exclusivity of the written region is the caller's.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), self.len - offset) }
    }
}

/// `dst (m, n) = [dst +] lhs (m, k) @ rhs (k, n)` with gemm; `dst` is row-major with row
/// stride `dst_rs`. Checks that every strided access stays inside its slice.
fn matmul<T: WithDType>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    parallelism: Parallelism,
) -> candle::Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::from_f64(0.0));
            }
        }
        return Ok(());
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if last(m, n, dst_rs, 1) >= dst.len()
        || last(m, k, lhs.rs, lhs.cs) >= lhs.data.len()
        || last(k, n, rhs.rs, rhs.cs) >= rhs.data.len()
    {
        candle::bail!("kernels: internal gemm bounds check failed for ({m}, {k}) @ ({k}, {n})")
    }
    // SAFETY: the bounds were checked above; T is f32 or f64 (the only types the ops
    // dispatch to), which gemm supports; dst does not alias lhs or rhs (&mut vs &).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            parallelism,
        )
    }
    Ok(())
}

fn gemm_threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        t => Parallelism::Rayon(t),
    }
}

thread_local! {
    /// Per-thread scratch buffers (im2col tiles, transposed gradient tiles), kept between
    /// calls so that each tile does not allocate and zero megabytes afresh. Each holds the
    /// largest tile its thread has needed (a few MiB: tiles are bounded by [`TILE_ELEMS`]).
    static SCRATCH: [RefCell<Vec<u64>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// Runs `f` on `len` elements of this thread's scratch buffer number `slot` (0 or 1),
/// whose contents are left over from earlier calls. A slot already in use further up this
/// thread's stack (a rayon worker may run another task while it waits) gets a fresh buffer.
fn with_scratch<T: WithDType, R>(slot: usize, len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    SCRATCH.with(|slots| match slots[slot].try_borrow_mut() {
        Ok(mut buf) => {
            let words = (len * std::mem::size_of::<T>()).div_ceil(8);
            if buf.len() < words {
                buf.resize(words, 0);
            }
            // SAFETY: the buffer holds at least len * size_of::<T>() initialised bytes,
            // aligned to 8 >= align_of::<T>() (candle's dtypes are plain numbers of at most
            // 8 bytes for which every bit pattern is valid), and is borrowed mutably here.
            let data = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) };
            f(data)
        }
        Err(_) => f(&mut vec![T::from_f64(0.0); len]),
    })
}

/// Forward conv of output rows `oh0..oh1` of one image:
/// `y_i[:, tile] (c_out, lt) = [bias +] W (c_out, K) @ col(x_i)[:, tile] (K, lt)`, written
/// into `y`, the image's output from its first element (row stride `oh*ow`). The bias is
/// written into the tile first and gemm adds onto it, so it costs no extra pass.
fn fwd_tile<T: WithDType>(
    (x, w, bias): (&[T], &[T], Option<&[T]>),
    g: &ConvGeom,
    (oh0, oh1): (usize, usize),
    y: &mut [T],
    par: Parallelism,
) -> candle::Result<()> {
    let (k, l, lt) = (g.k(), g.oh * g.ow, (oh1 - oh0) * g.ow);
    let lhs = Mat {
        data: w,
        rs: k,
        cs: 1,
    };
    let y = &mut y[oh0 * g.ow..];
    if let Some(bias) = bias {
        for (co, &b) in bias.iter().enumerate() {
            y[co * l..co * l + lt].fill(b);
        }
    }
    let accumulate = bias.is_some();
    if g.is_pointwise() {
        let rhs = Mat {
            data: &x[oh0 * g.ow..],
            rs: l,
            cs: 1,
        };
        return matmul((g.c_out, lt, k), y, l, accumulate, lhs, rhs, par);
    }
    with_scratch(0, k * lt, |col: &mut [T]| {
        im2col_tile(x, g, oh0, oh1, col);
        let rhs = Mat {
            data: col,
            rs: lt,
            cs: 1,
        };
        matmul((g.c_out, lt, k), y, l, accumulate, lhs, rhs, par)
    })
}

/// Input gradient of one image: `dx_i = col2im(W^T (K, c_out) @ gy_i (c_out, oh*ow))`.
fn bwd_input_image<T: WithDType>(
    gy: &[T],
    w: &[T],
    g: &ConvGeom,
    dx: &mut [T],
    par: Parallelism,
) -> candle::Result<()> {
    let (k, l) = (g.k(), g.oh * g.ow);
    // W^T: element (r, co) of the transpose sits at co * K + r.
    let wt = || Mat {
        data: w,
        rs: 1,
        cs: k,
    };
    if g.is_pointwise() {
        let rhs = Mat {
            data: gy,
            rs: l,
            cs: 1,
        };
        return matmul((k, l, g.c_out), dx, l, false, wt(), rhs, par);
    }
    dx.fill(T::from_f64(0.0));
    let rows = g.rows_per_tile();
    with_scratch(0, k * rows * g.ow, |col: &mut [T]| {
        for oh0 in (0..g.oh).step_by(rows) {
            let oh1 = (oh0 + rows).min(g.oh);
            let lt = (oh1 - oh0) * g.ow;
            let rhs = Mat {
                data: &gy[oh0 * g.ow..],
                rs: l,
                cs: 1,
            };
            matmul(
                (k, lt, g.c_out),
                &mut col[..k * lt],
                lt,
                false,
                wt(),
                rhs,
                par,
            )?;
            col2im_tile(&col[..k * lt], g, oh0, oh1, dx);
        }
        Ok(())
    })
}

/// Weight gradient of output rows `oh0..oh1` of one image, added into the transposed
/// gradient `dw_t (K, c_out) += col(x_i)[:, tile] (K, lt) @ gy_i[:, tile]^T (lt, c_out)`.
/// `gy_i`'s tile is first transposed into `gy_t` so gemm reads both operands by rows.
fn bwd_weight_tile<T: WithDType>(
    x: &[T],
    gy: &[T],
    g: &ConvGeom,
    (oh0, oh1): (usize, usize),
    dw_t: &mut [T],
) -> candle::Result<()> {
    let (k, l, lt, c_out) = (g.k(), g.oh * g.ow, (oh1 - oh0) * g.ow, g.c_out);
    with_scratch(1, lt * c_out, |gy_t: &mut [T]| {
        for co in 0..c_out {
            let src = &gy[co * l + oh0 * g.ow..co * l + oh0 * g.ow + lt];
            for (p, &v) in src.iter().enumerate() {
                gy_t[p * c_out + co] = v;
            }
        }
        let rhs = Mat {
            data: gy_t,
            rs: c_out,
            cs: 1,
        };
        let (m, n, par) = ((k, c_out, lt), c_out, Parallelism::None);
        if g.is_pointwise() {
            let lhs = Mat {
                data: &x[oh0 * g.ow..],
                rs: l,
                cs: 1,
            };
            return matmul(m, dw_t, n, true, lhs, rhs, par);
        }
        with_scratch(0, k * lt, |col: &mut [T]| {
            im2col_tile(x, g, oh0, oh1, col);
            let lhs = Mat {
                data: col,
                rs: lt,
                cs: 1,
            };
            matmul(m, dw_t, n, true, lhs, rhs, par)
        })
    })
}

/// `y (n, c_out, oh, ow)` of the forward conv.
pub(crate) fn conv_fwd<T: WithDType>(x: &[T], w: &[T], g: &ConvGeom) -> candle::Result<Vec<T>> {
    conv_fwd_bias(x, w, None, g)
}

/// `y (n, c_out, oh, ow)` of the forward conv plus `bias (c_out)` when given.
fn conv_fwd_bias<T: WithDType>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> candle::Result<Vec<T>> {
    let mut y = vec![T::from_f64(0.0); g.n * g.y_image()];
    if g.n == 0 || g.y_image() == 0 {
        return Ok(y);
    }
    let tasks = g.tasks();
    let x_image = g.x_image().max(1);
    if rayon::current_num_threads() > 1 && tasks.count > 1 {
        let out = SharedOut::new(&mut y);
        (0..tasks.count).into_par_iter().try_for_each(|t| {
            let (i, oh0, oh1) = tasks.get(t, g.oh);
            // SAFETY: task t writes only columns oh0*ow..oh1*ow of the c_out rows of
            // image i; no two tasks share an (image, tile) pair.
            let yi = unsafe { out.from(i * g.y_image()) };
            let xi = &x[i * x_image..(i + 1) * x_image];
            fwd_tile((xi, w, bias), g, (oh0, oh1), yi, Parallelism::None)
        })?;
    } else {
        for t in 0..tasks.count {
            let (i, oh0, oh1) = tasks.get(t, g.oh);
            let yi = &mut y[i * g.y_image()..(i + 1) * g.y_image()];
            let xi = &x[i * x_image..(i + 1) * x_image];
            fwd_tile((xi, w, bias), g, (oh0, oh1), yi, gemm_threads())?;
        }
    }
    Ok(y)
}
/// The kernel of [`ConvGeom::input_grad_as_conv`]: `w (c_out, c_in, kh, kw)` with its
/// two channel axes swapped and its window rotated by 180 degrees, `(c_in, c_out, kh, kw)`.
fn flip_kernel<T: WithDType>(w: &[T], g: &ConvGeom) -> Vec<T> {
    let (kh, kw) = (g.kh, g.kw);
    let mut out = vec![T::from_f64(0.0); w.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let src = &w[(co * g.c_in + ci) * kh * kw..][..kh * kw];
            let dst = &mut out[(ci * g.c_out + co) * kh * kw..][..kh * kw];
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
    }
    out
}

/// `dx (n, c_in, h, w)` from `gy (n, c_out, oh, ow)`: the transposed convolution.
pub(crate) fn conv_bwd_input<T: WithDType>(
    gy: &[T],
    w: &[T],
    g: &ConvGeom,
) -> candle::Result<Vec<T>> {
    if g.n == 0 || g.x_image() == 0 || g.y_image() == 0 {
        return Ok(vec![T::from_f64(0.0); g.n * g.x_image()]);
    }
    if let Some(flipped) = g.input_grad_as_conv() {
        return conv_fwd(gy, &flip_kernel(w, g), &flipped);
    }
    let mut dx = vec![T::from_f64(0.0); g.n * g.x_image()];
    if g.batch_parallel() {
        dx.par_chunks_mut(g.x_image())
            .zip(gy.par_chunks(g.y_image()))
            .try_for_each(|(dxi, gyi)| bwd_input_image(gyi, w, g, dxi, Parallelism::None))?;
    } else {
        for (dxi, gyi) in dx.chunks_mut(g.x_image()).zip(gy.chunks(g.y_image())) {
            bwd_input_image(gyi, w, g, dxi, gemm_threads())?;
        }
    }
    Ok(dx)
}

/// `dw (c_out, c_in, kh, kw)` from `x (n, c_in, h, w)` and `gy (n, c_out, oh, ow)`.
pub(crate) fn conv_bwd_weight<T: WithDType>(
    x: &[T],
    gy: &[T],
    g: &ConvGeom,
) -> candle::Result<Vec<T>> {
    let (k, c_out) = (g.k(), g.c_out);
    let zero = T::from_f64(0.0);
    if g.n == 0 || g.y_image() == 0 || g.x_image() == 0 {
        return Ok(vec![zero; c_out * k]);
    }
    let tasks = g.tasks();
    // The tasks are cut into one contiguous group per thread; each group sums into its own
    // dw^T (K, c_out), and the groups' sums are added.
    let groups = rayon::current_num_threads().clamp(1, tasks.count.max(1));
    let partial = (0..groups)
        .into_par_iter()
        .map(|group| {
            let mut dw_t = vec![zero; k * c_out];
            for t in (group * tasks.count / groups)..((group + 1) * tasks.count / groups) {
                let (i, oh0, oh1) = tasks.get(t, g.oh);
                let xi = &x[i * g.x_image()..(i + 1) * g.x_image()];
                let gyi = &gy[i * g.y_image()..(i + 1) * g.y_image()];
                bwd_weight_tile(xi, gyi, g, (oh0, oh1), &mut dw_t)?;
            }
            Ok(dw_t)
        })
        .collect::<candle::Result<Vec<Vec<T>>>>()?;
    let mut parts = partial.into_iter();
    let mut dw_t = parts.next().unwrap_or_else(|| vec![zero; k * c_out]);
    for part in parts {
        for (a, b) in dw_t.iter_mut().zip(part) {
            *a += b;
        }
    }
    // (K, c_out) -> (c_out, K)
    let mut dw = vec![zero; c_out * k];
    for (r, row) in dw_t.chunks(c_out).enumerate() {
        for (co, &v) in row.iter().enumerate() {
            dw[co * k + r] = v;
        }
    }
    Ok(dw)
}

/// The gradient `grad()` for `operand`, or `None` without computing it when no variable
/// feeds `operand` (an input image, a frozen weight): candle drops it anyway.
fn needed(
    operand: &Tensor,
    grad: impl FnOnce() -> candle::Result<Tensor>,
) -> candle::Result<Option<Tensor>> {
    if operand.track_op() {
        grad().map(Some)
    } else {
        Ok(None)
    }
}

/// Forward convolution `(x, w) -> y` as a custom op.
pub(crate) struct ConvFwd(pub ConvGeom);
/// Input gradient / transposed convolution `(gy, w) -> dx` as a custom op.
pub(crate) struct ConvBwdInput(pub ConvGeom);
/// Weight gradient `(x, gy) -> dw` as a custom op.
pub(crate) struct ConvBwdWeight(pub ConvGeom);

impl ConvFwd {
    /// `y = conv(x, w)`; both are made contiguous first.
    pub(crate) fn apply(g: ConvGeom, x: &Tensor, w: &Tensor) -> candle::Result<Tensor> {
        x.contiguous()?.apply_op2(&w.contiguous()?, ConvFwd(g))
    }
}
impl ConvBwdInput {
    /// `dx = conv^T(gy, w)`.
    pub(crate) fn apply(g: ConvGeom, gy: &Tensor, w: &Tensor) -> candle::Result<Tensor> {
        gy.contiguous()?
            .apply_op2(&w.contiguous()?, ConvBwdInput(g))
    }
}
impl ConvBwdWeight {
    /// `dw = sum_n gy_n col(x_n)^T`.
    pub(crate) fn apply(g: ConvGeom, x: &Tensor, gy: &Tensor) -> candle::Result<Tensor> {
        x.contiguous()?
            .apply_op2(&gy.contiguous()?, ConvBwdWeight(g))
    }
}

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "segkit-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = run2(
            self.name(),
            (s1, l1, g.x_shape()),
            (s2, l2, g.w_shape()),
            |x, w| conv_fwd(x, w, g),
            |x, w| conv_fwd(x, w, g),
        )?;
        Ok((out, g.y_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        // Made contiguous once for both kernels (the gradient of a sum is a broadcast).
        let gy = gy.contiguous()?;
        let dx = needed(x, || ConvBwdInput::apply(self.0, &gy, w))?;
        let dw = needed(w, || ConvBwdWeight::apply(self.0, x, &gy))?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvBwdInput {
    fn name(&self) -> &'static str {
        "segkit-conv2d-input-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = run2(
            self.name(),
            (s1, l1, g.y_shape()),
            (s2, l2, g.w_shape()),
            |gy, w| conv_bwd_input(gy, w, g),
            |gy, w| conv_bwd_input(gy, w, g),
        )?;
        Ok((out, g.x_shape()))
    }
    fn bwd(
        &self,
        gy: &Tensor,
        w: &Tensor,
        _dx: &Tensor,
        gdx: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        // dx = col2im(W^T gy) is bilinear: <gdx, dx> = <conv(gdx, W), gy>.
        let gdx = gdx.contiguous()?;
        let d_gy = needed(gy, || ConvFwd::apply(self.0, &gdx, w))?;
        let d_w = needed(w, || ConvBwdWeight::apply(self.0, &gdx, gy))?;
        Ok((d_gy, d_w))
    }
}

impl CustomOp2 for ConvBwdWeight {
    fn name(&self) -> &'static str {
        "segkit-conv2d-weight-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = run2(
            self.name(),
            (s1, l1, g.x_shape()),
            (s2, l2, g.y_shape()),
            |x, gy| conv_bwd_weight(x, gy, g),
            |x, gy| conv_bwd_weight(x, gy, g),
        )?;
        Ok((out, g.w_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gy: &Tensor,
        _dw: &Tensor,
        gdw: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        // dw = sum gy col(x)^T is bilinear: <gdw, dw> = <conv^T(gy, gdw), x> = <conv(x, gdw), gy>.
        let gdw = gdw.contiguous()?;
        let d_x = needed(x, || ConvBwdInput::apply(self.0, gy, &gdw))?;
        let d_gy = needed(gy, || ConvFwd::apply(self.0, x, &gdw))?;
        Ok((d_x, d_gy))
    }
}

/// Forward convolution plus a per-channel bias, `(x, w, b) -> y`, as one custom op.
pub(crate) struct ConvBiasFwd(pub ConvGeom);

impl candle::CustomOp3 for ConvBiasFwd {
    fn name(&self) -> &'static str {
        "segkit-conv2d-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let bias_shape = Shape::from(g.c_out);
        let out = match s3 {
            CpuStorage::F32(_) => {
                let b = slice::<f32>(s3, l3, &bias_shape, self.name(), "bias")?;
                let kernel = |x: &[f32], w: &[f32]| -> candle::Result<Vec<f32>> {
                    conv_fwd_bias(x, w, Some(b), g)
                };
                run2(
                    self.name(),
                    (s1, l1, g.x_shape()),
                    (s2, l2, g.w_shape()),
                    kernel,
                    |_, _| candle::bail!("segkit-conv2d-bias: bias is f32 but input is not"),
                )?
            }
            CpuStorage::F64(_) => {
                let b = slice::<f64>(s3, l3, &bias_shape, self.name(), "bias")?;
                let kernel = |x: &[f64], w: &[f64]| -> candle::Result<Vec<f64>> {
                    conv_fwd_bias(x, w, Some(b), g)
                };
                run2(
                    self.name(),
                    (s1, l1, g.x_shape()),
                    (s2, l2, g.w_shape()),
                    |_, _| candle::bail!("segkit-conv2d-bias: bias is f64 but input is not"),
                    kernel,
                )?
            }
            other => candle::bail!(
                "{}: bias must be f32 or f64, got {:?}",
                self.name(),
                other.dtype()
            ),
        };
        Ok((out, g.y_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let dx = needed(x, || ConvBwdInput::apply(self.0, &gy, w))?;
        let dw = needed(w, || ConvBwdWeight::apply(self.0, x, &gy))?;
        let sums = ChannelSums {
            n: self.0.n,
            c: self.0.c_out,
            hw: self.0.oh * self.0.ow,
        };
        let db = needed(b, || gy.apply_op1_no_bwd(&sums))?;
        Ok((dx, dw, db))
    }
}
