//! What a grading writes: `results.json` in Gradescope's autograder format, a
//! `grade.md` for the student, a table on stdout, and for a folder of
//! submissions one CSV (student, points per task, total).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::grade::{Grade, Outcome, TestResult};

/// What a student may read about one test: hidden tests say only "hidden".
fn visible_output(r: &TestResult) -> String {
    match (&r.outcome, r.test.hidden) {
        (Outcome::Passed, _) => "passed".to_owned(),
        (_, true) => "hidden".to_owned(),
        (Outcome::Failed(message), false) => message.clone(),
        (Outcome::TimedOut(limit), false) => {
            format!("stopped after {limit} s (the time limit): does it loop forever?")
        }
        (Outcome::NotCompiled(why), false) => why.clone(),
    }
}

/// One word for the table.
fn status(r: &TestResult) -> &'static str {
    match r.outcome {
        Outcome::Passed => "passed",
        Outcome::Failed(_) => "failed",
        Outcome::TimedOut(_) => "timed out",
        Outcome::NotCompiled(_) => "no build",
    }
}

/// Gradescope's `results.json`.
pub fn results_json(grade: &Grade) -> serde_json::Value {
    let tests: Vec<serde_json::Value> = grade
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "name": format!("{}: {}", r.task, if r.test.hidden { "hidden test" } else { &r.test.name }),
                "number": format!("{}", i + 1),
                "score": r.score(),
                "max_score": r.test.points,
                "output": visible_output(r),
                "visibility": if r.test.hidden { "after_published" } else { "visible" },
            })
        })
        .collect();
    json!({
        "score": grade.score(),
        "execution_time": grade.seconds.round() as u64,
        "output": summary_line(grade),
        "stdout_visibility": "hidden",
        "tests": tests,
    })
}

fn summary_line(grade: &Grade) -> String {
    format!(
        "assignment {}: {} of {} points",
        grade.scope.label(),
        grade.score(),
        grade.max_score()
    )
}

/// The fixed-width table printed after a grading.
pub fn table(grade: &Grade) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<28} {:>7} {:>5}  tests", "task", "points", "of");
    for (task, points, max) in grade.per_task() {
        let tests: Vec<String> = grade
            .results
            .iter()
            .filter(|r| r.task == task)
            .map(|r| status(r).to_owned())
            .collect();
        let _ = writeln!(out, "{task:<28} {points:>7} {max:>5}  {}", tests.join(", "));
    }
    let _ = writeln!(
        out,
        "{:<28} {:>7} {:>5}",
        "total",
        grade.score(),
        grade.max_score()
    );
    out
}

/// `grade.md`: points per task, what failed and why, compile errors, notes.
pub fn grade_md(grade: &Grade) -> String {
    let mut md = format!("# Grade: {}\n\n", summary_line(grade));
    md.push_str("| task | points | of |\n|---|---:|---:|\n");
    for (task, points, max) in grade.per_task() {
        let _ = writeln!(md, "| `{task}` | {points} | {max} |");
    }
    let _ = writeln!(
        md,
        "| total | {} | {} |\n",
        grade.score(),
        grade.max_score()
    );
    let failed: Vec<&TestResult> = grade
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Passed)
        .collect();
    if !failed.is_empty() {
        md.push_str("## What failed\n\n");
        for r in failed {
            let name = if r.test.hidden {
                "hidden test"
            } else {
                &r.test.name
            };
            let _ = writeln!(
                md,
                "### `{}`: {name} ({} points)\n\n```\n{}\n```\n",
                r.task,
                r.test.points,
                visible_output(r)
            );
        }
    }
    if !grade.compile_errors.is_empty() {
        md.push_str("## Compile errors (the tasks of these crates score 0)\n\n");
        for (package, errors) in &grade.compile_errors {
            let _ = writeln!(md, "### {package}\n\n```\n{}\n```\n", errors.trim());
        }
    }
    if !grade.notes.is_empty() {
        md.push_str("## Notes\n\n");
        for note in &grade.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    md
}

/// Writes `results.json` and `grade.md` into `out`.
pub fn write(grade: &Grade, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {out:?}"))?;
    let json = serde_json::to_string_pretty(&results_json(grade))?;
    std::fs::write(out.join("results.json"), json)?;
    std::fs::write(out.join("grade.md"), grade_md(grade))?;
    Ok(())
}

/// One CSV line per student: `student,<task>...,total`.
pub fn csv(grades: &[(String, Grade)]) -> String {
    let Some((_, first)) = grades.first() else {
        return "student,total\n".to_owned();
    };
    let tasks: Vec<String> = first.per_task().into_iter().map(|(t, _, _)| t).collect();
    let mut out = format!("student,{},total\n", tasks.join(","));
    for (student, grade) in grades {
        let points: Vec<String> = grade
            .per_task()
            .into_iter()
            .map(|(_, p, _)| p.to_string())
            .collect();
        let _ = writeln!(
            out,
            "{},{},{}",
            csv_field(student),
            points.join(","),
            grade.score()
        );
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
