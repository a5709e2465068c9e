//! Max pooling k x k, stride k, as a candle custom op that saves its argmax, so the
//! backward puts the whole gradient on the first maximum of each window (as PyTorch;
//! candle 0.11's own `max_pool2d` backward wrongly scales it by 1/k^2).

use std::sync::{Arc, OnceLock};

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Max pooling of `(n, c, h, w)` into `(n, c, h / k, w / k)` (trailing rows and columns
/// that do not fill a window are dropped, as PyTorch's floor mode).
pub(crate) struct MaxPool {
    k: usize,
    /// Flat index into the input of the maximum of each output element, set by `cpu_fwd`.
    argmax: Arc<OnceLock<Vec<u32>>>,
}

impl MaxPool {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            argmax: Arc::new(OnceLock::new()),
        }
    }
}

/// Output `(planes, oh, ow)` and the flat input index of each maximum.
fn max_pool<T: WithDType>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
) -> (Vec<T>, Vec<u32>) {
    let (oh, ow) = (h / k, w / k);
    let mut out = vec![T::from_f64(0.0); planes * oh * ow];
    let mut argmax = vec![0u32; planes * oh * ow];
    if oh * ow == 0 {
        return (out, argmax);
    }
    out.par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(p, (out_plane, arg_plane))| {
            let base = p * h * w;
            let plane = &x[base..base + h * w];
            if k == 2 {
                return max_pool_2x2(plane, w, ow, base, (out_plane, arg_plane));
            }
            for i in 0..oh {
                for j in 0..ow {
                    let mut best_idx = i * k * w + j * k;
                    let mut best = plane[best_idx];
                    for di in 0..k {
                        let row = (i * k + di) * w + j * k;
                        for (dj, &v) in plane[row..row + k].iter().enumerate() {
                            // `v != v` is NaN: like PyTorch, a NaN wins and propagates.
                            #[allow(clippy::eq_op)]
                            let is_nan = v != v;
                            if v > best || is_nan {
                                best = v;
                                best_idx = row + dj;
                            }
                        }
                    }
                    out_plane[i * ow + j] = best;
                    arg_plane[i * ow + j] = (base + best_idx) as u32;
                }
            }
        });
    (out, argmax)
}

/// The common 2x2 case of [`max_pool`] for one plane, written out so that it runs as a
/// straight pass over pairs of rows: `out (oh, ow)`, `arg (oh, ow)` from `plane (h, w)`.
fn max_pool_2x2<T: WithDType>(
    plane: &[T],
    w: usize,
    ow: usize,
    base: usize,
    (out, arg): (&mut [T], &mut [u32]),
) {
    for (i, (out_row, arg_row)) in out.chunks_mut(ow).zip(arg.chunks_mut(ow)).enumerate() {
        let top = &plane[2 * i * w..2 * i * w + 2 * ow];
        let bottom = &plane[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
        let (top_idx, bottom_idx) = (base + 2 * i * w, base + (2 * i + 1) * w);
        for (j, (o, a)) in out_row.iter_mut().zip(arg_row.iter_mut()).enumerate() {
            // Candidates in window order; a later one wins only when strictly greater or
            // NaN (`v != v`), so ties keep the first maximum and NaN propagates, as PyTorch.
            let candidates = [
                (top[2 * j], top_idx + 2 * j),
                (top[2 * j + 1], top_idx + 2 * j + 1),
                (bottom[2 * j], bottom_idx + 2 * j),
                (bottom[2 * j + 1], bottom_idx + 2 * j + 1),
            ];
            let (mut best, mut best_idx) = candidates[0];
            for &(v, idx) in &candidates[1..] {
                #[allow(clippy::eq_op)]
                let is_nan = v != v;
                if v > best || is_nan {
                    best = v;
                    best_idx = idx;
                }
            }
            *o = best;
            *a = best_idx as u32;
        }
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "segkit-max-pool2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (start, end) = match layout.contiguous_offsets() {
            Some(offsets) => offsets,
            None => candle::bail!("{}: input must be contiguous", self.name()),
        };
        if n * c * h * w > u32::MAX as usize {
            candle::bail!(
                "{}: input of {} elements is too big for u32 indices",
                self.name(),
                n * c * h * w
            )
        }
        let (out, argmax) = match storage {
            CpuStorage::F32(data) => {
                let (out, argmax) = max_pool(&data[start..end], n * c, h, w, self.k);
                (CpuStorage::F32(out), argmax)
            }
            CpuStorage::F64(data) => {
                let (out, argmax) = max_pool(&data[start..end], n * c, h, w, self.k);
                (CpuStorage::F64(out), argmax)
            }
            other => candle::bail!("{}: needs f32 or f64, got {:?}", self.name(), other.dtype()),
        };
        if self.argmax.set(argmax).is_err() {
            candle::bail!("{}: an op value must run forward only once", self.name())
        }
        Ok((out, Shape::from((n, c, h / self.k, w / self.k))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let Some(argmax) = self.argmax.get() else {
            candle::bail!("{}: backward before forward", self.name())
        };
        // Scatter each output gradient onto its argmax: (n*c*oh*ow) -> (n*c*h*w). Built from
        // candle's scatter_add, so the gradient is itself differentiable (through gather).
        let idx = Tensor::from_slice(argmax, argmax.len(), grad.device())?;
        let dx = Tensor::zeros(x.elem_count(), grad.dtype(), grad.device())?
            .scatter_add(&idx, &grad.flatten_all()?, 0)?
            .reshape(x.shape())?;
        Ok(Some(dx))
    }
}
