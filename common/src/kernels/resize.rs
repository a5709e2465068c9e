//! Bilinear resizing (PyTorch `align_corners=False`) as a separable CPU pass, with its
//! adjoint as the gradient.
//!
//! Each output pixel mixes at most two input columns and then two rows, with the
//! coefficients of [`crate::nn::linear_taps`] (the same that build the interpolation
//! matrices of `nn::resize_bilinear`'s other path): `O(N C h w)` work instead of the
//! dense matrix products' `O(N C (H W w + H h w))`. The gradient is the adjoint pass
//! (scatter-add of the same coefficients), a custom op whose own gradient is the forward
//! resize again, so second-order gradients work too.

use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::storage::run1;
use crate::nn::{linear_taps, LinearTap};

/// Sizes of one resize `x (n, c, h_in, w_in) -> y (n, c, h, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResizeGeom {
    pub n: usize,
    pub c: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub h: usize,
    pub w: usize,
}

impl ResizeGeom {
    fn x_shape(&self) -> Shape {
        Shape::from((self.n, self.c, self.h_in, self.w_in))
    }
    fn y_shape(&self) -> Shape {
        Shape::from((self.n, self.c, self.h, self.w))
    }
}

/// One output coordinate's two input neighbours and weights, in the kernel's dtype.
#[derive(Clone, Copy)]
struct Tap<T> {
    i0: usize,
    i1: usize,
    w0: T,
    w1: T,
}

fn taps<T: WithDType>(in_size: usize, out_size: usize) -> Vec<Tap<T>> {
    linear_taps(in_size, out_size)
        .into_iter()
        .map(|LinearTap { i0, i1, lambda }| Tap {
            i0,
            i1,
            w0: T::from_f64(1.0 - lambda),
            w1: T::from_f64(lambda),
        })
        .collect()
}

/// `y (n, c, h, w)` from `x (n, c, h_in, w_in)`: along the width first (into `(h_in, w)`),
/// then along the height, one `(h_in, w_in)` plane per rayon task.
fn resize<T: WithDType>(x: &[T], g: &ResizeGeom) -> Vec<T> {
    let (tw, th) = (taps::<T>(g.w_in, g.w), taps::<T>(g.h_in, g.h));
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; g.n * g.c * g.h * g.w];
    y.par_chunks_mut(g.h * g.w)
        .zip(x.par_chunks(g.h_in * g.w_in))
        .for_each_init(Vec::new, |rows, (y, x)| {
            // (h_in, w_in) -> (h_in, w)
            rows.clear();
            rows.resize(g.h_in * g.w, zero);
            for (src, dst) in x.chunks(g.w_in).zip(rows.chunks_mut(g.w)) {
                for (d, t) in dst.iter_mut().zip(&tw) {
                    *d = src[t.i0] * t.w0 + src[t.i1] * t.w1;
                }
            }
            // (h_in, w) -> (h, w)
            for (dst, t) in y.chunks_mut(g.w).zip(&th) {
                let (a, b) = (&rows[t.i0 * g.w..][..g.w], &rows[t.i1 * g.w..][..g.w]);
                for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                    *d = a * t.w0 + b * t.w1;
                }
            }
        });
    y
}

/// The adjoint of [`resize`]: `dx (n, c, h_in, w_in)` from `gy (n, c, h, w)`, each output
/// gradient added back to the input pixels it was mixed from, with the same weights.
fn resize_adjoint<T: WithDType>(gy: &[T], g: &ResizeGeom) -> Vec<T> {
    let (tw, th) = (taps::<T>(g.w_in, g.w), taps::<T>(g.h_in, g.h));
    let zero = T::from_f64(0.0);
    let mut dx = vec![zero; g.n * g.c * g.h_in * g.w_in];
    dx.par_chunks_mut(g.h_in * g.w_in)
        .zip(gy.par_chunks(g.h * g.w))
        .for_each_init(Vec::new, |rows, (dx, gy)| {
            // (h, w) -> (h_in, w): the height pass's adjoint.
            rows.clear();
            rows.resize(g.h_in * g.w, zero);
            for (src, t) in gy.chunks(g.w).zip(&th) {
                for (j, &v) in src.iter().enumerate() {
                    rows[t.i0 * g.w + j] += v * t.w0;
                    rows[t.i1 * g.w + j] += v * t.w1;
                }
            }
            // (h_in, w) -> (h_in, w_in): the width pass's adjoint.
            for (src, dst) in rows.chunks(g.w).zip(dx.chunks_mut(g.w_in)) {
                for (&v, t) in src.iter().zip(&tw) {
                    dst[t.i0] += v * t.w0;
                    dst[t.i1] += v * t.w1;
                }
            }
        });
    dx
}

/// The forward resize as a custom op; its gradient is [`ResizeAdjoint`].
pub(crate) struct Resize(pub ResizeGeom);

/// The adjoint resize `(n, c, h, w) -> (n, c, h_in, w_in)`; its gradient is [`Resize`].
struct ResizeAdjoint(ResizeGeom);

impl CustomOp1 for Resize {
    fn name(&self) -> &'static str {
        "segkit-resize-bilinear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = run1(
            self.name(),
            (s, l, &g.x_shape()),
            |x| resize(x, g),
            |x| resize(x, g),
        )?;
        Ok((out, g.y_shape()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, gy: &Tensor) -> candle::Result<Option<Tensor>> {
        gy.contiguous()?.apply_op1(ResizeAdjoint(self.0)).map(Some)
    }
}

impl CustomOp1 for ResizeAdjoint {
    fn name(&self) -> &'static str {
        "segkit-resize-bilinear-adjoint"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let out = run1(
            self.name(),
            (s, l, &g.y_shape()),
            |gy| resize_adjoint(gy, g),
            |gy| resize_adjoint(gy, g),
        )?;
        Ok((out, g.x_shape()))
    }

    fn bwd(&self, _gy: &Tensor, _dx: &Tensor, gdx: &Tensor) -> candle::Result<Option<Tensor>> {
        // The adjoint is linear: its own adjoint is the forward resize.
        gdx.contiguous()?.apply_op1(Resize(self.0)).map(Some)
    }
}
