//! The flags every program shares (`--out`, `--data-dir`, `--device`, `--quiet`), and
//! defaults read from the clap attributes so each default is written once.

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
