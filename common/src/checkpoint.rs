//! Checkpoints: model weights, optimiser state and run metadata in one
//! safetensors file, written atomically.
//!
//! Layout: model tensors under `model.<name>`, optimiser state under
//! `optim.<name>`, and `__metadata__ = {"segkit": <CheckpointMeta as JSON>}`.
//! candle's own `safetensors::save` writes no metadata, so this uses the
//! `safetensors` crate directly. A save goes to a temporary file in the same
//! folder that is renamed over the final name only once it is complete, so a
//! crash never leaves half a checkpoint and the previous one stays until then.

use std::collections::HashMap;

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::Result;

/// The `__metadata__` key that holds [`CheckpointMeta`] as JSON.
pub const METADATA_KEY: &str = "segkit";
/// Prefix of model tensor names in the file.
pub const MODEL_PREFIX: &str = "model.";
/// Prefix of optimiser state names in the file.
pub const OPTIM_PREFIX: &str = "optim.";

/// Where a run stood when the checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimisation steps completed.
    pub step: usize,
    /// The run's random seed.
    pub seed: u64,
    /// The run's configuration, as written to `config.json`.
    pub config: serde_json::Value,
}

/// A checkpoint read back from disk (names without their file prefixes).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Model tensors by `VarMap` name.
    pub model: HashMap<String, Tensor>,
    /// Optimiser state as from `Optimizer::state`.
    pub optimizer: HashMap<String, Tensor>,
    /// Run metadata.
    pub meta: CheckpointMeta,
}

/// A tensor copied to host bytes, ready for the safetensors writer.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Little-endian bytes of every element.
fn le_bytes<T: candle::WithDType, const N: usize>(
    flat: &Tensor,
    to_bytes: fn(T) -> [u8; N],
) -> candle::Result<Vec<u8>> {
    Ok(flat
        .to_vec1::<T>()?
        .into_iter()
        .flat_map(to_bytes)
        .collect())
}

/// Copies `tensor` to host bytes; only plain integer and f32/f64 dtypes are stored.
fn host_tensor(name: &str, tensor: &Tensor) -> Result<HostTensor> {
    // Any shape, rank 0 included -> (n,) on the CPU.
    let flat = tensor.flatten_all()?.to_device(&Device::Cpu)?;
    let (dtype, bytes) = match tensor.dtype() {
        DType::U8 => (Dtype::U8, flat.to_vec1::<u8>()?),
        DType::U32 => (Dtype::U32, le_bytes(&flat, u32::to_le_bytes)?),
        DType::I16 => (Dtype::I16, le_bytes(&flat, i16::to_le_bytes)?),
        DType::I32 => (Dtype::I32, le_bytes(&flat, i32::to_le_bytes)?),
        DType::I64 => (Dtype::I64, le_bytes(&flat, i64::to_le_bytes)?),
        DType::F32 => (Dtype::F32, le_bytes(&flat, f32::to_le_bytes)?),
        DType::F64 => (Dtype::F64, le_bytes(&flat, f64::to_le_bytes)?),
        other => bail!(
            "tensor {name:?} has dtype {other:?}; checkpoints store f32, f64, u8, u32, i16, i32 and i64"
        ),
    };
    Ok(HostTensor {
        dtype,
        shape: tensor.dims().to_vec(),
        bytes,
    })
}

pub use crate::atomic_write::write_atomically;

/// Saves the model vars, the optimiser state and `meta` to `path` (atomically,
/// see [`write_atomically`]). Errors name the file and the tensor at fault.
pub fn save_checkpoint(
    path: &Path,
    model: &VarMap,
    optimizer: &HashMap<String, Tensor>,
    meta: &CheckpointMeta,
) -> Result<()> {
    let context = || format!("cannot save checkpoint {path:?}");
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    {
        let vars = model.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, var) in vars.iter() {
            let key = format!("{MODEL_PREFIX}{name}");
            tensors.push((
                key.clone(),
                host_tensor(&key, var.as_tensor()).with_context(context)?,
            ));
        }
    }
    for (name, tensor) in optimizer {
        let key = format!("{OPTIM_PREFIX}{name}");
        tensors.push((
            key.clone(),
            host_tensor(&key, tensor).with_context(context)?,
        ));
    }
    let meta_json = serde_json::to_string(meta).with_context(context)?;
    let metadata = HashMap::from([(METADATA_KEY.to_string(), meta_json)]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k, t)), Some(metadata))
        .map_err(|e| anyhow!("{e}"))
        .with_context(context)?;
    write_atomically(path, |file| Ok(file.write_all(&bytes)?)).with_context(context)
}

/// Reads a checkpoint written by [`save_checkpoint`], putting its tensors on
/// `device` with their stored dtypes. Errors name the file: missing, not a
/// safetensors file (garbage, truncated), no segkit metadata, or a tensor
/// name without the `model.` / `optim.` prefix.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {path:?}"))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("checkpoint {path:?} is not a valid safetensors file: {e}"))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("checkpoint {path:?} is not a valid safetensors file: {e}"))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            anyhow!(
                "{path:?} has no checkpoint metadata (__metadata__.{METADATA_KEY}): \
                 it was not written by save_checkpoint"
            )
        })?;
    let meta: CheckpointMeta = serde_json::from_str(meta_json)
        .with_context(|| format!("checkpoint {path:?} has unreadable metadata {meta_json:?}"))?;

    let mut model = HashMap::new();
    let mut optimizer = HashMap::new();
    for (name, view) in file.tensors() {
        let dtype = DType::try_from(view.dtype())
            .map_err(|e| anyhow!("checkpoint {path:?}, tensor {name:?}: {e}"))?;
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)
            .with_context(|| format!("checkpoint {path:?}: cannot read tensor {name:?}"))?;
        if let Some(key) = name.strip_prefix(MODEL_PREFIX) {
            model.insert(key.to_string(), tensor);
        } else if let Some(key) = name.strip_prefix(OPTIM_PREFIX) {
            optimizer.insert(key.to_string(), tensor);
        } else {
            bail!("checkpoint {path:?} holds tensor {name:?}, which is neither model. nor optim.");
        }
    }
    Ok(Checkpoint {
        model,
        optimizer,
        meta,
    })
}

/// What [`load_into_varmap_report`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Vars that were set, sorted.
    pub loaded: Vec<String>,
    /// Tensors that match no var and were ignored, sorted.
    pub unused: Vec<String>,
}

/// Sets every var of `varmap` from the tensor of the same name (converted to
/// the var's dtype and device). Either all vars are set or none: the error
/// lists all missing keys and all mis-shaped keys with both shapes. Tensors
/// without a var are ignored and listed in the report.
pub fn load_into_varmap_report(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
) -> Result<LoadReport> {
    let vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let (mut missing, mut misshaped, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let var = &vars[name];
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => misshaped.push(format!(
                "{name} (file {:?}, model {:?})",
                t.dims(),
                var.dims()
            )),
            Some(t) => ready.push((name.clone(), var, t)),
        }
    }
    if !missing.is_empty() || !misshaped.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!(
                "{} missing keys: {}",
                missing.len(),
                missing.join(", ")
            ));
        }
        if !misshaped.is_empty() {
            let list = misshaped.join(", ");
            parts.push(format!("{} mis-shaped keys: {list}", misshaped.len()));
        }
        bail!("cannot load weights into the model: {}", parts.join("; "));
    }
    let mut loaded = Vec::new();
    for (name, var, tensor) in ready {
        // A copy, so that a var can be set from a tensor that shares its storage.
        let value = tensor
            .to_device(var.device())?
            .to_dtype(var.dtype())?
            .copy()?;
        var.set(&value)
            .with_context(|| format!("cannot set var {name:?}"))?;
        loaded.push(name);
    }
    let mut unused: Vec<String> = tensors
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    unused.sort();
    Ok(LoadReport { loaded, unused })
}

/// [`load_into_varmap_report`], printing the ignored tensor names to stderr.
pub fn load_into_varmap(varmap: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let report = load_into_varmap_report(varmap, tensors)?;
    if !report.unused.is_empty() {
        eprintln!(
            "note: {} tensors match no model var and were ignored: {}",
            report.unused.len(),
            report.unused.join(", ")
        );
    }
    Ok(())
}
