//! `cargo xtask verify --assignment N`: the checks a handout must pass. It is
//! written and built as a student gets it, clippy passes on it, every test of it
//! runs, and every test that fails is graded under one of assignment N's tasks
//! and fails with a `todo!` naming a task of N (so earlier assignments' tests
//! pass and no earlier assignment needs a later task's code).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::course::{Course, Scope};
use crate::grade::{self, Build};
use crate::handout;

/// One test binary's run: the tests that failed, each with its message.
fn failures(exe: &Path, dir: &Path, limit: u64) -> Result<Vec<(String, String)>> {
    let (status, output) = grade::run_binary(exe, &["--test-threads=2"], dir, limit)?;
    if status.is_none() {
        bail!("{exe:?} ran past {limit} s");
    }
    let failed = output
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(|name| (name.to_owned(), grade::failure_message(name, &output)))
        .collect();
    Ok(failed)
}

/// Writes the handout of `scope` under `work`, builds it, lints it, runs its tests.
pub fn verify(course: &Course, scope: Scope, work: &Path, limit: u64) -> Result<()> {
    let dir = work.join(format!("verify-{}", scope.label()));
    let files = handout::handout_files(course, scope)?;
    handout::scan_for_leaks(course, scope, &files)?;
    crate::tree::sync(&dir, &files)?;
    let target = work.to_owned();
    let clippy = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("running cargo clippy")?;
    if !clippy.success() {
        bail!("clippy fails on the handout in {dir:?}");
    }
    let build: Build = grade::build_tests(&dir, &target)?;
    if !build.succeeded {
        bail!("the handout's tests do not build: {:?}", build.errors);
    }
    let graded: BTreeSet<String> = course
        .tasks_in(scope)
        .iter()
        .flat_map(|t| t.tests.iter().map(|g| g.name.clone()))
        .collect();
    let tasks: Vec<String> = course
        .tasks_in(scope)
        .iter()
        .map(|t| t.id.clone())
        .collect();
    let mut problems = Vec::new();
    let mut failed_names = BTreeSet::new();
    for ((package, target), exe) in &build.binaries {
        for (name, message) in failures(exe, &dir.join(package), limit)? {
            let full = format!("{package}/{target}/{name}");
            let names_a_task = tasks
                .iter()
                .any(|t| message.contains(&format!("not yet implemented: {t}")));
            if !graded.contains(&full) {
                problems.push(format!(
                    "{full} fails but no task of assignment {} grades it: {}",
                    scope.label(),
                    first_line(&message)
                ));
            } else if !names_a_task {
                problems.push(format!(
                    "{full} fails without a todo! of assignment {}: {}",
                    scope.label(),
                    first_line(&message)
                ));
            }
            failed_names.insert(full);
        }
    }
    for name in graded.difference(&failed_names) {
        problems.push(format!(
            "{name} passes on the bare handout: it grades nothing"
        ));
    }
    if !problems.is_empty() {
        bail!(
            "the handout of assignment {}:\n  {}",
            scope.label(),
            problems.join("\n  ")
        );
    }
    println!("handout of assignment {}: builds, passes clippy, and only its graded tests fail ({} of them)", scope.label(), failed_names.len());
    Ok(())
}

fn first_line(message: &str) -> &str {
    message
        .lines()
        .find(|l| !l.trim().is_empty() && !l.contains("panicked at"))
        .unwrap_or(message)
}
