//! BatchNorm2d as in PyTorch (Ioffe & Szegedy 2015): batch statistics in training,
//! running statistics in evaluation.
//!
//! The running statistics live in the `VarMap` as `running_mean` / `running_var`
//! (so checkpoints save them) but are never trained: they enter the graph only
//! through `detach()`, so a backward pass gives them no gradient and an optimiser
//! that skips variables without a gradient leaves them alone; they are updated in
//! place with `Var::set` during a training forward. An optimiser that would still
//! touch every variable (weight decay without a gradient, say) can filter them out
//! by name with [`is_batch_norm_buffer`].

use candle::{bail, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

/// Configuration of a [`BatchNorm2d`] (PyTorch defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm2dConfig {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average.
    pub momentum: f64,
}

impl Default for BatchNorm2dConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// True for the names of BatchNorm buffers (`running_mean`, `running_var`,
/// `num_batches_tracked`) that an optimiser must not update.
pub fn is_batch_norm_buffer(name: &str) -> bool {
    ["running_mean", "running_var", "num_batches_tracked"]
        .iter()
        .any(|buffer| name == *buffer || name.ends_with(&format!(".{buffer}")))
}

/// Batch normalisation over `(N, H, W)` per channel with an affine `weight`/`bias`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    config: BatchNorm2dConfig,
}

impl BatchNorm2d {
    /// Builds a layer from existing tensors; the running statistics must be
    /// variables (from a `VarMap`) or they become new, unshared variables.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        config: BatchNorm2dConfig,
    ) -> Result<Self> {
        let c = weight.elem_count();
        for (name, t) in [
            ("weight", &weight),
            ("bias", &bias),
            ("running_mean", &running_mean),
            ("running_var", &running_var),
        ] {
            if t.dims() != [c] {
                bail!(
                    "BatchNorm2d: {name} has shape {:?}, expected [{c}]",
                    t.dims()
                );
            }
        }
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            config,
        })
    }

    /// The running mean `(C)`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance `(C)`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// The affine weight `(C)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The affine bias `(C)`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `(x - mean) / sqrt(var + eps) * weight + bias` with `(C)` statistics.
    fn normalise(&self, xs: &Tensor, mean: &Tensor, var: &Tensor) -> Result<Tensor> {
        // (C) -> (1, C, 1, 1)
        let shape = (1, self.weight.elem_count(), 1, 1);
        let scale = (var + self.config.eps)?.sqrt()?.recip()?;
        xs.broadcast_sub(&mean.reshape(shape)?)?
            .broadcast_mul(&scale.reshape(shape)?)?
            .broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}

impl ModuleT for BatchNorm2d {
    /// Training: normalise with the batch mean and biased variance, and move the
    /// running mean / unbiased variance by `momentum` towards them. Evaluation:
    /// normalise with the running statistics.
    ///
    /// # Shapes
    /// `(N, C, H, W) -> (N, C, H, W)`
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_maybe_relu(xs, train, false)
    }
}

impl BatchNorm2d {
    /// `forward_t` followed by a ReLU; in training on the CPU fast path the two are one
    /// fused kernel (`kernels::batch_norm_relu_train`).
    ///
    /// # Shapes
    /// `(N, C, H, W) -> (N, C, H, W)`
    pub fn forward_relu_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_maybe_relu(xs, train, true)
    }

    fn forward_maybe_relu(&self, xs: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (n, c, h, w) = match xs.dims() {
            &[n, c, h, w] => (n, c, h, w),
            dims => bail!("BatchNorm2d expects an (N, C, H, W) tensor, got shape {dims:?}"),
        };
        if c != self.weight.elem_count() {
            bail!(
                "BatchNorm2d: input has {c} channels, the layer has {}",
                self.weight.elem_count()
            );
        }
        if !train {
            let mean = self
                .running_mean
                .as_tensor()
                .detach()
                .to_dtype(xs.dtype())?;
            let var = self.running_var.as_tensor().detach().to_dtype(xs.dtype())?;
            let ys = self.normalise(xs, &mean, &var)?;
            return if relu {
                crate::kernels::relu(&ys)
            } else {
                Ok(ys)
            };
        }
        let m = n * h * w;
        if m < 2 {
            bail!(
                "BatchNorm2d: training needs more than 1 value per channel, got input {:?}",
                xs.dims()
            );
        }
        let (ys, mean, var) = if crate::kernels::uses_fast_path(xs) {
            // One fused CPU kernel: normalised output (and ReLU) and (C) batch mean and
            // biased variance.
            let eps = self.config.eps;
            if relu {
                crate::kernels::batch_norm_relu_train(xs, &self.weight, &self.bias, eps)?
            } else {
                crate::kernels::batch_norm_train(xs, &self.weight, &self.bias, eps)?
            }
        } else {
            // (N, C, H, W) -> (C, N*H*W): statistics per channel.
            let flat = xs.transpose(0, 1)?.reshape((c, m))?;
            let mean = flat.mean(1)?; // (C)
            let centred = flat.broadcast_sub(&mean.unsqueeze(1)?)?;
            let var = centred.sqr()?.mean(1)?; // (C), biased
            let ys = self.normalise(xs, &mean, &var)?;
            let ys = if relu { ys.relu()? } else { ys };
            (ys, mean, var)
        };

        // Running statistics: unbiased variance, no gradient, updated in place.
        let momentum = self.config.momentum;
        let dtype = self.running_mean.dtype();
        let batch_mean = mean.detach().to_dtype(dtype)?;
        let batch_var = (var.detach() * (m as f64 / (m - 1) as f64))?.to_dtype(dtype)?;
        let new_mean =
            ((self.running_mean.as_tensor() * (1.0 - momentum))? + (batch_mean * momentum)?)?;
        let new_var =
            ((self.running_var.as_tensor() * (1.0 - momentum))? + (batch_var * momentum)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(ys)
    }
}

/// A [`BatchNorm2d`] over `c` channels with PyTorch's defaults and names:
/// `weight` (ones), `bias` (zeros), `running_mean` (zeros), `running_var` (ones).
pub fn batch_norm2d(c: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    let weight = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
    let running_mean = vb.get_with_hints(c, "running_mean", Init::Const(0.0))?;
    let running_var = vb.get_with_hints(c, "running_var", Init::Const(1.0))?;
    BatchNorm2d::new(
        weight,
        bias,
        running_mean,
        running_var,
        BatchNorm2dConfig::default(),
    )
}
