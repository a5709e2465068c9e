//! Tests of `common::optim`: SGD and Adam/AdamW steps against values derived by
//! hand from the torch formulas, parameter groups, state save/load, convergence.

use std::collections::HashMap;

use candle::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarMap};
use common::optim::{param_group, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

type TestResult = anyhow::Result<()>;

/// One group `"g"` holding a single var `"p"` with the given f64 values.
fn single_var(values: &[f64]) -> candle::Result<(Var, Vec<ParamGroup>)> {
    let var = Var::new(values, &Device::Cpu)?;
    let group = ParamGroup {
        name: "g".to_string(),
        vars: vec![("p".to_string(), var.clone())],
        lr_scale: 1.0,
    };
    Ok((var, vec![group]))
}

/// One step on the loss `0.5 * sum(p^2)`, whose gradient is `p`.
fn step_half_square(opt: &mut dyn Optimizer, var: &Var) -> candle::Result<()> {
    let loss = (var.as_tensor().sqr()?.sum_all()? * 0.5)?;
    opt.step(&loss.backward()?)
}

fn values(var: &Var) -> candle::Result<Vec<f64>> {
    var.as_tensor().to_vec1::<f64>()
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= tol, "{actual:?} vs expected {expected:?}");
    }
}

#[test]
fn sgd_momentum_three_steps_match_torch_formula() -> TestResult {
    // torch.optim.SGD([p], lr=0.1, momentum=0.9), p0 = [1, -2], grad = p.
    // step 1: b = g = [1, -2];                     p = p - 0.1 b = [0.9, -1.8]
    // step 2: b = 0.9 [1, -2] + [0.9, -1.8] = [1.8, -3.6];   p = [0.72, -1.44]
    // step 3: b = 0.9 [1.8, -3.6] + [0.72, -1.44] = [2.34, -4.68]; p = [0.486, -0.972]
    let (var, groups) = single_var(&[1.0, -2.0])?;
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(groups, config)?;
    let expected = [[0.9, -1.8], [0.72, -1.44], [0.486, -0.972]];
    for want in expected {
        step_half_square(&mut opt, &var)?;
        assert_close(&values(&var)?, &want, 1e-12);
    }
    Ok(())
}

#[test]
fn sgd_nesterov_with_weight_decay_two_steps_match_torch_formula() -> TestResult {
    // torch.optim.SGD([p], lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1),
    // p0 = [1, -2], grad of the loss = p, so g = p + 0.1 p = 1.1 p.
    // step 1: g = [1.1, -2.2]; b = g; g' = g + 0.5 b = [1.65, -3.3];
    //         p = p - 0.1 g' = [0.835, -1.67]
    // step 2: g = 1.1 p = [0.9185, -1.837]; b = 0.5 [1.1, -2.2] + g = [1.4685, -2.937];
    //         g' = g + 0.5 b = [1.65275, -3.3055]; p = [0.669725, -1.33945]
    let (var, groups) = single_var(&[1.0, -2.0])?;
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.5,
        nesterov: true,
        weight_decay: 0.1,
    };
    let mut opt = Sgd::new(groups, config)?;
    step_half_square(&mut opt, &var)?;
    assert_close(&values(&var)?, &[0.835, -1.67], 1e-12);
    step_half_square(&mut opt, &var)?;
    assert_close(&values(&var)?, &[0.669725, -1.33945], 1e-12);
    Ok(())
}

#[test]
fn adam_three_steps_match_torch_formula() -> TestResult {
    // torch.optim.Adam([p], lr=0.1), p0 = [1, -2], grad = p.
    // step 1: m = 0.1 g, v = 0.001 g^2, m^ = g, v^ = g^2: p -= 0.1 g / (|g| + 1e-8)
    //         -> [0.9, -1.9] (to 1e-9)
    // step 2: g = [0.9, -1.9]; m = 0.9 * 0.1 [1, -2] + 0.1 g = [0.18, -0.37];
    //         v = 0.999 * 0.001 [1, 4] + 0.001 g^2 = [0.001809, 0.007606];
    //         m^ = m / 0.19, v^ = v / 0.001999; p -= 0.1 m^ / sqrt(v^)
    //         = [0.9 - 0.0995878, -1.9 + 0.0998335] = [0.8004122297, -1.8001664866]
    // step 3: the same formulas once more (values printed by the same recurrence in f64).
    let (var, groups) = single_var(&[1.0, -2.0])?;
    let mut opt = Adam::new(groups, AdamConfig::adam(0.1))?;
    let expected = [
        [0.900000001000, -1.900000000500],
        [0.800412229712, -1.800166486621],
        [0.701586274504, -1.700623392812],
    ];
    for want in expected {
        step_half_square(&mut opt, &var)?;
        assert_close(&values(&var)?, &want, 1e-11);
    }
    Ok(())
}

#[test]
fn adamw_decays_weights_before_the_adam_update() -> TestResult {
    // torch.optim.AdamW([p], lr=0.1, weight_decay=0.5), p0 = [1, -2], grad = p
    // (computed before the decay). step 1: p = 0.95 p0 - 0.1 sign(g) = [0.85, -1.8].
    // step 2: g = [0.85, -1.8]; p = 0.95 g - 0.1 m^ / sqrt(v^) with
    //         m = [0.175, -0.36], v = [0.0017215, 0.007236] -> [0.7082484444, -1.6104122287]
    let (var, groups) = single_var(&[1.0, -2.0])?;
    let mut opt = Adam::new(groups, AdamConfig::adamw(0.1, 0.5))?;
    let expected = [
        [0.850000001000, -1.800000000500],
        [0.708248444366, -1.610412228668],
        [0.574973932253, -1.431025244411],
    ];
    for want in expected {
        step_half_square(&mut opt, &var)?;
        assert_close(&values(&var)?, &want, 1e-11);
    }
    Ok(())
}

#[test]
fn adam_weight_decay_is_l2_on_the_gradient() -> TestResult {
    // torch.optim.Adam([p], lr=0.1, weight_decay=0.5): g = p + 0.5 p = 1.5 p. Adam is
    // invariant to scaling the gradient except through eps, so the path equals plain
    // Adam's up to eps: step 1 = 1 - 0.1 * 1.5 / (1.5 + 1e-8) = 0.900000000667.
    let (var, groups) = single_var(&[1.0, -2.0])?;
    let config = AdamConfig {
        weight_decay: 0.5,
        ..AdamConfig::adam(0.1)
    };
    let mut opt = Adam::new(groups, config)?;
    let expected = [
        [0.900000000667, -1.900000000333],
        [0.800412229032, -1.800166486284],
        [0.701586273465, -1.700623392302],
    ];
    for want in expected {
        step_half_square(&mut opt, &var)?;
        assert_close(&values(&var)?, &want, 1e-11);
    }
    Ok(())
}

/// A model of three tensors: `backbone.w` (2), `head.w` (2), `head.bn.running_mean` (2).
fn small_varmap() -> candle::Result<VarMap> {
    let varmap = VarMap::new();
    let init = Init::Const(1.0);
    varmap.get(2, "backbone.w", init, DType::F64, &Device::Cpu)?;
    varmap.get(2, "head.w", init, DType::F64, &Device::Cpu)?;
    varmap.get(2, "head.bn.running_mean", init, DType::F64, &Device::Cpu)?;
    Ok(varmap)
}

fn var_of(varmap: &VarMap, name: &str) -> anyhow::Result<Var> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    data.get(name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no var {name}"))
}

/// Loss `sum(backbone.w) + sum(head.w) + sum(running_mean)`: every gradient is 1.
fn sum_loss(varmap: &VarMap) -> anyhow::Result<candle::backprop::GradStore> {
    let mut total = Tensor::new(0f64, &Device::Cpu)?;
    for name in ["backbone.w", "head.w", "head.bn.running_mean"] {
        total = (total + var_of(varmap, name)?.as_tensor().sum_all()?)?;
    }
    Ok(total.backward()?)
}

#[test]
fn param_group_filters_by_prefix_and_skips_batchnorm_statistics() -> TestResult {
    let varmap = small_varmap()?;
    varmap.get(1, "head10.w", Init::Const(0.0), DType::F64, &Device::Cpu)?;
    let names = |g: &ParamGroup| g.vars.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let all = param_group("all", &varmap, None, 1.0);
    assert_eq!(names(&all), ["backbone.w", "head.w", "head10.w"]);
    let head = param_group("head", &varmap, Some("head"), 1.0);
    assert_eq!(names(&head), ["head.w", "head10.w"]);
    let head_dot = param_group("head", &varmap, Some("head."), 1.0);
    assert_eq!(names(&head_dot), ["head.w"]);
    Ok(())
}

#[test]
fn lr_scale_moves_a_group_ten_times_less_and_vars_outside_groups_stay() -> TestResult {
    let varmap = small_varmap()?;
    varmap.get(2, "extra.w", Init::Const(1.0), DType::F64, &Device::Cpu)?;
    let groups = vec![
        param_group("backbone", &varmap, Some("backbone"), 0.1),
        param_group("head", &varmap, Some("head."), 1.0),
    ];
    let mut opt = Sgd::new(
        groups,
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    )?;
    let grads = sum_loss(&varmap)?;
    opt.step(&grads)?;
    // Every gradient is 1: head moves by 0.5, backbone by 0.05, the rest not at all.
    let get = |name| -> anyhow::Result<Vec<f64>> { Ok(values(&var_of(&varmap, name)?)?) };
    assert_close(&get("head.w")?, &[0.5, 0.5], 1e-15);
    assert_close(&get("backbone.w")?, &[0.95, 0.95], 1e-15);
    assert_close(&get("head.bn.running_mean")?, &[1.0, 1.0], 0.0);
    // extra.w is in no group and is not even in the loss (no gradient).
    assert_close(&get("extra.w")?, &[1.0, 1.0], 0.0);
    Ok(())
}

#[test]
fn vars_without_gradient_are_skipped_by_adam() -> TestResult {
    let varmap = small_varmap()?;
    let mut opt = Adam::new(
        vec![param_group("all", &varmap, None, 1.0)],
        AdamConfig::adam(0.1),
    )?;
    // Only head.w enters the loss.
    let loss = var_of(&varmap, "head.w")?.as_tensor().sum_all()?;
    opt.step(&loss.backward()?)?;
    assert_close(&values(&var_of(&varmap, "backbone.w")?)?, &[1.0, 1.0], 0.0);
    assert_close(&values(&var_of(&varmap, "head.w")?)?, &[0.9, 0.9], 1e-8);
    let state = opt.state()?;
    assert_eq!(state["all.backbone.w.step"].to_scalar::<i64>()?, 0);
    assert_eq!(state["all.head.w.step"].to_scalar::<i64>()?, 1);
    assert_eq!(state["step"].to_scalar::<i64>()?, 1);
    Ok(())
}

/// Runs `n` steps of `0.5 * sum((p - [3, -1, 2])^2)`.
fn run_quadratic(opt: &mut dyn Optimizer, var: &Var, n: usize) -> candle::Result<()> {
    let target = Tensor::new(&[3.0f64, -1.0, 2.0], &Device::Cpu)?;
    for _ in 0..n {
        let loss = (var.as_tensor().sub(&target)?.sqr()?.sum_all()? * 0.5)?;
        opt.step(&loss.backward()?)?;
    }
    Ok(())
}

/// Saves the state after 4 steps into a fresh optimiser on a copy of the var;
/// both then take 5 more steps and must agree exactly.
fn check_resume(
    make: impl Fn(Vec<ParamGroup>) -> candle::Result<Box<dyn Optimizer>>,
) -> TestResult {
    let (var, groups) = single_var(&[0.0, 0.0, 0.0])?;
    let mut first = make(groups)?;
    run_quadratic(first.as_mut(), &var, 4)?;

    let (copy, copy_groups) = single_var(&values(&var)?)?;
    let mut resumed = make(copy_groups)?;
    resumed.load_state(&first.state()?)?;

    run_quadratic(first.as_mut(), &var, 5)?;
    run_quadratic(resumed.as_mut(), &copy, 5)?;
    assert_eq!(values(&var)?, values(&copy)?);

    // Without the state the result differs: the test can tell.
    let (fresh, fresh_groups) = single_var(&[0.0, 0.0, 0.0])?;
    let mut restarted = make(fresh_groups)?;
    run_quadratic(restarted.as_mut(), &fresh, 4)?;
    let (cold, cold_groups) = single_var(&values(&fresh)?)?;
    let mut cold_opt = make(cold_groups)?;
    run_quadratic(cold_opt.as_mut(), &cold, 5)?;
    assert_ne!(values(&var)?, values(&cold)?);
    Ok(())
}

#[test]
fn sgd_state_round_trip_continues_identically() -> TestResult {
    check_resume(|groups| {
        let config = SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
        };
        Ok(Box::new(Sgd::new(groups, config)?))
    })
}

#[test]
fn adam_state_round_trip_continues_identically() -> TestResult {
    check_resume(|groups| Ok(Box::new(Adam::new(groups, AdamConfig::adamw(0.1, 0.01))?)))
}

#[test]
fn load_state_lists_missing_and_misshaped_keys_and_changes_nothing() -> TestResult {
    let (var, groups) = single_var(&[1.0, 2.0])?;
    let mut opt = Adam::new(groups, AdamConfig::adam(0.1))?;
    step_half_square(&mut opt, &var)?;
    let good = opt.state()?;

    let mut bad: HashMap<String, Tensor> = good.clone();
    bad.remove("g.p.v");
    bad.insert(
        "g.p.m".to_string(),
        Tensor::zeros(3, DType::F64, &Device::Cpu)?,
    );
    let err = opt.load_state(&bad).err().map(|e| e.to_string());
    let err = err.ok_or_else(|| anyhow::anyhow!("a bad state was accepted"))?;
    assert!(err.contains("missing keys: g.p.v"), "{err}");
    assert!(
        err.contains("mis-shaped keys: g.p.m (expected [2], found [3])"),
        "{err}"
    );
    // The failed load left the state as it was.
    assert_eq!(
        opt.state()?["g.p.m"].to_vec1::<f64>()?,
        good["g.p.m"].to_vec1::<f64>()?
    );

    // An SGD state has no moments: loading it into Adam names them.
    let err = opt
        .load_state(&HashMap::from([(
            "step".to_string(),
            Tensor::new(3i64, &Device::Cpu)?,
        )]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("missing keys: g.p.m, g.p.v, g.p.step"),
        "{err}"
    );
    Ok(())
}

#[test]
fn bad_settings_and_groups_are_errors() -> TestResult {
    let (_, groups) = single_var(&[1.0])?;
    let message = |r: candle::Result<Sgd>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let nesterov = SgdConfig {
        nesterov: true,
        ..Default::default()
    };
    assert_eq!(
        message(Sgd::new(groups.clone(), nesterov)),
        "SGD with Nesterov momentum needs momentum > 0"
    );
    let negative = SgdConfig {
        lr: -1.0,
        ..Default::default()
    };
    assert_eq!(
        message(Sgd::new(groups.clone(), negative)),
        "SGD lr is -1, expected a finite value >= 0"
    );
    let twice = vec![
        groups[0].clone(),
        ParamGroup {
            name: "h".into(),
            ..groups[0].clone()
        },
    ];
    assert_eq!(
        message(Sgd::new(twice, SgdConfig::default())),
        "var \"p\" is in parameter groups \"g\" and \"h\""
    );
    let beta = AdamConfig {
        beta1: 1.0,
        ..AdamConfig::adam(0.1)
    };
    let err = Adam::new(groups, beta).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("Adam beta1 is 1, expected 0 <= beta1 < 1")
    );
    Ok(())
}

#[test]
fn sgd_and_adam_minimise_a_quadratic_in_f32() -> TestResult {
    let target = [3.0f32, -1.0, 2.0];
    for name in ["sgd", "adam"] {
        let var = Var::zeros(3, DType::F32, &Device::Cpu)?;
        let groups = vec![ParamGroup {
            name: "g".into(),
            vars: vec![("p".into(), var.clone())],
            lr_scale: 1.0,
        }];
        let mut opt: Box<dyn Optimizer> = if name == "sgd" {
            let config = SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                ..Default::default()
            };
            Box::new(Sgd::new(groups, config)?)
        } else {
            Box::new(Adam::new(groups, AdamConfig::adam(0.1))?)
        };
        let target_t = Tensor::new(&target, &Device::Cpu)?;
        for _ in 0..300 {
            let loss = var.as_tensor().sub(&target_t)?.sqr()?.sum_all()?;
            opt.step(&loss.backward()?)?;
        }
        let got = var.as_tensor().to_vec1::<f32>()?;
        for (g, t) in got.iter().zip(&target) {
            assert!((g - t).abs() < 1e-3, "{name}: {got:?} vs {target:?}");
        }
    }
    Ok(())
}
