//! Solution markers in the reference code and what a handout makes of them.
//!
//! `// BEGIN SOLUTION a3.cross_entropy optional hint` ... `// END SOLUTION` marks
//! the body (or the tail) of a function; a handout replaces it by
//! `todo!("a3.cross_entropy: optional hint")`, which fits any return type. A
//! `// BEGIN STUB` ... `// END STUB` block right after `// END SOLUTION` holds
//! commented-out starter code that replaces the region instead of the `todo!()`.
//! Markers are line comments, so rustfmt keeps them where they are.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use crate::lexer::{line_infos, LineInfo};

pub const BEGIN_SOLUTION: &str = "// BEGIN SOLUTION";
pub const END_SOLUTION: &str = "// END SOLUTION";
pub const BEGIN_STUB: &str = "// BEGIN STUB";
pub const END_STUB: &str = "// END STUB";
/// Every marker keyword: none may reach a handout.
pub const KEYWORDS: [&str; 4] = ["BEGIN SOLUTION", "END SOLUTION", "BEGIN STUB", "END STUB"];

/// One marked region; line numbers are 0-based indices into the file's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub task: String,
    pub hint: Option<String>,
    /// The `// BEGIN SOLUTION` line.
    pub begin: usize,
    /// The `// END SOLUTION` line.
    pub end: usize,
    /// The `// BEGIN STUB` and `// END STUB` lines, when the region has starter code.
    pub stub: Option<(usize, usize)>,
}

impl Region {
    /// The lines of the solution itself (between the markers).
    pub fn body<'a>(&self, lines: &[&'a str]) -> Vec<&'a str> {
        lines[self.begin + 1..self.end].to_vec()
    }

    /// The last line the region covers (its stub's end when it has one).
    fn last(&self) -> usize {
        self.stub.map_or(self.end, |(_, end)| end)
    }
}

/// The regions of one file, checked: balanced, not nested, each inside a function
/// body and ending where that body ends, each naming a task in `known` (when
/// given). Errors read `file:line: what`.
pub fn parse(file: &str, text: &str, known: Option<&BTreeSet<String>>) -> Result<Vec<Region>> {
    let lines: Vec<&str> = text.lines().collect();
    let infos = line_infos(text);
    let mut regions = Vec::new();
    let mut open: Option<(usize, String, Option<String>)> = None;
    let mut i = 0;
    while i < lines.len() {
        let at = |what: &str| format!("{file}:{}: {what}", i + 1);
        let trimmed = lines[i].trim();
        let marker = marker_keyword(trimmed);
        if marker.is_some() && !trimmed.starts_with("//") {
            bail!(
                "{}",
                at("a marker must be a line comment alone on its line")
            );
        }
        match marker {
            Some("BEGIN SOLUTION") => {
                if let Some((line, task, _)) = &open {
                    bail!(
                        "{}",
                        at(&format!(
                            "nested region: {task} opened at line {} is not closed yet",
                            line + 1
                        ))
                    );
                }
                let (task, hint) = parse_begin(trimmed).map_err(|e| anyhow::anyhow!(at(&e)))?;
                if let Some(known) = known {
                    if !known.contains(&task) {
                        bail!(
                            "{}",
                            at(&format!("unknown task id {task:?} (not in course.toml)"))
                        );
                    }
                }
                open = Some((i, task, hint));
            }
            Some("END SOLUTION") => {
                let Some((begin, task, hint)) = open.take() else {
                    bail!("{}", at("END SOLUTION without a BEGIN SOLUTION"));
                };
                let stub = parse_stub(file, &lines, i)?;
                let region = Region {
                    task,
                    hint,
                    begin,
                    end: i,
                    stub,
                };
                check_in_function(file, &lines, &infos, &region)?;
                i = region.last();
                regions.push(region);
            }
            Some(_) => bail!(
                "{}",
                at("a STUB block must follow an END SOLUTION line directly")
            ),
            None => {}
        }
        i += 1;
    }
    if let Some((line, task, _)) = open {
        bail!(
            "{file}:{}: unbalanced region: {task} has no END SOLUTION",
            line + 1
        );
    }
    Ok(regions)
}

/// Which marker keyword a line holds, if any.
fn marker_keyword(trimmed: &str) -> Option<&'static str> {
    KEYWORDS.into_iter().find(|k| {
        trimmed
            .strip_prefix("//")
            .map(str::trim_start)
            .is_some_and(|rest| rest.starts_with(k))
            || (!trimmed.starts_with("//") && trimmed.contains(&format!("// {k}")))
    })
}

/// `// BEGIN SOLUTION <id> [hint]` -> `(id, hint)`.
fn parse_begin(trimmed: &str) -> std::result::Result<(String, Option<String>), String> {
    let rest = trimmed
        .strip_prefix(BEGIN_SOLUTION)
        .ok_or_else(|| format!("write the marker as {BEGIN_SOLUTION:?}"))?
        .trim();
    let mut parts = rest.splitn(2, char::is_whitespace);
    let id = parts.next().unwrap_or_default();
    if id.is_empty() {
        return Err(
            "BEGIN SOLUTION needs a task id, e.g. `// BEGIN SOLUTION a3.cross_entropy`".into(),
        );
    }
    let hint = parts.next().map(str::trim).filter(|h| !h.is_empty());
    Ok((id.to_owned(), hint.map(str::to_owned)))
}

/// A `// BEGIN STUB` block right after the `// END SOLUTION` at `end`, if any.
fn parse_stub(file: &str, lines: &[&str], end: usize) -> Result<Option<(usize, usize)>> {
    let begin = end + 1;
    if begin >= lines.len() || lines[begin].trim() != BEGIN_STUB {
        return Ok(None);
    }
    for (k, line) in lines.iter().enumerate().skip(begin + 1) {
        let trimmed = line.trim();
        if trimmed == END_STUB {
            return Ok(Some((begin, k)));
        }
        if marker_keyword(trimmed).is_some() {
            bail!("{file}:{}: a marker inside a STUB block", k + 1);
        }
        if !trimmed.starts_with("//") {
            bail!(
                "{file}:{}: STUB lines are commented out in the reference (start them with //)",
                k + 1
            );
        }
    }
    bail!("{file}:{}: BEGIN STUB has no END STUB", begin + 1)
}

/// A region must sit directly in a function body and run to that body's end.
fn check_in_function(
    file: &str,
    lines: &[&str],
    infos: &[LineInfo],
    region: &Region,
) -> Result<()> {
    let begin = infos[region.begin];
    if !begin.in_fn_body {
        bail!(
            "{file}:{}: region {} is outside a function body (it must be the body or the tail of a function)",
            region.begin + 1,
            region.task
        );
    }
    let inside = region.begin + 1..=region.end;
    let unbalanced = infos[inside.clone()]
        .iter()
        .any(|l| l.min_depth < begin.depth)
        || infos[region.end].depth != begin.depth;
    if unbalanced {
        bail!(
            "{file}:{}: region {} opens or closes braces it does not match",
            region.begin + 1,
            region.task
        );
    }
    let next = (region.last() + 1..lines.len()).find(|&k| !lines[k].trim().is_empty());
    let closes_fn =
        next.is_some_and(|k| lines[k].trim().starts_with('}') && infos[k].depth == begin.depth);
    if !closes_fn {
        bail!(
            "{file}:{}: region {} must end where its function ends (the next line must be the function's closing brace)",
            region.end + 1,
            region.task
        );
    }
    Ok(())
}

/// The handout text of a file: regions whose task is in `stubbed` replaced by
/// `todo!()` (or their STUB block, uncommented), the others kept without markers.
pub fn apply(text: &str, regions: &[Region], stubbed: &dyn Fn(&str) -> bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    let mut next_region = regions.iter().peekable();
    while i < lines.len() {
        match next_region.peek() {
            Some(region) if region.begin == i => {
                let region = next_region.next().expect("peeked");
                if stubbed(&region.task) {
                    out.extend(replacement(&lines, region));
                } else {
                    out.extend(region.body(&lines).iter().map(|l| l.to_string()));
                }
                i = region.last() + 1;
            }
            _ => {
                out.push(lines[i].to_owned());
                i += 1;
            }
        }
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// What a stubbed region becomes.
fn replacement(lines: &[&str], region: &Region) -> Vec<String> {
    if let Some((begin, end)) = region.stub {
        return lines[begin + 1..end].iter().map(|l| uncomment(l)).collect();
    }
    let indent: String = lines[region.begin]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();
    let message = match &region.hint {
        Some(hint) => format!("{}: {hint}", region.task),
        None => region.task.clone(),
    };
    todo_lines(&indent, &format!("\"{}\"", escape_format(&message)))
}

/// rustfmt's default `max_width`: the handouts are checked with `cargo fmt --check`.
pub const MAX_WIDTH: usize = 100;

/// `todo!(<literal>)` as rustfmt writes it: on one line when that fits in
/// [`MAX_WIDTH`]; else the literal on a line of its own, indented once more,
/// when that line fits with room for a trailing comma; else (a literal too long
/// for any line, which rustfmt leaves alone) on one line.
fn todo_lines(indent: &str, literal: &str) -> Vec<String> {
    let width = |s: &str| s.chars().count();
    let one_line = format!("{indent}todo!({literal})");
    let inner = format!("{indent}    {literal}");
    if width(&one_line) <= MAX_WIDTH || width(&inner) > MAX_WIDTH - 1 {
        return vec![one_line];
    }
    vec![format!("{indent}todo!("), inner, format!("{indent})")]
}

/// `    // let x = 1;` -> `    let x = 1;`
fn uncomment(line: &str) -> String {
    let indent_len = line.len() - line.trim_start().len();
    let (indent, rest) = line.split_at(indent_len);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    if rest.is_empty() {
        String::new()
    } else {
        format!("{indent}{rest}")
    }
}

/// A message safe inside `todo!("...")`, a format string.
fn escape_format(message: &str) -> String {
    message
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('{', "{{")
        .replace('}', "}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["a1.f", "a2.g"].iter().map(|s| s.to_string()).collect()
    }

    const GOOD: &str = "\
fn f(x: u32) -> u32 {
    let y = x + 1;
    // BEGIN SOLUTION a1.f add {one} \"twice\"
    y * 2
    // END SOLUTION
}

fn g() -> Vec<u8> {
    // BEGIN SOLUTION a2.g
    vec![1, 2]
    // END SOLUTION
    // BEGIN STUB
    // let v = Vec::new();
    //
    // v
    // END STUB
}
";

    #[test]
    fn parses_regions_hints_and_stubs() -> Result<()> {
        let regions = parse("good.rs", GOOD, Some(&known()))?;
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0].task, "a1.f");
        assert_eq!(regions[0].hint.as_deref(), Some("add {one} \"twice\""));
        assert_eq!((regions[0].begin, regions[0].end), (2, 4));
        assert_eq!(regions[1].stub, Some((11, 15)));
        Ok(())
    }

    #[test]
    fn stubbed_regions_become_todo_or_the_stub_and_others_lose_their_markers() -> Result<()> {
        let regions = parse("good.rs", GOOD, None)?;
        let all = apply(GOOD, &regions, &|_| true);
        assert!(
            all.contains("    todo!(\"a1.f: add {{one}} \\\"twice\\\"\")\n}"),
            "{all}"
        );
        assert!(all.contains("    let v = Vec::new();\n\n    v\n}"), "{all}");
        assert!(!all.contains("y * 2") && !all.contains("vec![1, 2]"));
        let none = apply(GOOD, &regions, &|_| false);
        assert!(
            none.contains("    y * 2\n}") && none.contains("    vec![1, 2]\n}"),
            "{none}"
        );
        for text in [&all, &none] {
            assert!(KEYWORDS.iter().all(|k| !text.contains(k)), "{text}");
        }
        let only_g = apply(GOOD, &regions, &|task| task == "a2.g");
        assert!(only_g.contains("y * 2") && only_g.contains("let v = Vec::new();"));
        Ok(())
    }

    fn refusal(text: &str) -> String {
        parse("bad.rs", text, Some(&known()))
            .expect_err("the parser should refuse")
            .to_string()
    }

    #[test]
    fn refuses_unbalanced_and_nested_regions_with_file_and_line() {
        let unclosed = "fn f() {\n    // BEGIN SOLUTION a1.f\n    1;\n}\n";
        assert_eq!(
            refusal(unclosed),
            "bad.rs:2: unbalanced region: a1.f has no END SOLUTION"
        );
        let stray_end = "fn f() {\n    1;\n    // END SOLUTION\n}\n";
        assert_eq!(
            refusal(stray_end),
            "bad.rs:3: END SOLUTION without a BEGIN SOLUTION"
        );
        let nested = "fn f() {\n    // BEGIN SOLUTION a1.f\n    // BEGIN SOLUTION a2.g\n    // END SOLUTION\n    // END SOLUTION\n}\n";
        assert_eq!(
            refusal(nested),
            "bad.rs:3: nested region: a1.f opened at line 2 is not closed yet"
        );
        let stray_stub = "fn f() {\n    // BEGIN STUB\n    // END STUB\n}\n";
        assert!(refusal(stray_stub).starts_with("bad.rs:2: a STUB block must follow"));
        let trailing = "fn f() {\n    1 // BEGIN SOLUTION a1.f\n}\n";
        assert!(refusal(trailing).starts_with("bad.rs:2: a marker must be a line comment alone"));
    }

    #[test]
    fn long_todos_are_written_as_rustfmt_writes_them() {
        let literal = |n: usize| format!("\"{}\"", "x".repeat(n - 2));
        // 4 + 7 + 89 = 100 columns: one line.
        assert_eq!(todo_lines("    ", &literal(89)).len(), 1);
        // 101 columns: the literal on its own line (8 + 91 = 99 columns).
        let broken = todo_lines("    ", &literal(91));
        assert_eq!(
            broken,
            vec![
                "    todo!(".to_owned(),
                format!("        {}", literal(91)),
                "    )".to_owned()
            ]
        );
        // A literal that fits no line is left on one, as rustfmt leaves it.
        assert_eq!(todo_lines("    ", &literal(92)).len(), 1);
        assert_eq!(todo_lines("        ", &literal(87)).len(), 3);
        assert_eq!(todo_lines("        ", &literal(88)).len(), 1);
    }

    #[test]
    fn refuses_unknown_tasks_and_missing_ids() {
        let unknown = "fn f() {\n    // BEGIN SOLUTION a9.nope\n    // END SOLUTION\n}\n";
        assert_eq!(
            refusal(unknown),
            "bad.rs:2: unknown task id \"a9.nope\" (not in course.toml)"
        );
        let no_id = "fn f() {\n    // BEGIN SOLUTION\n    // END SOLUTION\n}\n";
        assert!(refusal(no_id).starts_with("bad.rs:2: BEGIN SOLUTION needs a task id"));
    }

    #[test]
    fn refuses_regions_outside_a_function_body_or_not_at_its_end() {
        let at_top = "// BEGIN SOLUTION a1.f\nconst X: u8 = 1;\n// END SOLUTION\n";
        assert!(refusal(at_top).starts_with("bad.rs:1: region a1.f is outside a function body"));
        let in_impl =
            "impl A {\n    // BEGIN SOLUTION a1.f\n    fn f() {}\n    // END SOLUTION\n}\n";
        assert!(refusal(in_impl).starts_with("bad.rs:2: region a1.f is outside a function body"));
        let in_if = "fn f() {\n    if x {\n        // BEGIN SOLUTION a1.f\n        1;\n        // END SOLUTION\n    }\n}\n";
        assert!(refusal(in_if).starts_with("bad.rs:3: region a1.f is outside a function body"));
        let middle = "fn f() -> u8 {\n    // BEGIN SOLUTION a1.f\n    let x = 1;\n    // END SOLUTION\n    x\n}\n";
        assert!(
            refusal(middle).starts_with("bad.rs:4: region a1.f must end where its function ends")
        );
        let half_block =
            "fn f() {\n    // BEGIN SOLUTION a1.f\n    if x {\n    // END SOLUTION\n    }\n}\n";
        assert!(refusal(half_block).starts_with("bad.rs:2: region a1.f opens or closes braces"));
    }

    #[test]
    fn refuses_uncommented_or_unclosed_stubs() {
        let live = "fn f() -> u8 {\n    // BEGIN SOLUTION a1.f\n    1\n    // END SOLUTION\n    // BEGIN STUB\n    2\n    // END STUB\n}\n";
        assert!(refusal(live).starts_with("bad.rs:6: STUB lines are commented out"));
        let open = "fn f() -> u8 {\n    // BEGIN SOLUTION a1.f\n    1\n    // END SOLUTION\n    // BEGIN STUB\n    // 2\n";
        assert_eq!(refusal(open), "bad.rs:5: BEGIN STUB has no END STUB");
    }
}
