//! Helpers shared by the benchmarks that time the fast CPU kernels against candle's own
//! ops: command-line arguments, the median of timed runs, and the comparison table.

use std::time::Instant;

use crate::kernels;

/// The value after `flag` in `args`: `None` when the flag is absent, an error saying
/// `needs` when it is the last argument.
fn flag_value<'a>(args: &'a [String], flag: &str, needs: &str) -> crate::Result<Option<&'a str>> {
    match args.iter().position(|a| a == flag) {
        Some(i) => match args.get(i + 1) {
            Some(value) => Ok(Some(value)),
            None => anyhow::bail!("{flag} needs {needs}"),
        },
        None => Ok(None),
    }
}

/// `--runs N` from `args` (at least 1), or `default` when absent.
pub fn runs_arg(args: &[String], default: usize) -> crate::Result<usize> {
    let runs = match flag_value(args, "--runs", "a number")? {
        Some(value) => value
            .parse::<usize>()
            .map_err(|e| anyhow::anyhow!("--runs {value:?}: {e}"))?,
        None => default,
    };
    Ok(runs.max(1))
}

/// The device named by `--device cpu|cuda|auto` in a bench's arguments (`cpu` when absent).
pub fn device_arg(args: &[String]) -> crate::Result<crate::device::DeviceChoice> {
    match flag_value(args, "--device", "cpu, cuda or auto")? {
        Some(value) => value.parse(),
        None => Ok(crate::device::DeviceChoice::Cpu),
    }
}

/// Median milliseconds of `runs` calls of `step`, after one untimed warm-up call.
pub fn median_ms(runs: usize, mut step: impl FnMut() -> crate::Result<()>) -> crate::Result<f64> {
    step()?;
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// How a bench's title says whether [`crate::alloc::reuse_freed_memory`] is in effect.
pub fn allocator_note(tuned: bool) -> &'static str {
    if tuned {
        "allocator tuned to reuse freed buffers"
    } else {
        "allocator defaults"
    }
}

/// Times `time_ms(false)` with the fast kernels and `time_ms(true)` with candle's ops
/// forced (skipped, NaN, when `fast_only`), then prints `title` and one table row for
/// `case`: ms, GFLOP/s of `flops` per call, and the speed-up over candle's ops. Both run
/// with the allocator tuned as the programs run it, unless `SEGKIT_MALLOC_DEFAULTS` is set.
pub fn compare_with_candle(
    title: &str,
    case: &str,
    flops: f64,
    fast_only: bool,
    mut time_ms: impl FnMut() -> crate::Result<f64>,
) -> crate::Result<()> {
    let tuned = crate::alloc::reuse_freed_memory();
    kernels::set_force_candle_ops(false);
    let fast = time_ms()?;
    let stock = if fast_only {
        f64::NAN
    } else {
        kernels::set_force_candle_ops(true);
        let stock = time_ms();
        kernels::set_force_candle_ops(false);
        stock?
    };
    println!(
        "{title}, {} rayon threads, {}",
        rayon::current_num_threads(),
        allocator_note(tuned)
    );
    println!(
        "{:<18} {:>9} {:>8} {:>10} {:>8} {:>9}",
        "case", "fast ms", "GFLOP/s", "candle ms", "GFLOP/s", "speed-up"
    );
    println!(
        "{case:<18} {fast:>9.1} {:>8.1} {stock:>10.1} {:>8.1} {:>8.2}x",
        flops / fast / 1e6,
        flops / stock / 1e6,
        stock / fast
    );
    Ok(())
}
