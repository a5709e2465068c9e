//! Training-mode batch normalisation (Ioffe & Szegedy 2015) as one fused CPU custom op:
//! one pass for the per-channel statistics, one for the output, and a fused backward,
//! instead of candle's chain of broadcast ops and strided reductions (which dominated a
//! U-Net training step once the convolutions were fast). A ReLU can be fused in: its
//! forward is a `max` in the output pass and its backward a mask in the gradient pass,
//! which saves the separate ReLU op and candle's four-op ReLU backward.

use std::sync::{Arc, OnceLock};

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::activation::relu_value;
use super::storage::contiguous;

/// Per-channel batch mean and `1 / sqrt(var + eps)` (biased variance), kept in f64.
#[derive(Debug)]
pub(crate) struct Stats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub inv_std: Vec<f64>,
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` over `(N, C, H, W)`, statistics per
/// channel over N, H and W. The statistics are saved for the backward pass.
pub(crate) struct BatchNormFwd {
    pub eps: f64,
    /// Apply `max(0, y)` to the output (and mask the gradient accordingly).
    pub relu: bool,
    pub stats: Arc<OnceLock<Stats>>,
}

/// The input gradient of [`BatchNormFwd`]; the sums `(sum dy * xhat, sum dy)` it computes
/// on the way are the gamma and beta gradients, handed back through `sums`.
struct BatchNormBwd {
    stats: Arc<OnceLock<Stats>>,
    gamma: Vec<f64>,
    /// `Some(beta)` when a ReLU was fused in: the gradient is zeroed where the forward
    /// output, recomputed from `x`, `gamma` and `beta`, was not positive.
    relu_beta: Option<Vec<f64>>,
    sums: OnceLock<(Vec<f64>, Vec<f64>)>,
}

/// Lanes of the f64 accumulators in [`lane_sums`]: independent partial sums that the
/// compiler can keep in one vector register (a single running sum cannot be vectorised).
const LANES: usize = 8;

/// The `K` sums `sum f(a_i, b_i)[k]` over two equally long slices in f64, in one pass,
/// each accumulated in [`LANES`] partial sums.
#[inline(always)]
pub(super) fn lane_sums<T: WithDType, const K: usize>(
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> [f64; K],
) -> [f64; K] {
    let mut acc = [[0f64; LANES]; K];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut tail = [0f64; K];
    for (&x, &y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        for (t, v) in tail.iter_mut().zip(f(x, y)) {
            *t += v;
        }
    }
    for (ac, bc) in a_chunks.zip(b_chunks) {
        for j in 0..LANES {
            let v = f(ac[j], bc[j]);
            for k in 0..K {
                acc[k][j] += v[k];
            }
        }
    }
    std::array::from_fn(|k| acc[k].iter().sum::<f64>() + tail[k])
}

/// Per-channel statistics of `x (n, c, hw)`.
fn stats<T: WithDType>(x: &[T], n: usize, c: usize, hw: usize, eps: f64) -> Stats {
    let m = (n * hw).max(1) as f64;
    let (mean, var): (Vec<f64>, Vec<f64>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|i| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
            let sum: f64 = planes
                .clone()
                .map(|p| lane_sums(p, p, |v, _| [v.to_f64()])[0])
                .sum();
            let mean = sum / m;
            let sq: f64 = planes
                .map(|p| lane_sums(p, p, |v, _| [(v.to_f64() - mean).powi(2)])[0])
                .sum();
            (mean, sq / m)
        })
        .unzip();
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Stats { mean, var, inv_std }
}

/// The output before the optional ReLU, `x * scale + shift`, rounded to `T`: the one
/// expression both passes use, so the backward's ReLU mask matches the forward exactly.
fn affine<T: WithDType>(x: T, scale: f64, shift: f64) -> T {
    T::from_f64(x.to_f64() * scale + shift)
}

fn forward<T: WithDType>(
    x: &[T],
    (gamma, beta): (&[T], &[T]),
    (c, hw): (usize, usize),
    st: &Stats,
    fuse_relu: bool,
) -> Vec<T> {
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(hw.max(1))
        .zip(x.par_chunks(hw.max(1)))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let ch = p % c;
            let scale = gamma[ch].to_f64() * st.inv_std[ch];
            let shift = beta[ch].to_f64() - st.mean[ch] * scale;
            if fuse_relu {
                for (y, &x) in yp.iter_mut().zip(xp) {
                    *y = relu_value(affine(x, scale, shift));
                }
            } else {
                for (y, &x) in yp.iter_mut().zip(xp) {
                    *y = affine(x, scale, shift);
                }
            }
        });
    y
}

/// `dx = gamma inv_std / M (M dy - sum dy - xhat sum(dy xhat))`; returns dx and the sums.
/// With a fused ReLU, `dy` is first zeroed where the forward output was not positive.
fn backward<T: WithDType>(
    x: &[T],
    dy: &[T],
    (n, c, hw): (usize, usize, usize),
    gamma: &[f64],
    relu_beta: Option<&[f64]>,
    st: &Stats,
) -> (Vec<T>, (Vec<f64>, Vec<f64>)) {
    let m = (n * hw).max(1) as f64;
    let zero = T::from_f64(0.0);
    // Channel ch's forward scale and shift, for the fused ReLU's mask.
    let affine_of = |ch: usize| {
        let scale = gamma[ch] * st.inv_std[ch];
        (
            scale,
            relu_beta.map_or(0.0, |beta| beta[ch]) - st.mean[ch] * scale,
        )
    };
    // The upstream gradient through the fused ReLU: zero where the output was not positive.
    // Branch-free (a bit mask): about half the outputs are clipped, in no pattern a branch
    // predictor could learn, and a branch here made the backward three times slower.
    let masked = |g: T, x: T, (scale, shift): (f64, f64)| -> f64 {
        let keep = relu_beta.is_none() || affine(x, scale, shift) > zero;
        f64::from_bits(g.to_f64().to_bits() & (keep as u64).wrapping_neg())
    };
    // sum dy and sum dy x per channel; sum dy xhat = (sum dy x - mean sum dy) inv_std.
    let (sum_dy_xhat, sum_dy): (Vec<f64>, Vec<f64>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let aff = affine_of(ch);
            let (mut sum_g, mut sum_gx) = (0.0, 0.0);
            for i in 0..n {
                let range = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (xp, gp) = (&x[range.clone()], &dy[range]);
                let [g, gx] = lane_sums(xp, gp, |x, g| {
                    let g = masked(g, x, aff);
                    [g, g * x.to_f64()]
                });
                sum_g += g;
                sum_gx += gx;
            }
            ((sum_gx - st.mean[ch] * sum_g) * st.inv_std[ch], sum_g)
        })
        .unzip();
    let mut dx = vec![T::from_f64(0.0); x.len()];
    dx.par_chunks_mut(hw.max(1))
        .zip(x.par_chunks(hw.max(1)).zip(dy.par_chunks(hw.max(1))))
        .enumerate()
        .for_each(|(p, (dxp, (xp, gp)))| {
            let ch = p % c;
            let aff = affine_of(ch);
            let (mean, inv_std) = (st.mean[ch], st.inv_std[ch]);
            // dx = k (M g - sum dy - xhat sum(dy xhat)) = a g + b x + c0 per channel.
            let k = gamma[ch] * inv_std / m;
            let a = k * m;
            let b = -k * inv_std * sum_dy_xhat[ch];
            let c0 = k * (mean * inv_std * sum_dy_xhat[ch] - sum_dy[ch]);
            for ((d, &x), &g) in dxp.iter_mut().zip(xp).zip(gp) {
                *d = T::from_f64(a * masked(g, x, aff) + b * x.to_f64() + c0);
            }
        });
    (dx, (sum_dy_xhat, sum_dy))
}

impl CustomOp3 for BatchNormFwd {
    fn name(&self) -> &'static str {
        "segkit-batch-norm"
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
        let (n, c, h, w) = l1.shape().dims4()?;
        if l2.shape().dims() != [c] || l3.shape().dims() != [c] {
            candle::bail!(
                "batch_norm: gamma {:?} and beta {:?} must have the {c} channels of the input",
                l2.shape(),
                l3.shape()
            )
        }
        let hw = h * w;
        let (y, st) = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let x = contiguous::<f32>(s1, l1, "batch_norm", "input")?;
                let st = stats(x, n, c, hw, self.eps);
                let params = (contiguous(s2, l2, "batch_norm", "gamma")?, contiguous(s3, l3, "batch_norm", "beta")?);
                let y = forward(x, params, (c, hw), &st, self.relu);
                (CpuStorage::F32(y), st)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let x = contiguous::<f64>(s1, l1, "batch_norm", "input")?;
                let st = stats(x, n, c, hw, self.eps);
                let params = (contiguous(s2, l2, "batch_norm", "gamma")?, contiguous(s3, l3, "batch_norm", "beta")?);
                let y = forward(x, params, (c, hw), &st, self.relu);
                (CpuStorage::F64(y), st)
            }
            _ => candle::bail!(
                "batch_norm: input, gamma and beta must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        if self.stats.set(st).is_err() {
            candle::bail!("batch_norm: an op value must run forward only once")
        }
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let relu_beta = if self.relu {
            Some(beta.to_dtype(candle::DType::F64)?.to_vec1()?)
        } else {
            None
        };
        let op = BatchNormBwd {
            stats: self.stats.clone(),
            gamma: gamma.to_dtype(candle::DType::F64)?.to_vec1()?,
            relu_beta,
            sums: OnceLock::new(),
        };
        let dx = x.apply_op2_no_bwd(&dy.contiguous()?, &op)?;
        let Some((d_gamma, d_beta)) = op.sums.get() else {
            candle::bail!("batch_norm: backward produced no gamma/beta gradients")
        };
        let c = d_gamma.len();
        let d_gamma = Tensor::from_slice(d_gamma, c, x.device())?.to_dtype(x.dtype())?;
        let d_beta = Tensor::from_slice(d_beta, c, x.device())?.to_dtype(x.dtype())?;
        Ok((Some(dx), Some(d_gamma), Some(d_beta)))
    }
}

impl CustomOp2 for BatchNormBwd {
    fn name(&self) -> &'static str {
        "segkit-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let Some(st) = self.stats.get() else {
            candle::bail!("batch_norm: backward before forward")
        };
        if l2.shape() != l1.shape() {
            candle::bail!(
                "batch_norm: gradient {:?} does not match input {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        let dims = (n, c, h * w);
        let (dx, sums) = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (dx, sums) = backward::<f32>(
                    contiguous(s1, l1, "batch_norm", "input")?,
                    contiguous(s2, l2, "batch_norm", "gradient")?,
                    dims,
                    &self.gamma,
                    self.relu_beta.as_deref(),
                    st,
                );
                (CpuStorage::F32(dx), sums)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (dx, sums) = backward::<f64>(
                    contiguous(s1, l1, "batch_norm", "input")?,
                    contiguous(s2, l2, "batch_norm", "gradient")?,
                    dims,
                    &self.gamma,
                    self.relu_beta.as_deref(),
                    st,
                );
                (CpuStorage::F64(dx), sums)
            }
            _ => candle::bail!(
                "batch_norm: backward needs f32 or f64, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        if self.sums.set(sums).is_err() {
            candle::bail!("batch_norm: backward op ran twice")
        }
        Ok((dx, l1.shape().clone()))
    }
}
