//! Shared pieces of the segkit assignments: device choice, data, layers, losses,
//! optimisers, the training loop, metrics, plots and pictures.

pub mod alloc;
pub mod atomic_write;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod init;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod palette;
pub mod plot;
pub mod run_dir;
pub mod schedule;
pub mod segments;
pub mod train;
pub mod viz;
pub mod weights;
pub mod workspace;

/// The result type of the host-side (non-tensor) parts of `common`.
pub type Result<T> = anyhow::Result<T>;
