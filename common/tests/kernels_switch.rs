//! Tests of the switch that forces candle's own ops (`set_force_candle_ops`): it sits in
//! its own test binary because the switch is process-wide.

use candle::{DType, Device, Tensor, Var};
use common::kernels::{self, Conv2dParams};

#[test]
fn switch_selects_candle_ops_and_both_agree() -> candle::Result<()> {
    let x = Tensor::arange(0f32, 2. * 3. * 6. * 6., &Device::Cpu)?.reshape((2, 3, 6, 6))?;
    let x = (x / 50.)?.sin()?;
    let w =
        (Tensor::arange(0f32, 4. * 3. * 9., &Device::Cpu)?.reshape((4, 3, 3, 3))? / 7.)?.cos()?;
    let p = Conv2dParams {
        stride: 1,
        padding: 1,
        dilation: 1,
    };
    let run = || -> candle::Result<(Vec<f32>, Vec<f32>)> {
        let xv = Var::from_tensor(&x)?;
        let conv = kernels::conv2d(xv.as_tensor(), &w, &p)?;
        let gamma = Tensor::new(&[1f32, 2., 0.5, -1.], &Device::Cpu)?;
        let normed = kernels::batch_norm_train(&conv, &gamma, &gamma.cos()?, 1e-5)?.0;
        let y = kernels::max_pool2d(&normed, 2)?;
        let dx = y
            .sum_all()?
            .backward()?
            .get(xv.as_tensor())
            .expect("no gradient")
            .clone();
        Ok((y.flatten_all()?.to_vec1()?, dx.flatten_all()?.to_vec1()?))
    };

    kernels::set_force_candle_ops(false);
    assert!(kernels::uses_fast_path(&x));
    assert!(!kernels::uses_fast_path(&x.to_dtype(DType::F16)?));
    let fast = run()?;

    kernels::set_force_candle_ops(true);
    assert!(kernels::candle_ops_forced());
    assert!(!kernels::uses_fast_path(&x));
    let stock = run()?;
    kernels::set_force_candle_ops(false);

    for (what, a, b) in [
        ("output", &fast.0, &stock.0),
        ("gradient", &fast.1, &stock.1),
    ] {
        let diff = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff < 1e-4, "{what} differs by {diff}");
    }
    Ok(())
}

#[test]
fn env_var_forces_candle_ops() -> candle::Result<()> {
    // The variable is read once per process: check it in a child run of this very test.
    if std::env::var(kernels::CANDLE_OPS_ENV).is_ok_and(|v| v == "1") {
        assert!(
            kernels::candle_ops_forced(),
            "SEGKIT_CANDLE_OPS=1 did not force candle's ops"
        );
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu)?;
        assert!(!kernels::uses_fast_path(&x));
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "env_var_forces_candle_ops",
            "--test-threads",
            "1",
        ])
        .env(kernels::CANDLE_OPS_ENV, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run failed:\n{stdout}"
    );
    Ok(())
}

/// Five Adam steps of `config` on a 70 000-element f32 var (several parallel chunks) with
/// the loss `sum(sin(p) * p)`; gives the var's values.
fn adam_steps(config: common::optim::AdamConfig) -> anyhow::Result<Vec<f32>> {
    use common::optim::{Adam, Optimizer, ParamGroup};
    let start = (Tensor::arange(0f32, 70_000., &Device::Cpu)? / 3000.)?.cos()?;
    let var = Var::from_tensor(&start)?;
    let group = ParamGroup {
        name: "g".to_string(),
        vars: vec![("p".to_string(), var.clone())],
        lr_scale: 0.5,
    };
    let mut adam = Adam::new(vec![group], config)?;
    for _ in 0..5 {
        let p = var.as_tensor();
        let loss = (p.sin()? * p)?.sum_all()?;
        adam.step(&loss.backward()?)?;
    }
    Ok(var.as_tensor().to_vec1()?)
}

#[test]
fn the_in_place_adam_step_matches_candles_ops() -> anyhow::Result<()> {
    use common::optim::AdamConfig;
    let l2 = AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::adam(1e-2)
    };
    for config in [AdamConfig::adam(1e-2), l2, AdamConfig::adamw(1e-2, 0.1)] {
        kernels::set_force_candle_ops(false);
        let fast = adam_steps(config)?;
        kernels::set_force_candle_ops(true);
        let stock = adam_steps(config);
        kernels::set_force_candle_ops(false);
        let stock = stock?;
        let worst = fast
            .iter()
            .zip(&stock)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert_eq!(fast, stock, "{config:?}: relative difference up to {worst}");
    }
    // The fast path is the one taken on the CPU, and it refuses when candle's ops are forced.
    let step = kernels::AdamStep {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step_size: 0.1,
        bias_correction2_sqrt: 1.0,
        coupled_decay: 0.0,
        param_scale: 1.0,
    };
    let fresh = || Tensor::zeros(4, DType::F32, &Device::Cpu);
    let (p, g, m, v) = (
        Var::ones(4, DType::F32, &Device::Cpu)?,
        Tensor::ones(4, DType::F32, &Device::Cpu)?,
        fresh()?,
        fresh()?,
    );
    kernels::set_force_candle_ops(true);
    assert!(!kernels::adam_step(p.as_tensor(), &g, &m, &v, &step)?);
    kernels::set_force_candle_ops(false);
    assert!(kernels::adam_step(p.as_tensor(), &g, &m, &v, &step)?);
    // m = 0.1, v = 0.001, p = 1 - 0.1 * 0.1 / (sqrt(0.001) + 1e-8).
    let expected = 1.0 - 0.01 / (0.001f64.sqrt() + 1e-8);
    assert!((p.as_tensor().to_vec1::<f32>()?[0] as f64 - expected).abs() < 1e-6);
    assert!((m.to_vec1::<f32>()?[0] - 0.1).abs() < 1e-7);
    Ok(())
}
