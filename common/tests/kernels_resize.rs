//! Tests of the CPU bilinear-resize kernel behind `common::nn::resize_bilinear`: values
//! and gradients equal to the interpolation-matrix products `A_h · X · A_wᵀ`
//! (`nn::resize_bilinear_by_matrices`, the other path, itself checked against PyTorch's
//! per-pixel rule and finite differences in `nn_resample.rs`) on random inputs at the sizes the assignments use and odd ones, in
//! f32 and f64, on strided inputs, and the error on an empty input.

use candle::{DType, Device, Tensor, Var};
use common::kernels;
use common::nn::{resize_bilinear, resize_bilinear_by_matrices};

mod support;
use support::random;

type Result<T> = candle::Result<T>;

/// Output and input gradient of `sum(f(x) * r)` with a fixed random `r`.
fn value_and_grad(
    f: impl Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    r_seed: u64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let var = Var::from_tensor(x)?;
    let y = f(var.as_tensor())?;
    let r = random(y.dims(), y.dtype(), r_seed)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let dx = grads.get(var.as_tensor()).expect("no gradient");
    let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
    Ok((flat(&y)?, flat(dx)?))
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn kernel_matches_the_matrix_products_with_gradients() -> Result<()> {
    // (input shape, output size): the A3 taps' 45x60 / 23x30 / 12x15 -> 90x120, A2's
    // upsampling, shrinking, odd non-integer ratios, a 1x1 input, the identity.
    let cases: [([usize; 4], (usize, usize)); 8] = [
        ([2, 3, 45, 60], (90, 120)),
        ([1, 4, 23, 30], (90, 120)),
        ([1, 2, 12, 15], (90, 120)),
        ([3, 5, 8, 8], (32, 32)),
        ([2, 2, 17, 13], (5, 9)),
        ([1, 3, 5, 7], (8, 11)),
        ([2, 1, 1, 1], (4, 3)),
        ([1, 2, 6, 4], (6, 4)),
    ];
    // Unless SEGKIT_CANDLE_OPS forces the matrix path everywhere, this is the kernel.
    let probe = random(&[1, 1, 2, 2], DType::F32, 0)?;
    assert_eq!(
        kernels::uses_fast_path(&probe),
        !kernels::candle_ops_forced()
    );
    for (i, (shape, (h, w))) in cases.into_iter().enumerate() {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            let x = random(&shape, dtype, i as u64)?;
            let (y, dx) = value_and_grad(|x| resize_bilinear(x, h, w), &x, 50 + i as u64)?;
            let (y_ref, dx_ref) =
                value_and_grad(|x| resize_bilinear_by_matrices(x, h, w), &x, 50 + i as u64)?;
            let what = format!("case {i} {shape:?} -> {h}x{w} {dtype:?}");
            assert_close(&y, &y_ref, tol, &format!("{what}: output"));
            assert_close(&dx, &dx_ref, tol, &format!("{what}: gradient"));
        }
    }
    Ok(())
}

#[test]
fn strided_input_is_resized_like_its_contiguous_copy() -> Result<()> {
    // (1, 2, 7, 5) seen through a transpose of the last two axes: (1, 2, 5, 7).
    let base = random(&[1, 2, 7, 5], DType::F32, 7)?;
    let view = base.transpose(2, 3)?;
    assert!(!view.is_contiguous());
    let a = resize_bilinear(&view, 9, 4)?;
    let b = resize_bilinear(&view.contiguous()?, 9, 4)?;
    assert_eq!(
        a.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn empty_input_is_an_error_not_a_panic() -> Result<()> {
    let x = Tensor::zeros((1, 1, 0, 3), DType::F32, &Device::Cpu)?;
    let msg = resize_bilinear(&x, 4, 4).unwrap_err().to_string();
    assert!(
        msg.contains("input size must be positive, got 0x3"),
        "{msg}"
    );
    Ok(())
}
