//! Training-mode batch normalisation (Ioffe & Szegedy 2015) as one fused CPU custom op:
//! one pass for the per-channel statistics, one for the output, and a fused backward,
//! instead of candle's chain of broadcast ops and strided reductions (which dominated a
//! U-Net training step once the convolutions were fast).

use std::sync::{Arc, OnceLock};

use candle::backend::BackendStorage;
use candle::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

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
    pub stats: Arc<OnceLock<Stats>>,
}

/// The input gradient of [`BatchNormFwd`]; the sums `(sum dy * xhat, sum dy)` it computes
/// on the way are the gamma and beta gradients, handed back through `sums`.
struct BatchNormBwd {
    stats: Arc<OnceLock<Stats>>,
    gamma: Vec<f64>,
    sums: OnceLock<(Vec<f64>, Vec<f64>)>,
}

fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle::bail!("batch_norm: {what} must be contiguous"),
    }
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
                .map(|p| p.iter().map(|v| v.to_f64()).sum::<f64>())
                .sum();
            let mean = sum / m;
            let sq: f64 = planes
                .map(|p| p.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>())
                .sum();
            (mean, sq / m)
        })
        .unzip();
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Stats { mean, var, inv_std }
}

fn forward<T: WithDType>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    c: usize,
    hw: usize,
    st: &Stats,
) -> Vec<T> {
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(hw.max(1))
        .zip(x.par_chunks(hw.max(1)))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let ch = p % c;
            let scale = gamma[ch].to_f64() * st.inv_std[ch];
            let shift = beta[ch].to_f64() - st.mean[ch] * scale;
            for (y, x) in yp.iter_mut().zip(xp) {
                *y = T::from_f64(x.to_f64() * scale + shift);
            }
        });
    y
}

/// `dx = gamma inv_std / M (M dy - sum dy - xhat sum(dy xhat))`; returns dx and the sums.
fn backward<T: WithDType>(
    x: &[T],
    dy: &[T],
    (n, c, hw): (usize, usize, usize),
    gamma: &[f64],
    st: &Stats,
) -> (Vec<T>, (Vec<f64>, Vec<f64>)) {
    let m = (n * hw).max(1) as f64;
    let (sum_dy_xhat, sum_dy): (Vec<f64>, Vec<f64>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut a, mut b) = (0.0, 0.0);
            for i in 0..n {
                let range = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                for (x, g) in x[range.clone()].iter().zip(&dy[range]) {
                    let g = g.to_f64();
                    a += g * (x.to_f64() - st.mean[ch]) * st.inv_std[ch];
                    b += g;
                }
            }
            (a, b)
        })
        .unzip();
    let mut dx = vec![T::from_f64(0.0); x.len()];
    dx.par_chunks_mut(hw.max(1))
        .zip(x.par_chunks(hw.max(1)).zip(dy.par_chunks(hw.max(1))))
        .enumerate()
        .for_each(|(p, (dxp, (xp, gp)))| {
            let ch = p % c;
            let (mean, inv_std) = (st.mean[ch], st.inv_std[ch]);
            let k = gamma[ch] * inv_std / m;
            for ((d, x), g) in dxp.iter_mut().zip(xp).zip(gp) {
                let xhat = (x.to_f64() - mean) * inv_std;
                *d = T::from_f64(k * (m * g.to_f64() - sum_dy[ch] - xhat * sum_dy_xhat[ch]));
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
                let x = contiguous::<f32>(s1, l1, "input")?;
                let st = stats(x, n, c, hw, self.eps);
                let y = forward(x, contiguous(s2, l2, "gamma")?, contiguous(s3, l3, "beta")?, c, hw, &st);
                (CpuStorage::F32(y), st)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let x = contiguous::<f64>(s1, l1, "input")?;
                let st = stats(x, n, c, hw, self.eps);
                let y = forward(x, contiguous(s2, l2, "gamma")?, contiguous(s3, l3, "beta")?, c, hw, &st);
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
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = BatchNormBwd {
            stats: self.stats.clone(),
            gamma: gamma.to_dtype(candle::DType::F64)?.to_vec1()?,
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
                    contiguous(s1, l1, "input")?,
                    contiguous(s2, l2, "gradient")?,
                    dims,
                    &self.gamma,
                    st,
                );
                (CpuStorage::F32(dx), sums)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (dx, sums) = backward::<f64>(
                    contiguous(s1, l1, "input")?,
                    contiguous(s2, l2, "gradient")?,
                    dims,
                    &self.gamma,
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
