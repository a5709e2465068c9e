//! The course kit end to end on a tiny course of its own (three crates without
//! dependencies, so cargo builds it in seconds): the handout, and the grader on the
//! reference, the bare handout, a wrong answer, a submission that does not
//! compile, one that loops forever and one that edits a test.

use std::path::Path;

use anyhow::Result;
use xtask::course::{Course, Scope};
use xtask::grade::{self, Grade, Outcome, Workdir};
use xtask::{handout, report};

const COURSE: &str = r#"
[course]
name = "tiny"
time_limit_s = 60

[[assignment]]
number = 1
crate = "first"
title = "First"
statement = "Add and double."

[[assignment]]
number = 2
crate = "second"
title = "Second"
statement = "Square."

[[task]]
id = "a1.add"
assignment = 1
points = 3
statement = "Add two numbers."
tests = [
    { name = "first/first/adds", points = 2 },
    { name = "first/first/adds_big_numbers", points = 1, hidden = true },
]

[[task]]
id = "a1.double"
assignment = 1
points = 2
statement = "Double a number (it lives in base)."
tests = [{ name = "first/first/doubles", points = 2 }]

[[task]]
id = "a2.square"
assignment = 2
points = 3
statement = "Square a number."
tests = [{ name = "second/second/squares", points = 3 }]
"#;

const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\n    \"base\",\n    \"first\",\n    \"second\",\n]\n\n[workspace.lints.rust]\nunsafe_code = \"forbid\"\n",
    ),
    ("README.md", "# tiny\n\n## For instructors\n\nsecret plans\n\n## Licence\n\nMIT\n"),
    ("base/Cargo.toml", "[package]\nname = \"base\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lints]\nworkspace = true\n"),
    (
        "base/src/lib.rs",
        "//! Base.\n\n/// Twice `x`.\npub fn double(x: u64) -> u64 {\n    // BEGIN SOLUTION a1.double shift or multiply\n    x * 2\n    // END SOLUTION\n}\n\n/// `x` squared.\npub fn square(x: u64) -> u64 {\n    // BEGIN SOLUTION a2.square\n    x * x\n    // END SOLUTION\n}\n",
    ),
    (
        "first/Cargo.toml",
        "[package]\nname = \"first\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lints]\nworkspace = true\n\n[dependencies]\nbase = { path = \"../base\" }\n",
    ),
    (
        "first/src/lib.rs",
        "//! First.\n\n/// `a + b`.\npub fn add(a: u64, b: u64) -> u64 {\n    // BEGIN SOLUTION a1.add\n    let sum = a + b;\n    sum\n    // END SOLUTION\n}\n",
    ),
    (
        "first/tests/first.rs",
        "#[test]\nfn adds() {\n    assert_eq!(first::add(2, 3), 5, \"2 + 3\");\n}\n\n#[test]\nfn adds_big_numbers() {\n    assert_eq!(first::add(1 << 40, 1), (1 << 40) + 1);\n}\n\n#[test]\nfn doubles() {\n    assert_eq!(base::double(21), 42);\n}\n",
    ),
    (
        "second/Cargo.toml",
        "[package]\nname = \"second\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lints]\nworkspace = true\n\n[dependencies]\nbase = { path = \"../base\" }\n",
    ),
    ("second/src/lib.rs", "//! Second.\n\npub use base::square;\n"),
    (
        "second/tests/second.rs",
        "#[test]\nfn squares() {\n    assert_eq!(second::square(7), 49);\n}\n",
    ),
];

/// A temp folder holding the tiny reference (`ref/`) and room for handouts.
fn tiny_course() -> Result<(tempfile::TempDir, Course)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("ref");
    for (rel, text) in FILES {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(path, text)?;
    }
    std::fs::write(root.join("course.toml"), COURSE)?;
    let course = Course::load(&root)?;
    Ok((dir, course))
}

fn points(grade: &Grade) -> Vec<(String, f64)> {
    grade
        .per_task()
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect()
}

fn pairs(items: &[(&str, f64)]) -> Vec<(String, f64)> {
    items.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

fn replace_in(path: &Path, from: &str, to: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    assert!(text.contains(from), "{path:?} lacks {from:?}:\n{text}");
    std::fs::write(path, text.replace(from, to))?;
    Ok(())
}

#[test]
fn handout_stubs_its_tasks_drops_later_crates_and_hidden_tests() -> Result<()> {
    let (dir, course) = tiny_course()?;
    let out = dir.path().join("h1");
    handout::write_handout(&course, Scope::One(1), &out, &dir.path().join("h1.zip"))?;
    let read = |rel: &str| std::fs::read_to_string(out.join(rel));
    assert_eq!(
        read("first/src/lib.rs")?
            .matches("todo!(\"a1.add\")")
            .count(),
        1
    );
    assert!(read("base/src/lib.rs")?.contains("todo!(\"a1.double: shift or multiply\")"));
    // a2's task is stubbed too (later), its crate left out, the manifest without it.
    assert!(read("base/src/lib.rs")?.contains("todo!(\"a2.square\")"));
    assert!(!out.join("second").exists() && !out.join("course.toml").exists());
    assert!(!read("Cargo.toml")?.contains("\"second\""));
    let tests = read("first/tests/first.rs")?;
    assert!(tests.contains("fn adds()") && !tests.contains("adds_big_numbers"));
    let readme = read("README.md")?;
    assert!(!readme.contains("secret plans") && readme.contains("## Assignment 1: First"));
    assert!(
        readme.contains("| `a1.add` | 3 | Add two numbers. |") && readme.contains("## Licence")
    );
    assert!(dir.path().join("h1.zip").is_file());
    // A second handout into the same, now full, folder is refused.
    let again = handout::write_handout(&course, Scope::One(1), &out, &dir.path().join("h1.zip"));
    assert!(again.unwrap_err().to_string().contains("is not empty"));
    Ok(())
}

#[test]
fn the_leak_scan_finds_solution_lines_markers_and_hidden_names() -> Result<()> {
    let (_dir, course) = tiny_course()?;
    let mut files = handout::handout_files(&course, Scope::One(1))?;
    handout::scan_for_leaks(&course, Scope::One(1), &files)?;
    files.insert(
        "notes.md".into(),
        b"    let sum = a + b;\nadds_big_numbers\n// END SOLUTION\n".to_vec(),
    );
    let err = handout::scan_for_leaks(&course, Scope::One(1), &files)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("notes.md:1: a line of a solution: let sum = a + b;"),
        "{err}"
    );
    assert!(
        err.contains("notes.md:2: the hidden test name adds_big_numbers"),
        "{err}"
    );
    assert!(err.contains("notes.md:3: a solution marker"), "{err}");
    Ok(())
}

#[test]
fn grades_reference_handout_wrong_broken_looping_and_test_editing_submissions() -> Result<()> {
    let (dir, course) = tiny_course()?;
    let work = Workdir::new(&dir.path().join("target"));
    let full = pairs(&[("a1.add", 3.0), ("a1.double", 2.0), ("a2.square", 3.0)]);

    // The reference scores full points, hidden test included.
    let reference = grade::grade(&course, &course.root, Scope::All, &work, 60)?;
    assert_eq!(points(&reference), full);
    assert_eq!(reference.score(), 8.0);

    // The bare handout of assignment 1 scores 0 on each of its tasks, saying todo.
    let h1 = dir.path().join("h1");
    handout::write_handout(&course, Scope::One(1), &h1, &dir.path().join("h1.zip"))?;
    let bare = grade::grade(&course, &h1, grade::scope_of(&h1, None)?, &work, 60)?;
    assert_eq!(points(&bare), pairs(&[("a1.add", 0.0), ("a1.double", 0.0)]));
    let Outcome::Failed(why) = &bare.results[0].outcome else {
        panic!("{:?}", bare.results[0])
    };
    assert!(why.contains("not yet implemented: a1.add"), "{why}");

    // A wrong answer loses exactly that task's points; the other is planted right.
    replace_in(
        &h1.join("first/src/lib.rs"),
        "todo!(\"a1.add\")",
        "a.wrapping_sub(b)",
    )?;
    replace_in(
        &h1.join("base/src/lib.rs"),
        "todo!(\"a1.double: shift or multiply\")",
        "x << 1",
    )?;
    let wrong = grade::grade(&course, &h1, Scope::One(1), &work, 60)?;
    assert_eq!(
        points(&wrong),
        pairs(&[("a1.add", 0.0), ("a1.double", 2.0)])
    );
    let md = report::grade_md(&wrong);
    assert!(md.contains("2 + 3") && md.contains("hidden test"), "{md}");
    let json = report::results_json(&wrong);
    assert_eq!(json["score"], 2.0);
    assert_eq!(json["tests"][1]["output"], "hidden");
    assert_eq!(json["tests"][1]["visibility"], "after_published");

    // Editing a test file to pass is ignored and reported.
    replace_in(
        &h1.join("first/tests/first.rs"),
        "assert_eq!(first::add(2, 3), 5, \"2 + 3\");",
        "",
    )?;
    let edited = grade::grade(&course, &h1, Scope::One(1), &work, 60)?;
    assert_eq!(
        points(&edited),
        pairs(&[("a1.add", 0.0), ("a1.double", 2.0)])
    );
    assert!(
        edited
            .notes
            .iter()
            .any(|n| n.contains("first/tests/first.rs was changed: ignored")),
        "{:?}",
        edited.notes
    );

    // A loop that never ends is stopped at the time limit and scores 0.
    replace_in(&h1.join("first/src/lib.rs"), "a.wrapping_sub(b)", "loop {}")?;
    let looping = grade::grade(&course, &h1, Scope::One(1), &work, 3)?;
    assert_eq!(looping.results[0].outcome, Outcome::TimedOut(3));
    assert_eq!(
        points(&looping),
        pairs(&[("a1.add", 0.0), ("a1.double", 2.0)])
    );
    Ok(())
}

#[test]
fn a_crate_that_does_not_compile_scores_0_on_its_tasks_only() -> Result<()> {
    let (dir, course) = tiny_course()?;
    let work = Workdir::new(&dir.path().join("target"));
    let all = dir.path().join("all");
    handout::write_handout(&course, Scope::All, &all, &dir.path().join("all.zip"))?;
    replace_in(&all.join("first/src/lib.rs"), "todo!(\"a1.add\")", "a + b")?;
    replace_in(
        &all.join("base/src/lib.rs"),
        "todo!(\"a1.double: shift or multiply\")",
        "x * 2",
    )?;
    replace_in(
        &all.join("base/src/lib.rs"),
        "todo!(\"a2.square\")",
        "x * x",
    )?;
    // first does not compile; base and second do.
    replace_in(
        &all.join("first/src/lib.rs"),
        "pub fn add",
        "pub fn add_broken() -> u64 { \"no\" }\npub fn add",
    )?;
    let grade = grade::grade(&course, &all, Scope::All, &work, 60)?;
    assert_eq!(
        points(&grade),
        pairs(&[("a1.add", 0.0), ("a1.double", 0.0), ("a2.square", 3.0)])
    );
    assert!(
        matches!(&grade.results[0].outcome, Outcome::NotCompiled(why) if why.contains("first did not compile"))
    );
    assert!(
        grade.compile_errors["first"].contains("mismatched types"),
        "{:?}",
        grade.compile_errors
    );
    assert!(report::grade_md(&grade).contains("## Compile errors"));
    let csv = report::csv(&[("ann".into(), grade)]);
    assert_eq!(
        csv,
        "student,a1.add,a1.double,a2.square,total\nann,0,0,3,3\n"
    );
    Ok(())
}

#[test]
fn course_errors_name_the_line() -> Result<()> {
    let (dir, _course) = tiny_course()?;
    let root = dir.path().join("ref");
    let broken = COURSE.replace(
        "tests = [{ name = \"second/second/squares\", points = 3 }]",
        "tests = []",
    );
    std::fs::write(root.join("course.toml"), broken)?;
    let err = Course::load(&root).unwrap_err().to_string();
    assert!(
        err.starts_with("course.toml:") && err.contains("task a2.square has no test"),
        "{err}"
    );
    std::fs::write(
        root.join("course.toml"),
        COURSE.replace("first/first/doubles", "first/first/halves"),
    )?;
    // Test names exist only once the tests are built: the grader refuses a missing one.
    let course = Course::load(&root)?;
    let work = Workdir::new(&dir.path().join("target"));
    let err = grade::grade(&course, &root, Scope::One(1), &work, 60)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test first/first/halves does not exist"),
        "{err}"
    );
    Ok(())
}

#[test]
fn check_lists_the_reference_tests_and_refuses_an_unknown_name_with_its_line() -> Result<()> {
    let (dir, course) = tiny_course()?;
    let target = dir.path().join("target");
    assert_eq!(grade::check_reference_test_names(&course, &target)?, 4);
    let root = dir.path().join("ref");
    std::fs::write(
        root.join("course.toml"),
        COURSE.replace("second/second/squares", "second/second/cubes"),
    )?;
    let course = Course::load(&root)?;
    let err = grade::check_reference_test_names(&course, &target)
        .unwrap_err()
        .to_string();
    let line = COURSE
        .lines()
        .position(|l| l.contains("second/second/squares"))
        .expect("the line")
        + 1;
    assert_eq!(
        err,
        format!("course.toml:{line}: test second/second/cubes does not exist (not in the `--list` of second's test target second)")
    );
    Ok(())
}

/// The tiny reference with a1.add's hint long enough that rustfmt puts its
/// `todo!` message on a line of its own.
fn tiny_course_with_a_long_hint() -> Result<(tempfile::TempDir, Course)> {
    let (dir, course) = tiny_course()?;
    let hint = "add the two numbers; mind you: this hint is long enough to be wrapped by rustfmt";
    replace_in(
        &course.root.join("first/src/lib.rs"),
        "// BEGIN SOLUTION a1.add",
        &format!("// BEGIN SOLUTION a1.add {hint}"),
    )?;
    let course = Course::load(&course.root)?;
    Ok((dir, course))
}

#[test]
fn verify_passes_a_good_handout_with_a_wrapped_todo_and_refuses_an_ungraded_failure() -> Result<()>
{
    let (dir, course) = tiny_course_with_a_long_hint()?;
    let work = dir.path().join("target");
    let files = handout::handout_files(&course, Scope::One(1))?;
    let lib = String::from_utf8_lossy(&files[Path::new("first/src/lib.rs")]).into_owned();
    assert!(
        lib.contains("    todo!(\n        \"a1.add: add the two numbers;")
            && lib.contains(" rustfmt\"\n    )\n}"),
        "{lib}"
    );
    // Builds, passes clippy and cargo fmt --check, and only graded tests fail.
    xtask::verify::verify(&course, Scope::One(1), &work, 60)?;

    // A failing test that no task grades is refused.
    let tests = course.root.join("first/tests/first.rs");
    let text = std::fs::read_to_string(&tests)?;
    std::fs::write(
        &tests,
        format!(
            "{text}\n#[test]\nfn doubles_again() {{\n    assert_eq!(base::double(1), 2);\n}}\n"
        ),
    )?;
    let err = xtask::verify::verify(&course, Scope::One(1), &work, 60)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("first/first/doubles_again fails but no task of assignment 1 grades it"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_command_grades_a_folder_of_submissions_into_one_csv() -> Result<()> {
    let (dir, course) = tiny_course()?;
    let submissions = dir.path().join("submissions");
    let zip = dir.path().join("h1.zip");
    // ann hands in the bare handout; bob writes both tasks.
    handout::write_handout(&course, Scope::One(1), &submissions.join("ann"), &zip)?;
    let bob = submissions.join("bob");
    handout::write_handout(&course, Scope::One(1), &bob, &zip)?;
    replace_in(&bob.join("first/src/lib.rs"), "todo!(\"a1.add\")", "a + b")?;
    replace_in(
        &bob.join("base/src/lib.rs"),
        "todo!(\"a1.double: shift or multiply\")",
        "x + x",
    )?;
    std::fs::create_dir_all(submissions.join("not-a-submission"))?;
    let out = dir.path().join("grades");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(&course.root)
        .arg("grade")
        .arg("--submission")
        .arg(&submissions)
        .arg("--out")
        .arg(&out)
        .arg("--target-dir")
        .arg(dir.path().join("target"))
        .status()?;
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("grades.csv"))?,
        "student,a1.add,a1.double,total\nann,0,0,0\nbob,3,2,5\n"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bob/results.json"))?)?;
    assert_eq!(results["score"], 5.0);
    assert!(out.join("ann/grade.md").is_file());
    Ok(())
}
