//! The flags every program shares (`--out`, `--data-dir`, `--device`, `--quiet`; `--run`
//! for the commands that read a training run), and defaults read from the clap
//! attributes so each default is written once.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser};
use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::run_dir::RunDir;

/// Where a run reads and writes, and how it shows progress.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct RunArgs {
    /// Output folder [default: runs/<program>/seed<seed>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The data set's folder [default: $SEGKIT_DATA_DIR/<set>, data/<set> in the workspace,
    /// then $SEGKIT_SHARED_DATA or ../shared/data, then a download, then generated data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where tensors live: cuda needs a build with `--features cuda`; auto takes it when it answers
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// No progress bars (they are also off when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
}

impl Default for RunArgs {
    fn default() -> Self {
        defaults()
    }
}

impl RunArgs {
    /// Whether to draw progress bars.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// `--out`, else the default run folder of `program` and `seed`.
    pub fn out_dir(&self, program: &str, seed: u64) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| RunDir::default_path(program, seed))
    }
}

/// Which training run `evaluate` or `predict` reads, and where it writes.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct SavedRunArgs {
    /// The training run folder to read [default: runs/<program>/seed<seed> of the default seed]
    #[arg(long = "run", value_name = "DIR")]
    pub run_folder: Option<PathBuf>,
    /// Output folder [default: <run>/<command>, e.g. <run>/evaluate]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where tensors live: cuda needs a build with `--features cuda`; auto takes it when it answers
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// No progress bars (they are also off when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
}

impl Default for SavedRunArgs {
    fn default() -> Self {
        defaults()
    }
}

impl SavedRunArgs {
    /// The arguments that read the run folder `dir`, quietly (what tests and scripts pass).
    pub fn quiet(dir: impl Into<PathBuf>) -> Self {
        Self {
            run_folder: Some(dir.into()),
            quiet: true,
            ..Self::default()
        }
    }

    /// `--run`, else the default run folder of `program` with its default seed.
    pub fn run_folder(&self, program: &str, default_seed: u64) -> PathBuf {
        self.run_folder
            .clone()
            .unwrap_or_else(|| RunDir::default_path(program, default_seed))
    }

    /// The training run folder, which must exist.
    pub fn open_run(&self, program: &str, default_seed: u64) -> crate::Result<RunDir> {
        RunDir::open(self.run_folder(program, default_seed))
    }

    /// `--out`, else `<run>/<command>`.
    pub fn out_dir(&self, program: &str, default_seed: u64, command: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| self.run_folder(program, default_seed).join(command))
    }

    /// Whether to draw progress bars.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

#[derive(Parser)]
struct Only<T: Args> {
    #[command(flatten)]
    args: T,
}

/// The value of a clap `Args` struct when no flag is given: its `default_value`s, so a
/// config's `Default` and its `--help` cannot disagree.
pub fn defaults<T: Args>() -> T {
    Only::<T>::parse_from(["defaults"]).args
}
