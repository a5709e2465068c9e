//! One Adam / AdamW update of a variable as three in-place CPU passes (first moment,
//! second moment, parameter), where candle's ops make about a dozen new tensors per
//! variable per step. Each element goes through the same operations, in the same order
//! and the tensor's own dtype, as `common::optim`'s candle-op path (an affine op is
//! `x * T(mul) + T(add)`, as candle's), so both paths give the same bits.

use candle::backend::BackendStorage;
use candle::{CpuStorage, InplaceOp3, Layout, Tensor, WithDType};
use rayon::prelude::*;

use super::storage::contiguous;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// The scalars of one step of one variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `sqrt(1 - beta2^t)`.
    pub bias_correction2_sqrt: f64,
    /// Adam's L2 term: the gradient used is `g + coupled_decay * p`.
    pub coupled_decay: f64,
    /// AdamW's decoupled decay: the parameter is first multiplied by this (`1 - lr * wd`).
    pub param_scale: f64,
}

/// A moment, updated on itself reading `(g, p)`, with `g' = g + coupled_decay * p`: the
/// first `m = m + (1 - beta1) (g' - m)`, the second `v = beta2 v + (1 - beta2) g'^2`.
struct Moment {
    step: AdamStep,
    second: bool,
}
/// `p = param_scale p - step_size m / (sqrt(v) / bias_correction2_sqrt + eps)`: on `p`,
/// reading `(m, v)`.
struct ParamUpdate(AdamStep);

/// candle's affine op on one element: `x * T(mul) + T(add)`.
fn affine<T: WithDType>(x: T, mul: f64, add: f64) -> T {
    x * T::from_f64(mul) + T::from_f64(add)
}

/// An element-wise in-place update `dst = f(dst, a, b)` in the tensors' dtype.
trait Update: Sync {
    fn apply<T: WithDType>(&self, dst: T, a: T, b: T) -> T;
}

impl Update for Moment {
    fn apply<T: WithDType>(&self, x: T, g: T, p: T) -> T {
        let s = &self.step;
        let g = if s.coupled_decay != 0.0 {
            g + affine(p, s.coupled_decay, 0.0)
        } else {
            g
        };
        if self.second {
            affine(x, s.beta2, 0.0) + affine(g * g, 1.0 - s.beta2, 0.0)
        } else {
            x + affine(g - x, 1.0 - s.beta1, 0.0)
        }
    }
}

impl Update for ParamUpdate {
    fn apply<T: WithDType>(&self, p: T, m: T, v: T) -> T {
        let s = &self.0;
        let p = if s.param_scale != 1.0 {
            affine(p, s.param_scale, 0.0)
        } else {
            p
        };
        // sqrt in f64 rounded to T is T's correctly rounded sqrt (f64 has > 2 * 24 + 2 bits).
        let root = T::from_f64(v.to_f64().sqrt());
        let denom = affine(affine(root, 1.0 / s.bias_correction2_sqrt, 0.0), 1.0, s.eps);
        p - affine(m / denom, s.step_size, 0.0)
    }
}

/// Applies `update` element-wise in parallel, on f32 or f64 contiguous storages.
fn zip3(
    op: &str,
    (dst, dst_l): (&mut CpuStorage, &Layout),
    (a, a_l): (&CpuStorage, &Layout),
    (b, b_l): (&CpuStorage, &Layout),
    update: &impl Update,
) -> candle::Result<()> {
    fn run<T: WithDType>(
        op: &str,
        (dst, dst_l): (&mut [T], &Layout),
        (a, a_l): (&CpuStorage, &Layout),
        (b, b_l): (&CpuStorage, &Layout),
        update: &impl Update,
    ) -> candle::Result<()> {
        let Some((start, end)) = dst_l.contiguous_offsets() else {
            candle::bail!("{op}: the updated tensor must be contiguous")
        };
        let dst = &mut dst[start..end];
        let a = contiguous::<T>(a, a_l, op, "first operand")?;
        let b = contiguous::<T>(b, b_l, op, "second operand")?;
        if a.len() != dst.len() || b.len() != dst.len() {
            candle::bail!(
                "{op}: operands of {} and {} elements, expected {}",
                a.len(),
                b.len(),
                dst.len()
            )
        }
        dst.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(ds, (as_, bs))| {
                for ((d, &x), &y) in ds.iter_mut().zip(as_).zip(bs) {
                    *d = update.apply(*d, x, y);
                }
            });
        Ok(())
    }
    match dst {
        CpuStorage::F32(data) => run(op, (data, dst_l), (a, a_l), (b, b_l), update),
        CpuStorage::F64(data) => run(op, (data, dst_l), (a, a_l), (b, b_l), update),
        other => candle::bail!("{op}: needs f32 or f64, got {:?}", other.dtype()),
    }
}

impl InplaceOp3 for Moment {
    fn name(&self) -> &'static str {
        if self.second {
            "segkit-adam-v"
        } else {
            "segkit-adam-m"
        }
    }

    fn cpu_fwd(
        &self,
        moment: &mut CpuStorage,
        moment_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
        p: &CpuStorage,
        p_l: &Layout,
    ) -> candle::Result<()> {
        zip3(self.name(), (moment, moment_l), (g, g_l), (p, p_l), self)
    }
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "segkit-adam-p"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        p_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> candle::Result<()> {
        zip3(self.name(), (p, p_l), (m, m_l), (v, v_l), self)
    }
}

/// One step on `param` (updated in place, as `Var::set` would) with its moments `m`, `v`
/// (updated in place) from `grad`. All four must be contiguous CPU tensors of one float
/// dtype and shape, and none may share storage with another.
pub(crate) fn adam_step_in_place(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamStep,
) -> candle::Result<()> {
    for (what, t) in [
        ("gradient", grad),
        ("first moment", m),
        ("second moment", v),
    ] {
        if t.shape() != param.shape() {
            candle::bail!(
                "adam: {what} {:?} for a parameter {:?}",
                t.shape(),
                param.shape()
            )
        }
    }
    let moment = |second| Moment {
        step: *step,
        second,
    };
    m.inplace_op3(grad, param, &moment(false))?;
    v.inplace_op3(grad, param, &moment(true))?;
    param.inplace_op3(m, v, &ParamUpdate(*step))
}
