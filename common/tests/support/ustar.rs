//! A minimal tar (ustar) writer for download tests: regular files only, names up to
//! 100 bytes. Std only, so any crate's tests can include it with
//! `#[path = ".../support/ustar.rs"] mod ustar;`.
#![allow(dead_code)]

use std::path::Path;

/// A tar archive of `files` (`name`, `content`), folders implied by the names.
pub fn tar_of(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for (name, content) in files {
        out.extend_from_slice(&header(name, content.len())?);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // The end of the archive: two zero blocks.
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// Every file under `dir`, named `prefix/<path inside dir>`, sorted.
pub fn files_under(dir: &Path, prefix: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            let name = format!("{prefix}/{}", relative.to_string_lossy());
            files.push((name, std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

/// The 512-byte ustar header of a regular file.
fn header(name: &str, size: usize) -> std::io::Result<[u8; 512]> {
    if name.len() > 100 {
        return Err(std::io::Error::other(format!(
            "tar name {name:?} is over 100 bytes"
        )));
    }
    let mut block = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| block[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(block)
}
