//! `common::weights` through the real `hf-hub` client against a small hub on
//! 127.0.0.1 started in each test (`support/http.rs`): the download, the cache layout
//! it leaves (`blobs/`, `snapshots/<commit>/`, `refs/main`), no request for a cached
//! file or when offline, and truncated or wrong files refused. No test touches the
//! real network or reads the environment (settings are passed explicitly).

#[path = "support/http.rs"]
mod http;

use std::collections::HashMap;
use std::path::Path;

use common::weights::{
    check_weights, hub_weights, resolve_weights, HubFile, HubLookup, HubSettings, WeightsOrigin,
};
use common::Result;
use http::{etag_of, Route, Server};

const REPO: &str = "org/tiny-net";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A safetensors file with `conv.weight (2, 1, 3, 3)` and `conv.bias (2)` (f32).
fn tiny_weights() -> Result<Vec<u8>> {
    let weight: Vec<u8> = (0..18).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let bias: Vec<u8> = [0.5f32, -0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let views = [
        ("conv.weight", vec![2, 1, 3, 3], weight),
        ("conv.bias", vec![2], bias),
    ];
    let views: Vec<_> = views
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
            view.map(|v| (name.to_string(), v))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(safetensors::serialize(views, None)?)
}

/// The tensors the tiny model expects.
fn expected() -> Vec<(String, Vec<usize>)> {
    vec![
        ("conv.weight".into(), vec![2, 1, 3, 3]),
        ("conv.bias".into(), vec![2]),
    ]
}

fn hub_file() -> HubFile {
    HubFile::new(REPO, "model.safetensors")
}

/// A hub that serves `body` as `REPO`'s `model.safetensors` at `main`.
fn hub_serving(body: Vec<u8>) -> Result<Server> {
    let path = format!("{REPO}/resolve/main/model.safetensors");
    Ok(http::serve(HashMap::from([(
        path,
        Route::hub(body, COMMIT),
    )]))?)
}

/// The file a look-up found, or an error with the reason it was unavailable.
fn found(lookup: HubLookup) -> Result<(std::path::PathBuf, WeightsOrigin)> {
    match lookup {
        HubLookup::Found(resolved) => Ok((resolved.path, resolved.origin)),
        HubLookup::Unavailable(why) => anyhow::bail!("unavailable: {why}"),
    }
}

#[test]
fn downloads_once_into_the_hub_cache_layout() -> Result<()> {
    let body = tiny_weights()?;
    let server = hub_serving(body.clone())?;
    let cache = tempfile::tempdir()?;
    let settings = HubSettings::new(cache.path(), server.base());

    let (path, origin) = found(hub_weights(&hub_file(), &expected(), &settings)?)?;
    assert_eq!(origin, WeightsOrigin::HubDownload);
    assert_eq!(std::fs::read(&path)?, body);

    // hf-hub's layout: refs/main = the commit, snapshots/<commit>/<file> -> blobs/<etag>.
    let folder = cache.path().join("models--org--tiny-net");
    assert_eq!(std::fs::read_to_string(folder.join("refs/main"))?, COMMIT);
    let snapshot = folder
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(path, snapshot);
    assert!(snapshot.symlink_metadata()?.file_type().is_symlink());
    let blob = folder.join("blobs").join(etag_of(&body));
    assert_eq!(std::fs::read(&blob)?, body);
    assert_eq!(
        std::fs::canonicalize(&snapshot)?,
        std::fs::canonicalize(&blob)?
    );

    // The client asked for the metadata (first byte), then the file from byte 0,
    // with no token.
    let requests = server.requests();
    let ranges: Vec<_> = requests.iter().map(|r| r.range.as_deref()).collect();
    assert_eq!(ranges, [Some("bytes=0-0"), Some("bytes=0-")]);
    let url_path = format!("{REPO}/resolve/main/model.safetensors");
    assert!(requests
        .iter()
        .all(|r| r.method == "GET" && r.path == url_path));
    assert!(requests.iter().all(|r| r.authorization.is_none()));

    // A second look-up, online or offline, is answered by the cache alone.
    let (again, origin) = found(hub_weights(&hub_file(), &expected(), &settings)?)?;
    assert_eq!((again, origin), (snapshot.clone(), WeightsOrigin::HubCache));
    let offline = HubSettings {
        offline: true,
        ..settings
    };
    let (again, origin) = found(hub_weights(&hub_file(), &expected(), &offline)?)?;
    assert_eq!((again, origin), (snapshot, WeightsOrigin::HubCache));
    assert_eq!(server.requests().len(), 2, "no request for a cached file");
    Ok(())
}

#[test]
fn offline_makes_no_request_and_says_why() -> Result<()> {
    let server = hub_serving(tiny_weights()?)?;
    let cache = tempfile::tempdir()?;
    let settings = HubSettings {
        offline: true,
        ..HubSettings::new(cache.path(), server.base())
    };
    let HubLookup::Unavailable(why) = hub_weights(&hub_file(), &expected(), &settings)? else {
        anyhow::bail!("offline with an empty cache found a file");
    };
    assert!(
        why.contains(REPO) && why.contains("HF_HUB_OFFLINE"),
        "{why}"
    );
    assert!(why.contains(&format!("{:?}", cache.path())), "{why}");
    let err = resolve_weights(None, &hub_file(), &expected(), &settings).unwrap_err();
    assert!(format!("{err:#}").contains("--weights"), "{err:#}");
    assert!(server.requests().is_empty(), "offline touched the server");
    assert!(!cache.path().join("models--org--tiny-net").exists());
    Ok(())
}

#[test]
fn a_file_the_hub_lacks_is_unavailable() -> Result<()> {
    let server = hub_serving(tiny_weights()?)?;
    let cache = tempfile::tempdir()?;
    let settings = HubSettings::new(cache.path(), server.base());
    let missing = HubFile::new("org/other-net", "model.safetensors");
    let HubLookup::Unavailable(why) = hub_weights(&missing, &expected(), &settings)? else {
        anyhow::bail!("a file the server does not have was found");
    };
    assert!(
        why.contains("org/other-net/resolve/main/model.safetensors") && why.contains("404"),
        "{why}"
    );
    Ok(())
}

/// Fetching `body` is refused with an error containing every one of `words`, and
/// the cache no longer offers the file, so a later run downloads it again.
fn assert_refused(body: Vec<u8>, words: &[&str]) -> Result<()> {
    let server = hub_serving(body)?;
    let cache = tempfile::tempdir()?;
    let settings = HubSettings::new(cache.path(), server.base());
    let err = hub_weights(&hub_file(), &expected(), &settings).unwrap_err();
    let message = format!("{err:#}");
    for word in words {
        assert!(message.contains(word), "{word:?} not in: {message}");
    }
    assert!(message.contains("removed from the hub cache"), "{message}");
    let snapshot = Path::new(COMMIT).join("model.safetensors");
    let folder = cache.path().join("models--org--tiny-net");
    assert!(!folder.join("snapshots").join(snapshot).exists());
    let requests = server.requests().len();
    assert!(hub_weights(&hub_file(), &expected(), &settings).is_err());
    assert_eq!(server.requests().len(), requests + 2, "downloaded again");
    Ok(())
}

#[test]
fn a_truncated_download_is_refused() -> Result<()> {
    let body = tiny_weights()?;
    let cut = body[..body.len() - 10].to_vec();
    assert_refused(
        cut,
        &["model.safetensors", "is cut short", "/resolve/main/"],
    )
}

#[test]
fn a_wrong_file_is_refused() -> Result<()> {
    // Safetensors, but another net's tensors.
    let mut other = expected();
    other[1].1 = vec![3];
    let server_body = tiny_weights()?;
    let cache = tempfile::tempdir()?;
    let wrong_bias = cache.path().join("w.safetensors");
    std::fs::write(&wrong_bias, &server_body)?;
    let err = check_weights(&wrong_bias, &other).unwrap_err().to_string();
    assert!(
        err.contains("w.safetensors") && err.contains("conv.bias is [2], expected [3]"),
        "{err}"
    );
    let mut extra = expected();
    extra.push(("fc.weight".into(), vec![4, 2]));
    let server = hub_serving(server_body)?;
    let settings = HubSettings::new(cache.path(), server.base());
    let err = hub_weights(&hub_file(), &extra, &settings).unwrap_err();
    assert!(format!("{err:#}").contains("missing fc.weight"), "{err:#}");
    drop(server);

    // Not safetensors at all: an HTML error page, or bytes after the tensors.
    assert_refused(
        b"<html>rate limited</html>".to_vec(),
        &["model.safetensors", "not a safetensors file"],
    )?;
    let mut long = tiny_weights()?;
    long.extend_from_slice(b"junk");
    assert_refused(
        long,
        &["model.safetensors", "4 bytes follow its tensor data"],
    )
}

#[test]
fn a_broken_cached_copy_is_refused_naming_the_cache() -> Result<()> {
    let body = tiny_weights()?;
    let server = hub_serving(body.clone())?;
    let cache = tempfile::tempdir()?;
    let settings = HubSettings::new(cache.path(), server.base());
    let (path, _) = found(hub_weights(&hub_file(), &expected(), &settings)?)?;
    // Someone cut the blob short after the download.
    let blob = std::fs::canonicalize(&path)?;
    std::fs::write(&blob, &body[..body.len() / 2])?;
    let err = hub_weights(&hub_file(), &expected(), &settings).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("broken copy of org/tiny-net/model.safetensors")
            && message.contains("models--org--tiny-net")
            && message.contains("is cut short"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 2, "the cache alone was asked");
    Ok(())
}

#[test]
fn settings_come_from_the_hub_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let settings = HubSettings::from_vars(vars(&[("HOME", "/home/u")]));
    assert_eq!(
        settings.cache.as_deref(),
        Some(Path::new("/home/u/.cache/huggingface/hub"))
    );
    assert_eq!(settings.endpoint, "https://huggingface.co");
    assert!(!settings.offline && settings.token.is_none() && !settings.progress);

    let settings = HubSettings::from_vars(vars(&[
        ("HOME", "/home/u"),
        ("HF_HOME", "/hf"),
        ("HF_ENDPOINT", "http://mirror.example/"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_TOKEN", "secret"),
    ]));
    assert_eq!(settings.cache.as_deref(), Some(Path::new("/hf/hub")));
    assert_eq!(settings.endpoint, "http://mirror.example");
    assert!(settings.offline);
    assert_eq!(settings.token.as_deref(), Some("secret"));

    let settings = HubSettings::from_vars(vars(&[
        ("HF_HOME", "/hf"),
        ("HF_HUB_CACHE", "/elsewhere"),
        ("SEGKIT_OFFLINE", "yes"),
        ("HF_HUB_OFFLINE", "0"),
    ]));
    assert_eq!(settings.cache.as_deref(), Some(Path::new("/elsewhere")));
    assert!(settings.offline);
    assert_eq!(HubSettings::from_vars(|_| None).cache, None);
}

#[test]
fn no_cache_folder_is_unavailable() -> Result<()> {
    let settings = HubSettings {
        cache: None,
        ..HubSettings::new("unused", "http://127.0.0.1:9")
    };
    let HubLookup::Unavailable(why) = hub_weights(&hub_file(), &expected(), &settings)? else {
        anyhow::bail!("found weights without a cache folder");
    };
    assert!(why.contains("HF_HUB_CACHE"), "{why}");
    Ok(())
}

#[test]
fn a_partial_download_is_resumed_from_where_it_stopped() -> Result<()> {
    let body = tiny_weights()?;
    let server = hub_serving(body.clone())?;
    let cache = tempfile::tempdir()?;
    // What an interrupted run leaves: blobs/<etag>.part with the first bytes.
    let blobs = cache.path().join("models--org--tiny-net/blobs");
    std::fs::create_dir_all(&blobs)?;
    let half = body.len() / 2;
    std::fs::write(
        blobs.join(format!("{}.part", etag_of(&body))),
        &body[..half],
    )?;
    let settings = HubSettings::new(cache.path(), server.base());
    let (path, origin) = found(hub_weights(&hub_file(), &expected(), &settings)?)?;
    assert_eq!(origin, WeightsOrigin::HubDownload);
    assert_eq!(std::fs::read(path)?, body);
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    let resume = format!("bytes={half}-");
    assert_eq!(ranges, [Some("bytes=0-0".to_owned()), Some(resume)]);
    Ok(())
}

#[test]
fn a_server_hanging_up_half_way_never_leaves_a_file_in_use() -> Result<()> {
    let body = tiny_weights()?;
    let half = body.len() / 2;
    let path = format!("{REPO}/resolve/main/model.safetensors");
    let route = Route::hub(body.clone(), COMMIT).hanging_up_once_after(half);
    let server = http::serve(HashMap::from([(path, route)]))?;
    let cache = tempfile::tempdir()?;
    let settings = HubSettings::new(cache.path(), server.base());
    // The first try is unavailable (the client sees the early close) and hands out
    // no file; the bytes received stay in blobs/<etag>.part.
    let HubLookup::Unavailable(why) = hub_weights(&hub_file(), &expected(), &settings)? else {
        anyhow::bail!("half a file was handed out");
    };
    assert!(
        why.contains("/resolve/main/model.safetensors failed"),
        "{why}"
    );
    let snapshots = cache.path().join("models--org--tiny-net/snapshots");
    assert!(!snapshots.exists());
    // The next try resumes from there and ends with the whole file.
    let (path, _) = found(hub_weights(&hub_file(), &expected(), &settings)?)?;
    assert_eq!(std::fs::read(path)?, body);
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    let resume = format!("bytes={half}-");
    assert_eq!(ranges[2..], [Some("bytes=0-0".to_owned()), Some(resume)]);
    Ok(())
}
