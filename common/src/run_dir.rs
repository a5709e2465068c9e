//! The run folder every program writes: `config.json` from the run's config, then
//! `history.csv`/`history.json`, `loss.png`, `metrics.json`, `checkpoint.safetensors`
//! and `predictions/`, with child folders for phases or variants. Only this type
//! decides those names, and every file goes through [`write_atomically`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::atomic_write::write_atomically;
use crate::Result;

pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const HISTORY_CSV: &str = "history.csv";
pub const HISTORY_JSON: &str = "history.json";
pub const LOSS_PNG: &str = "loss.png";
pub const PREDICTIONS_DIR: &str = "predictions";

/// The folder of one run (or of one phase or variant of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The default folder of a run: `runs/<program>/seed<seed>`.
    pub fn default_path(program: &str, seed: u64) -> PathBuf {
        Path::new("runs").join(program).join(format!("seed{seed}"))
    }

    /// Creates the folder (and its parents) and writes `config.json` from `config`.
    pub fn create(path: impl Into<PathBuf>, config: &impl Serialize) -> Result<Self> {
        let dir = Self::create_empty(path)?;
        dir.write_json(CONFIG_FILE, config)?;
        Ok(dir)
    }

    /// Creates the folder without writing a config (a child, or a command's output).
    pub fn create_empty(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create output folder {path:?}"))?;
        Ok(Self { path })
    }

    /// An existing run folder written earlier (for `evaluate`, `predict`, resume).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if !path.is_dir() {
            anyhow::bail!("run folder {path:?} does not exist");
        }
        Ok(Self { path })
    }

    /// A child folder for a phase or a variant, created.
    pub fn child(&self, name: &str) -> Result<Self> {
        Self::create_empty(self.path.join(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    pub fn metrics(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }

    pub fn history_csv(&self) -> PathBuf {
        self.path.join(HISTORY_CSV)
    }

    pub fn history_json(&self) -> PathBuf {
        self.path.join(HISTORY_JSON)
    }

    pub fn loss_png(&self) -> PathBuf {
        self.path.join(LOSS_PNG)
    }

    /// The `predictions/` folder (created by the first picture written into it).
    pub fn predictions(&self) -> PathBuf {
        self.path.join(PREDICTIONS_DIR)
    }

    /// Any other file of the run, by name.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `metrics.json`.
    pub fn write_metrics(&self, metrics: &impl Serialize) -> Result<()> {
        self.write_json(METRICS_FILE, metrics)
    }

    /// Writes `value` as pretty JSON to the file `name` of the run.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)
            .with_context(|| format!("cannot serialise {name} for {:?}", self.path))?;
        self.write_bytes(name, &bytes)
    }

    /// Writes raw bytes to the file `name` of the run.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_file(&self.path.join(name), bytes)
    }

    /// Reads the JSON file `name` of the run back as `T`; errors name the file.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.path.join(name);
        let text = std::fs::read(&path).with_context(|| format!("cannot read {path:?}"))?;
        serde_json::from_slice(&text).with_context(|| {
            format!("{path:?} is not what this version writes (a run folder of an older format?)")
        })
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |file| {
        file.write_all(bytes)
            .with_context(|| format!("cannot write {path:?}"))
    })
}
