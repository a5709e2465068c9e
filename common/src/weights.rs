//! Pretrained weights: find the file (`--weights FILE`, the Hugging Face hub
//! cache, a hub download), read the preprocessing it expects from its
//! safetensors `__metadata__`, and load the tensors a model asks for, with one
//! error that lists every missing or mis-shaped tensor.
//!
//! The hub cache follows the layout of `huggingface_hub` (Python) and the `hf-hub`
//! crate: `<cache>/models--<org>--<name>/refs/<revision>` holds a commit hash and
//! `snapshots/<commit>/<file>` the file. A download made here lands in
//! `snapshots/<revision>/<file>`, which both of them also find. The download goes
//! through [`crate::data::fetch::download`] (progress bar, atomic rename) instead
//! of the `hf-hub` crate, whose HTTP stack (reqwest, tokio, hf-xet) would roughly
//! double the workspace's build; `HF_HUB_OFFLINE=1` and `SEGKIT_OFFLINE=1` forbid it.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle::{Device, Tensor};

use crate::data::fetch;
use crate::data::transforms::Normalization;
use crate::Result;

/// The environment variable that points tests and programs at the shared
/// pretrained weights (`.ci/run` sets it to `../shared/weights`).
pub const SHARED_WEIGHTS_ENV: &str = "SEGKIT_SHARED_WEIGHTS";

/// The hub repository of the default backbone (torchvision VGG11 in timm's copy).
pub const DEFAULT_HUB_REPO: &str = "timm/vgg11.tv_in1k";

/// The file of a hub repository that holds the weights.
pub const DEFAULT_HUB_FILE: &str = "model.safetensors";

/// One file of a model repository on the Hugging Face hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `org/name`, e.g. `timm/vgg11.tv_in1k`.
    pub repo: String,
    /// A branch, tag or commit; `main` by default.
    pub revision: String,
    /// The file inside the repository, e.g. `model.safetensors`.
    pub filename: String,
}

impl HubFile {
    /// `filename` of `repo` at revision `main`.
    pub fn new(repo: &str, filename: &str) -> Self {
        Self {
            repo: repo.to_owned(),
            revision: "main".to_owned(),
            filename: filename.to_owned(),
        }
    }

    /// The download URL: `$HF_ENDPOINT` (default `https://huggingface.co`)
    /// `/<repo>/resolve/<revision>/<file>`.
    pub fn url(&self) -> String {
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_owned());
        format!(
            "{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            self.repo,
            self.revision,
            self.filename
        )
    }

    /// The repository's folder in a hub cache: `models--<org>--<name>`.
    pub fn cache_folder(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.repo.replace('/', "--")))
    }
}

/// Where a weights file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// Named on the command line.
    Explicit,
    /// Already in the hub cache.
    HubCache,
    /// Downloaded from the hub just now.
    HubDownload,
}

/// A weights file and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWeights {
    pub path: PathBuf,
    pub origin: WeightsOrigin,
}

/// The hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = var("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    if let Some(cache) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(cache).join("huggingface").join("hub"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// The cached copy of `file` under `cache`, if there is one: the snapshot named
/// by `refs/<revision>`, else the snapshot folder named after the revision itself.
pub fn hub_cached_file(cache: &Path, file: &HubFile) -> Option<PathBuf> {
    let folder = file.cache_folder(cache);
    let commit = std::fs::read_to_string(folder.join("refs").join(&file.revision))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|commit| !commit.is_empty());
    [commit, Some(file.revision.clone())]
        .into_iter()
        .flatten()
        .map(|snapshot| folder.join("snapshots").join(snapshot).join(&file.filename))
        .find(|path| path.is_file())
}

/// Downloads `file` into the hub cache under `cache` (progress bar, atomic
/// rename) and returns its path; fails at once when offline.
pub fn hub_download(cache: &Path, file: &HubFile) -> Result<PathBuf> {
    let dest = file
        .cache_folder(cache)
        .join("snapshots")
        .join(&file.revision)
        .join(&file.filename);
    let url = file.url();
    eprintln!("downloading {url} to {dest:?}");
    fetch::download(&url, &dest, None)
        .with_context(|| format!("cannot download {} from the Hugging Face hub", file.repo))
}

/// Finds the weights: `explicit` when given (it must exist), else the hub cache,
/// else a hub download. The error says what was tried and how to fix it.
pub fn resolve_weights(explicit: Option<&Path>, hub: &HubFile) -> Result<ResolvedWeights> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("weights file {path:?} not found");
        }
        return Ok(ResolvedWeights {
            path: path.to_path_buf(),
            origin: WeightsOrigin::Explicit,
        });
    }
    let Some(cache) = hub_cache_dir() else {
        bail!(
            "no --weights file and no hub cache folder (set HF_HOME or HOME) to find {} in",
            hub.repo
        );
    };
    if let Some(path) = hub_cached_file(&cache, hub) {
        return Ok(ResolvedWeights {
            path,
            origin: WeightsOrigin::HubCache,
        });
    }
    let path = hub_download(&cache, hub).with_context(|| {
        format!(
            "{} is not in the hub cache {cache:?} and could not be downloaded; \
             pass --weights FILE.safetensors",
            hub.repo
        )
    })?;
    Ok(ResolvedWeights {
        path,
        origin: WeightsOrigin::HubDownload,
    })
}

/// The shared weights folder: `$SEGKIT_SHARED_WEIGHTS`, else `../shared/weights`
/// beside the workspace, else `None`.
pub fn shared_weights_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(SHARED_WEIGHTS_ENV) {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    crate::workspace::shared_beside_workspace("weights")
}

/// The JSON header of a safetensors file (tensor entries and `__metadata__`),
/// read without reading the tensors.
fn read_header(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open weights {path:?}"))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .with_context(|| format!("{path:?} is not a safetensors file (shorter than 8 bytes)"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len == 0 || header_len > 100_000_000 || header_len + 8 > file_len {
        bail!(
            "{path:?} is not a safetensors file (header length {header_len}, file size {file_len})"
        );
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .with_context(|| format!("cannot read the header of {path:?}"))?;
    match serde_json::from_slice(&header) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => bail!("{path:?} is not a safetensors file (its header is not a JSON object)"),
    }
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let header = read_header(path)?;
    let Some(metadata) = header.get("__metadata__") else {
        return Ok(HashMap::new());
    };
    let Some(map) = metadata.as_object() else {
        bail!("{path:?}: __metadata__ is not a JSON object");
    };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (k.clone(), value)
        })
        .collect())
}

/// The names and shapes of the tensors in a safetensors file.
pub fn tensor_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let header = read_header(path)?;
    let mut shapes = HashMap::new();
    for (name, entry) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let shape = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .with_context(|| format!("{path:?}: tensor {name:?} has no valid shape"))?;
        shapes.insert(name.clone(), shape);
    }
    Ok(shapes)
}

/// The preprocessing that weights with this `__metadata__` expect: `input: caffe`
/// (BGR, 0..255, mean subtracted), `input: imagenet` or no `input` key (RGB,
/// ImageNet mean/std), `input: none`; anything else is an error naming `path`.
pub fn input_normalization(
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<Normalization> {
    match metadata.get("input").map(|s| s.to_ascii_lowercase()) {
        None => Ok(Normalization::Imagenet),
        Some(input) => input.parse().with_context(|| {
            format!("{path:?}: __metadata__ input {input:?} is not caffe, imagenet or none")
        }),
    }
}

/// Loads the tensors named in `wanted` (name -> expected shape) from a
/// safetensors file as f32 on `device`; other tensors in the file are not read.
/// One error lists every missing tensor and every shape mismatch.
pub fn load_tensors(
    path: &Path,
    wanted: &[(String, Vec<usize>)],
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let shapes = tensor_shapes(path)?;
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (name, shape) in wanted {
        match shapes.get(name) {
            None => missing.push(name.clone()),
            Some(found) if found != shape => {
                misshaped.push(format!("{name} is {found:?}, expected {shape:?}"))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() || !misshaped.is_empty() {
        let mut message = format!("weights {path:?} do not fit the model:");
        if !missing.is_empty() {
            message.push_str(&format!(" missing {}", missing.join(", ")));
        }
        if !misshaped.is_empty() {
            if !missing.is_empty() {
                message.push(';');
            }
            message.push_str(&format!(" mis-shaped {}", misshaped.join("; ")));
        }
        bail!(message);
    }
    // SAFETY: the file is mapped read-only and only read while `tensors` lives in
    // this function; candle's own loaders map weights the same way. A file changed
    // by another process meanwhile could give wrong values, never unsafety in Rust
    // code that only copies the bytes out.
    let tensors = unsafe { candle::safetensors::MmapedSafetensors::new(path) }
        .with_context(|| format!("cannot read weights {path:?}"))?;
    let mut out = HashMap::with_capacity(wanted.len());
    for (name, _) in wanted {
        let tensor = tensors
            .load(name, device)
            .and_then(|t| t.to_dtype(candle::DType::F32))
            .with_context(|| format!("cannot load tensor {name:?} from {path:?}"))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}
