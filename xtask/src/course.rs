//! The course: `course.toml` at the workspace root lists the assignments and the
//! tasks (id, assignment, points, statement, the exact tests that grade it, each
//! with its points), and the marked regions of the reference code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::markers::{self, Region};
use crate::tree;

/// The file name of the task list at the workspace root.
pub const COURSE_FILE: &str = "course.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CourseFile {
    pub course: Meta,
    pub assignment: Vec<Assignment>,
    pub task: Vec<Task>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: String,
    /// Seconds one graded test may run before it is stopped and scored 0.
    pub time_limit_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub number: u32,
    #[serde(rename = "crate")]
    pub crate_name: String,
    pub title: String,
    pub statement: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: String,
    pub assignment: u32,
    pub points: f64,
    pub statement: String,
    pub tests: Vec<GradedTest>,
    /// An end-to-end task: the tasks (of this assignment or earlier ones) whose
    /// code its tests run besides its own. Its tests may fail on any of their
    /// `todo!`s, and it needs no region of its own.
    #[serde(default)]
    pub needs: Vec<String>,
}

impl Task {
    /// The tasks whose `todo!` a test of this task may fail on: itself and its needs.
    pub fn covers(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.needs.iter().map(String::as_str))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradedTest {
    /// `package/target/test`: `common/loss/cross_entropy_by_hand`; the target is
    /// the test file's stem, or `lib` for a crate's unit tests.
    pub name: String,
    pub points: f64,
    /// Left out of handouts; the grader restores it and reports only "hidden".
    #[serde(default)]
    pub hidden: bool,
}

impl GradedTest {
    /// `(package, target, test path)`.
    pub fn parts(&self) -> (&str, &str, &str) {
        let mut parts = self.name.splitn(3, '/');
        let package = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let test = parts.next().unwrap_or_default();
        (package, target, test)
    }
}

/// The checked course with the regions of the reference found.
#[derive(Debug, Clone)]
pub struct Course {
    pub root: PathBuf,
    pub file: CourseFile,
    text: String,
    /// Relative path -> its regions, for each file that has any.
    pub regions: BTreeMap<PathBuf, Vec<Region>>,
}

impl Course {
    /// Reads `course.toml` under `root`, checks it, and parses every `.rs` file of
    /// the workspace for markers.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(COURSE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
        let file: CourseFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].lines().count().max(1))
                .unwrap_or(0);
            anyhow::anyhow!("{COURSE_FILE}:{line}: {}", e.message())
        })?;
        let mut course = Course {
            root: root.to_owned(),
            file,
            text,
            regions: BTreeMap::new(),
        };
        course.check_tasks()?;
        course.find_regions()?;
        course.check_every_task_has_a_region()?;
        Ok(course)
    }

    /// `course.toml:LINE` of the first line holding `needle` (0 when absent).
    pub fn line_of(&self, needle: &str) -> String {
        let line = self
            .text
            .lines()
            .position(|l| l.contains(needle))
            .map_or(0, |i| i + 1);
        format!("{COURSE_FILE}:{line}")
    }

    fn check_tasks(&self) -> Result<()> {
        let numbers: BTreeSet<u32> = self.file.assignment.iter().map(|a| a.number).collect();
        let mut ids = BTreeSet::new();
        let mut tests = BTreeSet::new();
        for task in &self.file.task {
            let at = self.line_of(&format!("\"{}\"", task.id));
            if !ids.insert(&task.id) {
                bail!("{at}: task {} is listed twice", task.id);
            }
            if !numbers.contains(&task.assignment) {
                bail!(
                    "{at}: task {} belongs to assignment {}, which course.toml does not list",
                    task.id,
                    task.assignment
                );
            }
            if !task.id.starts_with(&format!("a{}.", task.assignment)) {
                bail!(
                    "{at}: task id {} must start with a{}. (its assignment)",
                    task.id,
                    task.assignment
                );
            }
            if task.tests.is_empty() {
                bail!("{at}: task {} has no test", task.id);
            }
            let sum: f64 = task.tests.iter().map(|t| t.points).sum();
            if (sum - task.points).abs() > 1e-9 {
                bail!(
                    "{at}: task {} has {} points but its tests add up to {sum}",
                    task.id,
                    task.points
                );
            }
            self.check_needs(task, &at)?;
            for test in &task.tests {
                let at = self.line_of(&format!("\"{}\"", test.name));
                let (package, target, name) = test.parts();
                if package.is_empty() || target.is_empty() || name.is_empty() {
                    bail!("{at}: test {:?} must read package/target/test", test.name);
                }
                if !self.root.join(package).join("Cargo.toml").is_file() {
                    bail!("{at}: test {}: no package folder {package}/", test.name);
                }
                if !tests.insert(&test.name) {
                    bail!("{at}: test {} grades two tasks", test.name);
                }
            }
        }
        Ok(())
    }

    /// An end-to-end task's needs: known tasks, none of a later assignment, not itself.
    fn check_needs(&self, task: &Task, at: &str) -> Result<()> {
        for need in &task.needs {
            let Some(other) = self.task(need) else {
                bail!(
                    "{at}: task {} needs {need}, which course.toml does not list",
                    task.id
                );
            };
            if other.id == task.id || other.assignment > task.assignment {
                bail!(
                    "{at}: task {} (assignment {}) cannot need {need} (assignment {})",
                    task.id,
                    task.assignment,
                    other.assignment
                );
            }
        }
        Ok(())
    }

    fn find_regions(&mut self) -> Result<()> {
        let known: BTreeSet<String> = self.file.task.iter().map(|t| t.id.clone()).collect();
        for rel in tree::source_files(&self.root)? {
            if rel.extension().is_none_or(|e| e != "rs") || rel.starts_with("xtask") {
                continue;
            }
            let text = std::fs::read_to_string(self.root.join(&rel))
                .with_context(|| format!("reading {rel:?}"))?;
            if !markers::KEYWORDS.iter().any(|k| text.contains(k)) {
                continue;
            }
            let regions = markers::parse(&rel.display().to_string(), &text, Some(&known))?;
            if !regions.is_empty() {
                self.regions.insert(rel, regions);
            }
        }
        Ok(())
    }

    /// Every task but an end-to-end one has code of its own to write.
    fn check_every_task_has_a_region(&self) -> Result<()> {
        for task in self.file.task.iter().filter(|t| t.needs.is_empty()) {
            let found = self.regions.values().flatten().any(|r| r.task == task.id);
            if !found {
                let at = self.line_of(&format!("\"{}\"", task.id));
                bail!(
                    "{at}: task {} has no `// BEGIN SOLUTION {}` region in the code",
                    task.id,
                    task.id
                );
            }
        }
        Ok(())
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.file.task.iter().find(|t| t.id == id)
    }

    pub fn assignment(&self, number: u32) -> Result<&Assignment> {
        self.file
            .assignment
            .iter()
            .find(|a| a.number == number)
            .with_context(|| {
                let known: Vec<u32> = self.file.assignment.iter().map(|a| a.number).collect();
                format!("no assignment {number} in {COURSE_FILE} (it lists {known:?})")
            })
    }

    /// The highest assignment number.
    pub fn last_assignment(&self) -> u32 {
        self.file
            .assignment
            .iter()
            .map(|a| a.number)
            .max()
            .unwrap_or(0)
    }

    /// The tasks graded for `scope`.
    pub fn tasks_in(&self, scope: Scope) -> Vec<&Task> {
        self.file
            .task
            .iter()
            .filter(|t| scope.grades(t.assignment))
            .collect()
    }

    /// The files a student of `scope` owns: those with a region of a graded task.
    pub fn student_files(&self, scope: Scope) -> Vec<PathBuf> {
        self.regions
            .iter()
            .filter(|(_, regions)| {
                regions.iter().any(|r| {
                    self.task(&r.task)
                        .is_some_and(|t| scope.grades(t.assignment))
                })
            })
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The crates a workspace for `scope` holds: common and the assignments up to it.
    pub fn crate_in_scope(&self, crate_name: &str, scope: Scope) -> bool {
        match self
            .file
            .assignment
            .iter()
            .find(|a| a.crate_name == crate_name)
        {
            Some(a) => a.number <= scope.upto(self.last_assignment()),
            None => crate_name != "xtask",
        }
    }
}

/// What a handout or a grading covers: one assignment, or the whole course.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    One(u32),
    All,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self> {
        if text == "all" {
            return Ok(Scope::All);
        }
        text.parse()
            .map(Scope::One)
            .with_context(|| format!("--assignment takes a number or `all`, got {text:?}"))
    }

    /// Whether tasks of `assignment` are graded (and stubbed in the handout).
    pub fn grades(self, assignment: u32) -> bool {
        match self {
            Scope::One(n) => assignment == n,
            Scope::All => true,
        }
    }

    /// Whether tasks of `assignment` are stubbed: this one and every later one.
    pub fn stubs(self, assignment: u32) -> bool {
        match self {
            Scope::One(n) => assignment >= n,
            Scope::All => true,
        }
    }

    /// The last assignment whose crate is in the workspace.
    pub fn upto(self, last: u32) -> u32 {
        match self {
            Scope::One(n) => n,
            Scope::All => last,
        }
    }

    pub fn label(self) -> String {
        match self {
            Scope::One(n) => n.to_string(),
            Scope::All => "all".to_owned(),
        }
    }
}
