//! `cargo xtask handout --assignment N|all --out DIR`: the student workspace of an
//! assignment, with the regions of its tasks (and of later ones) stubbed, the
//! crates of later assignments, hidden tests, later tasks' tests and the course
//! tool left out, and the README's instructor section replaced by the assignment.
//! After writing, the tree is scanned: no marker, no line of a stubbed solution,
//! no hidden test name may be in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::course::{Course, Scope, COURSE_FILE};
use crate::markers;
use crate::strip;
use crate::tree::{self, Files};

/// The file a handout carries to say which assignment it is (the grader reads it).
pub const HANDOUT_FILE: &str = "handout.toml";
/// The README section a handout replaces by the assignment's statement.
pub const INSTRUCTORS_HEADING: &str = "## For instructors";

/// Whether the reference file `rel` is left out of a workspace for `scope`
/// (`for_students`: a handout; otherwise the grader's tree).
fn left_out(course: &Course, scope: Scope, rel: &Path, for_students: bool) -> bool {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_crate_dir =
        rel.components().count() > 1 && course.root.join(&first).join("Cargo.toml").is_file();
    if is_crate_dir && !course.crate_in_scope(&first, scope) {
        return true;
    }
    let tooling =
        first == "xtask" || first == ".cargo" || first == ".ci" || rel == Path::new(COURSE_FILE);
    // The grader's tree leaves out the same tooling; a handout also drops its own note.
    tooling || (!for_students && rel == Path::new(HANDOUT_FILE))
}

/// The tests a handout for `scope` leaves out, per test file: hidden ones and
/// those graded under later assignments' tasks.
fn tests_left_out(course: &Course, scope: Scope) -> BTreeMap<PathBuf, Vec<String>> {
    let mut out: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for task in &course.file.task {
        let later = matches!(scope, Scope::One(n) if task.assignment > n);
        for test in &task.tests {
            if test.hidden || later {
                let (package, target, name) = test.parts();
                let file = PathBuf::from(package)
                    .join("tests")
                    .join(format!("{target}.rs"));
                out.entry(file).or_default().push(name.to_owned());
            }
        }
    }
    out
}

/// The reference files for `scope` as they are, with the root manifest's members
/// cut to the crates in scope (the grader's starting point).
pub fn reference_files(course: &Course, scope: Scope, for_students: bool) -> Result<Files> {
    let listed = tree::source_files(&course.root)?;
    let kept: Vec<PathBuf> = listed
        .into_iter()
        .filter(|rel| !left_out(course, scope, rel, for_students))
        .collect();
    let mut files = tree::read_files(&course.root, &kept)?;
    let manifest = files
        .get(Path::new("Cargo.toml"))
        .context("the workspace has no Cargo.toml")?;
    let manifest = members_in_scope(course, scope, &String::from_utf8_lossy(manifest));
    files.insert("Cargo.toml".into(), manifest.into_bytes());
    Ok(files)
}

/// The root manifest with the members out of scope (and `xtask`) taken out.
fn members_in_scope(course: &Course, scope: Scope, manifest: &str) -> String {
    let mut out = String::new();
    let mut in_members = false;
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("members") {
            in_members = true;
        }
        let member = trimmed.trim_end_matches(',').trim_matches('"');
        let drop = in_members && trimmed.starts_with('"') && !course.crate_in_scope(member, scope);
        if in_members && trimmed.contains(']') {
            in_members = false;
        }
        if !drop {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The handout for `scope`, as a file map.
pub fn handout_files(course: &Course, scope: Scope) -> Result<Files> {
    let mut files = reference_files(course, scope, true)?;
    for (rel, regions) in &course.regions {
        let Some(bytes) = files.get_mut(rel) else {
            continue;
        };
        let text = String::from_utf8_lossy(bytes).into_owned();
        let stubbed = |task: &str| course.task(task).is_some_and(|t| scope.stubs(t.assignment));
        *bytes = markers::apply(&text, regions, &stubbed).into_bytes();
    }
    for (rel, names) in tests_left_out(course, scope) {
        let Some(bytes) = files.get_mut(&rel) else {
            continue;
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let text = strip::remove_tests(
            &rel.display().to_string(),
            &String::from_utf8_lossy(bytes),
            &names,
        )?;
        *bytes = text.into_bytes();
    }
    let manifest = String::from_utf8_lossy(&files[Path::new("Cargo.toml")]).into_owned();
    files.insert("Cargo.toml".into(), allow_unused(&manifest).into_bytes());
    if let Some(readme) = files.get(Path::new("README.md")) {
        let readme = student_readme(course, scope, &String::from_utf8_lossy(readme));
        files.insert("README.md".into(), readme.into_bytes());
    }
    files.insert(HANDOUT_FILE.into(), handout_note(scope).into_bytes());
    Ok(files)
}

/// Stubbed functions leave arguments and imports unused until the student writes them.
fn allow_unused(manifest: &str) -> String {
    let line = "[workspace.lints.rust]";
    let allow = "# A handout: stubbed functions leave arguments and imports unused until written.\nunused = { level = \"allow\", priority = -1 }";
    if manifest.contains(line) {
        manifest.replacen(line, &format!("{line}\n{allow}"), 1)
    } else {
        format!("{manifest}\n{line}\n{allow}\n")
    }
}

fn handout_note(scope: Scope) -> String {
    format!(
        "# Written by `cargo xtask handout`; the grader reads it. Do not edit.\nassignment = \"{}\"\n",
        scope.label()
    )
}

/// The README with the instructor section replaced by the assignment(s) and their tasks.
fn student_readme(course: &Course, scope: Scope, readme: &str) -> String {
    let mut section = String::new();
    for assignment in &course.file.assignment {
        if !scope.grades(assignment.number) {
            continue;
        }
        section.push_str(&format!(
            "## Assignment {}: {}\n\n{}\n\n{}\n",
            assignment.number,
            assignment.title,
            assignment.statement.trim(),
            task_table(course, assignment.number)
        ));
    }
    let Some(start) = readme.find(INSTRUCTORS_HEADING) else {
        return format!("{readme}\n{section}");
    };
    let after = &readme[start + INSTRUCTORS_HEADING.len()..];
    let end = after
        .find("\n## ")
        .map_or(readme.len(), |i| start + INSTRUCTORS_HEADING.len() + i + 1);
    format!("{}{}{}", &readme[..start], section, &readme[end..])
}

/// The Markdown table of an assignment's tasks: id, points, statement.
pub fn task_table(course: &Course, assignment: u32) -> String {
    let mut table = String::from("| task | points | what to write |\n|---|---:|---|\n");
    let mut total = 0.0;
    for task in course
        .file
        .task
        .iter()
        .filter(|t| t.assignment == assignment)
    {
        table.push_str(&format!(
            "| `{}` | {} | {}{} |\n",
            task.id,
            task.points,
            task.statement,
            needs_note(task)
        ));
        total += task.points;
    }
    table.push_str(&format!("| total | {total} | |\n"));
    table
}

/// ` (end to end: with `a`, `b`)` for a task that runs other tasks' code.
fn needs_note(task: &crate::course::Task) -> String {
    if task.needs.is_empty() {
        return String::new();
    }
    let needs: Vec<String> = task.needs.iter().map(|n| format!("`{n}`")).collect();
    format!(" (end to end: with {})", needs.join(", "))
}

/// Refuses an output folder that is not empty, or that lies inside the reference
/// workspace outside `target/` (cargo would take it for part of the workspace).
pub fn check_out_dir(root: &Path, out: &Path) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{out:?} is not empty: give a new or empty folder");
    }
    let absolute = std::path::absolute(out)?;
    let root = std::path::absolute(root)?;
    if absolute.starts_with(&root) && !absolute.starts_with(root.join("target")) {
        bail!("{out:?} is inside the reference workspace {root:?}: write the handout elsewhere (or under target/)");
    }
    Ok(())
}

/// Checks that no solution text is in `files`: no marker, no line found only
/// inside a stubbed region of the reference, no hidden test name.
pub fn scan_for_leaks(course: &Course, scope: Scope, files: &Files) -> Result<()> {
    let mut outside: BTreeSet<String> = BTreeSet::new();
    let mut inside: BTreeSet<String> = BTreeSet::new();
    for rel in tree::source_files(&course.root)?
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(course.root.join(rel))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut in_region = vec![false; lines.len()];
        for region in course.regions.get(rel).into_iter().flatten() {
            let stubbed = course
                .task(&region.task)
                .is_some_and(|t| scope.stubs(t.assignment));
            for k in region.begin + 1..region.end {
                in_region[k] = true;
                let set = if stubbed { &mut inside } else { &mut outside };
                set.insert(lines[k].trim().to_owned());
            }
        }
        for (line, _) in lines.iter().zip(&in_region).filter(|(_, r)| !**r) {
            outside.insert(line.trim().to_owned());
        }
    }
    let leaks: BTreeSet<&String> = inside
        .iter()
        .filter(|l| l.len() >= 6 && !outside.contains(*l))
        .collect();
    let hidden: Vec<&str> = course
        .file
        .task
        .iter()
        .flat_map(|t| &t.tests)
        .filter(|t| t.hidden)
        .map(|t| t.parts().2)
        .collect();
    let mut found = Vec::new();
    for (rel, bytes) in files {
        let text = String::from_utf8_lossy(bytes);
        for (i, line) in text.lines().enumerate() {
            let at = format!("{}:{}", rel.display(), i + 1);
            let trimmed = line.trim().to_owned();
            if markers::KEYWORDS
                .iter()
                .any(|k| line.contains(&format!("// {k}")))
            {
                found.push(format!("{at}: a solution marker"));
            } else if leaks.contains(&trimmed) {
                found.push(format!("{at}: a line of a solution: {trimmed}"));
            } else if let Some(name) = hidden.iter().find(|n| line.contains(**n)) {
                found.push(format!("{at}: the hidden test name {name}"));
            }
        }
    }
    if !found.is_empty() {
        bail!(
            "solution text would reach the handout:\n  {}",
            found.join("\n  ")
        );
    }
    Ok(())
}

/// Writes the handout of `scope` to `out` and the autograder beside it.
pub fn write_handout(course: &Course, scope: Scope, out: &Path, autograder: &Path) -> Result<()> {
    check_out_dir(&course.root, out)?;
    let files = handout_files(course, scope)?;
    scan_for_leaks(course, scope, &files)?;
    tree::sync(out, &files)?;
    crate::autograder::write_zip(course, scope, autograder)?;
    Ok(())
}
