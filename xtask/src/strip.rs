//! Taking `#[test]` functions out of a test file: the hidden tests, and the tests
//! of later assignments' tasks, are not in a handout (the grader restores them).

use anyhow::{bail, Result};

use crate::lexer::line_infos;

/// `text` without the top-level `#[test]` functions named in `names` (with their
/// attributes and doc comments); a name not found is an error naming `file`.
pub fn remove_tests(file: &str, text: &str, names: &[&str]) -> Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let infos = line_infos(text);
    let mut drop = vec![false; lines.len()];
    for name in names {
        let Some((start, end)) = test_span(&lines, &infos, name) else {
            bail!("{file}: no top-level #[test] fn {name} to take out of the handout");
        };
        let (start, end) = with_blank_separator(&lines, start, end);
        drop[start..=end].iter_mut().for_each(|d| *d = true);
    }
    let mut kept: Vec<&str> = lines
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(l, _)| *l)
        .collect();
    // Tests taken from the end leave the blank line before them last, which
    // `cargo fmt --check` refuses.
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let mut out = kept.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The span of a test widened by the blank line after it, which separates it.
fn with_blank_separator(lines: &[&str], start: usize, end: usize) -> (usize, usize) {
    if end + 1 < lines.len() && lines[end + 1].trim().is_empty() {
        return (start, end + 1);
    }
    (start, end)
}

/// The lines `(first, last)` of test `name`: its attributes and doc comments,
/// its signature, its body to the closing brace.
fn test_span(
    lines: &[&str],
    infos: &[crate::lexer::LineInfo],
    name: &str,
) -> Option<(usize, usize)> {
    let signature = |l: &str| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        let l = l.strip_prefix("async ").unwrap_or(l);
        l.strip_prefix("fn ")
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|rest| rest.starts_with('(') || rest.starts_with('<'))
    };
    let fn_line = (0..lines.len()).find(|&i| infos[i].depth == 0 && signature(lines[i]))?;
    let mut start = fn_line;
    let mut is_test = false;
    while start > 0 {
        let above = lines[start - 1].trim();
        if above.starts_with("#[") || above.starts_with("//") {
            is_test |= above == "#[test]";
            start -= 1;
        } else {
            break;
        }
    }
    if !is_test {
        return None;
    }
    let opened = (fn_line..lines.len()).find(|&i| i + 1 < lines.len() && infos[i + 1].depth > 0)?;
    let end = (opened + 1..lines.len())
        .find(|&i| i + 1 >= lines.len() || infos[i + 1].depth == 0)
        .unwrap_or(lines.len() - 1);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
//! Tests.

use x::y;

/// Keeps this one.
#[test]
fn kept() -> Result<()> {
    let s = \"}\";
    Ok(())
}

/// The hidden one.
#[test]
fn hidden_one() -> Result<()> {
    if true {
        assert!(1 < 2);
    }
    Ok(())
}

fn helper() {}
";

    #[test]
    fn removes_the_named_test_with_its_doc_and_keeps_the_rest() -> Result<()> {
        let out = remove_tests("t.rs", FILE, &["hidden_one"])?;
        assert!(!out.contains("hidden_one") && !out.contains("The hidden one"));
        assert!(out.contains("fn kept()") && out.contains("fn helper() {}"));
        assert!(out.contains("    Ok(())\n}\n\nfn helper"), "{out}");
        Ok(())
    }

    #[test]
    fn the_last_tests_leave_no_blank_line_at_the_end() -> Result<()> {
        let text = "fn helper() {}\n\n#[test]\nfn next() {}\n\n#[test]\nfn last() {\n    assert!(true);\n}\n";
        assert_eq!(
            remove_tests("t.rs", text, &["last"])?,
            "fn helper() {}\n\n#[test]\nfn next() {}\n"
        );
        assert_eq!(
            remove_tests("t.rs", text, &["next", "last"])?,
            "fn helper() {}\n"
        );
        Ok(())
    }

    #[test]
    fn a_missing_or_non_test_function_is_an_error() {
        let err = remove_tests("t.rs", FILE, &["helper"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.rs: no top-level #[test] fn helper to take out of the handout"
        );
        assert!(remove_tests("t.rs", FILE, &["absent"]).is_err());
    }
}
