//! `cargo xtask handout --assignment N|all --out DIR [--autograder FILE]` and
//! `cargo xtask grade --submission DIR [--assignment N|all] [--out DIR]`;
//! `cargo xtask verify --assignment N` (the handout checks); `cargo xtask check`
//! checks `course.toml`, the markers and the READMEs' task tables (`--tests`: and
//! that every graded test exists).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xtask::course::{Course, Scope, COURSE_FILE};
use xtask::grade::{self, Workdir};
use xtask::{handout, report, tree};

const USAGE: &str = "usage:
  cargo xtask handout --assignment N|all --out DIR [--autograder FILE]
  cargo xtask grade --submission DIR [--assignment N|all] [--out DIR] [--target-dir DIR] [--time-limit SECONDS] [--expect full|0]
      (DIR may also be a folder of submissions, one sub-folder each: one CSV for all)
  cargo xtask verify --assignment N|all [--target-dir DIR] [--time-limit SECONDS]
      (the handout builds, passes clippy, and only its graded tests fail, each on a todo!)
  cargo xtask check [--tests] [--target-dir DIR] [--write-readmes]
      (course.toml, the markers and the README task tables; --tests: every graded test
      is in its binary's --list; --write-readmes: rewrite the tables from course.toml)";

/// `--flag value` pairs after the command.
struct Flags(Vec<(String, String)>);

impl Flags {
    /// Parses `--name value` pairs; the names in `switches` take no value.
    fn parse(args: &[String], switches: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("unexpected argument {flag:?}\n{USAGE}")
            };
            if switches.contains(&name) {
                pairs.push((name.to_owned(), "true".to_owned()));
                continue;
            }
            let value = it
                .next()
                .with_context(|| format!("--{name} needs a value\n{USAGE}"))?;
            pairs.push((name.to_owned(), value.clone()));
        }
        Ok(Flags(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> Result<&str> {
        self.get(name)
            .with_context(|| format!("--{name} is required\n{USAGE}"))
    }

    fn only(&self, known: &[&str]) -> Result<()> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => bail!("unknown flag --{n}\n{USAGE}"),
            None => Ok(()),
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = tree::workspace_root()?;
    match args.first().map(String::as_str) {
        Some("handout") => handout_command(&root, &Flags::parse(&args[1..], &[])?),
        Some("grade") => grade_command(&root, &Flags::parse(&args[1..], &[])?),
        Some("verify") => verify_command(&root, &Flags::parse(&args[1..], &[])?),
        Some("check") => check_command(
            &root,
            &Flags::parse(&args[1..], &["tests", "write-readmes"])?,
        ),
        _ => bail!("{USAGE}"),
    }
}

/// `check`: course.toml and the markers; with `--tests`, also that every graded
/// test is in its binary's `--list` (the reference's tests are built for that).
fn check_command(root: &Path, flags: &Flags) -> Result<()> {
    flags.only(&["tests", "target-dir", "write-readmes"])?;
    let course = Course::load(root)?;
    if flags.get("write-readmes").is_some() {
        for rel in xtask::readme::write_task_tables(&course)? {
            println!("rewrote the task table of {}", rel.display());
        }
    }
    let regions: usize = course.regions.values().map(Vec::len).sum();
    println!(
        "{}: {} tasks, {regions} regions in {} files: ok",
        course.file.course.name,
        course.file.task.len(),
        course.regions.len()
    );
    xtask::readme::check_task_tables(&course)?;
    println!("the assignments' README task tables agree with {COURSE_FILE}");
    if flags.get("tests").is_some() {
        let target_dir = flags
            .get("target-dir")
            .map_or_else(|| root.join("target"), PathBuf::from);
        let tests = grade::check_reference_test_names(&course, &std::path::absolute(target_dir)?)?;
        println!("all {tests} graded tests are in their test binaries' --list");
    }
    Ok(())
}

fn handout_command(root: &Path, flags: &Flags) -> Result<()> {
    flags.only(&["assignment", "out", "autograder"])?;
    let course = Course::load(root)?;
    let scope = Scope::parse(flags.need("assignment")?)?;
    if let Scope::One(n) = scope {
        course.assignment(n)?;
    }
    let out = PathBuf::from(flags.need("out")?);
    let autograder = match flags.get("autograder") {
        Some(path) => PathBuf::from(path),
        None => {
            let name = out
                .file_name()
                .context("--out needs a folder name")?
                .to_string_lossy();
            out.with_file_name(format!("{name}-autograder.zip"))
        }
    };
    handout::write_handout(&course, scope, &out, &autograder)?;
    println!(
        "handout of assignment {} in {}",
        scope.label(),
        out.display()
    );
    println!("autograder for Gradescope in {}", autograder.display());
    Ok(())
}

/// `--expect full|0`: for CI, fail unless the grade is full points or zero.
fn check_expected(expect: Option<&str>, grade: &grade::Grade) -> Result<()> {
    let (score, max) = (grade.score(), grade.max_score());
    match expect {
        None => Ok(()),
        Some("full") if score == max => Ok(()),
        Some("0") if score == 0.0 => Ok(()),
        Some(e @ ("full" | "0")) => bail!("expected {e} points, got {score} of {max}"),
        Some(other) => bail!("--expect takes full or 0, got {other:?}"),
    }
}

fn verify_command(root: &Path, flags: &Flags) -> Result<()> {
    flags.only(&["assignment", "target-dir", "time-limit"])?;
    let course = Course::load(root)?;
    let scope = Scope::parse(flags.need("assignment")?)?;
    let target_dir = flags
        .get("target-dir")
        .map_or_else(|| root.join("target/handout"), PathBuf::from);
    let limit = match flags.get("time-limit") {
        Some(s) => s
            .parse()
            .with_context(|| format!("--time-limit takes seconds, got {s:?}"))?,
        None => 1800,
    };
    xtask::verify::verify(&course, scope, &std::path::absolute(target_dir)?, limit)
}

fn grade_command(root: &Path, flags: &Flags) -> Result<()> {
    flags.only(&[
        "submission",
        "assignment",
        "out",
        "target-dir",
        "time-limit",
        "expect",
    ])?;
    let course = Course::load(root)?;
    let submission = PathBuf::from(flags.need("submission")?);
    let given = flags.get("assignment").map(Scope::parse).transpose()?;
    let target_dir = flags
        .get("target-dir")
        .map_or_else(|| root.join("target/handout"), PathBuf::from);
    let work = Workdir::new(&std::path::absolute(target_dir)?);
    let time_limit = match flags.get("time-limit") {
        Some(s) => s
            .parse()
            .with_context(|| format!("--time-limit takes seconds, got {s:?}"))?,
        None => course.file.course.time_limit_s,
    };
    let is_one =
        submission.join("Cargo.toml").is_file() || submission.join(handout::HANDOUT_FILE).is_file();
    if is_one {
        let out = flags
            .get("out")
            .map_or_else(|| submission.join("grade"), PathBuf::from);
        let scope = grade::scope_of(&submission, given)?;
        let grade = grade::grade(&course, &submission, scope, &work, time_limit)?;
        report::write(&grade, &out)?;
        print!("{}", report::table(&grade));
        println!(
            "results.json and grade.md in {} ({:.0} s)",
            out.display(),
            grade.seconds
        );
        return check_expected(flags.get("expect"), &grade);
    }
    let students = grade::submissions_in(&submission)?;
    if students.is_empty() {
        bail!("{submission:?} is neither a submission (no Cargo.toml) nor a folder of submissions");
    }
    let out = flags
        .get("out")
        .map_or_else(|| submission.join("grades"), PathBuf::from);
    let mut grades = Vec::new();
    for dir in students {
        let student = dir
            .file_name()
            .context("a submission folder name")?
            .to_string_lossy()
            .into_owned();
        let scope = grade::scope_of(&dir, given)?;
        let grade = grade::grade(&course, &dir, scope, &work, time_limit)?;
        report::write(&grade, &out.join(&student))?;
        println!("{student}: {} of {}", grade.score(), grade.max_score());
        grades.push((student, grade));
    }
    std::fs::write(out.join("grades.csv"), report::csv(&grades))?;
    println!(
        "grades.csv, and results.json and grade.md per student, in {}",
        out.display()
    );
    Ok(())
}
