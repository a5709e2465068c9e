//! Learning-rate schedules: constant, step decay, polynomial ("poly", as in
//! DeepLab, Chen et al. 2017) and cosine annealing (Loshchilov & Hutter 2017),
//! each with an optional linear warm-up (Goyal et al. 2017).
//!
//! Steps are counted from 0. The warm-up steps are part of `total_steps`: with
//! `warmup_steps = W` and `total_steps = T`, steps `0..W` warm up linearly,
//! `lr = base_lr * (step + 1) / W` (so the first step is small but not zero and
//! step `W - 1` reaches `base_lr`), and the decay then runs over the remaining
//! `T - W` steps with `t = step - W`. Past `total_steps` the schedule stays at
//! its final value.

use std::f64::consts::PI;

/// The shape of the decay after warm-up (`t` = steps since warm-up ended,
/// `D` = `total_steps - warmup_steps`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleKind {
    /// `base_lr` throughout.
    Constant,
    /// `base_lr * gamma^(t / step_size)` (integer division).
    Step {
        /// Steps between two decays (at least 1).
        step_size: usize,
        /// Factor applied at each decay.
        gamma: f64,
    },
    /// `base_lr * (1 - t / D)^power`, 0 from step `total_steps` on.
    Poly {
        /// The exponent (0.9 in DeepLab).
        power: f64,
    },
    /// `min_lr + (base_lr - min_lr) * (1 + cos(pi * t / D)) / 2`.
    Cosine {
        /// The value reached at `total_steps`.
        min_lr: f64,
    },
}

/// A learning rate for every optimisation step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The learning rate reached at the end of warm-up.
    pub base_lr: f64,
    /// The decay after warm-up.
    pub kind: ScheduleKind,
    /// Steps of linear warm-up (0: none), counted inside `total_steps`.
    pub warmup_steps: usize,
    /// All steps of the run, warm-up included.
    pub total_steps: usize,
}

impl LrSchedule {
    /// A schedule without warm-up.
    pub fn new(base_lr: f64, kind: ScheduleKind, total_steps: usize) -> Self {
        Self {
            base_lr,
            kind,
            warmup_steps: 0,
            total_steps,
        }
    }

    /// The same schedule with `warmup_steps` steps of linear warm-up.
    pub fn with_warmup(self, warmup_steps: usize) -> Self {
        Self {
            warmup_steps,
            ..self
        }
    }

    /// Checks the settings; [`LrSchedule::lr_at`] never panics, but with bad
    /// settings its values are meaningless.
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr >= 0.0) {
            anyhow::bail!(
                "schedule base_lr is {}, expected a finite value >= 0",
                self.base_lr
            );
        }
        if self.warmup_steps > self.total_steps {
            anyhow::bail!(
                "schedule warm-up of {} steps is longer than the {} total steps",
                self.warmup_steps,
                self.total_steps
            );
        }
        match self.kind {
            ScheduleKind::Constant => {}
            ScheduleKind::Step { step_size, gamma } => {
                if step_size == 0 {
                    anyhow::bail!("step schedule has step_size 0, expected at least 1");
                }
                if !(gamma.is_finite() && gamma >= 0.0) {
                    anyhow::bail!("step schedule gamma is {gamma}, expected a finite value >= 0");
                }
            }
            ScheduleKind::Poly { power } => {
                if !(power.is_finite() && power >= 0.0) {
                    anyhow::bail!("poly schedule power is {power}, expected a finite value >= 0");
                }
            }
            ScheduleKind::Cosine { min_lr } => {
                if !(min_lr.is_finite() && (0.0..=self.base_lr).contains(&min_lr)) {
                    anyhow::bail!(
                        "cosine schedule min_lr is {min_lr}, expected 0 <= min_lr <= base_lr {}",
                        self.base_lr
                    );
                }
            }
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let t = step - self.warmup_steps;
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps);
        // Fraction of the decay done, 1 once past the end (or with no decay steps).
        let done = if decay_steps == 0 {
            1.0
        } else {
            t.min(decay_steps) as f64 / decay_steps as f64
        };
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Step { step_size, gamma } => {
                let n_decays = t / step_size.max(1);
                self.base_lr * gamma.powi(n_decays.min(i32::MAX as usize) as i32)
            }
            ScheduleKind::Poly { power } => self.base_lr * (1.0 - done).powf(power),
            ScheduleKind::Cosine { min_lr } => {
                min_lr + (self.base_lr - min_lr) * (1.0 + (PI * done).cos()) / 2.0
            }
        }
    }
}
