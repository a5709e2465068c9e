//! ReLU as a CPU custom op: one parallel pass forward and one backward, where candle's own
//! ReLU backward builds four tensors (zeros, a comparison, a cast and a product).

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Elements per parallel chunk of the element-wise passes.
const CHUNK: usize = 1 << 14;

/// `y = max(0, x)`, NaN kept (as PyTorch).
pub(crate) struct Relu;

/// `dx = dy` where the ReLU output `y > 0`, else 0: `(dy, y) -> dx`.
struct ReluGrad;

fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle::bail!("{op}: operands must be contiguous"),
    }
}

fn relu<T: WithDType>(x: &[T]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(ys, xs)| {
            for (y, &x) in ys.iter_mut().zip(xs) {
                // `x <= 0` is false for NaN, which is kept.
                *y = if x <= zero { zero } else { x };
            }
        });
    y
}

fn relu_grad<T: WithDType>(dy: &[T], y: &[T]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut dx = vec![zero; dy.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
        .for_each(|(dxs, (dys, ys))| {
            for ((d, &g), &y) in dxs.iter_mut().zip(dys).zip(ys) {
                *d = if y > zero { g } else { zero };
            }
        });
    dx
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "segkit-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(relu(contiguous::<f32>(s, l, self.name())?)),
            CpuStorage::F64(_) => CpuStorage::F64(relu(contiguous::<f64>(s, l, self.name())?)),
            other => candle::bail!("{}: needs f32 or f64, got {:?}", self.name(), other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle::Result<Option<Tensor>> {
        // First order: the mask itself has no gradient.
        dy.contiguous()?
            .apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)
            .map(Some)
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "segkit-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle::bail!(
                "{}: gradient {:?} and output {:?} differ in shape",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(relu_grad(
                contiguous::<f32>(s1, l1, self.name())?,
                contiguous::<f32>(s2, l2, self.name())?,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(relu_grad(
                contiguous::<f64>(s1, l1, self.name())?,
                contiguous::<f64>(s2, l2, self.name())?,
            )),
            _ => candle::bail!(
                "{}: needs two f32 or two f64 tensors, got {:?} and {:?}",
                self.name(),
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}
