//! Helpers shared by the kernel tests (`mod support;` in each test file).

use candle::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A `shape` tensor of `dtype` with values uniform in (-1, 1), drawn in f64 and then cast;
/// the same `seed` gives the same values.
pub fn random(shape: &[usize], dtype: DType, seed: u64) -> candle::Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)
}
