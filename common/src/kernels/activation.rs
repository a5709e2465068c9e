//! ReLU as a CPU custom op: one parallel pass forward and one backward, where candle's own
//! ReLU backward builds four tensors (zeros, a comparison, a cast and a product).

use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::storage::{run1, run2};

/// Elements per parallel chunk of the element-wise passes.
const CHUNK: usize = 1 << 14;

/// `y = max(0, x)`, NaN kept (as PyTorch).
pub(crate) struct Relu;

/// `dx = dy` where the ReLU output `y > 0`, else 0: `(dy, y) -> dx`.
struct ReluGrad;

/// `max(0, v)` that keeps NaN (as PyTorch): `v <= 0` is false for NaN.
pub(crate) fn relu_value<T: WithDType>(v: T) -> T {
    let zero = T::from_f64(0.0);
    if v <= zero {
        zero
    } else {
        v
    }
}

fn relu<T: WithDType>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(ys, xs)| {
            for (y, &x) in ys.iter_mut().zip(xs) {
                *y = relu_value(x);
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
        let out = run1(self.name(), (s, l, l.shape()), relu, relu)?;
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
        // Gradient and output must have one shape; run2 checks both against the gradient's.
        let shape = l1.shape().clone();
        let out = run2(
            self.name(),
            (s1, l1, shape.clone()),
            (s2, l2, shape),
            |dy, y| Ok(relu_grad(dy, y)),
            |dy, y| Ok(relu_grad(dy, y)),
        )?;
        Ok((out, l1.shape().clone()))
    }
}
