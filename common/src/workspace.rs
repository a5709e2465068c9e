//! Where the workspace is at run time: the folder whose `Cargo.toml` has a
//! `[workspace]` table, found by walking up from the current directory, else from
//! the executable's folder. Nothing here is baked in at build time, so a binary
//! copied elsewhere and run from a clone's root finds that clone's `data/`.

use std::path::{Path, PathBuf};

/// The workspace root above the current directory, else above the executable.
pub fn workspace_root() -> Option<PathBuf> {
    let from_cwd = std::env::current_dir().ok().and_then(|d| root_above(&d));
    from_cwd.or_else(|| {
        let exe = std::env::current_exe().ok()?;
        root_above(exe.parent()?)
    })
}

/// The nearest folder at or above `start` whose `Cargo.toml` declares `[workspace]`.
pub fn root_above(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| declares_workspace(&dir.join("Cargo.toml")))
        .map(Path::to_path_buf)
}

/// The workspace's `data/` folder (`data/` of the current directory when no workspace is found).
pub fn workspace_data_dir() -> PathBuf {
    workspace_root().unwrap_or_default().join("data")
}

/// The course's shared folder `<workspace>/../shared/<name>`, if it exists.
pub fn shared_beside_workspace(name: &str) -> Option<PathBuf> {
    let dir = workspace_root()?.parent()?.join("shared").join(name);
    dir.is_dir().then_some(dir)
}

fn declares_workspace(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest)
        .map(|text| text.lines().any(|line| line.trim() == "[workspace]"))
        .unwrap_or(false)
}
