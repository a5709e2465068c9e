//! Tests of `common::kernels::max_pool2d`: hand values, the gradient on the argmax only
//! (first maximum on ties, as PyTorch), agreement with the reshape-max formulation on
//! random odd-sized inputs, finite differences in f64, and errors on bad input.

use candle::{DType, Device, Tensor, Var};
use common::kernels;

mod support;
use support::random;

type Result<T> = candle::Result<T>;

/// Output and input gradient of `sum(pool(x) * r)` for a given `r`.
fn pool_and_grad(
    pool: impl Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    r_seed: u64,
) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(x)?;
    let y = pool(var.as_tensor())?;
    let r = random(y.dims(), y.dtype(), r_seed)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    Ok((y, grads.get(var.as_tensor()).expect("no gradient").clone()))
}

/// The correct reference pooling (see DESIGN.md): floor the size, reshape, max twice.
fn reshape_max(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / k, w / k);
    x.narrow(2, 0, oh * k)?
        .narrow(3, 0, ow * k)?
        .reshape((n, c, oh, k, ow, k))?
        .max(5)?
        .max(3)
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

#[test]
fn max_pool_hand_values_and_gradient_on_argmax() -> Result<()> {
    #[rustfmt::skip]
    let x = Tensor::new(&[
        1f32, 5., 2., 0.,
        3., 4., 8., 7.,
        -1., -2., 6., 6.,
        -3., -4., 6., 6.,
    ], &Device::Cpu)?.reshape((1, 1, 4, 4))?;
    let var = Var::from_tensor(&x)?;
    let y = kernels::max_pool2d(var.as_tensor(), 2)?;
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    assert_eq!(to_vec(&y)?, vec![5.0, 8.0, -1.0, 6.0]);
    // Upstream gradient r = [10, 20, 30, 40]: each lands on its window's maximum; the tied
    // window of 6s gives it all to the first 6 (row 2, column 2), as PyTorch does.
    let r = Tensor::new(&[[[[10f32, 20.], [30., 40.]]]], &Device::Cpu)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let dx = grads.get(var.as_tensor()).expect("no gradient");
    #[rustfmt::skip]
    let expected = vec![
        0., 10., 0., 0.,
        0., 0., 20., 0.,
        30., 0., 40., 0.,
        0., 0., 0., 0.,
    ];
    assert_eq!(to_vec(dx)?, expected);
    Ok(())
}

#[test]
fn max_pool_matches_reshape_max_on_random_inputs() -> Result<()> {
    // Odd sizes drop the last row/column; k = 3 and a batch of 2 with 3 channels.
    for (i, (shape, k)) in [
        ([2, 3, 5, 7], 2),
        ([2, 3, 9, 8], 3),
        ([1, 4, 6, 6], 2),
        ([3, 2, 4, 5], 4),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&shape, DType::F32, i as u64)?;
        let (y, dx) = pool_and_grad(|x| kernels::max_pool2d(x, k), &x, 100 + i as u64)?;
        let (y_ref, dx_ref) = pool_and_grad(|x| reshape_max(x, k), &x, 100 + i as u64)?;
        assert_eq!(to_vec(&y)?, to_vec(&y_ref)?, "case {i}: output");
        assert_eq!(to_vec(&dx)?, to_vec(&dx_ref)?, "case {i}: gradient");
        // Each window passes exactly one non-zero gradient (r is never exactly zero).
        let nonzero = to_vec(&dx)?.iter().filter(|v| **v != 0.0).count();
        assert_eq!(
            nonzero,
            y.elem_count(),
            "case {i}: gradient not on the argmax only"
        );
    }
    Ok(())
}

#[test]
fn max_pool_gradient_matches_finite_differences_f64() -> Result<()> {
    let x = random(&[2, 2, 5, 6], DType::F64, 7)?;
    let r = random(&[2, 2, 2, 3], DType::F64, 8)?;
    let f = |x: &Tensor| -> Result<Tensor> { (kernels::max_pool2d(x, 2)? * &r)?.sum_all() };
    let var = Var::from_tensor(&x)?;
    let analytic = f(var.as_tensor())?
        .backward()?
        .get(var.as_tensor())
        .expect("no gradient")
        .clone();
    let analytic = analytic.flatten_all()?.to_vec1::<f64>()?;
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let eps = 1e-6;
    let mut max_err = 0f64;
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let fp = f(&Tensor::from_vec(plus, x.dims(), &Device::Cpu)?)?.to_scalar::<f64>()?;
        let fm = f(&Tensor::from_vec(minus, x.dims(), &Device::Cpu)?)?.to_scalar::<f64>()?;
        let numeric = (fp - fm) / (2.0 * eps);
        max_err = max_err.max((numeric - analytic[i]).abs() / analytic[i].abs().max(1.0));
    }
    assert!(max_err < 1e-5, "max relative error {max_err:e}");
    Ok(())
}

#[test]
fn max_pool_bad_input_gives_clear_errors() -> Result<()> {
    let x = random(&[1, 1, 3, 5], DType::F32, 20)?;
    let message = |r: Result<Tensor>| {
        r.map(|t| format!("{:?}", t.dims()))
            .unwrap_or_else(|e| e.to_string())
    };
    let m = message(kernels::max_pool2d(&x, 4));
    assert!(m.contains("window 4 does not fit input 3x5"), "{m}");
    let m = message(kernels::max_pool2d(&x, 0));
    assert!(m.contains("window 0 does not fit input 3x5"), "{m}");
    let m = message(kernels::max_pool2d(&x.squeeze(0)?, 2));
    assert!(
        m.contains("max_pool2d: input [1, 3, 5] must have rank 4"),
        "{m}"
    );
    Ok(())
}

#[test]
fn max_pool_propagates_nan_like_pytorch() -> Result<()> {
    // Window 0 holds a NaN after its maximum: the NaN wins (PyTorch's max_pool2d gives NaN
    // and puts the gradient there); window 1 is all finite.
    let x = Tensor::new(
        &[[[[1f32, 9., 0., 2.], [f32::NAN, 3., 4., -1.]]]],
        &Device::Cpu,
    )?;
    let var = Var::from_tensor(&x)?;
    let y = kernels::max_pool2d(var.as_tensor(), 2)?;
    let y = to_vec(&y)?;
    assert!(y[0].is_nan(), "window 0 gave {}", y[0]);
    assert_eq!(y[1], 4.0);
    let grads = kernels::max_pool2d(var.as_tensor(), 2)?
        .sum_all()?
        .backward()?;
    let dx = to_vec(grads.get(var.as_tensor()).expect("no gradient"))?;
    assert_eq!(dx, vec![0., 0., 0., 0., 1., 0., 1., 0.]);
    Ok(())
}
