//! Tests of `common::kernels::add_channel_bias` (the per-channel bias of transposed
//! convolutions): values and both gradients equal candle's `broadcast_add` on random
//! f32/f64 inputs of odd sizes, f64 finite differences, a bias-only gradient, and errors.

use candle::{DType, Tensor, Var};
use common::kernels;
use common::nn::gradcheck::check_gradients;

mod support;
use support::random;

type Result<T> = candle::Result<T>;

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Output and the gradients of x and b of `sum(f(x, b) * r)`.
fn value_and_grads(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Tensor,
    b: &Tensor,
) -> Result<[Vec<f64>; 3]> {
    let (xv, bv) = (Var::from_tensor(x)?, Var::from_tensor(b)?);
    let y = f(xv.as_tensor(), bv.as_tensor())?;
    let r = random(y.dims(), y.dtype(), 99)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let dx = grads.get(xv.as_tensor()).expect("no x gradient");
    let db = grads.get(bv.as_tensor()).expect("no bias gradient");
    Ok([flat(&y)?, flat(dx)?, flat(db)?])
}

#[test]
fn matches_broadcast_add_with_both_gradients() -> Result<()> {
    let probe = random(&[1, 1, 1, 1], DType::F32, 0)?;
    assert_eq!(
        kernels::uses_fast_path(&probe),
        !kernels::candle_ops_forced()
    );
    for (i, shape) in [[3, 5, 7, 3], [1, 2, 1, 1], [2, 16, 32, 32], [4, 1, 9, 4]]
        .into_iter()
        .enumerate()
    {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            let x = random(&shape, dtype, i as u64)?;
            let b = random(&[shape[1]], dtype, 10 + i as u64)?;
            let fast = value_and_grads(kernels::add_channel_bias, &x, &b)?;
            let reference =
                value_and_grads(|x, b| x.broadcast_add(&b.reshape((1, (), 1, 1))?), &x, &b)?;
            for (what, (a, r)) in ["output", "x gradient", "bias gradient"]
                .iter()
                .zip(fast.iter().zip(&reference))
            {
                let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (u, v) in a.iter().zip(r) {
                    assert!(
                        (u - v).abs() <= tol * scale,
                        "{shape:?} {dtype:?} {what}: {u} vs {v}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    let x = random(&[2, 3, 4, 5], DType::F64, 1)?;
    let b = random(&[3], DType::F64, 2)?;
    let r = random(&[2, 3, 4, 5], DType::F64, 3)?;
    let errs = check_gradients(
        |v| (kernels::add_channel_bias(&v[0], &v[1])? * &r)?.sum_all(),
        &[x, b],
        1e-6,
    )?;
    assert!(errs.iter().all(|e| *e < 1e-6), "errors {errs:?}");
    Ok(())
}

#[test]
fn bias_alone_can_be_trained() -> Result<()> {
    // A constant input (an image) and a trained bias.
    let x = random(&[2, 3, 4, 4], DType::F32, 4)?;
    let b = Var::from_tensor(&random(&[3], DType::F32, 5)?)?;
    let grads = kernels::add_channel_bias(&x, b.as_tensor())?
        .sum_all()?
        .backward()?;
    // d sum / d b_c = number of pixels per channel over the batch.
    assert_eq!(
        grads.get(b.as_tensor()).unwrap().to_vec1::<f32>()?,
        [32.0; 3]
    );
    Ok(())
}

#[test]
fn bad_shapes_give_clear_errors() -> Result<()> {
    let x = random(&[1, 3, 2, 2], DType::F32, 6)?;
    let msg = kernels::add_channel_bias(&x, &random(&[4], DType::F32, 7)?)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bias [4] must have the 3 channels of the input [1, 3, 2, 2]"),
        "{msg}"
    );
    let msg = kernels::add_channel_bias(&random(&[3, 2, 2], DType::F32, 8)?, &x)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("input [3, 2, 2] must have rank 4"), "{msg}");
    Ok(())
}
