//! Tests of `common::kernels::{conv2d, conv_transpose2d}`: forward and both gradients
//! against candle's own ops on random inputs, central finite differences in f64
//! (first and second order), and the errors bad shapes give.

use candle::{DType, Device, Tensor, Var};
use common::kernels::{self, Conv2dParams, ConvTranspose2dParams};

mod support;
use support::random;

type Result<T> = candle::Result<T>;

/// max |a - b| / max |b|: the error relative to the scale of the reference.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    Ok(diff / scale)
}

/// Output, input gradient and weight gradient of `sum(op(x, w) * r)` for a fixed random `r`.
fn value_and_grads(
    op: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let y = op(xv.as_tensor(), wv.as_tensor())?;
    let r = random(y.dims(), y.dtype(), 99)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let dx = grads
        .get(xv.as_tensor())
        .expect("no gradient for x")
        .clone();
    let dw = grads
        .get(wv.as_tensor())
        .expect("no gradient for w")
        .clone();
    Ok((y, dx, dw))
}

/// (x shape, w shape, params) for conv2d: batch > 1, odd and non-square sizes, stride 2,
/// padding, dilation 2, 1x1 and 7x7 kernels, C_in = 3, and one input big enough to need
/// several im2col tiles. candle 0.11's conv2d backward takes the output padding of its
/// input gradient from the height only, so it fails ("shape mismatch in add") when the
/// stride leaves different remainders along height and width (e.g. 11x8, stride 2):
/// such shapes are covered by the finite-difference tests below instead.
fn conv_cases() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    let p = |stride, padding, dilation| Conv2dParams {
        stride,
        padding,
        dilation,
    };
    vec![
        ([2, 3, 7, 9], [4, 3, 3, 3], p(1, 1, 1)),
        ([3, 5, 11, 9], [6, 5, 3, 3], p(2, 1, 1)),
        ([2, 4, 13, 10], [3, 4, 3, 3], p(1, 2, 2)),
        ([2, 6, 5, 7], [8, 6, 1, 1], p(1, 0, 1)),
        ([1, 6, 5, 7], [4, 6, 1, 1], p(2, 0, 1)),
        ([2, 3, 17, 15], [4, 3, 7, 7], p(2, 3, 1)),
        ([1, 3, 9, 6], [2, 3, 2, 3], p(1, 0, 1)),
        ([4, 8, 9, 9], [5, 8, 3, 3], p(1, 0, 1)),
        ([1, 2, 6, 6], [3, 2, 3, 3], p(3, 2, 2)),
        ([2, 64, 40, 128], [8, 64, 3, 3], p(1, 1, 1)),
        // Input gradients computed as a conv with the flipped kernel (stride 1, square
        // window, >= 8 input channels), with dilation, small padding and an odd batch.
        ([2, 8, 13, 10], [3, 8, 3, 3], p(1, 2, 2)),
        ([1, 9, 8, 11], [4, 9, 5, 5], p(1, 1, 1)),
        ([3, 8, 10, 7], [6, 8, 3, 3], p(1, 1, 1)),
    ]
}

#[test]
fn conv2d_matches_candle_forward_and_gradients() -> Result<()> {
    for (i, (xs, ws, p)) in conv_cases().into_iter().enumerate() {
        let x = random(&xs, DType::F32, 10 + i as u64)?;
        let w = random(&ws, DType::F32, 20 + i as u64)?;
        let ours = value_and_grads(|x, w| kernels::conv2d(x, w, &p), &x, &w)?;
        let stock = value_and_grads(
            |x, w| x.conv2d(w, p.padding, p.stride, p.dilation, 1),
            &x,
            &w,
        )?;
        for (what, a, b) in [
            ("y", &ours.0, &stock.0),
            ("dx", &ours.1, &stock.1),
            ("dw", &ours.2, &stock.2),
        ] {
            let err = rel_err(a, b)?;
            assert!(
                err < 1e-4,
                "case {i} {xs:?} * {ws:?} {p:?}: {what} differs by {err:e}"
            );
        }
    }
    Ok(())
}

/// (x shape, w shape (c_in, c_out, k, k), params) for conv_transpose2d.
fn transpose_cases() -> Vec<([usize; 4], [usize; 4], ConvTranspose2dParams)> {
    let p = |stride, padding, output_padding, dilation| ConvTranspose2dParams {
        stride,
        padding,
        output_padding,
        dilation,
    };
    vec![
        ([2, 4, 5, 6], [4, 3, 2, 2], p(2, 0, 0, 1)),
        ([2, 3, 4, 5], [3, 2, 3, 3], p(2, 1, 1, 1)),
        ([1, 2, 5, 4], [2, 3, 3, 3], p(1, 1, 0, 2)),
        ([3, 5, 4, 3], [5, 4, 4, 4], p(2, 1, 0, 1)),
        ([2, 6, 3, 3], [6, 2, 1, 1], p(1, 0, 0, 1)),
        ([4, 3, 7, 5], [3, 3, 3, 3], p(1, 1, 0, 1)),
        // Padding wider than the window (2 > k - 1 = 1): no flipped-kernel conv exists.
        ([1, 2, 5, 6], [2, 3, 2, 2], p(1, 2, 0, 1)),
        // Stride 1 with 8 output channels: the transposed conv runs as a flipped-kernel conv.
        ([2, 3, 5, 4], [3, 8, 3, 3], p(1, 1, 0, 1)),
    ]
}

#[test]
fn conv_transpose2d_matches_candle_forward_and_gradients() -> Result<()> {
    for (i, (xs, ws, p)) in transpose_cases().into_iter().enumerate() {
        let x = random(&xs, DType::F32, 30 + i as u64)?;
        let w = random(&ws, DType::F32, 40 + i as u64)?;
        let ours = value_and_grads(|x, w| kernels::conv_transpose2d(x, w, &p), &x, &w)?;
        let stock = value_and_grads(
            |x, w| x.conv_transpose2d(w, p.padding, p.output_padding, p.stride, p.dilation),
            &x,
            &w,
        )?;
        for (what, a, b) in [
            ("y", &ours.0, &stock.0),
            ("dx", &ours.1, &stock.1),
            ("dw", &ours.2, &stock.2),
        ] {
            let err = rel_err(a, b)?;
            assert!(
                err < 1e-4,
                "case {i} {xs:?} * {ws:?} {p:?}: {what} differs by {err:e}"
            );
        }
    }
    Ok(())
}

#[test]
fn conv2d_hand_computed_values() -> Result<()> {
    // x = [[1,2,3],[4,5,6],[7,8,9]], w = [[1,0],[0,-1]]: y[i][j] = x[i][j] - x[i+1][j+1] = -4.
    let x = Tensor::arange(1f32, 10., &Device::Cpu)?.reshape((1, 1, 3, 3))?;
    let w = Tensor::new(&[[[[1f32, 0.], [0., -1.]]]], &Device::Cpu)?;
    let y = kernels::conv2d(&x, &w, &Conv2dParams::default())?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![-4.0; 4]);
    // Padding 1, stride 2: windows at rows/columns 0 and 2 of the zero-padded 5x5 grid:
    // y[0][0] = 0 - x[0][0] = -1, y[0][1] = 0 - x[0][2] = -3, y[1][0] = 0 - x[2][0] = -7,
    // y[1][1] = x[1][1] - x[2][2] = 5 - 9 = -4.
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        dilation: 1,
    };
    let y = kernels::conv2d(&x, &w, &p)?;
    assert_eq!(
        y.flatten_all()?.to_vec1::<f32>()?,
        vec![-1.0, -3.0, -7.0, -4.0]
    );
    Ok(())
}

/// Central-difference gradient of a scalar function at every element of `x` (f64).
fn finite_difference(
    f: &impl Fn(&Tensor) -> Result<f64>,
    x: &Tensor,
    eps: f64,
) -> Result<Vec<f64>> {
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let mut grad = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let fp = f(&Tensor::from_vec(plus, x.dims(), x.device())?)?;
        let fm = f(&Tensor::from_vec(minus, x.dims(), x.device())?)?;
        grad.push((fp - fm) / (2.0 * eps));
    }
    Ok(grad)
}

/// Max relative error of the autograd gradient of `f` at `x` against central differences.
fn gradient_error(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> Result<f64> {
    let var = Var::from_tensor(x)?;
    let grads = f(var.as_tensor())?.backward()?;
    let analytic = grads.get(var.as_tensor()).expect("no gradient").clone();
    let numeric = finite_difference(&|t: &Tensor| f(t)?.to_scalar::<f64>(), x, 1e-6)?;
    rel_err(&analytic, &Tensor::from_vec(numeric, x.dims(), x.device())?)
}

#[test]
fn conv2d_gradients_match_finite_differences_f64() -> Result<()> {
    let p = |stride, padding, dilation| Conv2dParams {
        stride,
        padding,
        dilation,
    };
    let cases = [
        ([2, 3, 6, 5], [2, 3, 3, 3], p(1, 1, 1)),
        // Height 7 and width 6 leave different remainders under stride 2 (see conv_cases).
        ([2, 2, 7, 6], [3, 2, 3, 3], p(2, 1, 2)),
        ([1, 2, 11, 8], [2, 2, 3, 3], p(2, 1, 1)),
        ([1, 3, 4, 5], [2, 3, 1, 1], p(1, 0, 1)),
        // The flipped-kernel input gradient (>= 8 channels), with dilation 2.
        ([1, 8, 7, 6], [3, 8, 3, 3], p(1, 1, 2)),
    ];
    for (i, (xs, ws, p)) in cases.into_iter().enumerate() {
        let x = random(&xs, DType::F64, 50 + i as u64)?;
        let w = random(&ws, DType::F64, 60 + i as u64)?;
        let y_dims = kernels::conv2d(&x, &w, &p)?.dims().to_vec();
        let r = random(&y_dims, DType::F64, 70 + i as u64)?;
        let err_x = gradient_error(|x| (kernels::conv2d(x, &w, &p)? * &r)?.sum_all(), &x)?;
        let err_w = gradient_error(|w| (kernels::conv2d(&x, w, &p)? * &r)?.sum_all(), &w)?;
        assert!(
            err_x < 1e-5 && err_w < 1e-5,
            "case {i}: dx error {err_x:e}, dw error {err_w:e}"
        );
    }
    Ok(())
}

#[test]
fn conv_transpose2d_gradients_match_finite_differences_f64() -> Result<()> {
    let p = ConvTranspose2dParams {
        stride: 2,
        padding: 1,
        output_padding: 1,
        dilation: 1,
    };
    let x = random(&[2, 3, 3, 4], DType::F64, 80)?;
    let w = random(&[3, 2, 3, 3], DType::F64, 81)?;
    let y_dims = kernels::conv_transpose2d(&x, &w, &p)?.dims().to_vec();
    assert_eq!(y_dims, vec![2, 2, 6, 8]); // (3 - 1) * 2 - 2 + 2 + 1 + 1 = 6, (4 - 1) * 2 + 2 = 8
    let r = random(&y_dims, DType::F64, 82)?;
    let err_x = gradient_error(
        |x| (kernels::conv_transpose2d(x, &w, &p)? * &r)?.sum_all(),
        &x,
    )?;
    let err_w = gradient_error(
        |w| (kernels::conv_transpose2d(&x, w, &p)? * &r)?.sum_all(),
        &w,
    )?;
    assert!(
        err_x < 1e-5 && err_w < 1e-5,
        "dx error {err_x:e}, dw error {err_w:e}"
    );
    Ok(())
}

#[test]
fn conv2d_second_order_gradients_match_finite_differences_f64() -> Result<()> {
    // g(x) = sum(dL/dw (x) * r2) with L = sum(conv2d(x, w) * r): differentiating g needs
    // the backward of the weight-gradient op; same for the input-gradient op and w.
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        dilation: 1,
    };
    let x = random(&[2, 2, 5, 6], DType::F64, 90)?;
    let w = random(&[3, 2, 3, 3], DType::F64, 91)?;
    let r = random(kernels::conv2d(&x, &w, &p)?.dims(), DType::F64, 92)?;
    let r_w = random(w.dims(), DType::F64, 93)?;
    let r_x = random(x.dims(), DType::F64, 94)?;
    let weight_grad_of = |x: &Tensor| -> Result<Tensor> {
        let wv = Var::from_tensor(&w)?;
        let grads = (kernels::conv2d(x, wv.as_tensor(), &p)? * &r)?
            .sum_all()?
            .backward()?;
        (grads.get(wv.as_tensor()).expect("no dw") * &r_w)?.sum_all()
    };
    let input_grad_of = |w: &Tensor| -> Result<Tensor> {
        let xv = Var::from_tensor(&x)?;
        let grads = (kernels::conv2d(xv.as_tensor(), w, &p)? * &r)?
            .sum_all()?
            .backward()?;
        (grads.get(xv.as_tensor()).expect("no dx") * &r_x)?.sum_all()
    };
    let err_x = gradient_error(weight_grad_of, &x)?;
    let err_w = gradient_error(input_grad_of, &w)?;
    assert!(
        err_x < 1e-5 && err_w < 1e-5,
        "d(dw)/dx error {err_x:e}, d(dx)/dw error {err_w:e}"
    );
    Ok(())
}

#[test]
fn conv_falls_back_to_candle_for_other_dtypes() -> Result<()> {
    // f16 is not a fast-path dtype: candle's conv runs and agrees with the f32 result.
    let x = random(&[1, 3, 6, 6], DType::F32, 100)?;
    let w = random(&[2, 3, 3, 3], DType::F32, 101)?;
    let p = Conv2dParams {
        stride: 1,
        padding: 1,
        dilation: 1,
    };
    let half = kernels::conv2d(&x.to_dtype(DType::F16)?, &w.to_dtype(DType::F16)?, &p)?;
    assert_eq!(half.dtype(), DType::F16);
    let err = rel_err(&half, &kernels::conv2d(&x, &w, &p)?)?;
    assert!(err < 1e-2, "f16 conv differs by {err:e}");
    Ok(())
}

/// The message of an error, or a panic-free failure when there was none.
fn message(result: Result<Tensor>) -> String {
    match result {
        Ok(t) => format!("unexpected success with shape {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conv_bad_input_gives_clear_errors() -> Result<()> {
    let x = random(&[1, 3, 5, 5], DType::F32, 110)?;
    let w = random(&[2, 4, 3, 3], DType::F32, 111)?;
    let p = Conv2dParams::default();
    let m = message(kernels::conv2d(&x, &w, &p));
    assert!(
        m.contains("has 3 channels but kernel [2, 4, 3, 3] expects 4"),
        "{m}"
    );
    let m = message(kernels::conv2d(&x.squeeze(0)?, &w, &p));
    assert!(m.contains("must both have rank 4"), "{m}");
    let w3 = random(&[2, 3, 3, 3], DType::F64, 112)?;
    let m = message(kernels::conv2d(&x, &w3, &p));
    assert!(m.contains("input is F32 but kernel is F64"), "{m}");
    let big = random(&[2, 3, 7, 7], DType::F32, 113)?;
    let m = message(kernels::conv2d(&x, &big, &p));
    assert!(m.contains("does not fit input 5x5"), "{m}");
    let m = message(kernels::conv2d(
        &x,
        &w3.to_dtype(DType::F32)?,
        &Conv2dParams { stride: 0, ..p },
    ));
    assert!(m.contains("stride and dilation must be at least 1"), "{m}");
    let wt = random(&[3, 2, 2, 2], DType::F32, 114)?;
    let tp = ConvTranspose2dParams {
        stride: 2,
        output_padding: 2,
        ..Default::default()
    };
    let m = message(kernels::conv_transpose2d(&x, &wt, &tp));
    assert!(
        m.contains("output_padding 2 must be smaller than stride 2"),
        "{m}"
    );
    let m = message(kernels::conv_transpose2d(&x, &w, &Default::default()));
    assert!(
        m.contains("has 3 channels but kernel [2, 4, 3, 3] expects 2"),
        "{m}"
    );
    Ok(())
}

#[test]
fn conv2d_bias_matches_candle_and_finite_differences() -> Result<()> {
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        dilation: 1,
    };
    for (i, (xs, ws)) in [([2, 3, 7, 9], [4, 3, 3, 3]), ([4, 5, 6, 6], [3, 5, 1, 1])]
        .into_iter()
        .enumerate()
    {
        let x = Var::from_tensor(&random(&xs, DType::F32, 120 + i as u64)?)?;
        let w = Var::from_tensor(&random(&ws, DType::F32, 130 + i as u64)?)?;
        let b = Var::from_tensor(&random(&[ws[0]], DType::F32, 140 + i as u64)?)?;
        let run = |f: &dyn Fn() -> Result<Tensor>| -> Result<Vec<Tensor>> {
            let y = f()?;
            let r = random(y.dims(), DType::F32, 150)?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let get = |v: &Var| grads.get(v.as_tensor()).cloned().expect("missing gradient");
            Ok(vec![y, get(&x), get(&w), get(&b)])
        };
        let ours =
            run(&|| kernels::conv2d_bias(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &p))?;
        let stock = run(&|| {
            x.as_tensor()
                .conv2d(w.as_tensor(), p.padding, p.stride, p.dilation, 1)?
                .broadcast_add(&b.as_tensor().reshape((1, (), 1, 1))?)
        })?;
        for (what, (a, b)) in ["y", "dx", "dw", "db"].iter().zip(ours.iter().zip(&stock)) {
            let err = rel_err(a, b)?;
            assert!(err < 1e-4, "case {i}: {what} differs by {err:e}");
        }
    }
    // f64 central differences for the bias and the input.
    let x = random(&[2, 2, 5, 4], DType::F64, 160)?;
    let w = random(&[3, 2, 3, 3], DType::F64, 161)?;
    let b = random(&[3], DType::F64, 162)?;
    let r = random(kernels::conv2d(&x, &w, &p)?.dims(), DType::F64, 163)?;
    let err_b = gradient_error(
        |b| (kernels::conv2d_bias(&x, &w, Some(b), &p)? * &r)?.sum_all(),
        &b,
    )?;
    let err_x = gradient_error(
        |x| (kernels::conv2d_bias(x, &w, Some(&b), &p)? * &r)?.sum_all(),
        &x,
    )?;
    assert!(
        err_b < 1e-5 && err_x < 1e-5,
        "db error {err_b:e}, dx error {err_x:e}"
    );
    let m = message(kernels::conv2d_bias(
        &x,
        &w,
        Some(&random(&[2], DType::F64, 164)?),
        &p,
    ));
    assert!(
        m.contains("bias [2] F64 must be a F64 vector of the 3 output channels"),
        "{m}"
    );
    Ok(())
}
