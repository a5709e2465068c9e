//! Tests of `common::nn` pooling and resampling: forward values by hand or by an
//! independent per-pixel loop (PyTorch's algorithm), backward by finite differences.

use candle::{DType, Device, Result, Tensor};
use common::nn::gradcheck::{check_gradient, check_gradients};
use common::nn::{bilinear_matrix, max_pool2d, resize_bilinear, upsample_nearest2d};

/// Deterministic, distinct-looking values in (-1, 1).
fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43758.5453).fract())
        .collect()
}

fn tensor(shape: &[usize], seed: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu)
}

/// `sum(ys * r)` with fixed random `r`, so every output carries a different gradient.
fn weighted_sum(ys: &Tensor, seed: f64) -> Result<Tensor> {
    let r = tensor(ys.dims(), seed)?.to_dtype(ys.dtype())?;
    (ys * r)?.sum_all()
}

#[test]
fn max_pool_forward_drops_the_ragged_edge() -> Result<()> {
    // 4x5 input, 2x2 windows: floor gives 2x2 outputs, the last column is dropped.
    #[rustfmt::skip]
    let x = Tensor::new(&[
        [1f32, 5., 2., 0., 99.],
        [3., 4., 8., 1., 99.],
        [0., -1., -3., -2., 99.],
        [-5., 2., -4., -6., 99.],
    ], &Device::Cpu)?.reshape((1, 1, 4, 5))?;
    let y = max_pool2d(&x, 2)?;
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5., 8., 2., -2.]);
    Ok(())
}

#[test]
fn max_pool_gradient_matches_finite_differences() -> Result<()> {
    // Distinct values (gaps >> eps), odd sizes, k = 2 and 3.
    for (shape, k) in [([2usize, 3, 5, 7], 2usize), ([1, 2, 6, 7], 3)] {
        let x = tensor(&shape, 1.0)?;
        let err = check_gradient(|x| weighted_sum(&max_pool2d(x, k)?, 2.0), &x, 1e-5)?;
        assert!(err < 1e-5, "max_pool2d k={k} gradient error {err}");
    }
    Ok(())
}

#[test]
fn max_pool_tie_gives_the_whole_gradient_to_the_first_maximum() -> Result<()> {
    // One 2x2 window of equal values: PyTorch (CPU) puts the gradient 1 on the first.
    let x = candle::Var::new(&[[[[7f64, 7.], [7., 7.]]]], &Device::Cpu)?;
    let grads = max_pool2d(x.as_tensor(), 2)?.sum_all()?.backward()?;
    let g = grads
        .get(x.as_tensor())
        .expect("gradient")
        .flatten_all()?
        .to_vec1::<f64>()?;
    assert_eq!(g, vec![1., 0., 0., 0.]);
    Ok(())
}

#[test]
fn gradcheck_catches_candles_wrong_max_pool_backward() -> Result<()> {
    // candle's own max_pool2d scales the gradient by 1/4: the checker must say so.
    let x = tensor(&[1, 2, 4, 4], 3.0)?;
    let err = check_gradient(|x| weighted_sum(&x.max_pool2d(2)?, 4.0), &x, 1e-5)?;
    assert!(
        err > 0.5,
        "candle max_pool2d should fail the check, error {err}"
    );
    Ok(())
}

#[test]
fn upsample_nearest_forward_repeats_each_pixel() -> Result<()> {
    let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
    let y = upsample_nearest2d(&x, 2)?;
    assert_eq!(y.dims(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let expected = vec![1f32, 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.];
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, expected);
    Ok(())
}

#[test]
fn upsample_nearest_gradient_adds_when_input_feeds_two_ops() -> Result<()> {
    // x feeds the up-sampling AND a square: both gradients must reach x.
    let f_ours = |x: &Tensor| -> Result<Tensor> {
        weighted_sum(&upsample_nearest2d(x, 3)?, 5.0)? + weighted_sum(&x.sqr()?, 6.0)?
    };
    let x = tensor(&[2, 2, 3, 4], 7.0)?;
    let err = check_gradient(f_ours, &x, 1e-5)?;
    assert!(err < 1e-5, "upsample_nearest2d gradient error {err}");

    // candle's own op overwrites the square's gradient: the same check fails.
    let f_candle = |x: &Tensor| -> Result<Tensor> {
        weighted_sum(&x.upsample_nearest2d(9, 12)?, 5.0)? + weighted_sum(&x.sqr()?, 6.0)?
    };
    let err = check_gradient(f_candle, &x, 1e-5)?;
    assert!(
        err > 1e-2,
        "candle upsample_nearest2d should fail, error {err}"
    );
    Ok(())
}

#[test]
fn bilinear_matrix_matches_pytorch_by_hand() -> Result<()> {
    // F.interpolate(torch.tensor([[[[1., 2.]]]]), size=(1, 4), mode="bilinear",
    // align_corners=False) = [1.00, 1.25, 1.75, 2.00]: sources at 0 (clamped), 0.25, 0.75, 1.25.
    let m = bilinear_matrix(2, 4, &Device::Cpu, DType::F64)?.to_vec2::<f64>()?;
    assert_eq!(
        m,
        vec![
            vec![1., 0.],
            vec![0.75, 0.25],
            vec![0.25, 0.75],
            vec![0., 1.]
        ]
    );
    let x = Tensor::new(&[[[[1f64, 2.]]]], &Device::Cpu)?;
    let y = resize_bilinear(&x, 1, 4)?.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(y, vec![1.0, 1.25, 1.75, 2.0]);
    Ok(())
}

/// PyTorch's `upsample_bilinear2d` (align_corners=False) written per output pixel.
fn reference_bilinear(x: &[f64], (h_in, w_in): (usize, usize), (h, w): (usize, usize)) -> Vec<f64> {
    let source = |dst: usize, in_size: usize, out_size: usize| {
        let scale = in_size as f64 / out_size as f64;
        let src = ((dst as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = src as usize;
        let step = usize::from(i0 < in_size - 1);
        let lambda = src - i0 as f64;
        (i0, i0 + step, lambda)
    };
    let mut out = Vec::with_capacity(h * w);
    for oy in 0..h {
        let (y0, y1, ly) = source(oy, h_in, h);
        for ox in 0..w {
            let (x0, x1, lx) = source(ox, w_in, w);
            let at = |y: usize, xx: usize| x[y * w_in + xx];
            out.push(
                (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                    + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1)),
            );
        }
    }
    out
}

#[test]
fn resize_bilinear_matches_reference_at_non_integer_sizes() -> Result<()> {
    for ((h_in, w_in), (h, w)) in [((5, 7), (8, 11)), ((7, 5), (3, 4)), ((4, 4), (4, 4))] {
        let x = tensor(&[2, 3, h_in, w_in], 8.0)?;
        let y = resize_bilinear(&x, h, w)?;
        assert_eq!(y.dims(), &[2, 3, h, w]);
        let xs = x.flatten_from(2)?.to_vec3::<f64>()?;
        let ys = y.flatten_from(2)?.to_vec3::<f64>()?;
        for (xn, yn) in xs.iter().zip(&ys) {
            for (xc, yc) in xn.iter().zip(yn) {
                let expected = reference_bilinear(xc, (h_in, w_in), (h, w));
                for (a, b) in yc.iter().zip(&expected) {
                    assert!(
                        (a - b).abs() < 1e-12,
                        "{h_in}x{w_in} -> {h}x{w}: {a} vs {b}"
                    );
                }
            }
        }
    }
    // f32 too.
    let x32 = tensor(&[1, 1, 5, 7], 9.0)?.to_dtype(DType::F32)?;
    assert_eq!(resize_bilinear(&x32, 8, 11)?.dtype(), DType::F32);
    Ok(())
}

#[test]
fn resize_bilinear_gradient_matches_finite_differences() -> Result<()> {
    let x = tensor(&[2, 2, 5, 7], 10.0)?;
    let err = check_gradient(
        |x| weighted_sum(&resize_bilinear(x, 8, 11)?, 11.0),
        &x,
        1e-5,
    )?;
    assert!(err < 1e-5, "resize_bilinear up gradient error {err}");
    let err = check_gradient(|x| weighted_sum(&resize_bilinear(x, 3, 4)?, 12.0), &x, 1e-5)?;
    assert!(err < 1e-5, "resize_bilinear down gradient error {err}");
    // Two inputs through one function: both gradients checked.
    let a = tensor(&[1, 1, 3, 3], 13.0)?;
    let b = tensor(&[1, 1, 6, 6], 14.0)?;
    let errs = check_gradients(
        |xs| weighted_sum(&(resize_bilinear(&xs[0], 6, 6)? * &xs[1])?, 15.0),
        &[a, b],
        1e-5,
    )?;
    assert!(errs.iter().all(|e| *e < 1e-5), "errors {errs:?}");
    Ok(())
}

#[test]
fn bad_inputs_give_clear_errors() -> Result<()> {
    let x3 = Tensor::zeros((1, 4, 4), DType::F32, &Device::Cpu)?;
    let x4 = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
    let msg = max_pool2d(&x3, 2).unwrap_err().to_string();
    assert!(
        msg.contains("(N, C, H, W)") && msg.contains("[1, 4, 4]"),
        "{msg}"
    );
    let msg = max_pool2d(&x4, 3).unwrap_err().to_string();
    assert!(msg.contains("smaller than the 3x3 window"), "{msg}");
    let msg = upsample_nearest2d(&x4, 0).unwrap_err().to_string();
    assert!(msg.contains("factor must be at least 1"), "{msg}");
    let msg = resize_bilinear(&x4, 0, 3).unwrap_err().to_string();
    assert!(msg.contains("output size must be positive"), "{msg}");
    let msg = check_gradient(|x| x.sum_all(), &x4, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("needs f64"), "{msg}");
    let x64 = x4.to_dtype(DType::F64)?;
    let msg = check_gradient(|x| Ok(x.clone()), &x64, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("must return a scalar"), "{msg}");
    Ok(())
}
