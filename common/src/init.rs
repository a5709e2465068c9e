//! Seeded weight initialisation: a `VarBuilder` over a `VarMap` whose random
//! initial values come from a seeded generator, so the same seed builds the same net.
//!
//! candle's CPU device cannot be seeded (`Device::set_seed` fails on CPU), and
//! `VarMap` draws its initial values from it. This backend follows the same
//! `candle_nn::Init` formulas (Kaiming with PyTorch's gains and fans, uniform,
//! normal, constants) but draws from a `StdRng`, in the order the model asks for
//! its variables, which a model's constructor fixes.

use std::sync::Mutex;

use candle::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// A `VarBuilder` that creates missing variables in `varmap` with values drawn
/// from a generator seeded with `seed`; variables already there are reused.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<StdRng>,
}

impl SeededVarMap {
    /// The initial values for a variable of `shape`, as candle's `Init::var` would
    /// draw them, but from our generator.
    fn initial_values(&self, shape: &Shape, init: Init) -> candle::Result<Vec<f64>> {
        let count = shape.elem_count();
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| candle::Error::Msg("weight initialiser lock poisoned".into()))?;
        let uniform = |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f64> {
            (0..count).map(|_| rng.random_range(lo..up)).collect()
        };
        let normal = |rng: &mut StdRng, mean: f64, std: f64| -> candle::Result<Vec<f64>> {
            let dist = Normal::new(mean, std).map_err(|e| candle::Error::Msg(e.to_string()))?;
            Ok((0..count).map(|_| dist.sample(rng)).collect())
        };
        match init {
            Init::Const(value) => Ok(vec![value; count]),
            Init::Uniform { lo, up } if lo < up => Ok(uniform(&mut rng, lo, up)),
            Init::Uniform { lo, .. } => Ok(vec![lo; count]),
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = fan.for_shape(shape).max(1);
                let std = non_linearity.gain() / (fan as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        Ok(uniform(&mut rng, -bound, bound))
                    }
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle::Result<Tensor> {
        let data = self.varmap.data();
        if let Some(existing) = data
            .lock()
            .map_err(|_| candle::Error::Msg("VarMap lock poisoned".into()))?
            .get(name)
        {
            let tensor = existing.as_tensor();
            if tensor.shape() != &shape {
                candle::bail!(
                    "variable {name:?} exists with shape {:?}, asked for {shape:?}",
                    tensor.shape()
                );
            }
            return Ok(tensor.clone());
        }
        let values = self.initial_values(&shape, init)?;
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        data.lock()
            .map_err(|_| candle::Error::Msg("VarMap lock poisoned".into()))?
            .insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> candle::Result<Tensor> {
        candle::bail!("variable {name:?} must be created with a shape (use `get`)")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|data| data.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Module;

    fn weights(seed: u64) -> candle::Result<(VarMap, Vec<f32>)> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let layer = candle_nn::linear(8, 4, vb.pp("fc"))?;
        let xs = Tensor::ones((1, 8), DType::F32, &Device::Cpu)?;
        let ys = layer.forward(&xs)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((varmap, ys))
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() -> candle::Result<()> {
        let (varmap, a) = weights(7)?;
        let (_, b) = weights(7)?;
        let (_, c) = weights(8)?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(varmap.all_vars().len(), 2);
        Ok(())
    }

    #[test]
    fn draws_follow_the_layer_init_rules() -> candle::Result<()> {
        // candle_nn::linear: bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and weight ~
        // Kaiming normal, std = sqrt(2) / sqrt(fan_in) = 0.5 for fan_in 8.
        let (varmap, _) = weights(1)?;
        let data = varmap.data().lock().unwrap();
        let bias = data["fc.bias"].as_tensor().to_vec1::<f32>()?;
        let bound = 1.0 / 8f32.sqrt();
        assert!(bias.iter().all(|v| v.abs() <= bound), "{bias:?}");
        let w = data["fc.weight"]
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?;
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((0.3..0.75).contains(&std), "weight std {std}");
        Ok(())
    }
}
