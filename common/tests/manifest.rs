//! `data::manifest`: the project's download lists, and `fetch_manifest` against a small
//! HTTP/1.1 server on 127.0.0.1 started in the test (it honours `Range`, can hang up
//! half-way or change a file between requests, and stops by itself), serving files
//! generated here. No test touches the real network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::data::fetch::sha256_file;
use common::data::manifest::{fetch_manifest, unpack_zip, FetchOptions, Manifest, ManifestSet};
use common::Result;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` bytes that differ with `seed`.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect()
}

fn zip_of(files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        writer.start_file(*name, zip::write::SimpleFileOptions::default())?;
        writer.write_all(data)?;
    }
    Ok(writer.finish()?.into_inner())
}

/// How the server answers for one path.
#[derive(Clone)]
enum Serve {
    /// The body, honouring `Range: bytes=N-`.
    Body(Vec<u8>),
    /// The first request gets the full length announced and half the first body, then
    /// the connection closes; later requests get the second body (with `Range`).
    HalfThen(Vec<u8>, Vec<u8>),
}

/// A request the server saw: path and `Range` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    base: String,
    seen: Seen,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}

/// Serves `files` until the returned server is dropped or 60 s have passed.
fn serve(files: HashMap<String, Serve>) -> Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (seen2, stop2) = (seen.clone(), stop.clone());
    let files = Arc::new(files);
    let first_done: Arc<Mutex<Vec<String>>> = Arc::default();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (files, seen, first_done) =
                        (files.clone(), seen2.clone(), first_done.clone());
                    std::thread::spawn(move || {
                        let _ = answer(stream, &files, &seen, &first_done);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(Server { base, seen, stop })
}

fn answer(
    mut stream: std::net::TcpStream,
    files: &HashMap<String, Serve>,
    seen: &Seen,
    first_done: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    if let Ok(mut seen) = seen.lock() {
        seen.push((path.clone(), range.clone()));
    }
    let body = match files.get(&path) {
        Some(Serve::Body(body)) => body.clone(),
        Some(Serve::HalfThen(first, then)) => {
            let first_time = first_done
                .lock()
                .map(|mut done| {
                    let new = !done.contains(&path);
                    done.push(path.clone());
                    new
                })
                .unwrap_or(false);
            if first_time {
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    first.len()
                )?;
                stream.write_all(&first[..first.len() / 2])?;
                return stream.flush();
            }
            then.clone()
        }
        None => {
            return write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    match start {
        Some(start) if start < body.len() => {
            write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - 1,
                body.len(),
                body.len() - start
            )?;
            stream.write_all(&body[start..])?;
        }
        _ => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
    }
    stream.flush()
}

/// A manifest line for `path` served at `server`, with the hash and size of `content`.
fn line(server: &Server, path: &str, content: &[u8]) -> String {
    format!(
        "{}\t{}\t{}\t{path}\n",
        server.url(path),
        sha256_hex(content),
        content.len()
    )
}

/// A server with the one file `path` answered as `serve`, and its one-line manifest
/// listing `listed` (size and sha256) under `path`.
fn one_file(path: &str, serve_as: Serve, listed: &[u8]) -> Result<(Server, Manifest)> {
    let server = serve(HashMap::from([(path.to_string(), serve_as)]))?;
    let manifest = Manifest::parse("one.tsv", &line(&server, path, listed))?;
    Ok((server, manifest))
}

fn quiet(retries: usize) -> FetchOptions {
    FetchOptions {
        jobs: 4,
        retries,
        progress: false,
    }
}

#[test]
fn fetches_files_and_zips_and_a_rerun_asks_for_nothing() -> Result<()> {
    let small = bytes(1000, 1);
    let large = bytes(300_000, 2);
    let empty: Vec<u8> = Vec::new();
    let positive = zip_of(&[
        ("Positive/p1.jpg", &bytes(50, 3)),
        ("Positive/p2.jpg", &bytes(60, 4)),
    ])?;
    let loose = zip_of(&[("x.txt", b"x"), ("sub/y.txt", b"y")])?;
    let files: Vec<(&str, &[u8])> = vec![
        ("repo/set/flower.jpg", &small),
        ("repo/set/train/image/0.png", &large),
        ("repo/set/empty.txt", &empty),
        ("repo/set/Positive.zip", &positive),
        ("repo/set/Loose.zip", &loose),
    ];
    let server = serve(
        files
            .iter()
            .map(|(p, b)| (p.to_string(), Serve::Body(b.to_vec())))
            .collect(),
    )?;
    let text: String = std::iter::once("# url\tsha256\tbytes\tpath\n".to_string())
        .chain(files.iter().map(|(p, b)| line(&server, p, b)))
        .collect();
    let manifest = Manifest::parse("test.tsv", &text)?;
    assert_eq!(manifest.entries.len(), 5);
    assert_eq!(
        manifest.total_bytes(),
        files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );

    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("set");
    let report = fetch_manifest(&manifest, &dest, &quiet(0))?;
    assert_eq!(
        (report.downloaded, report.skipped, report.unpacked),
        (5, 0, 2)
    );
    // The shared prefix repo/set/ is dropped; each zip unpacks into its stem's folder.
    assert_eq!(std::fs::read(dest.join("flower.jpg"))?, small);
    assert_eq!(std::fs::read(dest.join("train/image/0.png"))?, large);
    assert_eq!(std::fs::read(dest.join("empty.txt"))?, empty);
    assert_eq!(std::fs::read(dest.join("Positive/p1.jpg"))?, bytes(50, 3));
    assert_eq!(std::fs::read(dest.join("Positive/p2.jpg"))?, bytes(60, 4));
    assert!(!dest.join("Positive/Positive").exists());
    // A zip of loose files is put under its stem.
    assert_eq!(std::fs::read(dest.join("Loose/x.txt"))?, b"x");
    assert_eq!(std::fs::read(dest.join("Loose/sub/y.txt"))?, b"y");
    // The archives are kept aside, and no temp file is left.
    assert_eq!(
        sha256_file(&dest.join(".downloads/Positive.zip"))?,
        sha256_hex(&positive)
    );
    assert!(!dest.join("Positive.zip").exists());
    let leftovers: Vec<PathBuf> = walk(&dest)?
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".part") || name.contains(".unpacking")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let asked = server.requests().len();
    assert_eq!(asked, 5);

    // A re-run finds every file good and makes no request.
    let again = fetch_manifest(&manifest, &dest, &quiet(0))?;
    assert_eq!((again.downloaded, again.skipped), (0, 5));
    assert_eq!(server.requests().len(), asked);

    // A file spoilt on disk is fetched again, and only that one.
    std::fs::write(dest.join("flower.jpg"), b"spoilt")?;
    let repaired = fetch_manifest(&manifest, &dest, &quiet(0))?;
    assert_eq!((repaired.downloaded, repaired.skipped), (1, 4));
    assert_eq!(std::fs::read(dest.join("flower.jpg"))?, small);
    assert_eq!(server.requests().len(), asked + 1);
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        }
        out.push(path);
    }
    Ok(out)
}

#[test]
fn a_wrong_hash_is_refused_and_nothing_stays() -> Result<()> {
    let content = bytes(5000, 5);
    let server = serve(HashMap::from([(
        "a/file.bin".to_string(),
        Serve::Body(content.clone()),
    )]))?;
    let text = format!(
        "{}\t{}\t{}\ta/file.bin\n",
        server.url("a/file.bin"),
        sha256_hex(b"something else"),
        content.len()
    );
    let manifest = Manifest::parse("wrong.tsv", &text)?;
    let dir = tempfile::tempdir()?;
    let err = format!(
        "{:#}",
        fetch_manifest(&manifest, dir.path(), &quiet(2))
            .err()
            .context("must fail")?
    );
    assert!(
        err.contains("sha256 mismatch") && err.contains("a/file.bin"),
        "{err}"
    );
    assert!(!dir.path().join("file.bin").exists());
    assert!(!dir.path().join("file.bin.part").exists());
    Ok(())
}

#[test]
fn a_wrong_size_is_refused() -> Result<()> {
    let content = bytes(5000, 6);
    let server = serve(HashMap::from([(
        "f.bin".to_string(),
        Serve::Body(content.clone()),
    )]))?;
    let text = format!(
        "{}\t{}\t4000\tf.bin\n",
        server.url("f.bin"),
        sha256_hex(&content)
    );
    let manifest = Manifest::parse("size.tsv", &text)?;
    let dir = tempfile::tempdir()?;
    let err = format!(
        "{:#}",
        fetch_manifest(&manifest, dir.path(), &quiet(0))
            .err()
            .context("must fail")?
    );
    assert!(err.contains("5000") && err.contains("4000"), "{err}");
    assert!(!dir.path().join("f.bin").exists());
    Ok(())
}

#[test]
fn a_server_that_stops_half_way_then_a_rerun_resumes_with_range() -> Result<()> {
    let content = bytes(200_000, 7);
    let (server, manifest) = one_file(
        "big.bin",
        Serve::HalfThen(content.clone(), content.clone()),
        &content,
    )?;
    let dir = tempfile::tempdir()?;
    // No retries: the first run fails and keeps what it got.
    let err = format!(
        "{:#}",
        fetch_manifest(&manifest, dir.path(), &quiet(0))
            .err()
            .context("must fail")?
    );
    assert!(err.contains("broke off"), "{err}");
    let part = dir.path().join("big.bin.part");
    let kept = std::fs::metadata(&part)?.len();
    assert!(kept > 0 && kept < content.len() as u64, "{kept}");
    assert!(!dir.path().join("big.bin").exists());

    let report = fetch_manifest(&manifest, dir.path(), &quiet(0))?;
    assert_eq!((report.downloaded, report.resumed), (1, 1));
    assert_eq!(std::fs::read(dir.path().join("big.bin"))?, content);
    assert!(!part.exists());
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].1, None);
    assert_eq!(requests[1].1, Some(format!("bytes={kept}-")));

    // With retries the same break is healed within one run.
    let (_server, manifest) = one_file(
        "big.bin",
        Serve::HalfThen(content.clone(), content.clone()),
        &content,
    )?;
    let dir = tempfile::tempdir()?;
    let report = fetch_manifest(&manifest, dir.path(), &quiet(2))?;
    assert_eq!((report.downloaded, report.resumed), (1, 1));
    assert_eq!(std::fs::read(dir.path().join("big.bin"))?, content);
    Ok(())
}

#[test]
fn a_file_that_changes_mid_way_is_refused() -> Result<()> {
    let before = bytes(100_000, 8);
    let after = bytes(100_000, 9);
    let (server, manifest) = one_file(
        "moving.bin",
        Serve::HalfThen(before.clone(), after),
        &before,
    )?;
    let dir = tempfile::tempdir()?;
    let err = format!(
        "{:#}",
        fetch_manifest(&manifest, dir.path(), &quiet(2))
            .err()
            .context("must fail")?
    );
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!dir.path().join("moving.bin").exists());
    assert!(!dir.path().join("moving.bin.part").exists());
    // It resumed once (the spliced file fails its hash), then tried once from the start.
    let ranges: Vec<Option<String>> = server.requests().into_iter().map(|(_, r)| r).collect();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert!(ranges[1].is_some() && ranges[2].is_none(), "{ranges:?}");
    Ok(())
}

#[test]
fn offline_refuses_with_the_manifest_and_the_place_to_put_files() -> Result<()> {
    let text = format!(
        "https://example.invalid/seg/a.zip\t{}\t10\tseg/a.zip\n",
        "0".repeat(64)
    );
    let set = ManifestSet {
        name: "toy-set",
        text: Box::leak(text.into_boxed_str()),
    };
    let dir = tempfile::tempdir()?;
    // Other tests of this binary only fetch from 127.0.0.1, which offline mode allows.
    std::env::set_var("SEGKIT_OFFLINE", "1");
    let result = set.fetch(dir.path());
    std::env::remove_var("SEGKIT_OFFLINE");
    let err = format!("{:#}", result.err().context("must fail")?);
    assert!(err.contains("downloads are off"), "{err}");
    assert!(err.contains("data/manifests/toy-set.tsv"), "{err}");
    assert!(
        err.contains(&format!("{:?}", dir.path().join("toy-set"))),
        "{err}"
    );
    assert!(
        err.contains("a.zip unpacked") || err.contains(".zip unpacked"),
        "{err}"
    );
    assert!(!dir.path().join("toy-set").exists());
    Ok(())
}

#[test]
fn a_zip_mixing_its_folder_and_loose_files_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("Mixed.zip");
    std::fs::write(
        &archive,
        zip_of(&[
            ("Mixed/a.txt", b"a"),
            ("b.txt", b"b"),
            ("__MACOSX/._a", b""),
        ])?,
    )?;
    let err = format!(
        "{:#}",
        unpack_zip(&archive, &dir.path().join("Mixed"))
            .err()
            .context("must fail")?
    );
    assert!(err.contains("both inside and outside"), "{err}");
    assert!(!dir.path().join("Mixed").exists());
    Ok(())
}

/// The project's manifests, as the programs embed them.
const FLOWER: &str = include_str!("../../data/manifests/cmput328-flower.tsv");
const ISBI: &str = include_str!("../../data/manifests/isbi2012-membrane.tsv");
const CAMVID: &str = include_str!("../../data/manifests/camvid-segnet.tsv");

#[test]
fn the_project_manifests_parse_and_lay_out_the_sets() -> Result<()> {
    let flower = Manifest::parse("cmput328-flower.tsv", FLOWER)?;
    let isbi = Manifest::parse("isbi2012-membrane.tsv", ISBI)?;
    let camvid = Manifest::parse("camvid-segnet.tsv", CAMVID)?;
    assert_eq!(
        (
            flower.entries.len(),
            isbi.entries.len(),
            camvid.entries.len()
        ),
        (5, 90, 1405)
    );
    // The layout data/README.md gives, and the programs read.
    let mut targets: Vec<PathBuf> = flower.entries.iter().map(|e| flower.target(e)).collect();
    targets.sort();
    let expected: Vec<PathBuf> = [
        "Negative",
        "Positive",
        "TrainingImages",
        "TrainingLabels",
        "flower.jpg",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(targets, expected);
    let isbi_targets: Vec<PathBuf> = isbi.entries.iter().map(|e| isbi.target(e)).collect();
    for i in 0..30 {
        for path in [
            format!("train/image/{i}.png"),
            format!("train/label/{i}.png"),
            format!("test/{i}.png"),
        ] {
            assert!(isbi_targets.contains(&PathBuf::from(&path)), "{path}");
        }
    }
    assert_eq!(camvid.common_prefix(), "CamVid/");
    Ok(())
}

#[test]
fn the_shared_byte_copies_match_the_manifests() -> Result<()> {
    for (name, text, expected) in [
        ("isbi2012-membrane", ISBI, 90usize),
        ("cmput328-flower", FLOWER, 1),
    ] {
        let Some(root) = common::data::shared_data_set(name) else {
            eprintln!("skipped: the sha256 check of {name}'s shared copy");
            continue;
        };
        let manifest = Manifest::parse(name, text)?;
        let mut checked = 0;
        for entry in &manifest.entries {
            let file = root.join(manifest.target(entry));
            if !file.is_file() {
                continue; // zips are unpacked into folders: not byte copies
            }
            assert_eq!(sha256_file(&file)?, entry.sha256, "{file:?}");
            assert_eq!(std::fs::metadata(&file)?.len(), entry.bytes, "{file:?}");
            checked += 1;
        }
        assert_eq!(checked, expected, "{name}");
    }
    Ok(())
}

#[test]
fn the_download_hook_builds_the_set_aside_and_renames_it_when_whole() -> Result<()> {
    let jpg = bytes(700, 10);
    let positive = zip_of(&[("Positive/pos1.jpg", &bytes(40, 11))])?;
    let broken = bytes(150_000, 12);
    let files: Vec<(&str, Serve)> = vec![
        ("seg/flower.jpg", Serve::Body(jpg.clone())),
        ("seg/Positive.zip", Serve::Body(positive.clone())),
        (
            "seg/big.bin",
            Serve::HalfThen(broken.clone(), broken.clone()),
        ),
    ];
    let server = serve(files.into_iter().map(|(p, s)| (p.to_string(), s)).collect())?;
    let text = format!(
        "{}{}{}",
        line(&server, "seg/flower.jpg", &jpg),
        line(&server, "seg/Positive.zip", &positive),
        line(&server, "seg/big.bin", &broken)
    );
    let set = ManifestSet {
        name: "toy-flower",
        text: Box::leak(text.into_boxed_str()),
    };
    let data = tempfile::tempdir()?;
    // The hook retries a broken download (resuming it), so one call gives the whole set.
    let root = set.fetch(data.path())?;
    assert_eq!(root, data.path().join("toy-flower"));
    assert_eq!(std::fs::read(root.join("flower.jpg"))?, jpg);
    assert_eq!(
        std::fs::read(root.join("Positive/pos1.jpg"))?,
        bytes(40, 11)
    );
    assert_eq!(std::fs::read(root.join("big.bin"))?, broken);
    assert!(!data.path().join(".toy-flower.partial").exists());
    // A missing file of an existing set is fetched in place; the rest is not asked for.
    std::fs::remove_file(root.join("flower.jpg"))?;
    let asked = server.requests().len();
    assert_eq!(set.fetch(data.path())?, root);
    assert_eq!(std::fs::read(root.join("flower.jpg"))?, jpg);
    assert_eq!(server.requests().len(), asked + 1);
    Ok(())
}
