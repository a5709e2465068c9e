//! Downloads (progress bar, sha256 check, atomic rename) and archive extraction
//! (.zip, .tar, .tar.gz/.tgz). With `common::weights`, the only code that touches
//! the network.
//!
//! A download streams into `<dest>.part` and is renamed to `dest` only when it is
//! complete and its hash matches, so a file under the final name is always whole.
//! [`fetch_archive`] does the same for one large archive (resuming it, through
//! `common::data::manifest`) and unpacks it through a temporary folder renamed into
//! place, so a set is never half-extracted under its final name.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::Result;

/// Environment variable that forbids downloads when set to `1` (or `true`, `yes`, `on`).
pub const OFFLINE_ENV: &str = "SEGKIT_OFFLINE";
/// The Hugging Face variable with the same meaning, honoured too.
pub const HF_OFFLINE_ENV: &str = "HF_HUB_OFFLINE";

/// True when a flag value means "on": `1`, `true`, `yes` or `on`, any case.
fn flag_is_set(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// True when `SEGKIT_OFFLINE` or `HF_HUB_OFFLINE` asks for no network access.
pub fn is_offline() -> bool {
    [OFFLINE_ENV, HF_OFFLINE_ENV]
        .iter()
        .any(|name| flag_is_set(std::env::var(name).ok().as_deref()))
}

/// True for a URL on this machine (`localhost`, `127.x.x.x`, `[::1]`): reaching it
/// is not network access, so offline mode allows it (tests serve files that way).
pub(crate) fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {path:?} to hash it"))?;
    let mut reader = BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = reader
            .read(&mut buffer)
            .with_context(|| format!("cannot read {path:?}"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `dest` with `.part` appended to its file name.
fn part_path(dest: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .with_context(|| format!("download destination {dest:?} has no file name"))?;
    let mut part = name.to_os_string();
    part.push(".part");
    Ok(dest.with_file_name(part))
}

/// Downloads `url` to `dest` and returns `dest`.
///
/// With a progress bar (bytes, rate, ETA) on stderr; streams into `<dest>.part`
/// and renames it to `dest` when complete. With `sha256` (64 hex digits) the file
/// must have that hash: on a mismatch the part file is deleted and the error gives
/// both hashes. When `dest` already exists it is reused if it has the expected hash
/// (or if no hash is given), and downloaded again otherwise. Refuses to use the
/// network when [`is_offline`] is true (loopback URLs are still allowed).
pub fn download(url: &str, dest: &Path, sha256: Option<&str>) -> Result<PathBuf> {
    download_impl(url, dest, sha256, is_offline())
}

fn download_impl(url: &str, dest: &Path, sha256: Option<&str>, offline: bool) -> Result<PathBuf> {
    let expected = match sha256 {
        Some(hash) => {
            let hash = hash.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                anyhow::bail!(
                    "expected sha256 for {url} must be 64 hex digits, got {:?}",
                    sha256.unwrap_or_default()
                );
            }
            Some(hash)
        }
        None => None,
    };
    if dest.is_file() {
        match &expected {
            None => return Ok(dest.to_path_buf()),
            Some(hash) if sha256_file(dest)? == *hash => return Ok(dest.to_path_buf()),
            Some(_) => eprintln!("{dest:?} exists but its sha256 differs: downloading it again"),
        }
    }
    if offline && !is_loopback(url) {
        anyhow::bail!(
            "offline ({OFFLINE_ENV} or {HF_OFFLINE_ENV} is set): cannot download {url} to {dest:?}; \
             fetch it on a machine with network and put it there"
        );
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {parent:?} for {url}"))?;
    }
    let part = part_path(dest)?;
    let result = fetch_to(url, &part);
    let actual = match result {
        Ok(actual) => actual,
        Err(err) => {
            let _ = std::fs::remove_file(&part);
            return Err(err);
        }
    };
    if let Some(hash) = &expected {
        if actual != *hash {
            let _ = std::fs::remove_file(&part);
            anyhow::bail!(
                "sha256 mismatch for {url}: expected {hash}, got {actual} (download deleted)"
            );
        }
    }
    if let Err(err) = std::fs::rename(&part, dest) {
        let _ = std::fs::remove_file(&part);
        anyhow::bail!("cannot rename {part:?} to {dest:?}: {err}");
    }
    Ok(dest.to_path_buf())
}

/// Streams `url` into `part` with a progress bar; returns the sha256 of the bytes.
fn fetch_to(url: &str, part: &Path) -> Result<String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build(),
    );
    let mut response = agent.get(url).call().map_err(|err| match err {
        ureq::Error::StatusCode(status) => {
            anyhow::anyhow!("download of {url} failed: HTTP status {status}")
        }
        other => anyhow::anyhow!("download of {url} failed: {other}"),
    })?;
    let total = response.body().content_length();
    let bar = match total {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )?
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        )?),
    };
    bar.set_message(
        part.file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".part").to_string())
            .unwrap_or_default(),
    );

    let mut file = File::create(part).with_context(|| format!("cannot create {part:?}"))?;
    let mut reader = response.body_mut().as_reader();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let read = reader
            .read(&mut buffer)
            .with_context(|| format!("download of {url} broke off after {received} bytes"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .with_context(|| format!("cannot write {part:?}"))?;
        received += read as u64;
        bar.inc(read as u64);
    }
    bar.finish_and_clear();
    if let Some(len) = total {
        if received != len {
            anyhow::bail!("download of {url} ended after {received} of {len} bytes");
        }
    }
    file.sync_all()
        .with_context(|| format!("cannot flush {part:?}"))?;
    Ok(hex(&hasher.finalize()))
}

/// Extracts a `.zip`, `.tar`, `.tar.gz` or `.tgz` archive into the folder `into`
/// (created if needed). Refuses entries that would land outside `into` (absolute
/// paths, `..`) and link entries.
pub fn extract(archive: &Path, into: &Path) -> Result<()> {
    /// The archive kinds, told apart by the file name.
    enum Kind {
        Zip,
        Tar,
        TarGz,
    }
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let kind = if name.ends_with(".zip") {
        Kind::Zip
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Kind::TarGz
    } else if name.ends_with(".tar") {
        Kind::Tar
    } else {
        anyhow::bail!(
            "cannot extract {archive:?}: unknown archive type (use .zip, .tar, .tar.gz or .tgz)"
        )
    };
    let file = File::open(archive).with_context(|| format!("cannot open archive {archive:?}"))?;
    std::fs::create_dir_all(into).with_context(|| format!("cannot create folder {into:?}"))?;
    match kind {
        Kind::Zip => extract_zip(file, archive, into),
        Kind::TarGz => {
            let decoder = flate2::read::GzDecoder::new(BufReader::new(file));
            extract_tar(decoder, archive, into)
        }
        Kind::Tar => extract_tar(BufReader::new(file), archive, into),
    }
}

/// One archive that holds a data set (PASCAL VOC's tar): where it is, its size and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSource {
    pub url: String,
    /// 64 hex digits.
    pub sha256: String,
    pub bytes: u64,
    /// The archive's file name in the data folder (`VOCtrainval_11-May-2012.tar`).
    pub file_name: String,
}

impl ArchiveSource {
    /// `data/<file_name>`: where the archive is kept.
    pub fn archive_path(&self, data: &Path) -> PathBuf {
        data.join(&self.file_name)
    }

    /// True when the archive is already in `data` at its full size (its hash is checked
    /// before use).
    pub fn is_downloaded(&self, data: &Path) -> bool {
        self.archive_path(data)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() == self.bytes)
    }
}

/// Downloads `source` into `data/<file_name>` (one progress bar; resumed from a
/// `.part` file with a `Range` request, retried when it breaks off, sha256- and
/// size-checked: the code of `common::data::manifest`), keeps it there, then extracts
/// it into `data/.<file_name>.extracting/` and renames the folder `inner` of it
/// (`VOCdevkit/VOC2012`) to `data/<inner>`, which it returns. An archive already
/// whole in `data` is not fetched again.
pub fn fetch_archive(
    source: &ArchiveSource,
    data: &Path,
    inner: &Path,
    options: &crate::data::manifest::FetchOptions,
) -> Result<PathBuf> {
    use crate::data::manifest::{fetch_manifest, Manifest};
    let final_dir = data.join(inner);
    if final_dir.exists() {
        anyhow::bail!(
            "cannot unpack {} into {final_dir:?}: it exists already",
            source.file_name
        );
    }
    let line = format!(
        "{}\t{}\t{}\t{}\n",
        source.url, source.sha256, source.bytes, source.file_name
    );
    let manifest = Manifest::parse(&source.url, &line)?;
    fetch_manifest(&manifest, data, options)?;
    let archive = source.archive_path(data);
    let temp = data.join(format!(".{}.extracting", source.file_name));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).with_context(|| format!("cannot remove {temp:?}"))?;
    }
    extract(&archive, &temp)?;
    let unpacked = temp.join(inner);
    if !unpacked.is_dir() {
        anyhow::bail!("{archive:?} holds no folder {inner:?}: it is not the archive expected");
    }
    if let Some(parent) = final_dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {parent:?}"))?;
    }
    std::fs::rename(&unpacked, &final_dir)
        .with_context(|| format!("cannot rename {unpacked:?} to {final_dir:?}"))?;
    std::fs::remove_dir_all(&temp).with_context(|| format!("cannot remove {temp:?}"))?;
    Ok(final_dir)
}

/// `relative` as a path inside the target folder, or `None` when it would leave it.
pub(crate) fn inside(relative: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

fn extract_zip(file: File, archive: &Path, into: &Path) -> Result<()> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{archive:?} is not a readable zip archive"))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("cannot read entry {i} of {archive:?}"))?;
        let raw_name = String::from_utf8_lossy(entry.name_raw()).to_string();
        let relative = entry
            .enclosed_name()
            .and_then(|p| inside(&p))
            .with_context(|| {
                format!(
                    "refusing entry {raw_name:?} of {archive:?}: it would land outside {into:?}"
                )
            })?;
        if entry.is_symlink() {
            anyhow::bail!("refusing entry {raw_name:?} of {archive:?}: links are not extracted");
        }
        let target = into.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("cannot create folder {target:?}"))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create folder {parent:?}"))?;
        }
        let mut out = File::create(&target).with_context(|| format!("cannot create {target:?}"))?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| format!("cannot extract {raw_name:?} of {archive:?} to {target:?}"))?;
    }
    Ok(())
}

fn extract_tar(reader: impl Read, archive: &Path, into: &Path) -> Result<()> {
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .with_context(|| format!("{archive:?} is not a readable tar archive"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("cannot read an entry of {archive:?}"))?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let path = entry
            .path()
            .with_context(|| format!("entry {raw_name:?} of {archive:?} has a bad path"))?
            .to_path_buf();
        if inside(&path).is_none() {
            anyhow::bail!(
                "refusing entry {raw_name:?} of {archive:?}: it would land outside {into:?}"
            );
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            anyhow::bail!("refusing entry {raw_name:?} of {archive:?}: links are not extracted");
        }
        let unpacked = entry
            .unpack_in(into)
            .with_context(|| format!("cannot extract {raw_name:?} of {archive:?} into {into:?}"))?;
        if !unpacked {
            anyhow::bail!(
                "refusing entry {raw_name:?} of {archive:?}: it would land outside {into:?}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_flag_values() {
        assert!(flag_is_set(Some("1")));
        assert!(flag_is_set(Some(" TRUE ")));
        assert!(!flag_is_set(Some("0")));
        assert!(!flag_is_set(Some("")));
        assert!(!flag_is_set(None));
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback("http://127.0.0.1:8080/a.zip"));
        assert!(is_loopback("http://LOCALHOST/a.zip"));
        assert!(is_loopback("http://user@[::1]:80/a"));
        assert!(!is_loopback("https://example.com/127.0.0.1"));
        assert!(!is_loopback("https://localhost.example.com/a"));
    }

    #[test]
    fn offline_download_is_refused_without_touching_the_network() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("file.bin");
        let err = download_impl("https://example.invalid/file.bin", &dest, None, true)
            .err()
            .context("offline download must fail")?
            .to_string();
        assert!(err.contains("offline") && err.contains("file.bin"), "{err}");
        assert!(!dest.exists());
        Ok(())
    }
}
