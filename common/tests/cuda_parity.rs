//! CUDA against CPU for every layer and loss of the course (issue 18): the forward
//! output and the gradients of each input, in f32, must agree to 1e-4 relative
//! (`max |cuda - cpu| / max |cpu|`, per tensor).
//!
//! On the CPU the layers run the fast custom kernels (`common::kernels`); on CUDA they
//! run candle's own ops (no custom op has a `cuda_fwd`), so this checks the CUDA path
//! against the CPU one that the other `nn_*` tests pin to finite differences and PyTorch.
//! Built only with `--features cuda`; where no CUDA device opens, each test prints that
//! it skipped and passes. (`scripts/gpu-check` runs it on a machine with a GPU.)
#![cfg(feature = "cuda")]

use candle::{Device, Module, ModuleT, Result, Tensor, Var};
use common::loss::{ce_dice_loss, dice_loss, pixel_cross_entropy};
use common::nn::{
    max_pool2d, relu, resize_bilinear, upsample_nearest2d, BatchNorm2d, BatchNorm2dConfig, Conv2d,
    ConvConfig, ConvTranspose2d, ConvTransposeConfig,
};

/// Largest relative difference allowed between CUDA and CPU, per tensor.
const TOLERANCE: f32 = 1e-4;

/// The CUDA device, or `None` (and a line saying the test skipped) when none opens.
fn cuda(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(err) => {
            println!("cuda_parity::{test}: skipped, no CUDA device ({err})");
            None
        }
    }
}

/// Deterministic values in (-1, 1), different for each seed.
fn values(n: usize, seed: f64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43758.5453).fract() as f32)
        .collect()
}

fn tensor(shape: &[usize], seed: f64) -> Result<Tensor> {
    Tensor::from_vec(values(shape.iter().product(), seed), shape, &Device::Cpu)
}

/// `max |got - want| / max |want|` over all elements (both moved to the CPU as f32).
fn relative_error(got: &Tensor, want: &Tensor) -> Result<f32> {
    if got.dims() != want.dims() {
        candle::bail!(
            "shape {:?} on CUDA but {:?} on CPU",
            got.dims(),
            want.dims()
        );
    }
    let got = got
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let want = want
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    if got.iter().any(|v| !v.is_finite()) {
        candle::bail!("non-finite values on CUDA");
    }
    Ok(diff / scale)
}

/// The output of `f` on the inputs and the gradient of each input, on one device.
/// The loss behind the gradients is `Σ y · r` with a fixed random `r`, so every
/// output element sends back a different gradient.
fn run_on(
    device: &Device,
    inputs: &[Tensor],
    f: &impl Fn(&[Tensor], &Device) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device)?))
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let ys = f(&tensors, device)?;
    let r = tensor(ys.dims(), 0.5)?.to_device(device)?;
    let grads = (&ys * r)?.sum_all()?.backward()?;
    let grads = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            grads
                .get(v.as_tensor())
                .cloned()
                .ok_or_else(|| candle::Error::Msg(format!("input {i} got no gradient")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((ys, grads))
}

/// Runs `f` on the CPU and on CUDA and asserts the output and every input gradient agree.
fn assert_parity(
    test: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor], &Device) -> Result<Tensor>,
) -> Result<()> {
    let Some(gpu) = cuda(test) else {
        return Ok(());
    };
    let (y_cpu, g_cpu) = run_on(&Device::Cpu, inputs, &f)?;
    let (y_gpu, g_gpu) = run_on(&gpu, inputs, &f)?;
    assert!(y_gpu.device().is_cuda(), "{test}: the output left the GPU");
    let mut failures = Vec::new();
    let err = relative_error(&y_gpu, &y_cpu)?;
    println!(
        "{test}: forward {:?} relative error {err:.2e}",
        y_cpu.dims()
    );
    if err > TOLERANCE {
        failures.push(format!("forward: {err:.2e}"));
    }
    for (i, (g, want)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        let err = relative_error(g, want)?;
        println!(
            "{test}: gradient of input {i} {:?} relative error {err:.2e}",
            want.dims()
        );
        if err > TOLERANCE {
            failures.push(format!("gradient of input {i}: {err:.2e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{test}: CUDA differs from CPU by more than {TOLERANCE:e}: {}",
        failures.join(", ")
    );
    Ok(())
}

#[test]
fn conv2d_matches_cpu() -> Result<()> {
    // (stride, padding, dilation): the U-Net 3x3, a strided one and a dilated one.
    for (stride, padding, dilation) in [(1, 1, 1), (2, 1, 1), (1, 2, 2)] {
        let config = ConvConfig {
            stride,
            padding,
            dilation,
            ..ConvConfig::default()
        };
        // x (2, 3, 9, 11), weight (4, 3, 3, 3), bias (4)
        let inputs = [
            tensor(&[2, 3, 9, 11], 1.0)?,
            tensor(&[4, 3, 3, 3], 2.0)?,
            tensor(&[4], 3.0)?,
        ];
        assert_parity(
            &format!("conv2d_s{stride}_p{padding}_d{dilation}"),
            &inputs,
            |t, _| Conv2d::new(t[1].clone(), Some(t[2].clone()), config)?.forward(&t[0]),
        )?;
    }
    Ok(())
}

#[test]
fn conv_transpose2d_matches_cpu() -> Result<()> {
    // (k, stride, padding, output_padding): U-Net's 2x2 up-convolution and FCN's 4x4.
    for (k, stride, padding, output_padding) in [(2, 2, 0, 0), (4, 2, 1, 0), (3, 2, 1, 1)] {
        let config = ConvTransposeConfig {
            stride,
            padding,
            output_padding,
            ..ConvTransposeConfig::default()
        };
        // x (2, 4, 5, 6), weight (C_in 4, C_out 3, k, k), bias (3)
        let inputs = [
            tensor(&[2, 4, 5, 6], 4.0)?,
            tensor(&[4, 3, k, k], 5.0)?,
            tensor(&[3], 6.0)?,
        ];
        assert_parity(
            &format!("conv_transpose2d_k{k}_s{stride}_p{padding}_op{output_padding}"),
            &inputs,
            |t, _| ConvTranspose2d::new(t[1].clone(), Some(t[2].clone()), config)?.forward(&t[0]),
        )?;
    }
    Ok(())
}

#[test]
fn max_pool2d_matches_cpu() -> Result<()> {
    // 7x9 with k = 2 drops the last row and column (floor): (2, 3, 7, 9) -> (2, 3, 3, 4).
    assert_parity("max_pool2d", &[tensor(&[2, 3, 7, 9], 7.0)?], |t, _| {
        max_pool2d(&t[0], 2)
    })
}

#[test]
fn relu_matches_cpu() -> Result<()> {
    assert_parity("relu", &[tensor(&[2, 3, 5, 5], 8.0)?], |t, _| relu(&t[0]))
}

#[test]
fn upsample_nearest2d_matches_cpu() -> Result<()> {
    // (2, 3, 4, 5) -> (2, 3, 8, 10); the input also feeds a second op, so the
    // backward must add into its gradient, not overwrite it.
    assert_parity(
        "upsample_nearest2d",
        &[tensor(&[2, 3, 4, 5], 9.0)?],
        |t, _| {
            let up = upsample_nearest2d(&t[0], 2)?;
            up.broadcast_add(&upsample_nearest2d(&t[0].sqr()?, 2)?)
        },
    )
}

#[test]
fn resize_bilinear_matches_cpu() -> Result<()> {
    // Up by a non-integer factor and down: (2, 3, 5, 7) -> (2, 3, 13, 16), (2, 3, 16, 12) -> (2, 3, 7, 5).
    assert_parity(
        "resize_bilinear_up",
        &[tensor(&[2, 3, 5, 7], 10.0)?],
        |t, _| resize_bilinear(&t[0], 13, 16),
    )?;
    assert_parity(
        "resize_bilinear_down",
        &[tensor(&[2, 3, 16, 12], 11.0)?],
        |t, _| resize_bilinear(&t[0], 7, 5),
    )
}

/// A BatchNorm2d over 3 channels whose weight and bias are the inputs 1 and 2, with
/// running statistics fresh on `device`.
fn batch_norm(t: &[Tensor], device: &Device) -> Result<BatchNorm2d> {
    BatchNorm2d::new(
        t[1].clone(),
        t[2].clone(),
        Tensor::zeros(3, candle::DType::F32, device)?,
        Tensor::ones(3, candle::DType::F32, device)?,
        BatchNorm2dConfig::default(),
    )
}

#[test]
fn batch_norm_matches_cpu() -> Result<()> {
    // x (2, 3, 5, 6), weight (3) around 1, bias (3)
    let inputs = [
        tensor(&[2, 3, 5, 6], 12.0)?,
        tensor(&[3], 13.0)?.affine(0.5, 1.0)?,
        tensor(&[3], 14.0)?,
    ];
    assert_parity("batch_norm_train", &inputs, |t, device| {
        batch_norm(t, device)?.forward_t(&t[0], true)
    })?;
    // The fused BN + ReLU of the CPU fast path against CUDA's two ops.
    assert_parity("batch_norm_relu_train", &inputs, |t, device| {
        batch_norm(t, device)?.forward_relu_t(&t[0], true)
    })?;
    // Evaluation with running statistics that one training step moved.
    assert_parity("batch_norm_eval", &inputs, |t, device| {
        let bn = batch_norm(t, device)?;
        bn.forward_t(&t[0].detach(), true)?;
        bn.forward_t(&t[0], false)
    })?;
    // The running statistics themselves after one training step.
    let Some(gpu) = cuda("batch_norm_running_statistics") else {
        return Ok(());
    };
    let mut stats = Vec::new();
    for device in [Device::Cpu, gpu] {
        let t = inputs
            .iter()
            .map(|x| x.to_device(&device))
            .collect::<Result<Vec<_>>>()?;
        let bn = batch_norm(&t, &device)?;
        bn.forward_t(&t[0], true)?;
        stats.push((bn.running_mean().clone(), bn.running_var().clone()));
    }
    let mean_err = relative_error(&stats[1].0, &stats[0].0)?;
    let var_err = relative_error(&stats[1].1, &stats[0].1)?;
    println!("batch_norm_running_statistics: mean {mean_err:.2e}, var {var_err:.2e}");
    assert!(
        mean_err <= TOLERANCE && var_err <= TOLERANCE,
        "running statistics differ: mean {mean_err:.2e}, var {var_err:.2e}"
    );
    Ok(())
}

/// Labels `(2, 5, 6)` in `0..4`, with every seventh pixel 255 (ignored).
fn targets(device: &Device) -> Result<Tensor> {
    let labels: Vec<u32> = (0..60u32)
        .map(|i| if i % 7 == 3 { 255 } else { (i * 5 + i / 6) % 4 })
        .collect();
    Tensor::from_vec(labels, (2, 5, 6), device)
}

#[test]
fn cross_entropy_matches_cpu() -> Result<()> {
    // logits (2, 4, 5, 6), scaled up so the softmax is not flat.
    let logits = tensor(&[2, 4, 5, 6], 15.0)?.affine(3.0, 0.0)?;
    assert_parity(
        "pixel_cross_entropy",
        std::slice::from_ref(&logits),
        |t, device| pixel_cross_entropy(&t[0], &targets(device)?, None),
    )?;
    assert_parity("pixel_cross_entropy_weighted", &[logits], |t, device| {
        let weights = Tensor::new(&[0.5f32, 1.0, 2.0, 1.5], device)?;
        pixel_cross_entropy(&t[0], &targets(device)?, Some(&weights))
    })
}

#[test]
fn dice_matches_cpu() -> Result<()> {
    let logits = tensor(&[2, 4, 5, 6], 16.0)?.affine(3.0, 0.0)?;
    assert_parity("dice_loss", std::slice::from_ref(&logits), |t, device| {
        dice_loss(&t[0], &targets(device)?, 1.0)
    })?;
    assert_parity("ce_dice_loss", &[logits], |t, device| {
        ce_dice_loss(&t[0], &targets(device)?, None)
    })
}
