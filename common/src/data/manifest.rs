//! Download lists (`data/manifests/*.tsv`) and fetching a whole set by one.
//!
//! A manifest line is `url<TAB>sha256<TAB>bytes<TAB>path`; `#` starts a comment.
//! [`fetch_manifest`] downloads every file a few at a time under one progress bar,
//! checks each against its sha256 and size, writes it through `<file>.part` renamed
//! into place, skips files already good on a re-run and resumes `.part` files with an
//! HTTP `Range` request where the server allows it.
//!
//! # Where files go (the unpacking rule)
//!
//! 1. The folders all paths share are dropped: `seg/flower.jpg` -> `flower.jpg`,
//!    `data/membrane/train/image/0.png` -> `train/image/0.png`.
//! 2. A `.zip` at `<dir>/<Stem>.zip` is kept as `.downloads/<dir>/<Stem>.zip` and
//!    unpacked into the folder `<dir>/<Stem>/`. Entries under `<Stem>/` inside the
//!    zip keep their path (`Positive.zip` holds `Positive/pos1.jpg`); when no entry
//!    is under `<Stem>/`, all are put there. A zip mixing both is refused, and
//!    `__MACOSX/` and `.DS_Store` entries are skipped. A zip unpacks into a temp folder
//!    renamed to `<Stem>/`, so that folder, once it exists, is whole.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::data::fetch::{
    hex, inside, is_loopback, is_offline, sha256_file, HF_OFFLINE_ENV, OFFLINE_ENV,
};
use crate::Result;

/// The folder, inside a fetched set, that keeps the downloaded archives.
pub const ARCHIVE_DIR: &str = ".downloads";

/// A base URL that replaces the host of every manifest URL (a mirror keeping the paths).
pub const MIRROR_ENV: &str = "SEGKIT_MIRROR";

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub url: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    pub bytes: u64,
    /// The path in the source repository (the manifest's last column).
    pub path: String,
}

impl Entry {
    /// The URL without its `scheme://host/` (`o/r/c/f` of `https://h/o/r/c/f`): what a
    /// mirror keeps.
    pub fn url_path(&self) -> &str {
        let after_scheme = self.url.split_once("://").map_or("", |(_, rest)| rest);
        after_scheme.split_once('/').map_or("", |(_, path)| path)
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The file it was read from, for messages (`data/manifests/cmput328-flower.tsv`).
    pub file: String,
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Parses manifest `text`; `file` names it in errors (`file:line: ...`).
    pub fn parse(file: &str, text: &str) -> Result<Manifest> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", index + 1);
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let columns: Vec<&str> = line.split('\t').collect();
            let [url, sha256, bytes, path] = columns[..] else {
                bail!(
                    "{at}: expected 4 tab-separated columns (url sha256 bytes path), found {}",
                    columns.len()
                );
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("{at}: url {url:?} is not http:// or https://");
            }
            let sha256 = sha256.to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("{at}: sha256 {sha256:?} is not 64 hex digits");
            }
            let bytes: u64 = bytes
                .parse()
                .with_context(|| format!("{at}: size {bytes:?} is not a whole number of bytes"))?;
            if path.is_empty()
                || path.ends_with('/')
                || inside(Path::new(path)).is_none()
                || path.starts_with('/')
            {
                bail!("{at}: path {path:?} must be a relative file path without ..");
            }
            if entries.iter().any(|e| e.path == path) {
                bail!("{at}: path {path:?} is listed twice");
            }
            entries.push(Entry {
                url: url.to_string(),
                sha256,
                bytes,
                path: path.to_string(),
            });
        }
        if entries.is_empty() {
            bail!("{file}: the manifest lists no file");
        }
        Ok(Manifest {
            file: file.to_string(),
            entries,
        })
    }

    /// The same manifest with every URL's `scheme://host` replaced by `base`
    /// (`https://raw.githubusercontent.com/o/r/c/f` -> `<base>/o/r/c/f`): a mirror
    /// that keeps the original paths. The hashes and sizes stay, so a mirror cannot
    /// change what is accepted.
    pub fn mirrored(mut self, base: &str) -> Manifest {
        let base = base.trim_end_matches('/');
        for entry in &mut self.entries {
            entry.url = format!("{base}/{}", entry.url_path());
        }
        self
    }

    /// The sum of the listed sizes.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// The folders every path shares (`seg/`, `data/membrane/`), dropped in the set's folder.
    pub fn common_prefix(&self) -> String {
        let folders = |path: &str| -> Vec<String> {
            let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
            parts.pop();
            parts
        };
        let mut prefix = folders(&self.entries[0].path);
        for entry in &self.entries[1..] {
            let other = folders(&entry.path);
            let same = prefix
                .iter()
                .zip(&other)
                .take_while(|(a, b)| a == b)
                .count();
            prefix.truncate(same);
        }
        prefix.iter().map(|p| format!("{p}/")).collect()
    }

    /// Where `entry` lands inside the set's folder, by the rule of the module documentation:
    /// the file itself (`flower.jpg`), or for a zip the folder it unpacks to (`Positive/`).
    pub fn target(&self, entry: &Entry) -> PathBuf {
        let relative = PathBuf::from(entry.path.trim_start_matches(&self.common_prefix()));
        match zip_stem(&relative) {
            Some(stem) => relative.with_file_name(stem),
            None => relative,
        }
    }

    /// Where the downloaded file of `entry` is kept: the target itself, or for a zip
    /// `.downloads/<dir>/<Stem>.zip`.
    fn download_path(&self, entry: &Entry) -> PathBuf {
        let relative = PathBuf::from(entry.path.trim_start_matches(&self.common_prefix()));
        if zip_stem(&relative).is_some() {
            Path::new(ARCHIVE_DIR).join(relative)
        } else {
            relative
        }
    }

    /// What to tell a user who has no network: what is missing, the manifest, where the files go.
    pub fn offline_help(&self, dest_dir: &Path) -> String {
        let prefix = self.common_prefix();
        let zips = self
            .entries
            .iter()
            .filter(|e| zip_stem(Path::new(&e.path)).is_some())
            .count();
        let unpack = if zips > 0 {
            format!(", each <Name>.zip unpacked as {dest_dir:?}/<Name>/")
        } else {
            String::new()
        };
        format!(
            "{} lists the {} files ({:.1} MB) to fetch; on a machine with network run the program once, \
             or download them yourself and put each under {dest_dir:?} at its path without {prefix:?}{unpack}",
            self.file,
            self.entries.len(),
            self.total_bytes() as f64 / 1e6,
        )
    }
}

/// `Stem` for a path ending in `Stem.zip` (any case), else `None`.
fn zip_stem(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().to_string();
    let lower = name.to_ascii_lowercase();
    lower
        .ends_with(".zip")
        .then(|| name[..name.len() - 4].to_string())
        .filter(|stem| !stem.is_empty())
}

/// How [`fetch_manifest`] works.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Downloads at once.
    pub jobs: usize,
    /// Further tries of a file whose download broke off (each resumes it).
    pub retries: usize,
    /// Show the progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            jobs: 4,
            retries: 2,
            progress: true,
        }
    }
}

/// What [`fetch_manifest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Files downloaded (whole or resumed).
    pub downloaded: usize,
    /// Of those, files continued from a `.part` file with a `Range` request.
    pub resumed: usize,
    /// Files already good, not requested.
    pub skipped: usize,
    /// Zips unpacked.
    pub unpacked: usize,
}

/// Fetches every file of `manifest` into `dest_dir` (created if needed), laid out by
/// the rule of the module documentation. Offline ([`is_offline`]) only loopback URLs
/// are fetched; anything else is refused with [`Manifest::offline_help`]. On an error
/// the files already good stay, and `.part` files stay for the next run to resume.
pub fn fetch_manifest(
    manifest: &Manifest,
    dest_dir: &Path,
    options: &FetchOptions,
) -> Result<FetchReport> {
    let needed: Vec<&Entry> = manifest
        .entries
        .iter()
        .filter(|e| !is_done(manifest, e, dest_dir))
        .collect();
    let mut report = FetchReport {
        skipped: manifest.entries.len() - needed.len(),
        ..FetchReport::default()
    };
    if needed.is_empty() {
        return Ok(report);
    }
    if is_offline() && needed.iter().any(|e| !is_loopback(&e.url)) {
        bail!(
            "downloads are off ({OFFLINE_ENV} or {HF_OFFLINE_ENV} is set): {}",
            manifest.offline_help(dest_dir)
        );
    }
    std::fs::create_dir_all(dest_dir)
        .with_context(|| format!("cannot create folder {dest_dir:?}"))?;

    let total: u64 = needed.iter().map(|e| e.bytes).sum();
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if options.progress && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    let files_done = AtomicUsize::new(0);
    let show_files = |done: usize| bar.set_message(format!("{done}/{} files", needed.len()));
    show_files(0);

    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build(),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<Outcome>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, needed.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(entry) = needed.get(index) else {
                    break;
                };
                let outcome = fetch_entry(&agent, manifest, entry, dest_dir, options, &bar);
                let failed = outcome.is_err();
                if let Ok(mut all) = results.lock() {
                    all.push(outcome);
                }
                show_files(files_done.fetch_add(1, Ordering::SeqCst) + 1);
                if failed {
                    // Let the other downloads finish, but start no new one.
                    next.fetch_add(needed.len(), Ordering::SeqCst);
                }
            });
        }
    });
    bar.finish_and_clear();
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a download thread panicked"))?;
    let mut errors = Vec::new();
    for outcome in results {
        match outcome {
            Ok(outcome) => {
                report.downloaded += 1;
                report.resumed += usize::from(outcome.resumed);
                report.unpacked += usize::from(outcome.unpacked);
            }
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "fetching the set of {} into {dest_dir:?} failed: {}",
            manifest.file,
            errors.join("; ")
        );
    }
    Ok(report)
}

/// True when `entry` is in place: its file has the right hash (and, for a zip, its
/// folder exists).
fn is_done(manifest: &Manifest, entry: &Entry, dest_dir: &Path) -> bool {
    let file = dest_dir.join(manifest.download_path(entry));
    let target = dest_dir.join(manifest.target(entry));
    let good = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() == entry.bytes)
        && sha256_file(&file).is_ok_and(|hash| hash == entry.sha256);
    good && (file == target || target.is_dir())
}

struct Outcome {
    resumed: bool,
    unpacked: bool,
}

fn fetch_entry(
    agent: &ureq::Agent,
    manifest: &Manifest,
    entry: &Entry,
    dest_dir: &Path,
    options: &FetchOptions,
    bar: &ProgressBar,
) -> Result<Outcome> {
    let file = dest_dir.join(manifest.download_path(entry));
    let target = dest_dir.join(manifest.target(entry));
    let mut resumed = false;
    let good = file.is_file() && sha256_file(&file)? == entry.sha256;
    if !good {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create folder {parent:?}"))?;
        }
        let mut part = file.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut tries = 0;
        let mut restarted = false;
        let hash = loop {
            match download_part(agent, entry, &part, bar) {
                Ok((hash, from)) => {
                    resumed |= from > 0;
                    if hash == entry.sha256 {
                        break hash;
                    }
                    let _ = std::fs::remove_file(&part);
                    // A resumed file may join two versions of a file that changed
                    // upstream: try once more from the start before refusing it.
                    if from > 0 && !restarted {
                        restarted = true;
                        continue;
                    }
                    bail!(
                        "sha256 mismatch for {} ({}): expected {}, got {hash} (download deleted)",
                        entry.url,
                        entry.path,
                        entry.sha256
                    );
                }
                Err(err) if tries < options.retries && err.downcast_ref::<Broke>().is_some() => {
                    tries += 1;
                }
                Err(err) => return Err(err),
            }
        };
        debug_assert_eq!(hash, entry.sha256);
        std::fs::rename(&part, &file)
            .with_context(|| format!("cannot rename {part:?} to {file:?}"))?;
    } else {
        bar.inc(entry.bytes);
    }
    let unpacked = file != target && !target.is_dir();
    if unpacked {
        unpack_zip(&file, &target)?;
    }
    Ok(Outcome { resumed, unpacked })
}

/// A download that broke off: worth a retry that resumes it.
#[derive(Debug)]
struct Broke(String);

impl std::fmt::Display for Broke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Broke {}

/// Downloads `entry` into `part`, continuing what `part` holds with a `Range` request
/// when the server honours it; returns the sha256 of the whole file and the offset
/// it continued from (0 for a whole download).
fn download_part(
    agent: &ureq::Agent,
    entry: &Entry,
    part: &Path,
    bar: &ProgressBar,
) -> Result<(String, u64)> {
    let url = &entry.url;
    let mut have = part.metadata().map(|m| m.len()).unwrap_or(0);
    if have > entry.bytes {
        std::fs::remove_file(part).with_context(|| format!("cannot remove {part:?}"))?;
        have = 0;
    }
    let mut hasher = Sha256::new();
    if have == entry.bytes && have > 0 {
        // Complete already: hash it without a request.
        hash_into(part, &mut hasher)?;
        bar.inc(have);
        return Ok((hex(&hasher.finalize()), have));
    }
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = request
        .call()
        .map_err(|err| Broke(format!("download of {url} failed: {err}")))?;
    let status = response.status().as_u16();
    let from = match status {
        206 if have > 0 => {
            let range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {have}-")) {
                bail!("download of {url}: asked for bytes {have}- but the server sent {range:?}");
            }
            have
        }
        200 => 0,
        500..=599 => {
            return Err(Broke(format!("download of {url} failed: HTTP status {status}")).into())
        }
        _ => bail!("download of {url} failed: HTTP status {status}"),
    };
    if let Some(len) = response.body().content_length() {
        if from + len != entry.bytes {
            bail!(
                "download of {url}: the server sends {} bytes but the manifest says {}",
                from + len,
                entry.bytes
            );
        }
    }
    let mut out = if from > 0 {
        hash_into(part, &mut hasher)?;
        bar.inc(from);
        OpenOptions::new()
            .append(true)
            .open(part)
            .with_context(|| format!("cannot open {part:?}"))?
    } else {
        File::create(part).with_context(|| format!("cannot create {part:?}"))?
    };
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(entry.bytes + 1)
        .reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = from;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(read) => read,
            Err(err) => {
                out.sync_all().ok();
                return Err(Broke(format!(
                    "download of {url} broke off after {received} of {} bytes: {err}",
                    entry.bytes
                ))
                .into());
            }
        };
        if read == 0 {
            break;
        }
        received += read as u64;
        if received > entry.bytes {
            drop(out);
            let _ = std::fs::remove_file(part);
            bail!(
                "download of {url} is longer than the manifest's {} bytes",
                entry.bytes
            );
        }
        hasher.update(&buffer[..read]);
        out.write_all(&buffer[..read])
            .with_context(|| format!("cannot write {part:?}"))?;
        bar.inc(read as u64);
    }
    out.sync_all()
        .with_context(|| format!("cannot flush {part:?}"))?;
    if received != entry.bytes {
        return Err(Broke(format!(
            "download of {url} broke off after {received} of {} bytes",
            entry.bytes
        ))
        .into());
    }
    Ok((hex(&hasher.finalize()), from))
}

fn hash_into(path: &Path, hasher: &mut Sha256) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open {path:?}"))?;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {path:?}"))?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Unpacks `archive` (`<Stem>.zip`) into the folder `target` (`<Stem>/`) by the rule of
/// the module documentation, through a temp folder renamed into place.
pub fn unpack_zip(archive: &Path, target: &Path) -> Result<()> {
    let stem = target
        .file_name()
        .with_context(|| format!("unpack target {target:?} has no name"))?
        .to_string_lossy()
        .to_string();
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create folder {parent:?}"))?;
    let file = File::open(archive).with_context(|| format!("cannot open archive {archive:?}"))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{archive:?} is not a readable zip archive"))?;
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .with_context(|| format!("cannot read entry {i} of {archive:?}"))?;
        let raw = String::from_utf8_lossy(entry.name_raw()).to_string();
        let skipped = raw.starts_with("__MACOSX/") || raw.rsplit('/').next() == Some(".DS_Store");
        if skipped {
            continue;
        }
        let relative = entry
            .enclosed_name()
            .and_then(|p| inside(&p))
            .with_context(|| {
                format!("refusing entry {raw:?} of {archive:?}: it would land outside {target:?}")
            })?;
        if entry.is_symlink() {
            bail!("refusing entry {raw:?} of {archive:?}: links are not unpacked");
        }
        names.push((i, relative, entry.is_dir()));
    }
    let under_stem = |p: &Path| p.starts_with(&stem) && p != Path::new(&stem);
    let inside_count = names
        .iter()
        .filter(|(_, p, _)| under_stem(p) || p == Path::new(&stem))
        .count();
    let wrapped = if inside_count == names.len() {
        true
    } else if inside_count == 0 {
        false
    } else {
        bail!("{archive:?} holds entries both inside and outside {stem}/: refusing to guess its layout");
    };
    let temp = parent.join(format!(".{stem}.unpacking"));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).with_context(|| format!("cannot remove {temp:?}"))?;
    }
    std::fs::create_dir_all(&temp).with_context(|| format!("cannot create folder {temp:?}"))?;
    for (i, relative, is_dir) in names {
        let relative = if wrapped {
            match relative.strip_prefix(&stem) {
                Ok(rest) => rest.to_path_buf(),
                Err(_) => relative,
            }
        } else {
            relative
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let out = temp.join(&relative);
        if is_dir {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create folder {out:?}"))?;
            continue;
        }
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create folder {dir:?}"))?;
        }
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("cannot read entry {i} of {archive:?}"))?;
        let mut file = File::create(&out).with_context(|| format!("cannot create {out:?}"))?;
        std::io::copy(&mut entry, &mut file)
            .with_context(|| format!("cannot unpack {relative:?} of {archive:?}"))?;
    }
    std::fs::rename(&temp, target)
        .with_context(|| format!("cannot rename {temp:?} to {target:?}"))?;
    Ok(())
}

/// A set's manifest as a program carries it (`include_str!` of `data/manifests/<name>.tsv`).
#[derive(Debug, Clone, Copy)]
pub struct ManifestSet {
    /// The set's folder name under `data/` (`cmput328-flower`).
    pub name: &'static str,
    /// The manifest's text.
    pub text: &'static str,
}

impl ManifestSet {
    /// The manifest the program carries, its URLs pointed at `$SEGKIT_MIRROR` when
    /// that is set ([`Manifest::mirrored`]).
    pub fn manifest(&self) -> Result<Manifest> {
        let manifest = Manifest::parse(&format!("data/manifests/{}.tsv", self.name), self.text)?;
        Ok(mirrored_by_env(manifest))
    }

    /// The manifest for a download into `data`: `data/manifests/<name>.tsv` when that
    /// file exists (an edited list, another mirror or other files, needs no rebuild;
    /// messages name the file read), else [`ManifestSet::manifest`].
    pub fn manifest_for(&self, data: &Path) -> Result<Manifest> {
        let local = data.join("manifests").join(format!("{}.tsv", self.name));
        if !local.is_file() {
            return self.manifest();
        }
        let text = std::fs::read_to_string(&local)
            .with_context(|| format!("cannot read the download list {local:?}"))?;
        Ok(mirrored_by_env(Manifest::parse(
            &local.display().to_string(),
            &text,
        )?))
    }

    /// The `DataSetSpec.download` hook: fetches the set into `data/<name>/` and returns
    /// that folder, by the list [`ManifestSet::manifest_for`] gives for `data`. A new
    /// folder is built as `data/.<name>.partial/` and renamed when complete (a re-run
    /// resumes it), so `data/<name>/` is never a half set; an existing `data/<name>/`
    /// is completed in place.
    pub fn fetch(&self, data: &Path) -> Result<PathBuf> {
        let manifest = self.manifest_for(data)?;
        let dest = data.join(self.name);
        let fail = |err: anyhow::Error| {
            let help = manifest.offline_help(&dest);
            err.context(help)
        };
        if dest.is_dir() {
            fetch_manifest(&manifest, &dest, &FetchOptions::default()).map_err(fail)?;
            return Ok(dest);
        }
        let partial = data.join(format!(".{}.partial", self.name));
        eprintln!(
            "downloading {} ({} files, {:.1} MB, listed in {}) into {dest:?}",
            self.name,
            manifest.entries.len(),
            manifest.total_bytes() as f64 / 1e6,
            manifest.file
        );
        fetch_manifest(&manifest, &partial, &FetchOptions::default()).map_err(fail)?;
        std::fs::rename(&partial, &dest)
            .with_context(|| format!("cannot rename {partial:?} to {dest:?}"))?;
        Ok(dest)
    }

    /// What the banner adds when downloads are off: [`Manifest::offline_help`] for `data/<name>/`.
    pub fn offline_help(&self, data: &Path) -> String {
        match self.manifest_for(data) {
            Ok(manifest) => manifest.offline_help(&data.join(self.name)),
            Err(err) => format!("{err:#}"),
        }
    }
}

/// `manifest` with its URLs pointed at `$SEGKIT_MIRROR` when that is set.
fn mirrored_by_env(manifest: Manifest) -> Manifest {
    match std::env::var(MIRROR_ENV) {
        Ok(base) if !base.is_empty() => manifest.mirrored(&base),
        _ => manifest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_folders_own_list_is_read_before_the_built_in_one() -> Result<()> {
        let hash = "2".repeat(64);
        let set = ManifestSet {
            name: "tiny",
            text: "https://h/o/a.png\t0000000000000000000000000000000000000000000000000000000000000000\t1\ta.png\n",
        };
        let data = tempfile::tempdir()?;
        assert_eq!(set.manifest_for(data.path())?.entries[0].bytes, 1);
        let local = data.path().join("manifests/tiny.tsv");
        std::fs::create_dir_all(data.path().join("manifests"))?;
        std::fs::write(
            &local,
            format!("# edited\nhttps://m/o/b.png\t{hash}\t9\tb.png\n"),
        )?;
        let manifest = set.manifest_for(data.path())?;
        assert_eq!(manifest.file, local.display().to_string());
        assert_eq!((manifest.entries[0].bytes, manifest.entries.len()), (9, 1));
        std::fs::write(&local, "not a manifest line\n")?;
        let err = set.manifest_for(data.path()).expect_err("a bad list");
        assert!(format!("{err:#}").contains("tiny.tsv"), "{err:#}");
        Ok(())
    }

    #[test]
    fn a_mirror_keeps_paths_hashes_and_sizes() -> Result<()> {
        let hash = "1".repeat(64);
        let text = format!("https://raw.example.com/o/r/c/seg/a.png\t{hash}\t7\tseg/a.png\n");
        let manifest = Manifest::parse("t.tsv", &text)?.mirrored("http://127.0.0.1:9/m/");
        let entry = &manifest.entries[0];
        assert_eq!(entry.url, "http://127.0.0.1:9/m/o/r/c/seg/a.png");
        assert_eq!((entry.sha256.as_str(), entry.bytes), (hash.as_str(), 7));
        Ok(())
    }

    #[test]
    fn targets_follow_the_unpacking_rule() -> Result<()> {
        let hash = "0".repeat(64);
        let text = format!(
            "# url\tsha256\tbytes\tpath\n\
             https://h/a/seg/Positive.zip\t{hash}\t1\tseg/Positive.zip\n\
             https://h/a/seg/flower.jpg\t{hash}\t1\tseg/flower.jpg\n\
             https://h/a/seg/sub/x.png\t{hash}\t1\tseg/sub/x.png\n"
        );
        let manifest = Manifest::parse("t.tsv", &text)?;
        assert_eq!(manifest.common_prefix(), "seg/");
        let targets: Vec<PathBuf> = manifest
            .entries
            .iter()
            .map(|e| manifest.target(e))
            .collect();
        assert_eq!(
            targets,
            [
                PathBuf::from("Positive"),
                "flower.jpg".into(),
                "sub/x.png".into()
            ]
        );
        assert_eq!(
            manifest.download_path(&manifest.entries[0]),
            PathBuf::from(".downloads/Positive.zip")
        );
        Ok(())
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let hash = "a".repeat(64);
        for (text, needle) in [
            (
                format!("# c\nhttps://h/x\t{hash}\t1\n"),
                "t.tsv:2: expected 4",
            ),
            ("https://h/x\tzz\t1\tx\n".to_string(), "t.tsv:1: sha256"),
            (format!("https://h/x\t{hash}\tbig\tx\n"), "t.tsv:1: size"),
            (format!("https://h/x\t{hash}\t1\t../x\n"), "t.tsv:1: path"),
            (format!("ftp://h/x\t{hash}\t1\tx\n"), "t.tsv:1: url"),
            (
                format!("https://h/x\t{hash}\t1\tx\nhttps://h/y\t{hash}\t1\tx\n"),
                "t.tsv:2: path \"x\" is listed twice",
            ),
            ("# only a comment\n".to_string(), "lists no file"),
        ] {
            let err = Manifest::parse("t.tsv", &text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}
