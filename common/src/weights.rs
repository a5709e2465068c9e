//! Pretrained weights: find the file (`--weights FILE`, the Hugging Face hub cache,
//! a hub download through the `hf-hub` crate), check it, read the preprocessing it
//! expects from its safetensors `__metadata__`, and load the tensors a model asks for,
//! with one error that lists every missing or mis-shaped tensor.
//!
//! The hub cache is `hf-hub`'s (the layout of Python's `huggingface_hub`):
//! `<cache>/models--<org>--<name>/refs/<revision>` holds a commit hash,
//! `snapshots/<commit>/<file>` links to `blobs/<etag>`. `hf-hub` 0.5 reads
//! `HF_HOME` and `HF_ENDPOINT` only; [`HubSettings::from_env`] also honours
//! `HF_HUB_CACHE`, `HF_HUB_OFFLINE` (and `SEGKIT_OFFLINE`) and `HF_TOKEN`, and the
//! settings are passed down explicitly so tests need no environment variables.
//! `hf-hub` checks neither size nor hash: every file found or downloaded is checked
//! here (its safetensors header, its tensor data not cut short, the tensors expected).

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle::{Device, Tensor};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::data::fetch::{HF_OFFLINE_ENV, OFFLINE_ENV};
use crate::data::transforms::Normalization;
use crate::Result;

/// The environment variable that points tests and programs at the shared
/// pretrained weights (`.ci/run` sets it to `../shared/weights`).
pub const SHARED_WEIGHTS_ENV: &str = "SEGKIT_SHARED_WEIGHTS";

/// The hub repository of the default backbone (torchvision VGG11 in timm's copy).
pub const DEFAULT_HUB_REPO: &str = "timm/vgg11.tv_in1k";

/// The file of a hub repository that holds the weights.
pub const DEFAULT_HUB_FILE: &str = "model.safetensors";

/// The hub itself, when `HF_ENDPOINT` names no other.
pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";

/// Tensor names and the shapes a weights file must hold for them.
pub type ExpectedTensors = [(String, Vec<usize>)];

/// One file of a model repository on the Hugging Face hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `org/name`, e.g. `timm/vgg11.tv_in1k`.
    pub repo: String,
    /// A branch or tag; `main` by default.
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

    /// The repository as `hf-hub` names it.
    pub fn hub_repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }

    /// The download URL under `endpoint`: `<endpoint>/<repo>/resolve/<revision>/<file>`.
    pub fn url(&self, endpoint: &str) -> String {
        let repo = self.hub_repo();
        format!(
            "{endpoint}/{}/resolve/{}/{}",
            repo.url(),
            repo.url_revision(),
            self.filename
        )
    }

    /// The repository's folder in the hub cache `cache`: `models--<org>--<name>`.
    pub fn cache_folder(&self, cache: &Path) -> PathBuf {
        cache.join(self.hub_repo().folder_name())
    }
}

/// Where and how the hub is reached: built from the environment once
/// ([`HubSettings::from_env`]) and passed down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub cache folder; `None` when none could be found (no home folder).
    pub cache: Option<PathBuf>,
    /// `https://huggingface.co` or a mirror, without a trailing `/`.
    pub endpoint: String,
    /// Never touch the network: the cache only.
    pub offline: bool,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

impl HubSettings {
    /// Settings for the hub cache `cache` and the hub at `endpoint`: online, no
    /// token, no progress bar (what tests use).
    pub fn new(cache: impl Into<PathBuf>, endpoint: &str) -> Self {
        Self {
            cache: Some(cache.into()),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            offline: false,
            token: None,
            progress: false,
        }
    }

    /// The settings the environment asks for, with a progress bar when stderr is
    /// a terminal (see [`HubSettings::from_vars`]).
    pub fn from_env() -> Self {
        let mut settings = Self::from_vars(|name| std::env::var(name).ok());
        settings.progress = std::io::stderr().is_terminal();
        settings
    }

    /// The settings the variables `var` returns ask for (no progress bar):
    /// - cache: `HF_HUB_CACHE`, else `<hf home>/hub`, where the hf home is `HF_HOME`,
    ///   else `$XDG_CACHE_HOME/huggingface`, else `$HOME/.cache/huggingface`;
    /// - endpoint: `HF_ENDPOINT`, else the hub;
    /// - offline: `HF_HUB_OFFLINE` or `SEGKIT_OFFLINE` set to `1`/`true`/`yes`/`on`;
    /// - token: `HF_TOKEN`, else the file `<hf home>/token` (`huggingface-cli login`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("huggingface")))
            .or_else(|| var("HOME").map(|d| PathBuf::from(d).join(".cache/huggingface")));
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|home| home.join("hub")));
        let token = var("HF_TOKEN")
            .map(|t| t.trim().to_owned())
            .or_else(|| Cache::new(hf_home?.join("hub")).token());
        let offline = [OFFLINE_ENV, HF_OFFLINE_ENV].iter().any(|name| {
            var(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
        });
        Self {
            cache,
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            offline,
            token,
            progress: false,
        }
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

/// What a hub look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubLookup {
    /// A checked file, cached or just downloaded.
    Found(ResolvedWeights),
    /// Not in the cache and not downloadable now (offline, no network, not on the
    /// server): why, in a sentence that names the repository and the cache.
    Unavailable(String),
}

/// The cached copy of `file` in the hub cache `cache` (`hf-hub`'s cache-only
/// look-up: the snapshot that `refs/<revision>` names), if there is one.
pub fn hub_cached_file(cache: &Path, file: &HubFile) -> Option<PathBuf> {
    Cache::new(cache.to_path_buf())
        .repo(file.hub_repo())
        .get(&file.filename)
}

/// Downloads `file` into the hub cache `cache` with `hf-hub` and returns the
/// snapshot path. `hf-hub` resumes a `blobs/<etag>.part` left by a broken download.
fn hub_download(
    cache: &Path,
    file: &HubFile,
    settings: &HubSettings,
) -> std::result::Result<PathBuf, hf_hub::api::sync::ApiError> {
    let api = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(settings.progress)
        .build()?;
    api.repo(file.hub_repo()).download(&file.filename)
}

/// Finds `file` in the hub cache, else downloads it (unless offline), and checks
/// that it holds the `expected` tensors. A file that is found but broken (cut short,
/// not safetensors, other tensors) is an error naming it; a fresh download that is
/// broken is removed from the cache first, so the next run downloads it again.
pub fn hub_weights(
    file: &HubFile,
    expected: &ExpectedTensors,
    settings: &HubSettings,
) -> Result<HubLookup> {
    let Some(cache) = settings.cache.as_deref() else {
        return Ok(HubLookup::Unavailable(format!(
            "no hub cache folder to find {} in (set HF_HUB_CACHE, HF_HOME or HOME)",
            file.repo
        )));
    };
    if let Some(path) = hub_cached_file(cache, file) {
        check_weights(&path, expected).with_context(|| {
            format!(
                "the hub cache holds a broken copy of {}/{}; delete {:?} to download it again",
                file.repo,
                file.filename,
                file.cache_folder(cache)
            )
        })?;
        return Ok(found(path, WeightsOrigin::HubCache));
    }
    if settings.offline {
        return Ok(HubLookup::Unavailable(format!(
            "{}/{} is not in the hub cache {cache:?}, and {HF_OFFLINE_ENV} or {OFFLINE_ENV} \
             forbids downloading it",
            file.repo, file.filename
        )));
    }
    let url = file.url(&settings.endpoint);
    eprintln!("downloading {url} into the hub cache {cache:?}");
    let path = match hub_download(cache, file, settings) {
        Ok(path) => path,
        Err(err) => {
            return Ok(HubLookup::Unavailable(format!(
                "{}/{} is not in the hub cache {cache:?} and downloading {url} failed: {err}",
                file.repo, file.filename
            )))
        }
    };
    if let Err(err) = check_weights(&path, expected) {
        let removed = remove_cached(&path, cache);
        return Err(err.context(format!("{url} gave a broken file ({removed})")));
    }
    Ok(found(path, WeightsOrigin::HubDownload))
}

fn found(path: PathBuf, origin: WeightsOrigin) -> HubLookup {
    HubLookup::Found(ResolvedWeights { path, origin })
}

/// Removes a snapshot link and the blob it points to (only inside `cache`), so the
/// cache no longer offers the file; says what it did.
fn remove_cached(snapshot: &Path, cache: &Path) -> String {
    let blob = std::fs::canonicalize(snapshot).ok();
    let cache = std::fs::canonicalize(cache).unwrap_or_else(|_| cache.to_path_buf());
    let mut failed = std::fs::remove_file(snapshot).is_err();
    if let Some(blob) = blob.filter(|b| b.starts_with(&cache)) {
        failed |= std::fs::remove_file(blob).is_err();
    }
    if failed {
        format!("could not remove all of it from the hub cache; delete {snapshot:?} and its blob")
    } else {
        "removed from the hub cache".to_owned()
    }
}

/// Checks a weights file named on the command line: it must exist.
pub fn explicit_weights(path: &Path) -> Result<ResolvedWeights> {
    if !path.is_file() {
        bail!("weights file {path:?} not found");
    }
    Ok(ResolvedWeights {
        path: path.to_path_buf(),
        origin: WeightsOrigin::Explicit,
    })
}

/// Finds the weights: `explicit` when given (it must exist), else `hub` through
/// [`hub_weights`]; not finding them is an error that says what was tried.
pub fn resolve_weights(
    explicit: Option<&Path>,
    hub: &HubFile,
    expected: &ExpectedTensors,
    settings: &HubSettings,
) -> Result<ResolvedWeights> {
    if let Some(path) = explicit {
        return explicit_weights(path);
    }
    match hub_weights(hub, expected, settings)? {
        HubLookup::Found(resolved) => Ok(resolved),
        HubLookup::Unavailable(why) => bail!("{why}; pass --weights FILE.safetensors"),
    }
}

/// Checks that `path` is a whole safetensors file holding the `expected` tensors
/// (other tensors may be there too); the error names the file and every problem.
pub fn check_weights(path: &Path, expected: &ExpectedTensors) -> Result<()> {
    let shapes = tensor_shapes(path)?;
    match fit_problems(path, &shapes, expected) {
        Some(problems) => bail!(problems),
        None => Ok(()),
    }
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

/// The JSON header of a safetensors file (tensor entries and `__metadata__`) and
/// the number of bytes after it (the tensor data), read without reading the tensors.
fn read_header(path: &Path) -> Result<(serde_json::Map<String, serde_json::Value>, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open weights {path:?}"))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .with_context(|| format!("{path:?} is not a safetensors file (shorter than 8 bytes)"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len == 0 || header_len > 100_000_000 {
        bail!(
            "{path:?} is not a safetensors file (header length {header_len}, file size {file_len})"
        );
    }
    if header_len + 8 > file_len {
        bail!(
            "{path:?} is cut short: its header alone needs {} bytes, the file holds {file_len}",
            header_len + 8
        );
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .with_context(|| format!("cannot read the header of {path:?}"))?;
    match serde_json::from_slice(&header) {
        Ok(serde_json::Value::Object(map)) => Ok((map, file_len - 8 - header_len)),
        _ => bail!("{path:?} is not a safetensors file (its header is not a JSON object)"),
    }
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let (header, _) = read_header(path)?;
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

/// The bytes per element of a safetensors dtype (`None`: unknown to us).
fn dtype_size(dtype: &str) -> Option<u64> {
    match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => Some(1),
        "U16" | "I16" | "F16" | "BF16" => Some(2),
        "U32" | "I32" | "F32" => Some(4),
        "U64" | "I64" | "F64" => Some(8),
        _ => None,
    }
}

/// One header entry: its shape, and its byte span in the data after the header.
fn parse_entry(entry: &serde_json::Value) -> Option<(Vec<usize>, u64, u64, Option<u64>)> {
    let numbers = |key: &str| -> Option<Vec<u64>> {
        let values = entry.get(key)?.as_array()?;
        values.iter().map(|v| v.as_u64()).collect()
    };
    let shape = numbers("shape")?;
    let [start, end] = numbers("data_offsets")?[..] else {
        return None;
    };
    let dtype = dtype_size(entry.get("dtype")?.as_str()?);
    let bytes = dtype.map(|size| shape.iter().product::<u64>() * size);
    let shape = shape.into_iter().map(|d| d as usize).collect();
    Some((shape, start, end, bytes))
}

/// The names and shapes of the tensors in a safetensors file; an error names the
/// file when an entry is unreadable or the tensor data is cut short.
pub fn tensor_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let (header, data_len) = read_header(path)?;
    let mut shapes = HashMap::new();
    let mut data_end = 0;
    for (name, entry) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let Some((shape, start, end, bytes)) = parse_entry(entry) else {
            bail!("{path:?}: tensor {name:?} has no valid shape, dtype and data offsets");
        };
        if end < start || bytes.is_some_and(|b| b != end - start) {
            bail!("{path:?}: tensor {name:?} has data offsets {start}..{end} that do not fit its shape {shape:?}");
        }
        data_end = data_end.max(end);
        shapes.insert(name.clone(), shape);
    }
    if data_end > data_len {
        bail!(
            "{path:?} is cut short: its header needs {data_end} bytes of tensor data, \
             the file holds {data_len}"
        );
    }
    if data_end < data_len {
        bail!(
            "{path:?} is not a whole safetensors file: {} bytes follow its tensor data",
            data_len - data_end
        );
    }
    Ok(shapes)
}

/// What keeps the tensors `shapes` of `path` from fitting `wanted`: one sentence
/// listing every missing and every mis-shaped tensor (`None`: they fit).
fn fit_problems(
    path: &Path,
    shapes: &HashMap<String, Vec<usize>>,
    wanted: &ExpectedTensors,
) -> Option<String> {
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
    if missing.is_empty() && misshaped.is_empty() {
        return None;
    }
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
    Some(message)
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
    wanted: &ExpectedTensors,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    check_weights(path, wanted)?;
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
