//! Writing a file so that readers never see half of it: everything goes to a temporary
//! file in the same folder, which is renamed over the final name only once complete.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Context};

use crate::Result;

/// Writes `path` through a temporary file in the same folder that is renamed
/// over `path` only after `write` succeeded and the data reached the disk.
/// On any error the temporary file is removed and `path` is left as it was.
/// The folder is created when missing. The temporary name holds the process id
/// and a counter, so concurrent writers of one path do not share it.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write {path:?}: not a file path"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create folder {dir:?}"))?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".tmp{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);

    let result = (|| -> Result<()> {
        let mut file = File::create(&temp)
            .with_context(|| format!("cannot create temporary file {temp:?}"))?;
        write(&mut file).with_context(|| format!("writing {path:?} failed"))?;
        file.sync_all()
            .with_context(|| format!("cannot flush temporary file {temp:?}"))?;
        std::fs::rename(&temp, path).with_context(|| format!("cannot rename {temp:?} to {path:?}"))
    })();
    if result.is_err() {
        // Best effort: the error above is what matters to the caller.
        let _ = std::fs::remove_file(&temp);
    }
    result
}
