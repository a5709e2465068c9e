//! Workspace trees as file maps: listing the reference's source files, and writing
//! a map to a folder touching only what changed (so cargo rebuilds only that).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Relative path -> contents.
pub type Files = BTreeMap<PathBuf, Vec<u8>>;

/// The workspace root at or above the current folder: the first `Cargo.toml`
/// holding `[workspace]`.
pub fn workspace_root() -> Result<PathBuf> {
    let start = std::env::current_dir()?;
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() && std::fs::read_to_string(&manifest)?.contains("[workspace]") {
            return Ok(dir.to_owned());
        }
    }
    bail!("no Cargo.toml with [workspace] at or above {start:?}")
}

/// Whether a top-level or nested entry is build output, history or data, never source.
fn skipped(rel: &Path) -> bool {
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy());
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    first == ".git"
        || first == "target"
        || first.starts_with("target-")
        || first == "runs"
        || (first == "data" && second.is_some_and(|s| s != "README.md" && s != "manifests"))
        || rel
            .file_name()
            .is_some_and(|n| n == "target" || n.to_string_lossy().ends_with(".tmp"))
}

/// Every source file under `root`, relative, sorted.
pub fn source_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir:?}"))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        if skipped(&rel) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Reads `files` under `root` into a map.
pub fn read_files(root: &Path, files: &[PathBuf]) -> Result<Files> {
    files
        .iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(rel))
                .with_context(|| format!("reading {:?}", root.join(rel)))?;
            Ok((rel.clone(), bytes))
        })
        .collect()
}

/// Makes `dir` hold exactly `files`: writes those whose contents differ, removes
/// the others (a `target` folder inside is left alone).
pub fn sync(dir: &Path, files: &Files) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir:?}"))?;
    for rel in source_files(dir)? {
        if !files.contains_key(&rel) {
            std::fs::remove_file(dir.join(&rel)).with_context(|| format!("removing {rel:?}"))?;
        }
    }
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|old| &old == bytes) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {path:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_writes_changes_and_removes_extras_but_not_target() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("target/debug"))?;
        std::fs::write(dir.path().join("target/debug/x"), "build")?;
        std::fs::write(dir.path().join("old.rs"), "old")?;
        let mut files = Files::new();
        files.insert("src/a.rs".into(), b"a".to_vec());
        sync(dir.path(), &files)?;
        assert_eq!(source_files(dir.path())?, vec![PathBuf::from("src/a.rs")]);
        assert!(dir.path().join("target/debug/x").is_file());
        Ok(())
    }
}
