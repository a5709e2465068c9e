//! The Gradescope autograder of an assignment: `autograder.zip` holding
//! `setup.sh` (Rust, then one reference grading to warm the build),
//! `run_autograder` (grades `/autograder/submission` into `/autograder/results`)
//! and the reference workspace under `source/`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::course::{Course, Scope};
use crate::tree;

fn setup_sh(scope: Scope) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Gradescope runs this once when the autograder is built (Ubuntu image, as root).
set -euo pipefail
apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential pkg-config
curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
. "$HOME/.cargo/env"
cd /autograder/source
# Grade the reference once: downloads and compiles every dependency, so a
# submission only recompiles the student's files.
cargo xtask grade --submission . --assignment {scope} --out /tmp/reference-grade
"#,
        scope = scope.label()
    )
}

fn run_autograder(scope: Scope) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Gradescope runs this for every submission; it must leave /autograder/results/results.json.
set -uo pipefail
. "$HOME/.cargo/env"
cd /autograder/source
mkdir -p /autograder/results
cargo xtask grade --submission /autograder/submission --assignment {scope} --out /autograder/results
"#,
        scope = scope.label()
    )
}

/// Writes the zip to `path`.
pub fn write_zip(course: &Course, scope: Scope, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut zip = zip::ZipWriter::new(file);
    let script = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    let plain = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    zip.start_file("setup.sh", script)?;
    zip.write_all(setup_sh(scope).as_bytes())?;
    zip.start_file("run_autograder", script)?;
    zip.write_all(run_autograder(scope).as_bytes())?;
    for rel in tree::source_files(&course.root)? {
        let bytes = std::fs::read(course.root.join(&rel))?;
        zip.start_file(format!("source/{}", rel.display()), plain)?;
        zip.write_all(&bytes)?;
    }
    zip.finish()?;
    Ok(())
}
