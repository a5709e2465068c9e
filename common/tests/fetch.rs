//! Tests of `common::data::fetch` against a tiny HTTP/1.1 server on 127.0.0.1
//! started inside the test, and archives built in the test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::data::fetch::{download, extract, sha256_file};
use common::Result;
use sha2::{Digest, Sha256};

/// The body served at `/data.bin`: about 200 KB, so it comes in several reads.
fn body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves `/data.bin` (200), `/short.bin` (announces the whole body, sends half, hangs
/// up) and 404 for anything else; returns the base URL and a request counter.
fn serve() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = answer(stream);
            });
        }
    });
    Ok((base, hits))
}

fn answer(mut stream: std::net::TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let body = body();
    match path {
        "/data.bin" => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        "/short.bin" => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body[..body.len() / 2])?;
        }
        _ => {
            let text = b"not found";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                text.len()
            )?;
            stream.write_all(text)?;
        }
    }
    stream.flush()
}

fn part_of(dest: &Path) -> std::path::PathBuf {
    dest.with_file_name(format!(
        "{}.part",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ))
}

fn error_text(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn download_with_correct_hash_then_reuses_the_file() -> Result<()> {
    let (base, hits) = serve()?;
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("sub/data.bin");
    let hash = sha256_hex(&body());
    let url = format!("{base}/data.bin");
    let got = download(&url, &dest, Some(&hash.to_uppercase()))?;
    assert_eq!(got, dest);
    assert_eq!(std::fs::read(&dest)?, body());
    assert!(!part_of(&dest).exists(), "the part file must be renamed");
    assert_eq!(sha256_file(&dest)?, hash);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Present with the right hash, or with no hash asked: no new request.
    download(&url, &dest, Some(&hash))?;
    download(&url, &dest, None)?;
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Present but damaged: fetched again.
    std::fs::write(&dest, b"damaged")?;
    download(&url, &dest, Some(&hash))?;
    assert_eq!(std::fs::read(&dest)?, body());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    Ok(())
}

#[test]
fn wrong_hash_deletes_the_download_and_names_both_hashes() -> Result<()> {
    let (base, _) = serve()?;
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("data.bin");
    let wrong = "0".repeat(64);
    let url = format!("{base}/data.bin");
    let err = error_text(download(&url, &dest, Some(&wrong)));
    assert_eq!(
        err,
        format!(
            "sha256 mismatch for {url}: expected {wrong}, got {} (download deleted)",
            sha256_hex(&body())
        )
    );
    assert!(!dest.exists() && !part_of(&dest).exists());
    Ok(())
}

#[test]
fn http_and_network_errors_name_the_url_and_leave_no_file() -> Result<()> {
    let (base, _) = serve()?;
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("x.bin");

    let url = format!("{base}/missing.bin");
    assert_eq!(
        error_text(download(&url, &dest, None)),
        format!("download of {url} failed: HTTP status 404")
    );
    assert!(!dest.exists() && !part_of(&dest).exists());

    // The server announces 200 KB and hangs up after 100 KB.
    let url = format!("{base}/short.bin");
    let err = error_text(download(&url, &dest, None));
    eprintln!("truncated download: {err}");
    assert!(err.starts_with(&format!("download of {url} ")), "{err}");
    assert!(!dest.exists() && !part_of(&dest).exists());

    // Nothing listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}/data.bin");
    let err = error_text(download(&url, &dest, None));
    eprintln!("refused connection: {err}");
    assert!(
        err.starts_with(&format!("download of {url} failed: ")),
        "{err}"
    );
    assert!(!dest.exists() && !part_of(&dest).exists());

    // A folder in the way of the final name: error, and no part file left behind.
    let url = format!("{base}/data.bin");
    let folder = dir.path().join("taken");
    std::fs::create_dir(&folder)?;
    let err = error_text(download(&url, &folder, None));
    eprintln!("folder in the way: {err}");
    assert!(err.starts_with("cannot rename"), "{err}");
    assert!(folder.is_dir() && !part_of(&folder).exists());

    // A malformed expected hash is refused before any request.
    let err = error_text(download(&url, &dest, Some("abc")));
    assert_eq!(
        err,
        format!("expected sha256 for {url} must be 64 hex digits, got \"abc\"")
    );
    Ok(())
}

fn write_zip(path: &Path, entries: &[(&str, &[u8])]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let options = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        if name.ends_with('/') {
            zip.add_directory(*name, options)?;
        } else {
            zip.start_file(*name, options)?;
            zip.write_all(data)?;
        }
    }
    zip.finish()?;
    Ok(())
}

fn tar_bytes(entries: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        // Write the name raw: `set_path` refuses `..`, and the escape test needs one.
        let field = &mut header.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data)?;
    }
    Ok(builder.into_inner()?)
}

#[test]
fn extracts_zip_tar_and_tar_gz() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let entries: [(&str, &[u8]); 3] = [
        ("set/images/a.txt", b"alpha"),
        ("set/masks/", b""),
        ("set/b.txt", b"bravo"),
    ];
    let zip_path = dir.path().join("set.zip");
    write_zip(&zip_path, &entries)?;
    extract(&zip_path, &dir.path().join("from_zip"))?;

    let files: [(&str, &[u8]); 2] = [("set/images/a.txt", b"alpha"), ("set/b.txt", b"bravo")];
    let tar = tar_bytes(&files)?;
    let tar_path = dir.path().join("set.tar");
    std::fs::write(&tar_path, &tar)?;
    extract(&tar_path, &dir.path().join("from_tar"))?;
    for name in ["set.tar.gz", "set.tgz"] {
        let path = dir.path().join(name);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)?;
        std::fs::write(&path, gz.finish()?)?;
        extract(&path, &dir.path().join(format!("from_{name}")))?;
    }

    for folder in ["from_zip", "from_tar", "from_set.tar.gz", "from_set.tgz"] {
        let root = dir.path().join(folder);
        assert_eq!(
            std::fs::read(root.join("set/images/a.txt"))?,
            b"alpha",
            "{folder}"
        );
        assert_eq!(std::fs::read(root.join("set/b.txt"))?, b"bravo", "{folder}");
    }
    assert!(dir.path().join("from_zip/set/masks").is_dir());
    Ok(())
}

#[test]
fn refuses_entries_that_escape_the_target() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let into = dir.path().join("out");

    let zip_path = dir.path().join("evil.zip");
    write_zip(
        &zip_path,
        &[("ok.txt", b"fine"), ("../evil.txt", b"gotcha")],
    )?;
    let err = error_text(extract(&zip_path, &into));
    assert_eq!(
        err,
        format!("refusing entry \"../evil.txt\" of {zip_path:?}: it would land outside {into:?}")
    );

    let tar_path = dir.path().join("evil.tar");
    std::fs::write(&tar_path, tar_bytes(&[("../evil.txt", b"gotcha")])?)?;
    let err = error_text(extract(&tar_path, &into));
    assert_eq!(
        err,
        format!("refusing entry \"../evil.txt\" of {tar_path:?}: it would land outside {into:?}")
    );
    assert!(!dir.path().join("evil.txt").exists());
    Ok(())
}

#[test]
fn bad_archives_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let into = dir.path().join("out");

    let rar = dir.path().join("set.rar");
    std::fs::write(&rar, b"Rar!")?;
    assert_eq!(
        error_text(extract(&rar, &into)),
        format!("cannot extract {rar:?}: unknown archive type (use .zip, .tar, .tar.gz or .tgz)")
    );

    let fake_zip = dir.path().join("fake.zip");
    std::fs::write(&fake_zip, b"this is not a zip file")?;
    let err = error_text(extract(&fake_zip, &into));
    eprintln!("fake zip: {err}");
    assert!(
        err.starts_with(&format!("{fake_zip:?} is not a readable zip archive")),
        "{err}"
    );

    let missing = dir.path().join("missing.tar.gz");
    let fresh = dir.path().join("fresh");
    let err = error_text(extract(&missing, &fresh));
    eprintln!("missing archive: {err}");
    assert!(
        err.starts_with(&format!("cannot open archive {missing:?}")),
        "{err}"
    );
    assert!(!fresh.exists(), "nothing is created for a missing archive");
    Ok(())
}
