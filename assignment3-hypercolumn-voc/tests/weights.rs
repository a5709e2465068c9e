//! `common::weights`: hub cache look-up (hf-hub's layout), explicit files, metadata and
//! the tensor loader's error lists. (No test touches the network; `hub_weights.rs`
//! downloads from a local server.)

use std::collections::HashMap;

use anyhow::Result;
use assignment3_hypercolumn_voc::model::Arch;
use candle::{DType, Device, Tensor};
use common::data::transforms::Normalization;
use common::weights::{
    hub_cached_file, input_normalization, load_tensors, read_metadata, resolve_weights, HubFile,
    HubSettings, WeightsOrigin,
};

#[test]
fn hub_file_names_and_cache_layout() -> Result<()> {
    let file = Arch::Vgg11.hub_file();
    assert_eq!(
        file,
        HubFile::new("timm/vgg11.tv_in1k", "model.safetensors")
    );
    assert_eq!(file.revision, "main");
    assert_eq!(
        file.url("https://huggingface.co"),
        "https://huggingface.co/timm/vgg11.tv_in1k/resolve/main/model.safetensors"
    );
    let cache = tempfile::tempdir()?;
    let folder = file.cache_folder(cache.path());
    assert!(folder.ends_with("models--timm--vgg11.tv_in1k"));
    assert_eq!(hub_cached_file(cache.path(), &file), None);

    // Layout of huggingface_hub: refs/main holds the commit, snapshots/<commit>/<file>.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(folder.join("refs"))?;
    std::fs::write(folder.join("refs/main"), commit)?;
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot)?;
    std::fs::write(snapshot.join("model.safetensors"), b"x")?;
    assert_eq!(
        hub_cached_file(cache.path(), &file),
        Some(snapshot.join("model.safetensors"))
    );
    // Another repository of the same cache is not found through it.
    let other = Arch::Vgg16.hub_file();
    assert_eq!(hub_cached_file(cache.path(), &other), None);
    Ok(())
}

#[test]
fn explicit_weights_must_exist() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = Arch::Vgg11.hub_file();
    let expected = Arch::Vgg11.weight_shapes();
    // Offline, so nothing is ever fetched whatever the test does.
    let settings = HubSettings {
        offline: true,
        ..HubSettings::new(dir.path().join("hub"), "http://127.0.0.1:9")
    };
    let missing = dir.path().join("missing.safetensors");
    let err = resolve_weights(Some(&missing), &hub, &expected, &settings)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.safetensors\" not found"), "{err}");
    let present = dir.path().join("present.safetensors");
    std::fs::write(&present, b"x")?;
    let resolved = resolve_weights(Some(&present), &hub, &expected, &settings)?;
    assert_eq!(resolved.origin, WeightsOrigin::Explicit);
    assert_eq!(resolved.path, present);
    // Neither given nor cached: the error says why and what to pass.
    let err = format!(
        "{:#}",
        resolve_weights(None, &hub, &expected, &settings).unwrap_err()
    );
    assert!(
        err.contains("timm/vgg11.tv_in1k") && err.contains("--weights"),
        "{err}"
    );
    Ok(())
}

#[test]
fn metadata_decides_the_preprocessing() -> Result<()> {
    let path = std::path::Path::new("w.safetensors");
    let meta = |v: &str| HashMap::from([("input".to_owned(), v.to_owned())]);
    assert_eq!(
        input_normalization(&HashMap::new(), path)?,
        Normalization::Imagenet
    );
    assert_eq!(
        input_normalization(&meta("caffe"), path)?,
        Normalization::Caffe
    );
    assert_eq!(
        input_normalization(&meta("ImageNet"), path)?,
        Normalization::Imagenet
    );
    let err = format!("{:#}", input_normalization(&meta("bgr"), path).unwrap_err());
    assert!(
        err.contains("w.safetensors") && err.contains("\"bgr\""),
        "{err}"
    );
    Ok(())
}

#[test]
fn loads_only_wanted_tensors_and_lists_problems() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("w.safetensors");
    let tensors = HashMap::from([
        (
            "a".to_owned(),
            Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((2, 3))?,
        ),
        ("b".to_owned(), Tensor::zeros(4, DType::F64, &Device::Cpu)?),
    ]);
    candle::safetensors::save(&tensors, &path)?;
    assert!(read_metadata(&path)?.is_empty());
    let loaded = load_tensors(
        &path,
        &[("a".into(), vec![2, 3]), ("b".into(), vec![4])],
        &Device::Cpu,
    )?;
    assert_eq!(
        loaded["a"].to_vec2::<f32>()?,
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    );
    assert_eq!(loaded["b"].dtype(), DType::F32, "converted to f32");
    let err = load_tensors(
        &path,
        &[
            ("a".into(), vec![3, 2]),
            ("c".into(), vec![1]),
            ("d".into(), vec![1]),
        ],
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing c, d"), "{err}");
    assert!(
        err.contains("mis-shaped a is [2, 3], expected [3, 2]"),
        "{err}"
    );
    // A file too short to be safetensors.
    let short = dir.path().join("short.safetensors");
    std::fs::write(&short, b"abc")?;
    let err = read_metadata(&short).unwrap_err().to_string();
    assert!(
        err.contains("short.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
    Ok(())
}
