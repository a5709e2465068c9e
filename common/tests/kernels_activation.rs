//! Tests of `common::kernels::relu`: values and gradient against candle's ReLU (f32 and
//! f64, contiguous and transposed input), NaN kept, and the switch to candle's op.

use candle::{DType, Device, Tensor, Var};
use common::kernels;

type Result<T> = candle::Result<T>;

fn value_and_grad(
    f: impl Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let var = Var::from_tensor(x)?;
    let y = f(var.as_tensor())?;
    // A non-uniform upstream gradient, so a wrong mask cannot cancel out.
    let r = Tensor::arange(0f64, y.elem_count() as f64, &Device::Cpu)?
        .to_dtype(x.dtype())?
        .reshape(y.dims())?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let dx = grads.get(var.as_tensor()).expect("no gradient");
    let flat = |t: &Tensor| t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>();
    Ok((flat(&y)?, flat(dx)?))
}

#[test]
fn relu_matches_candle_values_and_gradient() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        // No exact zero here: candle's ReLU passes the gradient at 0, PyTorch's does not
        // (see relu_gradient_at_zero_is_zero_like_pytorch).
        let x = Tensor::arange(-20f64, 20.0, &Device::Cpu)?
            .affine(0.25, 0.125)?
            .to_dtype(dtype)?
            .reshape((2, 4, 5))?;
        for input in [x.clone(), x.transpose(1, 2)?] {
            let ours = value_and_grad(kernels::relu, &input)?;
            let stock = value_and_grad(|t| t.relu(), &input)?;
            assert_eq!(ours, stock, "{dtype:?} {:?}", input.dims());
            assert!(ours.1.contains(&0.0) && ours.1.iter().any(|g| *g > 0.0));
        }
    }
    Ok(())
}

#[test]
fn relu_gradient_at_zero_is_zero_like_pytorch() -> Result<()> {
    // torch.relu(torch.tensor([-1., 0., 1.], requires_grad=True)).sum().backward()
    // gives grad [0, 0, 1] (threshold_backward masks with y > 0).
    let x = Tensor::new(&[-1f32, 0.0, 1.0], &Device::Cpu)?;
    let (y, dx) = value_and_grad(kernels::relu, &x)?;
    assert_eq!(y, vec![0.0, 0.0, 1.0]);
    assert_eq!(dx, vec![0.0, 0.0, 2.0]); // upstream gradient r = [0, 1, 2]
    Ok(())
}

#[test]
fn relu_keeps_nan_like_pytorch() -> Result<()> {
    let x = Tensor::new(&[f32::NAN, -1.0, 2.0], &Device::Cpu)?;
    let y = kernels::relu(&x)?.to_vec1::<f32>()?;
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[0.0, 2.0]);
    Ok(())
}
