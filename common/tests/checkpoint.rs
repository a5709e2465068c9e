//! Tests of `common::checkpoint`: round trips of weights, optimiser state and
//! metadata, atomic writes, and the error for each kind of bad input.

use std::collections::HashMap;
use std::path::Path;

use anyhow::anyhow;
use candle::{DType, Device, Tensor};
use candle_nn::{Init, VarMap};
use common::checkpoint::{
    load_checkpoint, load_into_varmap, load_into_varmap_report, save_checkpoint, write_atomically,
    CheckpointMeta,
};
use common::optim::{param_group, Adam, AdamConfig, Optimizer};

type TestResult = anyhow::Result<()>;

/// A model with an f32 (2, 3) weight and an f64 (3) bias of known values.
fn model(offset: f32) -> anyhow::Result<VarMap> {
    let mut varmap = VarMap::new();
    varmap.get(
        (2, 3),
        "conv.weight",
        Init::Const(0.0),
        DType::F32,
        &Device::Cpu,
    )?;
    varmap.get(3, "conv.bias", Init::Const(0.0), DType::F64, &Device::Cpu)?;
    let weight: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0 + offset).collect();
    varmap.set_one(
        "conv.weight",
        Tensor::from_vec(weight, (2, 3), &Device::Cpu)?,
    )?;
    varmap.set_one(
        "conv.bias",
        Tensor::new(&[0.25f64, -3.5, offset as f64], &Device::Cpu)?,
    )?;
    Ok(varmap)
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        epoch: 3,
        step: 120,
        seed: 42,
        config: serde_json::json!({"model": "unet", "lr": 0.001, "classes": ["bg", "cell"]}),
    }
}

/// The tensors of a VarMap by name.
fn tensors_of(varmap: &VarMap) -> anyhow::Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| anyhow!("poisoned lock"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Flattened values as f64 (any dtype), with the dtype and shape.
fn describe(t: &Tensor) -> anyhow::Result<(DType, Vec<usize>, Vec<f64>)> {
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok((t.dtype(), t.dims().to_vec(), values))
}

fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> TestResult {
    let mut keys_a: Vec<_> = a.keys().collect();
    let mut keys_b: Vec<_> = b.keys().collect();
    keys_a.sort();
    keys_b.sort();
    assert_eq!(keys_a, keys_b);
    for key in keys_a {
        assert_eq!(describe(&a[key])?, describe(&b[key])?, "tensor {key}");
    }
    Ok(())
}

/// An Adam state after two steps on `sum(w^2) + sum(b)`.
fn adam_state(varmap: &VarMap) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut opt = Adam::new(
        vec![param_group("all", varmap, None, 1.0)],
        AdamConfig::adam(0.01),
    )?;
    let vars = tensors_of(varmap)?;
    for _ in 0..2 {
        let loss = (vars["conv.weight"].sqr()?.sum_all()?.to_dtype(DType::F64)?
            + vars["conv.bias"].sum_all()?)?;
        opt.step(&loss.backward()?)?;
    }
    Ok(opt.state()?)
}

fn error_of<T>(result: anyhow::Result<T>) -> String {
    match result {
        Ok(_) => "no error".to_string(),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn round_trip_keeps_weights_optimizer_state_meta_and_dtypes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs/ckpt.safetensors"); // the folder is created
    let varmap = model(0.0)?;
    let mut state = adam_state(&varmap)?;
    state.insert(
        "extra.counts".into(),
        Tensor::new(&[7u32, 0, 4_000_000_000], &Device::Cpu)?,
    );
    save_checkpoint(&path, &varmap, &state, &meta())?;

    let checkpoint = load_checkpoint(&path, &Device::Cpu)?;
    assert_eq!(checkpoint.meta, meta());
    assert_same_tensors(&checkpoint.model, &tensors_of(&varmap)?)?;
    assert_same_tensors(&checkpoint.optimizer, &state)?;
    assert_eq!(checkpoint.optimizer["step"].to_scalar::<i64>()?, 2);
    assert_eq!(checkpoint.model["conv.weight"].dtype(), DType::F32);
    assert_eq!(checkpoint.model["conv.bias"].dtype(), DType::F64);

    // The weights go back into a model that holds other values.
    let other = model(10.0)?;
    load_into_varmap(&other, &checkpoint.model)?;
    assert_same_tensors(&tensors_of(&other)?, &tensors_of(&varmap)?)?;
    Ok(())
}

#[test]
fn resuming_from_a_checkpoint_file_continues_like_an_uninterrupted_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ckpt.safetensors");
    let loss_of = |varmap: &VarMap| -> anyhow::Result<Tensor> {
        let vars = tensors_of(varmap)?;
        let weight = vars["conv.weight"].to_dtype(DType::F64)?;
        Ok(((weight - 2.0)?.sqr()?.sum_all()? + vars["conv.bias"].sqr()?.sum_all()?)?)
    };
    let run = |varmap: &VarMap, opt: &mut Adam, n: usize| -> TestResult {
        for _ in 0..n {
            opt.step(&loss_of(varmap)?.backward()?)?;
        }
        Ok(())
    };
    let config = AdamConfig::adamw(0.05, 0.1);
    let first = model(0.0)?;
    let mut first_opt = Adam::new(vec![param_group("all", &first, None, 1.0)], config)?;
    run(&first, &mut first_opt, 3)?;
    save_checkpoint(&path, &first, &first_opt.state()?, &meta())?;
    run(&first, &mut first_opt, 4)?;

    let checkpoint = load_checkpoint(&path, &Device::Cpu)?;
    let resumed = model(5.0)?;
    load_into_varmap(&resumed, &checkpoint.model)?;
    let mut resumed_opt = Adam::new(vec![param_group("all", &resumed, None, 1.0)], config)?;
    resumed_opt.load_state(&checkpoint.optimizer)?;
    run(&resumed, &mut resumed_opt, 4)?;
    assert_same_tensors(&tensors_of(&resumed)?, &tensors_of(&first)?)?;
    assert_same_tensors(&resumed_opt.state()?, &first_opt.state()?)?;
    Ok(())
}

fn file_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ckpt.safetensors");
    let varmap = model(0.0)?;
    save_checkpoint(&path, &varmap, &HashMap::new(), &meta())?;
    let before = std::fs::read(&path)?;

    // 1. A tensor map that cannot be serialised (f16 is not stored).
    let changed = model(1.0)?;
    let bad_state = HashMap::from([(
        "bad".to_string(),
        Tensor::zeros(2, DType::F16, &Device::Cpu)?,
    )]);
    let err = error_of(save_checkpoint(&path, &changed, &bad_state, &meta()));
    assert!(err.starts_with("cannot save checkpoint"), "{err}");
    assert!(err.contains("tensor \"optim.bad\" has dtype F16"), "{err}");
    assert_eq!(std::fs::read(&path)?, before);

    // 2. A write that fails half-way through the new file.
    let err = error_of(write_atomically(&path, |file| {
        use std::io::Write;
        file.write_all(&before[..before.len() / 2])?;
        Err(anyhow!("disk full (simulated)"))
    }));
    assert!(
        err.contains("writing") && err.contains("disk full (simulated)"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path)?, before);
    assert_eq!(file_names(dir.path())?, ["ckpt.safetensors"]); // no temporary file left
    let checkpoint = load_checkpoint(&path, &Device::Cpu)?;
    assert_same_tensors(&checkpoint.model, &tensors_of(&varmap)?)?;

    // 3. A save that succeeds replaces the file.
    save_checkpoint(&path, &changed, &HashMap::new(), &meta())?;
    let checkpoint = load_checkpoint(&path, &Device::Cpu)?;
    assert_same_tensors(&checkpoint.model, &tensors_of(&changed)?)?;
    assert_eq!(file_names(dir.path())?, ["ckpt.safetensors"]);
    Ok(())
}

#[test]
fn loading_bad_files_gives_errors_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.safetensors");
    save_checkpoint(&good, &model(0.0)?, &HashMap::new(), &meta())?;
    let bytes = std::fs::read(&good)?;

    let missing = dir.path().join("missing.safetensors");
    let err = error_of(load_checkpoint(&missing, &Device::Cpu));
    assert!(
        err.starts_with(&format!("cannot read checkpoint {missing:?}")),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint at all, just some text")?;
    let err = error_of(load_checkpoint(&garbage, &Device::Cpu));
    assert!(
        err.starts_with(&format!(
            "checkpoint {garbage:?} is not a valid safetensors file"
        )),
        "{err}"
    );

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10])?;
    let err = error_of(load_checkpoint(&truncated, &Device::Cpu));
    assert!(
        err.starts_with(&format!(
            "checkpoint {truncated:?} is not a valid safetensors file"
        )),
        "{err}"
    );

    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"")?;
    let err = error_of(load_checkpoint(&empty, &Device::Cpu));
    assert!(
        err.contains("is not a valid safetensors file: header too small"),
        "{err}"
    );

    // A valid safetensors file without our metadata (what VarMap::save writes).
    let plain = dir.path().join("plain.safetensors");
    model(0.0)?.save(&plain)?;
    let err = error_of(load_checkpoint(&plain, &Device::Cpu));
    assert_eq!(
        err,
        format!(
            "{plain:?} has no checkpoint metadata (__metadata__.segkit): \
             it was not written by save_checkpoint"
        )
    );
    Ok(())
}

#[test]
fn load_into_varmap_lists_all_missing_and_misshaped_keys_and_sets_nothing() -> TestResult {
    let target = model(0.0)?;
    target.get(4, "head.bias", Init::Const(1.0), DType::F32, &Device::Cpu)?;
    let original = tensors_of(&target)?;

    let source = model(3.0)?;
    let mut tensors = tensors_of(&source)?;
    tensors.insert(
        "conv.weight".into(),
        Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?,
    );
    tensors.remove("conv.bias");
    tensors.insert(
        "unused.weight".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu)?,
    );
    let err = error_of(load_into_varmap(&target, &tensors));
    assert_eq!(
        err,
        "cannot load weights into the model: 2 missing keys: conv.bias, head.bias; \
         1 mis-shaped keys: conv.weight (file [3, 2], model [2, 3])"
    );
    // All or nothing: no var changed.
    assert_same_tensors(&tensors_of(&target)?, &original)?;

    // Extra tensors are ignored and reported; f64 values go into an f32 var.
    let mut tensors = tensors_of(&model(3.0)?)?;
    tensors.insert(
        "head.bias".into(),
        Tensor::new(&[1f64, 2., 3., 4.], &Device::Cpu)?,
    );
    tensors.insert(
        "unused.weight".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu)?,
    );
    let report = load_into_varmap_report(&target, &tensors)?;
    assert_eq!(report.loaded, ["conv.bias", "conv.weight", "head.bias"]);
    assert_eq!(report.unused, ["unused.weight"]);
    let head = tensors_of(&target)?["head.bias"].clone();
    assert_eq!(head.dtype(), DType::F32);
    assert_eq!(head.to_vec1::<f32>()?, [1.0, 2.0, 3.0, 4.0]);
    Ok(())
}

#[test]
fn a_varmap_can_be_reloaded_from_its_own_tensors() -> TestResult {
    // The tensors share storage with the vars; setting must still work.
    let varmap = model(0.0)?;
    let own = tensors_of(&varmap)?;
    load_into_varmap(&varmap, &own)?;
    assert_same_tensors(&tensors_of(&varmap)?, &tensors_of(&model(0.0)?)?)?;
    Ok(())
}
