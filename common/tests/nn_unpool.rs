//! Tests of `common::nn::{max_pool2d_with_indices, max_unpool2d}`: forward and
//! backward by hand on a fixed input (PyTorch's semantics, the expression beside
//! the numbers), finite differences in f64, odd sizes, bad arguments.

use candle::{DType, Device, Result, Tensor, Var};
use common::nn::gradcheck::{check_gradient, check_gradients};
use common::nn::{max_pool2d, max_pool2d_with_indices, max_unpool2d};

/// `x (1, 1, 4, 4)`; its four 2x2 windows and their maxima:
///
/// ```text
///  1  5 |  2  0       window (0,0): 1 5 3 4     -> 5 at (0,1), index 0*4+1 = 1
///  3  4 |  8  1       window (0,1): 2 0 8 1     -> 8 at (1,2), index 1*4+2 = 6
/// ------+------       window (1,0): 0 -1 -5 2   -> 2 at (3,1), index 3*4+1 = 13
///  0 -1 | -3 -2       window (1,1): -3 -2 -4 -6 -> -2 at (2,3), index 2*4+3 = 11
/// -5  2 | -4 -6
/// ```
#[rustfmt::skip]
fn fixed() -> Result<Tensor> {
    Tensor::new(&[
        [1f64, 5., 2., 0.],
        [3., 4., 8., 1.],
        [0., -1., -3., -2.],
        [-5., 2., -4., -6.],
    ], &Device::Cpu)?.reshape((1, 1, 4, 4))
}

/// `r = 1..=16` laid out as a `(1, 1, 4, 4)` plane: the weights of the scalar loss.
fn weights() -> Result<Tensor> {
    Tensor::arange(1f64, 17., &Device::Cpu)?.reshape((1, 1, 4, 4))
}

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_vec1::<f64>()
}

#[test]
fn pooling_forward_by_hand() -> Result<()> {
    // PyTorch: y, i = F.max_pool2d(x, 2, return_indices=True)
    // -> y = [[5, 8], [2, -2]], i = [[1, 6], [13, 11]] (see `fixed`; i is row * W + col).
    let (y, i) = max_pool2d_with_indices(&fixed()?, 2)?;
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    assert_eq!(flat(&y)?, vec![5., 8., 2., -2.]);
    assert_eq!(i.dtype(), DType::U32);
    assert_eq!(i.flatten_all()?.to_vec1::<u32>()?, vec![1, 6, 13, 11]);
    Ok(())
}

#[test]
fn unpooling_forward_and_backward_by_hand() -> Result<()> {
    // PyTorch: y, i = F.max_pool2d(x, 2, return_indices=True); y.requires_grad_()
    //          z = F.max_unpool2d(y, i, 2); (z * r).sum().backward()
    // z is zeros with y put back at the indices: z.flatten()[[1, 6, 13, 11]] = [5, 8, 2, -2].
    // d/dy sum(z * r) = r read at the indices: r.flatten()[[1, 6, 13, 11]] = [2, 7, 14, 12].
    let (y, i) = max_pool2d_with_indices(&fixed()?, 2)?;
    let y = Var::from_tensor(&y)?;
    let z = max_unpool2d(y.as_tensor(), &i, 2, None)?;
    assert_eq!(z.dims(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let want = vec![
        0., 5., 0., 0.,
        0., 0., 8., 0.,
        0., 0., 0., -2.,
        0., 2., 0., 0.,
    ];
    assert_eq!(flat(&z)?, want);
    let grads = (z * weights()?)?.sum_all()?.backward()?;
    let Some(gy) = grads.get(y.as_tensor()) else {
        candle::bail!("no gradient reached the pooled values");
    };
    assert_eq!(flat(gy)?, vec![2., 7., 14., 12.]);
    Ok(())
}

#[test]
fn pool_then_unpool_backward_by_hand() -> Result<()> {
    // PyTorch: x.requires_grad_(); y, i = F.max_pool2d(x, 2, return_indices=True)
    //          (F.max_unpool2d(y, i, 2) * r).sum().backward()
    // x.grad is r at the maxima (index + 1, as r = 1..=16) and 0 elsewhere:
    // x.grad.flatten()[[1, 6, 11, 13]] = [2, 7, 12, 14].
    let x = Var::from_tensor(&fixed()?)?;
    let (y, i) = max_pool2d_with_indices(x.as_tensor(), 2)?;
    let z = max_unpool2d(&y, &i, 2, None)?;
    let grads = (z * weights()?)?.sum_all()?.backward()?;
    let Some(gx) = grads.get(x.as_tensor()) else {
        candle::bail!("no gradient reached the input");
    };
    let mut want = vec![0f64; 16];
    for at in [1usize, 6, 11, 13] {
        want[at] = (at + 1) as f64;
    }
    assert_eq!(flat(gx)?, want);
    Ok(())
}

#[test]
fn values_equal_max_pool2d() -> Result<()> {
    // The same maxima as the plain pool, on an input with odd sides (floor: 7x9 -> 3x4).
    let x = Tensor::new(noise(2 * 3 * 7 * 9), &Device::Cpu)?.reshape((2, 3, 7, 9))?;
    let (y, i) = max_pool2d_with_indices(&x, 2)?;
    assert_eq!(y.dims(), &[2, 3, 3, 4]);
    assert_eq!(flat(&y)?, flat(&max_pool2d(&x, 2)?)?);
    // The values are the input read at the indices.
    let read = x.reshape((2, 3, 63))?.gather(&i.reshape((2, 3, 12))?, 2)?;
    assert_eq!(flat(&read)?, flat(&y)?);
    Ok(())
}

#[test]
fn odd_input_and_given_size() -> Result<()> {
    // PyTorch: x = torch.arange(25.).view(1, 1, 5, 5)
    //          y, i = F.max_pool2d(x, 2, return_indices=True)   # 5x5 -> 2x2 (floor)
    //          F.max_unpool2d(y, i, 2, output_size=(5, 5))
    // The windows' maxima are their bottom-right corners: i = [6, 8, 16, 18], y = i.
    let x = Tensor::arange(0f64, 25., &Device::Cpu)?.reshape((1, 1, 5, 5))?;
    let (y, i) = max_pool2d_with_indices(&x, 2)?;
    assert_eq!(i.flatten_all()?.to_vec1::<u32>()?, vec![6, 8, 16, 18]);
    let z = max_unpool2d(&y, &i, 2, Some((5, 5)))?;
    assert_eq!(z.dims(), &[1, 1, 5, 5]);
    let mut want = vec![0f64; 25];
    for at in [6usize, 8, 16, 18] {
        want[at] = at as f64;
    }
    assert_eq!(flat(&z)?, want);
    // PyTorch's int64 indices give the same.
    let z64 = max_unpool2d(&y, &i.to_dtype(DType::I64)?, 2, Some((5, 5)))?;
    assert_eq!(flat(&z64)?, want);
    Ok(())
}

/// Deterministic values in (-1, 1) with no ties inside a window.
fn noise(len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| ((i as f64 * 12.9898).sin() * 43758.5453).fract())
        .collect()
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    // f(x) = sum(unpool(pool(x)^2) * r) on 2 images of 3 channels, even and odd sizes.
    for (h, w) in [(6, 6), (7, 5)] {
        let x = Tensor::new(noise(2 * 3 * h * w), &Device::Cpu)?.reshape((2, 3, h, w))?;
        let r = (x.ones_like()? * 0.5 + x.sin()?)?;
        let err = check_gradient(
            |x| {
                let (y, i) = max_pool2d_with_indices(x, 2)?;
                (max_unpool2d(&y.sqr()?, &i, 2, Some((h, w)))? * &r)?.sum_all()
            },
            &x,
            1e-6,
        )?;
        assert!(err < 1e-6, "{h}x{w}: relative error {err}");
    }
    Ok(())
}

#[test]
fn unpool_gradient_matches_finite_differences() -> Result<()> {
    // The unpooling alone, with fixed indices (a 3x3 pool of a 6x9 map, PyTorch's
    // default size 6x9), with respect to the pooled values.
    let x = Tensor::new(noise(2 * 6 * 9), &Device::Cpu)?.reshape((1, 2, 6, 9))?;
    let (y, i) = max_pool2d_with_indices(&x, 3)?;
    let r = Tensor::new(noise(2 * 6 * 9 + 7)[7..].to_vec(), &Device::Cpu)?.reshape((1, 2, 6, 9))?;
    let errs = check_gradients(
        |ys| (max_unpool2d(&ys[0], &i, 3, None)? * &r)?.sum_all(),
        &[y],
        1e-6,
    )?;
    assert!(errs[0] < 1e-6, "relative error {}", errs[0]);
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let x = fixed()?;
    assert!(max_pool2d_with_indices(&x.flatten_all()?, 2).is_err());
    assert!(max_pool2d_with_indices(&x, 0).is_err());
    assert!(max_pool2d_with_indices(&x, 5).is_err());
    let (y, i) = max_pool2d_with_indices(&x, 2)?;
    assert!(max_unpool2d(&y, &i.reshape((1, 1, 4))?, 2, None).is_err());
    assert!(max_unpool2d(&y, &i, 0, None).is_err());
    // 2x2 pooled by 2: the size must lie strictly between 2 and 6 (PyTorch's rule).
    assert!(max_unpool2d(&y, &i, 2, Some((6, 4))).is_err());
    assert!(max_unpool2d(&y, &i, 2, Some((4, 2))).is_err());
    assert!(max_unpool2d(&y, &i, 2, Some((5, 3))).is_ok());
    // Index 13 does not fit a 3x3 plane; a negative i64 index fits none.
    let err = max_unpool2d(&y, &i, 2, Some((3, 3)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside a plane of 9"), "{err}");
    let negative = Tensor::new(&[1i64, 6, -1, 11], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
    assert!(max_unpool2d(&y, &negative, 2, None).is_err());
    assert!(max_unpool2d(&y, &i.to_dtype(DType::F32)?, 2, None).is_err());
    Ok(())
}

#[test]
fn candle_scatter_add_backward_fails_into_a_larger_plane() -> Result<()> {
    // The candle 0.11 pitfall `max_unpool2d` works around (see `common::nn::unpool`):
    // `zeros(16).scatter_add(idx(4), y(4))` runs forward, but its backward builds
    // the zeros' gradient with a scatter whose source has the zeros' shape, and fails.
    // If this starts passing, candle is fixed and the plain scatter_add would do.
    let y = Var::new(&[[5f64, 8., 2., -2.]], &Device::Cpu)?;
    let idx = Tensor::new(&[[1u32, 6, 13, 11]], &Device::Cpu)?;
    let z =
        Tensor::zeros((1, 16), DType::F64, &Device::Cpu)?.scatter_add(&idx, y.as_tensor(), 1)?;
    assert_eq!(z.sum_all()?.to_scalar::<f64>()?, 13.0);
    let err = z.sum_all()?.backward().map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("shape mismatch in scatter"), "{err}");
    Ok(())
}
