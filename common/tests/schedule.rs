//! Tests of `common::schedule`: learning rates at given steps, hand-computed.

use common::schedule::{LrSchedule, ScheduleKind};

type TestResult = anyhow::Result<()>;

fn assert_lrs(schedule: &LrSchedule, expected: &[(usize, f64)]) {
    for &(step, want) in expected {
        let got = schedule.lr_at(step);
        assert!(
            (got - want).abs() < 1e-12,
            "{schedule:?} at step {step}: {got} vs expected {want}"
        );
    }
}

#[test]
fn constant_schedule_with_warmup() -> TestResult {
    // Warm-up over 4 steps: base * (step + 1) / 4, then base.
    let schedule = LrSchedule::new(0.1, ScheduleKind::Constant, 10).with_warmup(4);
    schedule.validate()?;
    assert_lrs(
        &schedule,
        &[
            (0, 0.025),
            (1, 0.05),
            (2, 0.075),
            (3, 0.1),
            (4, 0.1),
            (9, 0.1),
            (50, 0.1),
        ],
    );
    Ok(())
}

#[test]
fn step_schedule_decays_every_step_size_after_warmup() -> TestResult {
    // t = step - 2; lr = 1 * 0.1^(t / 3).
    let kind = ScheduleKind::Step {
        step_size: 3,
        gamma: 0.1,
    };
    let schedule = LrSchedule::new(1.0, kind, 20).with_warmup(2);
    schedule.validate()?;
    assert_lrs(
        &schedule,
        &[
            (0, 0.5),
            (1, 1.0),
            (2, 1.0),
            (4, 1.0),
            (5, 0.1),
            (7, 0.1),
            (8, 0.01),
        ],
    );
    Ok(())
}

#[test]
fn poly_schedule_follows_one_minus_t_over_t_to_the_power() -> TestResult {
    // No warm-up, T = 10, power 2: lr = 0.01 * (1 - t/10)^2.
    let schedule = LrSchedule::new(0.01, ScheduleKind::Poly { power: 2.0 }, 10);
    schedule.validate()?;
    assert_lrs(
        &schedule,
        &[(0, 0.01), (5, 0.0025), (9, 0.0001), (10, 0.0), (11, 0.0)],
    );
    // DeepLab's power 0.9 at half way: 0.5^0.9 = 0.535886731...
    let deeplab = LrSchedule::new(1.0, ScheduleKind::Poly { power: 0.9 }, 100);
    assert_lrs(&deeplab, &[(50, 0.5f64.powf(0.9))]);
    Ok(())
}

#[test]
fn cosine_schedule_after_warmup_reaches_min_lr_at_total_steps() -> TestResult {
    // Warm-up 2 steps, decay over T = 12 - 2 = 10 steps:
    // lr = 0.1 + (1.1 - 0.1) * (1 + cos(pi t / 10)) / 2 with t = step - 2.
    let schedule = LrSchedule::new(1.1, ScheduleKind::Cosine { min_lr: 0.1 }, 12).with_warmup(2);
    schedule.validate()?;
    assert_lrs(
        &schedule,
        &[
            (0, 0.55),
            (1, 1.1),
            (2, 1.1),
            (7, 0.6), // t = 5: cos(pi/2) = 0
            (12, 0.1),
            (100, 0.1),
        ],
    );
    // t = 2: 0.1 + 0.5 * (1 + cos(pi/5)) = 0.1 + 0.5 * 1.809016994 = 1.004508497
    assert_lrs(&schedule, &[(4, 1.004_508_497_187_473_7)]);
    Ok(())
}

#[test]
fn bad_settings_are_reported_and_lr_at_never_panics() -> TestResult {
    let cases = [
        (
            LrSchedule::new(0.1, ScheduleKind::Constant, 5).with_warmup(6),
            "schedule warm-up of 6 steps is longer than the 5 total steps",
        ),
        (
            LrSchedule::new(
                0.1,
                ScheduleKind::Step {
                    step_size: 0,
                    gamma: 0.5,
                },
                5,
            ),
            "step schedule has step_size 0, expected at least 1",
        ),
        (
            LrSchedule::new(0.1, ScheduleKind::Cosine { min_lr: 0.2 }, 5),
            "cosine schedule min_lr is 0.2, expected 0 <= min_lr <= base_lr 0.1",
        ),
        (
            LrSchedule::new(f64::NAN, ScheduleKind::Constant, 5),
            "schedule base_lr is NaN, expected a finite value >= 0",
        ),
    ];
    for (schedule, message) in cases {
        let err = schedule.validate().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(message));
        // Still a number (or the NaN it was given), never a panic.
        let _ = schedule.lr_at(3);
    }
    // Degenerate but valid: all steps are warm-up, then the final value.
    let all_warmup = LrSchedule::new(1.0, ScheduleKind::Poly { power: 1.0 }, 4).with_warmup(4);
    all_warmup.validate()?;
    assert_lrs(&all_warmup, &[(0, 0.25), (3, 1.0), (4, 0.0)]);
    Ok(())
}
