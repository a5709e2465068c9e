//! Tests of `common::bench`: the `--runs` and `--device` arguments and the median of timed runs.

use common::bench::{device_arg, median_ms, runs_arg};
use common::device::DeviceChoice;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn runs_argument_is_parsed_with_a_default_and_a_floor_of_one() {
    assert_eq!(runs_arg(&args(&["bench", "--runs", "9"]), 5).unwrap(), 9);
    assert_eq!(runs_arg(&args(&["bench"]), 5).unwrap(), 5);
    assert_eq!(runs_arg(&args(&["bench", "--runs", "0"]), 5).unwrap(), 1);
    let err = runs_arg(&args(&["bench", "--runs", "x"]), 5).unwrap_err();
    assert!(err.to_string().contains("--runs \"x\""), "{err}");
    assert!(runs_arg(&args(&["bench", "--runs"]), 5).is_err());
}

#[test]
fn device_argument_defaults_to_the_cpu_and_refuses_unknown_names() {
    assert_eq!(device_arg(&args(&["bench"])).unwrap(), DeviceChoice::Cpu);
    let cuda = args(&["bench", "--runs", "3", "--device", "cuda"]);
    assert_eq!(device_arg(&cuda).unwrap(), DeviceChoice::Cuda);
    let err = device_arg(&args(&["bench", "--device", "tpu"])).unwrap_err();
    assert!(err.to_string().contains("\"tpu\""), "{err}");
    assert!(device_arg(&args(&["bench", "--device"])).is_err());
}

#[test]
fn median_runs_one_warm_up_then_the_timed_calls_and_stops_on_error() {
    let mut calls = 0;
    let ms = median_ms(4, || {
        calls += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 5);
    assert!(ms >= 0.0 && ms.is_finite());
    let mut calls = 0;
    let err = median_ms(4, || {
        calls += 1;
        anyhow::ensure!(calls < 3, "call {calls} failed");
        Ok(())
    })
    .unwrap_err();
    assert_eq!((calls, err.to_string()), (3, "call 3 failed".to_string()));
}
