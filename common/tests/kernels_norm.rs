//! Tests of `common::kernels::batch_norm_train` and `batch_norm_relu_train`: output,
//! batch statistics and the three gradients against the same formula written with candle
//! ops, central finite differences in f64, and errors on bad input.

use candle::{DType, Device, Tensor, Var};
use common::kernels;

mod support;

type Result<T> = candle::Result<T>;

/// Values uniform in (-1.5, 2.5): off-centre, so the normalisation has work to do.
fn random(shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    support::random(shape, DType::F64, seed)?
        .affine(2.0, 0.5)?
        .to_dtype(dtype)
}

fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    Ok(a.iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale)
}

/// The reference: batch norm written with candle's broadcast ops and reductions.
fn reference(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = gamma.elem_count();
    let mean = xs.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centred = xs.broadcast_sub(&mean)?;
    let var = centred
        .sqr()?
        .mean_keepdim(0)?
        .mean_keepdim(2)?
        .mean_keepdim(3)?;
    let ys = centred
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    Ok((ys, mean.flatten_all()?, var.flatten_all()?))
}

/// A batch-norm function: `(x, gamma, beta) -> (y, mean, var)`.
type BatchNormFn<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<(Tensor, Tensor, Tensor)>;

/// `[y, mean, var, dx, dgamma, dbeta]` of `bn` with the gradients of `sum(y * r)`.
fn outputs_and_grads(
    bn: BatchNormFn,
    (x, gamma, beta): (&Var, &Var, &Var),
    r: &Tensor,
) -> Result<Vec<Tensor>> {
    let (ys, mean, var) = bn(x.as_tensor(), gamma.as_tensor(), beta.as_tensor())?;
    let grads = (&ys * r)?.sum_all()?.backward()?;
    let get = |v: &Var| grads.get(v.as_tensor()).cloned().expect("missing gradient");
    Ok(vec![ys, mean, var, get(x), get(gamma), get(beta)])
}

/// Asserts every output and gradient of `ours` is within 1e-4 (relative) of `theirs`.
fn assert_close(ours: &[Tensor], theirs: &[Tensor], case: &str) -> Result<()> {
    for (what, (a, b)) in ["y", "mean", "var", "dx", "dgamma", "dbeta"]
        .iter()
        .zip(ours.iter().zip(theirs))
    {
        let err = rel_err(a, b)?;
        assert!(err < 1e-4, "{case}: {what} differs by {err:e}");
    }
    Ok(())
}

#[test]
fn batch_norm_matches_candle_formula_and_gradients() -> Result<()> {
    for (i, shape) in [[2, 3, 5, 7], [4, 8, 6, 6], [1, 2, 9, 4]]
        .into_iter()
        .enumerate()
    {
        let c = shape[1];
        let x = Var::from_tensor(&random(&shape, DType::F32, i as u64)?)?;
        let gamma = Var::from_tensor(&random(&[c], DType::F32, 10 + i as u64)?)?;
        let beta = Var::from_tensor(&random(&[c], DType::F32, 20 + i as u64)?)?;
        let r = random(&shape, DType::F32, 30 + i as u64)?;
        let vars = (&x, &gamma, &beta);
        let ours = outputs_and_grads(
            &|x, g, b| kernels::batch_norm_train(x, g, b, 1e-5),
            vars,
            &r,
        )?;
        let theirs = outputs_and_grads(&|x, g, b| reference(x, g, b, 1e-5), vars, &r)?;
        assert_close(&ours, &theirs, &format!("case {i} {shape:?}"))?;
    }
    Ok(())
}

#[test]
fn batch_norm_output_is_normalised() -> Result<()> {
    // With gamma = 1, beta = 0 every channel of y has mean 0 and (biased) variance ~1.
    let x = random(&[3, 4, 5, 5], DType::F64, 40)?;
    let ones = Tensor::ones(4, DType::F64, &Device::Cpu)?;
    let (ys, _, _) = kernels::batch_norm_train(&x, &ones, &ones.zeros_like()?, 1e-5)?;
    let (_, mean, var) = reference(&ys, &ones, &ones.zeros_like()?, 1e-5)?;
    for (m, v) in mean
        .to_vec1::<f64>()?
        .into_iter()
        .zip(var.to_vec1::<f64>()?)
    {
        assert!(
            m.abs() < 1e-12 && (v - 1.0).abs() < 1e-3,
            "channel mean {m}, variance {v}"
        );
    }
    Ok(())
}

#[test]
fn batch_norm_relu_matches_batch_norm_then_relu() -> Result<()> {
    for (i, shape) in [[2, 3, 5, 7], [3, 4, 6, 5]].into_iter().enumerate() {
        let c = shape[1];
        let x = Var::from_tensor(&random(&shape, DType::F32, 60 + i as u64)?)?;
        let gamma = Var::from_tensor(&random(&[c], DType::F32, 70 + i as u64)?)?;
        let beta = Var::from_tensor(&random(&[c], DType::F32, 80 + i as u64)?)?;
        let r = random(&shape, DType::F32, 90 + i as u64)?;
        let vars = (&x, &gamma, &beta);
        let ours = outputs_and_grads(
            &|x, g, b| kernels::batch_norm_relu_train(x, g, b, 1e-5),
            vars,
            &r,
        )?;
        let reference_then_relu = |x: &Tensor, g: &Tensor, b: &Tensor| {
            let (ys, mean, var) = reference(x, g, b, 1e-5)?;
            Ok((ys.relu()?, mean, var))
        };
        let theirs = outputs_and_grads(&reference_then_relu, vars, &r)?;
        // Some outputs are clipped, so the ReLU's mask matters for every gradient.
        let clipped = ours[0].eq(0f32)?.to_dtype(DType::F32)?.sum_all()?;
        assert!(
            clipped.to_scalar::<f32>()? > 0.0,
            "case {i}: no output clipped"
        );
        assert_close(&ours, &theirs, &format!("case {i} {shape:?}"))?;
    }
    Ok(())
}

#[test]
fn batch_norm_gradients_match_finite_differences_f64() -> Result<()> {
    for fuse_relu in [false, true] {
        batch_norm_finite_differences(fuse_relu)?;
    }
    Ok(())
}

fn batch_norm_finite_differences(fuse_relu: bool) -> Result<()> {
    let x = random(&[2, 3, 4, 3], DType::F64, 50)?;
    let gamma = random(&[3], DType::F64, 51)?;
    let beta = random(&[3], DType::F64, 52)?;
    let r = random(&[2, 3, 4, 3], DType::F64, 53)?;
    let loss = |x: &Tensor, g: &Tensor, b: &Tensor| -> Result<Tensor> {
        let ys = if fuse_relu {
            kernels::batch_norm_relu_train(x, g, b, 1e-5)?.0
        } else {
            kernels::batch_norm_train(x, g, b, 1e-5)?.0
        };
        (ys * &r)?.sum_all()
    };
    let (xv, gv, bv) = (
        Var::from_tensor(&x)?,
        Var::from_tensor(&gamma)?,
        Var::from_tensor(&beta)?,
    );
    let grads = loss(xv.as_tensor(), gv.as_tensor(), bv.as_tensor())?.backward()?;
    let eps = 1e-6;
    // Central differences for each element of each of the three arguments.
    for (arg, var) in [(0usize, &xv), (1, &gv), (2, &bv)] {
        let analytic = grads
            .get(var.as_tensor())
            .expect("missing gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let mut max_err = 0f64;
        for i in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += delta;
                let t = Tensor::from_vec(v, var.as_tensor().dims(), &Device::Cpu)?;
                let mut args = [x.clone(), gamma.clone(), beta.clone()];
                args[arg] = t;
                loss(&args[0], &args[1], &args[2])?.to_scalar::<f64>()
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            max_err = max_err.max((numeric - analytic[i]).abs() / analytic[i].abs().max(1.0));
        }
        assert!(
            max_err < 1e-5,
            "argument {arg} (ReLU fused: {fuse_relu}): max relative error {max_err:e}"
        );
    }
    Ok(())
}

#[test]
fn batch_norm_bad_input_gives_clear_errors() -> Result<()> {
    let x = random(&[2, 3, 4, 4], DType::F32, 60)?;
    let g = random(&[4], DType::F32, 61)?;
    let message = |r: Result<(Tensor, Tensor, Tensor)>| {
        r.map(|t| format!("{:?}", t.0.dims()))
            .unwrap_or_else(|e| e.to_string())
    };
    let m = message(kernels::batch_norm_train(&x, &g, &g, 1e-5));
    assert!(
        m.contains("gamma [4] and beta [4] must have the 3 channels of input [2, 3, 4, 4]"),
        "{m}"
    );
    let g3 = random(&[3], DType::F64, 62)?;
    let m = message(kernels::batch_norm_train(&x, &g3, &g3, 1e-5));
    assert!(m.contains("input is F32 but gamma is F64"), "{m}");
    let g3 = g3.to_dtype(DType::F32)?;
    let m = message(kernels::batch_norm_train(&x, &g3, &g3, 0.0));
    assert!(m.contains("eps must be positive, got 0"), "{m}");
    let m = message(kernels::batch_norm_train(
        &x.flatten_from(2)?,
        &g3,
        &g3,
        1e-5,
    ));
    assert!(m.contains("input [2, 3, 16] must have rank 4"), "{m}");
    Ok(())
}
