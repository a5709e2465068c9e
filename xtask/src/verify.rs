//! `cargo xtask verify --assignment N`: the checks a handout must pass. It is
//! written and built as a student gets it, clippy and `cargo fmt --check` pass on
//! it, every test of it runs, and every test that fails is graded under one of
//! assignment N's tasks and fails with the `todo!` of that task (or of one an
//! end-to-end task needs), so earlier assignments' tests pass and no earlier
//! assignment needs a later task's code.

use std::collections::{BTreeMap, BTreeSet};
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

/// Writes the handout of `scope` under `work`, lints it, checks its format,
/// builds it, checks its graded test names, runs its tests.
pub fn verify(course: &Course, scope: Scope, work: &Path, limit: u64) -> Result<()> {
    // The grader's own tree (see `grade::Workdir`): one tree per target folder.
    let dir = grade::Workdir::new(work).tree;
    let files = handout::handout_files(course, scope)?;
    handout::scan_for_leaks(course, scope, &files)?;
    crate::tree::sync(&dir, &files)?;
    check_clippy(&dir, work)?;
    check_format(&dir)?;
    let build: Build = grade::build_tests(&dir, work)?;
    if !build.succeeded {
        bail!("the handout's tests do not build: {:?}", build.errors);
    }
    let listed = grade::list_tests(&build, &dir, limit)?;
    grade::check_test_names(course, scope, &build, &listed, false)?;
    let failed = check_failures(course, scope, &build, &dir, limit)?;
    println!(
        "handout of assignment {}: builds, passes clippy and cargo fmt --check, and only its graded tests fail ({failed} of them)",
        scope.label()
    );
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo clippy --workspace --all-targets -- -D warnings` on the handout.
fn check_clippy(dir: &Path, target: &Path) -> Result<()> {
    let clippy = cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .context("running cargo clippy")?;
    if !clippy.success() {
        bail!("clippy fails on the handout in {dir:?}");
    }
    Ok(())
}

/// Runs every test binary of the handout; every failure must be a graded test
/// failing on its own task's `todo!` (or one its task needs), and every graded
/// test must fail. Returns how many failed.
fn check_failures(
    course: &Course,
    scope: Scope,
    build: &Build,
    dir: &Path,
    limit: u64,
) -> Result<usize> {
    let graded = graded_tests(course, scope);
    let mut problems = Vec::new();
    let mut failed_names = BTreeSet::new();
    for ((package, target), exe) in &build.binaries {
        for (name, message) in failures(exe, &dir.join(package), limit)? {
            let full = format!("{package}/{target}/{name}");
            problems.extend(failure_problem(&graded, scope, &full, &message));
            failed_names.insert(full);
        }
    }
    for name in graded.keys().filter(|n| !failed_names.contains(*n)) {
        problems.push(format!(
            "{name} passes on the bare handout: it grades nothing ({})",
            course.line_of(&format!("\"{name}\""))
        ));
    }
    if !problems.is_empty() {
        bail!(
            "the handout of assignment {}:\n  {}",
            scope.label(),
            problems.join("\n  ")
        );
    }
    Ok(failed_names.len())
}

/// Graded test name -> the tasks whose `todo!` it may fail on (its task and its
/// needs); hidden tests are not in a handout.
fn graded_tests(course: &Course, scope: Scope) -> BTreeMap<String, Vec<String>> {
    course
        .tasks_in(scope)
        .iter()
        .flat_map(|t| {
            let covers: Vec<String> = t.covers().map(str::to_owned).collect();
            t.tests
                .iter()
                .filter(|g| !g.hidden)
                .map(move |g| (g.name.clone(), covers.clone()))
        })
        .collect()
}

/// What is wrong with test `full` failing with `message`, if anything.
fn failure_problem(
    graded: &BTreeMap<String, Vec<String>>,
    scope: Scope,
    full: &str,
    message: &str,
) -> Option<String> {
    match graded.get(full) {
        None => Some(format!(
            "{full} fails but no task of assignment {} grades it: {}",
            scope.label(),
            first_line(message)
        )),
        Some(covers) if !covers.iter().any(|t| names_todo(message, t)) => Some(format!(
            "{full} fails without a todo! of {}: {}",
            covers.join(" or "),
            first_line(message)
        )),
        Some(_) => None,
    }
}

/// `cargo fmt --all -- --check` on the handout: a student's `cargo fmt` must not
/// rewrite the code as handed out (the `todo!`s are written as rustfmt would).
fn check_format(dir: &Path) -> Result<()> {
    let output = cargo()
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(dir)
        .output()
        .context("running cargo fmt")?;
    if !output.status.success() {
        bail!(
            "cargo fmt --check fails on the handout in {dir:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn first_line(message: &str) -> &str {
    message
        .lines()
        .find(|l| !l.trim().is_empty() && !l.contains("panicked at"))
        .unwrap_or(message)
}

/// Whether a test's failure is the `todo!` of `task` (`not yet implemented: <task>`,
/// then the hint after a colon, or nothing).
pub fn names_todo(message: &str, task: &str) -> bool {
    let needle = format!("not yet implemented: {task}");
    message.match_indices(&needle).any(|(i, _)| {
        let rest = &message[i + needle.len()..];
        rest.is_empty() || rest.starts_with(':') || rest.starts_with(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_todo_names_its_task_exactly() {
        let message = "panicked at src/lib.rs:3:5:\nnot yet implemented: a2.decoders: the nets";
        assert!(names_todo(message, "a2.decoders"));
        assert!(!names_todo(message, "a2.decoder"));
        assert!(names_todo("not yet implemented: a1.add\n", "a1.add"));
        assert!(!names_todo("assertion failed: 2 + 3", "a1.add"));
    }
}
