//! Per-channel bias: `y = x + b` broadcast over `(N, _, H, W)`, and its gradient, the
//! per-channel sums of `dy`, as CPU custom ops. candle's `broadcast_add` backward sums
//! over the broadcast axes with a strided reduction that took about 6% of assignment 4's
//! U-Net step (the transposed convolutions' biases).

use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::norm::lane_sums;
use super::storage::{run1, run2};

/// Per-channel sums of `gy (n, c, hw)` in f64, vectorised: the bias gradient.
pub(super) fn channel_sums<T: WithDType>(gy: &[T], n: usize, c: usize, hw: usize) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = (0..n)
                .map(|i| {
                    let plane = &gy[(i * c + ch) * hw..(i * c + ch + 1) * hw];
                    lane_sums(plane, plane, |v, _| [v.to_f64()])[0]
                })
                .sum();
            T::from_f64(sum)
        })
        .collect()
}

/// `(n, c, hw) -> (c)`: the sums over images and pixels of each channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSums {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "segkit-channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let Self { n, c, hw } = *self;
        if l.shape().elem_count() != n * c * hw {
            candle::bail!(
                "{}: input {:?} does not hold {n} x {c} x {hw} values",
                self.name(),
                l.shape()
            )
        }
        let out = run1(
            self.name(),
            (s, l, l.shape()),
            |gy| channel_sums(gy, n, c, hw),
            |gy| channel_sums(gy, n, c, hw),
        )?;
        Ok((out, Shape::from(c)))
    }
}

/// `x (n, c, h, w) + b (c)` as one pass; its gradient is `(dy, channel sums of dy)`.
pub(crate) struct AddChannelBias;

/// `x (n, c, hw) + b (c)`, one `(hw)` plane per rayon task.
fn add_bias<T: WithDType>(x: &[T], b: &[T], hw: usize) -> Vec<T> {
    let mut y = x.to_vec();
    y.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, ys)| {
            // Planes run (image, channel), channel fastest.
            let bias = b[plane % b.len()];
            for v in ys {
                *v += bias;
            }
        });
    y
}

impl CustomOp2 for AddChannelBias {
    fn name(&self) -> &'static str {
        "segkit-add-channel-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let shape = l1.shape().clone();
        let (_, c, h, w) = shape.dims4()?;
        let out = run2(
            self.name(),
            (s1, l1, shape.clone()),
            (s2, l2, Shape::from(c)),
            |x, b| Ok(add_bias(x, b, h * w)),
            |x, b| Ok(add_bias(x, b, h * w)),
        )?;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let dx = x.track_op().then(|| gy.clone());
        let db = if b.track_op() {
            let sums = ChannelSums { n, c, hw: h * w };
            Some(gy.contiguous()?.apply_op1_no_bwd(&sums)?)
        } else {
            None
        };
        Ok((dx, db))
    }
}
