//! Tuning glibc's allocator so a training loop reuses its freed tensor buffers.
//!
//! A CPU training step allocates and frees many buffers of a few MiB (activations,
//! gradients). glibc serves each one above its mmap threshold with a fresh `mmap` and
//! hands it back with `munmap` on free, and trims the heap's free top back to the OS, so
//! every step page-faults its buffers in again and the kernel zeroes each page: 10-20 ms
//! of a 110 ms convolution forward + backward here (`cargo bench -p common --bench
//! kernels -- --case conv-fwd-bwd` with `SEGKIT_MALLOC_DEFAULTS=1` and without).
//! [`reuse_freed_memory`] turns glibc's mmap off for the main arena (`M_MMAP_MAX = 0`:
//! every buffer, however large, comes from the heap; a threshold alone stops at 32 MiB,
//! and assignment 3's hypercolumns and batch activations are larger) and raises the trim
//! threshold to 1 GiB, so freed buffers stay in the heap for the next step. With the
//! threshold alone, an assignment 3 training epoch spent more time in the kernel (page
//! faults) than in user code; turning mmap off took it from 106 to 88 s (`--tune
//! --head-epochs 1 --finetune-epochs 1`, idle 2 cores). The price: the process keeps its
//! peak heap until it exits instead of returning it. Threads other than the main one
//! allocate from their own arenas, where glibc still falls back to mmap for a buffer
//! larger than an arena's 64 MiB heap.

use std::sync::OnceLock;

/// Environment variable that, when set to anything but `0`, keeps glibc's defaults
/// (to measure the difference, or if the tuning ever misbehaves).
pub const KEEP_DEFAULTS_ENV: &str = "SEGKIT_MALLOC_DEFAULTS";

/// glibc's largest accepted mmap threshold on 64-bit targets (`HEAP_MAX_SIZE / 2`): set
/// too, so that the threshold no longer moves with the sizes freed.
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// How many buffers glibc may serve with their own mmap at once: none.
pub const MMAP_MAX: usize = 0;

/// Free memory at the top of the heap kept before glibc returns it to the OS.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Tunes glibc's allocator as the module docs say, once per process; later calls only
/// return the first call's answer. Returns whether the tuning is in effect: false on other
/// platforms (nothing to do: other allocators behave differently), when
/// [`KEEP_DEFAULTS_ENV`] asks for the defaults, or if glibc refused a setting.
/// [`crate::device::open_device`] calls it when it opens the CPU.
pub fn reuse_freed_memory() -> bool {
    static APPLIED: OnceLock<bool> = OnceLock::new();
    *APPLIED.get_or_init(|| {
        let keep_defaults = std::env::var(KEEP_DEFAULTS_ENV).is_ok_and(|v| v != "0");
        !keep_defaults && tune_glibc()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_glibc() -> bool {
    let as_int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes allocator parameters; glibc applies them under its own
    // lock and returns 0 for a value it rejects. Both are called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD)) == 1
            && libc::mallopt(libc::M_MMAP_MAX, as_int(MMAP_MAX)) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD)) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_glibc() -> bool {
    false
}
