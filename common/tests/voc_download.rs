//! `data::fetch::fetch_archive`, the PASCAL VOC 2012 path, against the test HTTP server
//! on 127.0.0.1 (`support/http.rs`) serving a small tar in the VOC layout generated
//! here: downloaded, hash-checked, resumed from a `.part` file with `Range`, extracted
//! through a temporary folder, and never left half-extracted under its final name.

#[path = "support/http.rs"]
mod http;
#[path = "support/ustar.rs"]
mod ustar;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::data::fetch::{fetch_archive, sha256_file, ArchiveSource};
use common::data::manifest::FetchOptions;
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::voc::{write_voc_layout, Split, VocDataset};
use common::data::Dataset;
use common::Result;

const INNER: &str = "VOCdevkit/VOC2012";
const TAR: &str = "toy-VOCtrainval.tar";

/// A tar of 6 generated samples in the VOC layout under `VOCdevkit/VOC2012/` (4 train, 2 val).
fn voc_tar(prefix: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let cfg = SyntheticConfig {
        n_samples: 6,
        height: 24,
        width: 32,
        n_classes: 4,
        seed: 1,
    };
    write_voc_layout(&synthetic_dataset(&cfg), dir.path(), 4)?;
    Ok(ustar::tar_of(&ustar::files_under(dir.path(), prefix)?)?)
}

fn sha256_hex(bytes: &[u8]) -> Result<String> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), bytes)?;
    sha256_file(file.path())
}

/// The server with `body` at `/voc/<TAR>` and the source naming it with `listed`'s hash and size.
fn served(body: Vec<u8>, listed: &[u8]) -> Result<(http::Server, ArchiveSource)> {
    let path = format!("voc/{TAR}");
    let server = http::serve(HashMap::from([(path.clone(), http::Route::plain(body))]))?;
    let source = ArchiveSource {
        url: server.url(&path),
        sha256: sha256_hex(listed)?,
        bytes: listed.len() as u64,
        file_name: TAR.to_string(),
    };
    Ok((server, source))
}

fn quiet() -> FetchOptions {
    FetchOptions {
        jobs: 1,
        retries: 1,
        progress: false,
    }
}

fn left_over(data: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

#[test]
fn the_tar_is_fetched_checked_kept_and_unpacked_into_place() -> Result<()> {
    let tar = voc_tar(INNER)?;
    let (server, source) = served(tar.clone(), &tar)?;
    let data = tempfile::tempdir()?;
    assert!(!source.is_downloaded(data.path()));
    let root = fetch_archive(&source, data.path(), Path::new(INNER), &quiet())?;
    assert_eq!(root, data.path().join(INNER));
    let train = VocDataset::open(&root, Split::Train)?;
    let val = VocDataset::open(&root, Split::Val)?;
    assert_eq!((train.len(), val.len()), (4, 2));
    assert_eq!(train.get(0)?.size(), (24, 32));
    // The tar stays (a re-extraction needs no download); no temp folder or .part is left.
    assert_eq!(std::fs::read(data.path().join(TAR))?, tar);
    assert!(source.is_downloaded(data.path()));
    assert_eq!(
        left_over(data.path())?,
        [data.path().join("VOCdevkit"), data.path().join(TAR)]
    );
    assert_eq!(server.requests().len(), 1);
    // A second call refuses to unpack over the set.
    let err = format!(
        "{:#}",
        fetch_archive(&source, data.path(), Path::new(INNER), &quiet()).unwrap_err()
    );
    assert!(err.contains("exists already"), "{err}");
    // With the set gone but the tar kept, it unpacks again without a request.
    std::fs::remove_dir_all(data.path().join("VOCdevkit"))?;
    fetch_archive(&source, data.path(), Path::new(INNER), &quiet())?;
    assert_eq!(server.requests().len(), 1);
    Ok(())
}

#[test]
fn a_part_file_is_resumed_with_range() -> Result<()> {
    let tar = voc_tar(INNER)?;
    let (server, source) = served(tar.clone(), &tar)?;
    let data = tempfile::tempdir()?;
    let half = tar.len() / 2;
    std::fs::write(data.path().join(format!("{TAR}.part")), &tar[..half])?;
    fetch_archive(&source, data.path(), Path::new(INNER), &quiet())?;
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(std::fs::read(data.path().join(TAR))?, tar);
    assert!(VocDataset::open(&data.path().join(INNER), Split::Train).is_ok());
    Ok(())
}

#[test]
fn a_wrong_hash_or_layout_leaves_nothing_under_the_final_name() -> Result<()> {
    // The server sends other bytes than the listed ones (same size): refused, deleted.
    let tar = voc_tar(INNER)?;
    let mut other = tar.clone();
    other[600] ^= 0xff;
    let (_server, source) = served(other, &tar)?;
    let data = tempfile::tempdir()?;
    let err = format!(
        "{:#}",
        fetch_archive(&source, data.path(), Path::new(INNER), &quiet()).unwrap_err()
    );
    assert!(
        err.contains("sha256 mismatch") && err.contains(TAR),
        "{err}"
    );
    assert!(
        left_over(data.path())?.is_empty(),
        "{:?}",
        left_over(data.path())?
    );

    // A whole tar without VOCdevkit/VOC2012/: the error names it, no set appears.
    let wrong = voc_tar("Other/Folder")?;
    let (_server, source) = served(wrong.clone(), &wrong)?;
    let data = tempfile::tempdir()?;
    let err = format!(
        "{:#}",
        fetch_archive(&source, data.path(), Path::new(INNER), &quiet()).unwrap_err()
    );
    assert!(
        err.contains("holds no folder") && err.contains(TAR),
        "{err}"
    );
    assert!(!data.path().join("VOCdevkit").exists());
    Ok(())
}
