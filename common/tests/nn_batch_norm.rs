//! Tests of `common::nn::BatchNorm2d` and `DoubleConv`: statistics by hand,
//! running-stat updates as PyTorch, gradients by finite differences, names.

use candle::{DType, Device, ModuleT, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::nn::gradcheck::{check_gradient, check_gradient_vars};
use common::nn::{batch_norm2d, double_conv, double_conv_with_mid, is_batch_norm_buffer};

fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43758.5453).fract())
        .collect()
}

fn tensor(shape: &[usize], seed: f64) -> Result<Tensor> {
    Tensor::from_vec(values(shape.iter().product(), seed), shape, &Device::Cpu)
}

fn weighted_sum(ys: &Tensor, seed: f64) -> Result<Tensor> {
    (ys * tensor(ys.dims(), seed)?)?.sum_all()
}

fn var(varmap: &VarMap, name: &str) -> Var {
    varmap.data().lock().expect("varmap lock")[name].clone()
}

#[test]
fn train_and_eval_statistics_match_pytorch_by_hand() -> Result<()> {
    let varmap = VarMap::new();
    let bn = batch_norm2d(
        1,
        VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu),
    )?;
    // One channel, values 1, 2, 3, 6: mean 3, biased var (4+1+0+9)/4 = 3.5, unbiased 14/3.
    let x = Tensor::new(&[[[[1f64, 2.], [3., 6.]]]], &Device::Cpu)?;
    let y = bn.forward_t(&x, true)?.flatten_all()?.to_vec1::<f64>()?;
    let sd = (3.5f64 + 1e-5).sqrt();
    for (got, v) in y.iter().zip([1., 2., 3., 6.]) {
        assert!((got - (v - 3.0) / sd).abs() < 1e-12, "{got}");
    }
    // running = 0.9 * init + 0.1 * batch: mean 0.3, var 0.9 + 0.1 * 14/3
    let rm = bn.running_mean().to_vec1::<f64>()?[0];
    let rv = bn.running_var().to_vec1::<f64>()?[0];
    assert!(
        (rm - 0.3).abs() < 1e-12 && (rv - (0.9 + 1.4 / 3.0)).abs() < 1e-12,
        "{rm} {rv}"
    );
    // The VarMap holds the same, updated values (checkpoints save them).
    assert_eq!(var(&varmap, "running_mean").to_vec1::<f64>()?[0], rm);
    // Eval uses the running statistics.
    let y = bn.forward_t(&x, false)?.flatten_all()?.to_vec1::<f64>()?;
    let expected = (1.0 - rm) / (rv + 1e-5).sqrt();
    assert!((y[0] - expected).abs() < 1e-12, "{} vs {expected}", y[0]);
    // Eval leaves the running statistics alone.
    assert_eq!(bn.running_mean().to_vec1::<f64>()?[0], rm);
    Ok(())
}

#[test]
fn train_mode_gradients_match_finite_differences() -> Result<()> {
    let varmap = VarMap::new();
    let bn = batch_norm2d(
        3,
        VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu),
    )?;
    // Non-trivial affine parameters.
    var(&varmap, "weight").set(&tensor(&[3], 1.0)?.affine(0.5, 1.0)?)?;
    var(&varmap, "bias").set(&tensor(&[3], 2.0)?)?;
    let x = tensor(&[2, 3, 3, 4], 3.0)?;
    let err = check_gradient(|x| weighted_sum(&bn.forward_t(x, true)?, 4.0), &x, 1e-5)?;
    assert!(err < 1e-5, "input gradient error {err}");
    let params = [var(&varmap, "weight"), var(&varmap, "bias")];
    let errs = check_gradient_vars(
        || weighted_sum(&bn.forward_t(&x, true)?, 4.0),
        &params,
        1e-5,
    )?;
    assert!(
        errs.iter().all(|e| *e < 1e-5),
        "weight/bias errors {errs:?}"
    );
    Ok(())
}

#[test]
fn running_statistics_get_no_gradient() -> Result<()> {
    let varmap = VarMap::new();
    let bn = batch_norm2d(
        2,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let x = tensor(&[2, 2, 3, 3], 5.0)?.to_dtype(DType::F32)?;
    for train in [true, false] {
        let grads = bn.forward_t(&x, train)?.sqr()?.sum_all()?.backward()?;
        for name in ["running_mean", "running_var"] {
            assert!(is_batch_norm_buffer(name));
            assert!(
                grads.get(var(&varmap, name).as_tensor()).is_none(),
                "{name} train={train}"
            );
        }
        assert!(grads.get(var(&varmap, "weight").as_tensor()).is_some());
    }
    assert!(!is_batch_norm_buffer("down1.double_conv.1.weight"));
    assert!(is_batch_norm_buffer("down1.double_conv.1.running_var"));
    Ok(())
}

#[test]
fn double_conv_has_pytorch_names_and_shapes() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let block = double_conv(3, 5, vb.pp("inc"))?;
    let _mid = double_conv_with_mid(5, 4, 2, vb.pp("up"))?;
    let data = varmap.data().lock().expect("varmap lock");
    let shape = |name: &str| data.get(name).map(|v| v.dims().to_vec());
    assert_eq!(shape("inc.double_conv.0.weight"), Some(vec![5, 3, 3, 3]));
    assert_eq!(shape("inc.double_conv.0.bias"), None); // no bias before BN
    assert_eq!(shape("inc.double_conv.1.running_var"), Some(vec![5]));
    assert_eq!(shape("inc.double_conv.3.weight"), Some(vec![5, 5, 3, 3]));
    assert_eq!(shape("inc.double_conv.4.bias"), Some(vec![5]));
    assert_eq!(shape("up.double_conv.0.weight"), Some(vec![4, 5, 3, 3]));
    assert_eq!(shape("up.double_conv.3.weight"), Some(vec![2, 4, 3, 3]));
    assert_eq!(data.len(), 2 * (2 + 4 + 4));
    drop(data);
    // (2, 3, 8, 8) -> (2, 5, 8, 8), ReLU output; in train mode each channel has
    // mean(BN output) = bias = 0 before the ReLU, so some outputs are positive.
    let x = tensor(&[2, 3, 8, 8], 6.0)?.to_dtype(DType::F32)?;
    let y = block.forward_t(&x, true)?;
    assert_eq!(y.dims(), &[2, 5, 8, 8]);
    let v = y.flatten_all()?.to_vec1::<f32>()?;
    assert!(v.iter().all(|x| *x >= 0.0) && v.iter().any(|x| *x > 0.0));
    Ok(())
}

#[test]
fn bad_inputs_give_clear_errors() -> Result<()> {
    let varmap = VarMap::new();
    let bn = batch_norm2d(
        3,
        VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu),
    )?;
    let msg = bn
        .forward_t(&tensor(&[1, 2, 2, 2], 7.0)?, true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("input has 2 channels, the layer has 3"),
        "{msg}"
    );
    let msg = bn
        .forward_t(&tensor(&[1, 3, 1, 1], 7.0)?, true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("more than 1 value per channel"), "{msg}");
    let msg = bn
        .forward_t(&tensor(&[3, 4], 7.0)?, false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(N, C, H, W)"), "{msg}");
    Ok(())
}
