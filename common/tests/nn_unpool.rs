//! Tests of `common::nn::{max_pool2d_with_indices, max_unpool2d}`: forward and
//! backward by hand on a fixed input, finite differences in f64, bad shapes.

use candle::{Device, Result, Tensor, Var};
use common::nn::gradcheck::check_gradient;
use common::nn::{max_pool2d_with_indices, max_unpool2d};

#[rustfmt::skip]
fn fixed() -> Result<Tensor> {
    Tensor::new(&[
        [1f64, 5., 2., 0.],
        [3., 4., 8., 1.],
        [0., -1., -3., -2.],
        [-5., 2., -4., -6.],
    ], &Device::Cpu)?.reshape((1, 1, 4, 4))
}

#[test]
fn forward_and_backward_by_hand() -> Result<()> {
    // PyTorch: y, i = F.max_pool2d(x, 2, return_indices=True)
    //          z = F.max_unpool2d(y, i, 2); (z * r).sum().backward()
    // y = [5, 8, 2, -2], i = [1, 6, 13, 11]; z is x's maxima in place, zeros elsewhere;
    // x.grad = r at 1, 6, 13, 11 and 0 elsewhere.
    let x = Var::from_tensor(&fixed()?)?;
    let (y, i) = max_pool2d_with_indices(x.as_tensor(), 2)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, vec![5., 8., 2., -2.]);
    assert_eq!(i.flatten_all()?.to_vec1::<u32>()?, vec![1, 6, 13, 11]);
    let z = max_unpool2d(&y, &i, 2, None)?;
    assert_eq!(z.dims(), &[1, 1, 4, 4]);
    let mut want = vec![0f64; 16];
    for (at, v) in [(1, 5.), (6, 8.), (13, 2.), (11, -2.)] {
        want[at] = v;
    }
    assert_eq!(z.flatten_all()?.to_vec1::<f64>()?, want);
    let r = Tensor::arange(1f64, 17., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
    let grads = (z * &r)?.sum_all()?.backward()?;
    let g = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut want = vec![0f64; 16];
    for at in [1usize, 6, 13, 11] {
        want[at] = (at + 1) as f64;
    }
    assert_eq!(g, want);
    Ok(())
}

#[test]
fn odd_input_and_given_size() -> Result<()> {
    // PyTorch: F.max_unpool2d(y, i, 2, output_size=(5, 5)) on a 5x5 input's pool.
    let x = Tensor::arange(0f64, 25., &Device::Cpu)?.reshape((1, 1, 5, 5))?;
    let (y, i) = max_pool2d_with_indices(&x, 2)?;
    assert_eq!(i.flatten_all()?.to_vec1::<u32>()?, vec![6, 8, 16, 18]);
    let z = max_unpool2d(&y, &i, 2, Some((5, 5)))?;
    assert_eq!(z.dims(), &[1, 1, 5, 5]);
    assert_eq!(z.sum_all()?.to_scalar::<f64>()?, 6. + 8. + 16. + 18.);
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let x = Tensor::new(
        (0..2 * 3 * 6 * 6)
            .map(|i| ((i as f64 * 12.9898).sin() * 43758.5453).fract())
            .collect::<Vec<_>>(),
        &Device::Cpu,
    )?
    .reshape((2, 3, 6, 6))?;
    let r = (x.ones_like()? * 0.5 + x.sin()?)?;
    let err = check_gradient(
        |x| {
            let (y, i) = max_pool2d_with_indices(x, 2)?;
            (max_unpool2d(&(y.sqr()?), &i, 2, None)? * &r)?.sum_all()
        },
        &x,
        1e-6,
    )?;
    assert!(err < 1e-6, "relative error {err}");
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let x = fixed()?;
    assert!(max_pool2d_with_indices(&x.flatten_all()?, 2).is_err());
    assert!(max_pool2d_with_indices(&x, 0).is_err());
    assert!(max_pool2d_with_indices(&x, 5).is_err());
    let (y, i) = max_pool2d_with_indices(&x, 2)?;
    assert!(max_unpool2d(&y, &i.reshape((1, 1, 4))?, 2, None).is_err());
    assert!(max_unpool2d(&y, &i, 2, Some((9, 4))).is_err());
    assert!(max_unpool2d(&y, &i.to_dtype(candle::DType::F32)?, 2, None).is_err());
    Ok(())
}
