//! One Adam / AdamW update of a variable as three in-place CPU passes (first moment,
//! second moment, parameter), where candle's ops make about a dozen new tensors per
//! variable per step. The arithmetic is `common::optim::Adam`'s, in f64 for every dtype.

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

/// Applies `update(dst, a, b)` element-wise in parallel, on f32 or f64 contiguous storages.
fn zip3(
    op: &str,
    (dst, dst_l): (&mut CpuStorage, &Layout),
    (a, a_l): (&CpuStorage, &Layout),
    (b, b_l): (&CpuStorage, &Layout),
    update: impl Fn(f64, f64, f64) -> f64 + Sync,
) -> candle::Result<()> {
    fn run<T: WithDType>(
        op: &str,
        (dst, dst_l): (&mut [T], &Layout),
        (a, a_l): (&CpuStorage, &Layout),
        (b, b_l): (&CpuStorage, &Layout),
        update: &(impl Fn(f64, f64, f64) -> f64 + Sync),
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
                    *d = T::from_f64(update(d.to_f64(), x.to_f64(), y.to_f64()));
                }
            });
        Ok(())
    }
    match dst {
        CpuStorage::F32(data) => run(op, (data, dst_l), (a, a_l), (b, b_l), &update),
        CpuStorage::F64(data) => run(op, (data, dst_l), (a, a_l), (b, b_l), &update),
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
        let AdamStep {
            beta1,
            beta2,
            coupled_decay,
            ..
        } = self.step;
        let second = self.second;
        zip3(
            self.name(),
            (moment, moment_l),
            (g, g_l),
            (p, p_l),
            |x, g, p| {
                let g = g + coupled_decay * p;
                if second {
                    beta2 * x + (1.0 - beta2) * g * g
                } else {
                    x + (1.0 - beta1) * (g - x)
                }
            },
        )
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
        let s = self.0;
        zip3(self.name(), (p, p_l), (m, m_l), (v, v_l), |p, m, v| {
            s.param_scale * p - s.step_size * m / (v.sqrt() / s.bias_correction2_sqrt + s.eps)
        })
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
