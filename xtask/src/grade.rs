//! `cargo xtask grade --submission DIR`: the reference workspace with only the
//! student's files copied in (those holding the assignment's task regions; never
//! tests, fixtures or `Cargo.lock`), built once, each graded test run by its exact
//! name under a time limit. Stable cargo only: `cargo build --tests --keep-going
//! --message-format=json` names the test binaries, and each binary runs
//! `--exact <test>` (libtest's JSON output is nightly-only).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::course::{Course, GradedTest, Scope};
use crate::handout::{self, HANDOUT_FILE};
use crate::tree;

/// How one graded test went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    TimedOut(u64),
    NotCompiled(String),
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub task: String,
    pub test: GradedTest,
    pub outcome: Outcome,
    pub seconds: f64,
}

impl TestResult {
    pub fn score(&self) -> f64 {
        if self.outcome == Outcome::Passed {
            self.test.points
        } else {
            0.0
        }
    }
}

/// A whole grading: per test, plus what the grader noticed about the submission.
#[derive(Debug, Clone)]
pub struct Grade {
    pub scope: Scope,
    pub results: Vec<TestResult>,
    /// Compile errors per package that did not build.
    pub compile_errors: BTreeMap<String, String>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Grade {
    pub fn score(&self) -> f64 {
        self.results.iter().map(TestResult::score).sum()
    }

    pub fn max_score(&self) -> f64 {
        self.results.iter().map(|r| r.test.points).sum()
    }

    /// `(task, points, max)` in course order.
    pub fn per_task(&self) -> Vec<(String, f64, f64)> {
        let mut out: Vec<(String, f64, f64)> = Vec::new();
        for r in &self.results {
            match out.last_mut() {
                Some(last) if last.0 == r.task => {
                    last.1 += r.score();
                    last.2 += r.test.points;
                }
                _ => out.push((r.task.clone(), r.score(), r.test.points)),
            }
        }
        out
    }
}

/// Where the grader builds: its tree and cargo's target folder. Every build in a
/// target folder (gradings, `verify`) goes through this one tree: cargo's hashes of
/// a workspace's own crates do not depend on where the workspace lies, so two
/// trees of the same layout would share artifacts, and a file of one written
/// before the other's last build would look built (freshness goes by mtime).
/// `tree::sync` rewrites only what differs, so a file that changed is newer than
/// any build.
#[derive(Debug, Clone)]
pub struct Workdir {
    pub target_dir: PathBuf,
    pub tree: PathBuf,
}

impl Workdir {
    pub fn new(target_dir: &Path) -> Self {
        Workdir {
            target_dir: target_dir.to_owned(),
            tree: target_dir.join("grading-tree"),
        }
    }
}

/// The assignment a submission is for: `--assignment`, else its `handout.toml`.
pub fn scope_of(submission: &Path, given: Option<Scope>) -> Result<Scope> {
    if let Some(scope) = given {
        return Ok(scope);
    }
    let note = submission.join(HANDOUT_FILE);
    let text = std::fs::read_to_string(&note).with_context(|| {
        format!("{note:?} is missing: say which assignment with --assignment N")
    })?;
    let value: toml::Table = toml::from_str(&text).with_context(|| format!("reading {note:?}"))?;
    let label = value
        .get("assignment")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{note:?} names no assignment"))?;
    Scope::parse(label)
}

/// Grades one submission folder.
pub fn grade(
    course: &Course,
    submission: &Path,
    scope: Scope,
    work: &Workdir,
    time_limit: u64,
) -> Result<Grade> {
    let start = Instant::now();
    let (files, notes) = grading_files(course, submission, scope)?;
    tree::sync(&work.tree, &files)?;
    let build = build_tests(&work.tree, &work.target_dir)?;
    let listed = list_tests(&build, &work.tree, time_limit)?;
    check_test_names(course, scope, &build, &listed, true)?;
    let mut results = Vec::new();
    for task in course.tasks_in(scope) {
        for test in &task.tests {
            let (outcome, seconds) = run_one(course, &work.tree, &build, test, time_limit)?;
            results.push(TestResult {
                task: task.id.clone(),
                test: test.clone(),
                outcome,
                seconds,
            });
        }
    }
    Ok(Grade {
        scope,
        results,
        compile_errors: build.errors,
        notes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The reference for `scope` with the student's own files from `submission`.
fn grading_files(
    course: &Course,
    submission: &Path,
    scope: Scope,
) -> Result<(tree::Files, Vec<String>)> {
    let mut files = handout::reference_files(course, scope, false)?;
    let mut notes = Vec::new();
    let from_handout = submission.join(HANDOUT_FILE).is_file();
    let handout = handout::handout_files(course, scope)?;
    for rel in course.student_files(scope) {
        match std::fs::read(submission.join(&rel)) {
            Ok(bytes) => {
                files.insert(rel, bytes);
            }
            Err(_) => {
                notes.push(format!(
                    "{} is missing from the submission: the handout's version was graded",
                    rel.display()
                ));
                if let Some(bytes) = handout.get(&rel) {
                    files.insert(rel, bytes.clone());
                }
            }
        }
    }
    if from_handout {
        for (rel, bytes) in &handout {
            let is_test = rel.components().any(|c| c.as_os_str() == "tests");
            let changed = std::fs::read(submission.join(rel)).is_ok_and(|b| &b != bytes);
            if is_test && changed {
                notes.push(format!(
                    "{} was changed: ignored, the reference tests were run",
                    rel.display()
                ));
            }
        }
    }
    Ok((files, notes))
}

/// The test binaries of a build and the packages that did not compile.
#[derive(Debug, Default)]
pub struct Build {
    /// `(package, target)` -> executable; the lib's unit tests under target `lib`.
    pub binaries: BTreeMap<(String, String), PathBuf>,
    pub errors: BTreeMap<String, String>,
    pub succeeded: bool,
}

/// `cargo build --workspace --tests --keep-going --message-format=json` in `tree`:
/// the test binaries `cargo test --no-run` would build, but `--keep-going` goes on
/// building the other crates when one fails (`cargo test --no-fail-fast` does not:
/// it stops scheduling builds at the first error, so whether a crate beside a broken
/// one was graded depended on timing).
pub fn build_tests(tree: &Path, target_dir: &Path) -> Result<Build> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--workspace",
            "--tests",
            "--keep-going",
            "--message-format=json",
        ])
        .current_dir(tree)
        .env("CARGO_TARGET_DIR", target_dir)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo in {tree:?}"))?;
    let mut build = Build {
        succeeded: output.status.success(),
        ..Build::default()
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let package = package_name(message["package_id"].as_str().unwrap_or_default());
        match message["reason"].as_str() {
            Some("compiler-artifact") => {
                let Some(exe) = message["executable"].as_str() else {
                    continue;
                };
                if message["profile"]["test"] != serde_json::Value::Bool(true) {
                    continue;
                }
                let kinds = message["target"]["kind"].to_string();
                let target = if kinds.contains("\"lib\"") {
                    "lib".to_owned()
                } else {
                    message["target"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                };
                build.binaries.insert((package, target), exe.into());
            }
            Some("compiler-message") if message["message"]["level"] == "error" => {
                let rendered = message["message"]["rendered"].as_str().unwrap_or_default();
                build.errors.entry(package).or_default().push_str(rendered);
            }
            _ => {}
        }
    }
    Ok(build)
}

/// The tests of each test binary, as its `--list` names them.
pub type Listed = BTreeMap<(String, String), BTreeSet<String>>;

/// Runs every test binary of `build` with `--list`.
pub fn list_tests(build: &Build, tree: &Path, limit: u64) -> Result<Listed> {
    let mut listed = Listed::new();
    for ((package, target), exe) in &build.binaries {
        let (status, output) = run_binary(exe, &["--list"], &tree.join(package), limit)?;
        if status != Some(true) {
            bail!("{exe:?} --list failed:\n{output}");
        }
        let names = output
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_owned)
            .collect();
        listed.insert((package.clone(), target.clone()), names);
    }
    Ok(listed)
}

/// Refuses a graded test of `scope` that its binary does not list, or whose
/// target the build does not have (when its package built), naming the line
/// of `course.toml`. A handout has no hidden tests: `with_hidden` false skips them.
pub fn check_test_names(
    course: &Course,
    scope: Scope,
    build: &Build,
    listed: &Listed,
    with_hidden: bool,
) -> Result<()> {
    for task in course.tasks_in(scope) {
        for test in task.tests.iter().filter(|t| with_hidden || !t.hidden) {
            let (package, target, name) = test.parts();
            let at = course.line_of(&format!("\"{}\"", test.name));
            match listed.get(&(package.to_owned(), target.to_owned())) {
                Some(names) if names.contains(name) => {}
                Some(_) => bail!(
                    "{at}: test {} does not exist (not in the `--list` of {package}'s test target {target})",
                    test.name
                ),
                None if build.errors.contains_key(package) || !build.succeeded => {}
                None => bail!(
                    "{at}: test {}: the build has no test target {target} in {package}",
                    test.name
                ),
            }
        }
    }
    Ok(())
}

/// Builds the reference's tests in its own root (into `target_dir`), lists them,
/// and refuses a graded test that does not exist; returns how many were checked.
pub fn check_reference_test_names(course: &Course, target_dir: &Path) -> Result<usize> {
    let build = build_tests(&course.root, target_dir)?;
    if !build.succeeded {
        let packages: Vec<&String> = build.errors.keys().collect();
        bail!("the reference's tests do not build (in {packages:?})");
    }
    let listed = list_tests(&build, &course.root, 60)?;
    check_test_names(course, Scope::All, &build, &listed, true)?;
    Ok(course.file.task.iter().map(|t| t.tests.len()).sum())
}

/// The package name in a cargo package id (`path+file:///x/common#0.1.0`,
/// `path+file:///x/dir#name@0.1.0`, or the older `name 0.1.0 (path+...)`).
pub fn package_name(id: &str) -> String {
    if let Some((name, _)) = id.split_once(' ') {
        return name.to_owned();
    }
    let (url, fragment) = id.rsplit_once('#').unwrap_or((id, ""));
    match fragment.split_once('@') {
        Some((name, _)) => name.to_owned(),
        None => url.rsplit('/').next().unwrap_or_default().to_owned(),
    }
}

fn run_one(
    course: &Course,
    tree: &Path,
    build: &Build,
    test: &GradedTest,
    time_limit: u64,
) -> Result<(Outcome, f64)> {
    let (package, target, name) = test.parts();
    let Some(exe) = build.binaries.get(&(package.to_owned(), target.to_owned())) else {
        if build.succeeded {
            bail!(
                "{}: test {}: the build has no test target {target} in {package}",
                course.line_of(&test.name),
                test.name
            );
        }
        let why = match build.errors.get(package) {
            Some(_) => format!("{package} did not compile (see the compile errors)"),
            None => format!("{package} was not built: a crate it needs did not compile"),
        };
        return Ok((Outcome::NotCompiled(why), 0.0));
    };
    let start = Instant::now();
    let (status, output) = run_with_limit(exe, name, &tree.join(package), time_limit)?;
    let seconds = start.elapsed().as_secs_f64();
    let outcome = match status {
        None => Outcome::TimedOut(time_limit),
        Some(_) if output.contains("running 0 tests") => {
            bail!(
                "{}: test {} does not exist (not in `{} --list`)",
                course.line_of(&test.name),
                test.name,
                exe.display()
            )
        }
        Some(true) => Outcome::Passed,
        Some(false) => Outcome::Failed(failure_message(name, &output)),
    };
    Ok((outcome, seconds))
}

/// Runs one test by its exact name under the time limit.
fn run_with_limit(
    exe: &Path,
    name: &str,
    dir: &Path,
    limit: u64,
) -> Result<(Option<bool>, String)> {
    run_binary(exe, &["--exact", name, "--test-threads=1"], dir, limit)
}

/// Runs a test binary in `dir`; `None` for the status when it ran past `limit`
/// seconds (the whole process group is killed: tests that start programs leave
/// nothing behind). Returns stdout then stderr.
pub fn run_binary(
    exe: &Path,
    args: &[&str],
    dir: &Path,
    limit: u64,
) -> Result<(Option<bool>, String)> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .env("CARGO_MANIFEST_DIR", dir)
        // Real-data tests skip (they pass) where the course's shared data is missing, so
        // none is graded, and a grade must not depend on the machine: hide the shared
        // folders from every test (the variables of common::data and common::weights).
        .env("SEGKIT_SHARED_DATA", dir.join(".no-shared-data"))
        .env("SEGKIT_SHARED_WEIGHTS", dir.join(".no-shared-weights"))
        // The panic message is what a student needs; a backtrace would bury it.
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {exe:?}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(limit);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status.success());
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the child's own process group; no memory is touched.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = reader.join().unwrap_or_default();
    output.push_str(&err_reader.join().unwrap_or_default());
    Ok((status, output))
}

/// What a failed test printed: its captured output (the panic or the `Err`).
pub fn failure_message(name: &str, output: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let body = match output.find(&header) {
        Some(start) => {
            let rest = &output[start + header.len()..];
            let end = rest.find("\n\nfailures:").unwrap_or(rest.len());
            rest[..end].trim().to_owned()
        }
        None => output.trim().to_owned(),
    };
    let body: String = body
        .lines()
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join("\n");
    if body.len() > 2000 {
        let cut = (0..=2000)
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}...", &body[..cut])
    } else {
        body
    }
}

/// The sub-folders of `dir` that are submissions (hold a `Cargo.toml` or a handout note).
pub fn submissions_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {dir:?}"))? {
        let path = entry?.path();
        if path.is_dir() && (path.join("Cargo.toml").is_file() || path.join(HANDOUT_FILE).is_file())
        {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
