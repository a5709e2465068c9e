//! The assignments' READMEs list their tasks with points: the table under each
//! crate's `## Tasks` is the one `course.toml` gives (`handout::task_table`);
//! `cargo xtask check` compares them and `--write-readmes` rewrites them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::course::{Course, COURSE_FILE};
use crate::handout::task_table;

/// The first line of a task table.
const HEADER: &str = "| task | points | what to write |";

/// The lines `(first, last)` of the task table in `text`, 0-based.
fn table_span(text: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| l.trim() == HEADER)?;
    let last = (first..lines.len()).find(|&i| lines[i].starts_with("| total"))?;
    Some((first, last))
}

/// The README of each assignment crate with its table as `course.toml` says.
fn readmes(course: &Course) -> Vec<(u32, PathBuf)> {
    course
        .file
        .assignment
        .iter()
        .map(|a| (a.number, Path::new(&a.crate_name).join("README.md")))
        .collect()
}

/// `text` with its task table replaced by `table`; `None` when it has none.
fn with_table(text: &str, table: &str) -> Option<String> {
    let (first, last) = table_span(text)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<&str> = lines[..first].to_vec();
    out.extend(table.lines());
    out.extend(&lines[last + 1..]);
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    Some(joined)
}

/// Refuses a README whose task table is missing or differs from `course.toml`,
/// naming the file and line.
pub fn check_task_tables(course: &Course) -> Result<()> {
    let mut problems = Vec::new();
    for (number, rel) in readmes(course) {
        let text = std::fs::read_to_string(course.root.join(&rel))
            .with_context(|| format!("reading {rel:?}"))?;
        let table = task_table(course, number);
        match (table_span(&text), with_table(&text, &table)) {
            (Some((first, _)), Some(fixed)) if fixed != text => problems.push(format!(
                "{}:{}: the task table differs from {COURSE_FILE}'s assignment {number}; it should read:\n{table}",
                rel.display(),
                first + 1
            )),
            (Some(_), _) => {}
            (None, _) => problems.push(format!(
                "{}: no task table (a `## Tasks` section starting with `{HEADER}`)",
                rel.display()
            )),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}\n(cargo xtask check --write-readmes rewrites the tables)",
            problems.join("\n")
        );
    }
    Ok(())
}

/// Rewrites each README's task table from `course.toml`; returns those changed.
pub fn write_task_tables(course: &Course) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for (number, rel) in readmes(course) {
        let path = course.root.join(&rel);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {rel:?}"))?;
        let Some(fixed) = with_table(&text, &task_table(course, number)) else {
            bail!(
                "{}: no task table to rewrite (start one with `{HEADER}`)",
                rel.display()
            );
        };
        if fixed != text {
            std::fs::write(&path, fixed).with_context(|| format!("writing {rel:?}"))?;
            changed.push(rel);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# a\n\n## Tasks\n\nText.\n\n| task | points | what to write |\n|---|---:|---|\n| `a1.x` | 1 | X. |\n| total | 1 | |\n\n## Next\n";

    #[test]
    fn the_table_is_found_and_replaced_in_place() {
        assert_eq!(table_span(README), Some((6, 9)));
        let new = "| task | points | what to write |\n|---|---:|---|\n| total | 0 | |\n";
        let fixed = with_table(README, new).expect("a table");
        assert!(fixed.ends_with("Text.\n\n| task | points | what to write |\n|---|---:|---|\n| total | 0 | |\n\n## Next\n"), "{fixed}");
        assert_eq!(with_table("# none\n", new), None);
    }
}
