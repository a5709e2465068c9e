//! Tests of `common::data::loader`: seeded order, batch shapes and contents,
//! drop_last, reproducible transforms, and the errors for bad samples.

use std::sync::Arc;

use candle::{DType, Device};
use common::data::loader::{Batch, Loader, LoaderConfig};
use common::data::transforms::{compose, hflip_transform, scale_crop_transform};
use common::data::{Dataset, InMemoryDataset, Sample};
use common::Result;
use ndarray::{Array2, Array3};

/// Sample `i`: id `s{i}`, every image value `i / 100`, every mask label `i`, size `h x w`.
fn flat_sample(i: usize, h: usize, w: usize) -> Sample {
    Sample {
        id: format!("s{i}"),
        image: Array3::from_elem((3, h, w), i as f32 / 100.0),
        mask: Array2::from_elem((h, w), i as u8),
    }
}

fn flat_dataset(n: usize) -> Arc<InMemoryDataset> {
    Arc::new(InMemoryDataset {
        samples: (0..n).map(|i| flat_sample(i, 4, 5)).collect(),
        class_names: vec!["background".into(), "thing".into()],
    })
}

fn config(batch_size: usize, shuffle: bool, drop_last: bool, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle,
        drop_last,
        seed,
    }
}

fn epoch_batches(loader: &Loader, epoch: usize) -> Result<Vec<Batch>> {
    loader.epoch(epoch, &Device::Cpu).collect()
}

fn epoch_ids(loader: &Loader, epoch: usize) -> Result<Vec<String>> {
    Ok(epoch_batches(loader, epoch)?
        .into_iter()
        .flat_map(|b| b.ids)
        .collect())
}

#[test]
fn shapes_dtypes_and_contents() -> Result<()> {
    let loader = Loader::new(flat_dataset(10), config(4, true, false, 1));
    assert_eq!(loader.len(), 10);
    // ceil(10 / 4) = 3 batches of 4, 4, 2.
    assert_eq!(loader.batches_per_epoch(), 3);
    let batches = epoch_batches(&loader, 0)?;
    let sizes: Vec<usize> = batches.iter().map(|b| b.ids.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    for batch in &batches {
        let n = batch.ids.len();
        assert_eq!(batch.images.dims(), [n, 3, 4, 5]);
        assert_eq!(batch.images.dtype(), DType::F32);
        assert_eq!(batch.masks.dims(), [n, 4, 5]);
        assert_eq!(batch.masks.dtype(), DType::U32);
        // Each row of the batch holds the sample its id names.
        let images = batch.images.flatten_from(1)?.to_vec2::<f32>()?;
        let masks = batch.masks.flatten_from(1)?.to_vec2::<u32>()?;
        for (k, id) in batch.ids.iter().enumerate() {
            let i: usize = id.trim_start_matches('s').parse()?;
            assert!(images[k].iter().all(|&v| v == i as f32 / 100.0), "{id}");
            assert!(masks[k].iter().all(|&v| v == i as u32), "{id}");
        }
    }
    Ok(())
}

#[test]
fn batch_layout_is_n_c_h_w() -> Result<()> {
    // One sample with distinct values: image[c, y, x] = 100 c + 10 y + x.
    let image = Array3::from_shape_fn((3, 2, 3), |(c, y, x)| (100 * c + 10 * y + x) as f32);
    let mask = Array2::from_shape_fn((2, 3), |(y, x)| (10 * y + x) as u8);
    let ds = Arc::new(InMemoryDataset {
        samples: vec![Sample {
            id: "only".into(),
            image: image.clone(),
            mask: mask.clone(),
        }],
        class_names: vec![],
    });
    let batch = Loader::new(ds, LoaderConfig::default()).batch(0, 0, &Device::Cpu)?;
    assert_eq!(batch.images.dims(), [1, 3, 2, 3]);
    let got = batch.images.squeeze(0)?.to_vec3::<f32>()?;
    for ((c, y, x), &v) in image.indexed_iter() {
        assert_eq!(got[c][y][x], v);
    }
    let got = batch.masks.squeeze(0)?.to_vec2::<u32>()?;
    for ((y, x), &v) in mask.indexed_iter() {
        assert_eq!(got[y][x], v as u32);
    }
    Ok(())
}

#[test]
fn same_seed_gives_identical_epochs_and_resume_matches() -> Result<()> {
    let a = Loader::new(flat_dataset(12), config(5, true, false, 42));
    let b = Loader::new(flat_dataset(12), config(5, true, false, 42));
    // Loader a runs epochs 0..=3; loader b jumps straight to epoch 3 (a resume).
    for epoch in 0..3 {
        epoch_ids(&a, epoch)?;
    }
    assert_eq!(epoch_ids(&a, 3)?, epoch_ids(&b, 3)?);
    let (batch_a, batch_b) = (a.batch(3, 1, &Device::Cpu)?, b.batch(3, 1, &Device::Cpu)?);
    assert_eq!(batch_a.ids, batch_b.ids);
    assert_eq!(
        batch_a.images.flatten_all()?.to_vec1::<f32>()?,
        batch_b.images.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn epochs_and_seeds_change_the_order_and_every_sample_is_seen_once() -> Result<()> {
    let loader = Loader::new(flat_dataset(12), config(5, true, false, 42));
    let all: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let ids = epoch_ids(&loader, epoch)?;
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| id[1..].parse::<usize>().unwrap_or(usize::MAX));
        assert_eq!(sorted, all, "epoch {epoch} must see each sample once");
        assert_ne!(ids, all, "epoch {epoch} must be shuffled");
        orders.push(ids);
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
    let other_seed = Loader::new(flat_dataset(12), config(5, true, false, 43));
    assert_ne!(epoch_ids(&other_seed, 0)?, orders[0]);
    // Without shuffle the order is the data set's, every epoch.
    let plain = Loader::new(flat_dataset(12), config(5, false, false, 42));
    assert_eq!(epoch_ids(&plain, 0)?, all);
    assert_eq!(epoch_ids(&plain, 5)?, all);
    Ok(())
}

#[test]
fn drop_last_leaves_out_the_short_batch() -> Result<()> {
    let loader = Loader::new(flat_dataset(10), config(4, true, true, 0));
    // floor(10 / 4) = 2 full batches; 2 samples left out.
    assert_eq!(loader.batches_per_epoch(), 2);
    let batches = epoch_batches(&loader, 0)?;
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().all(|b| b.images.dims()[0] == 4));
    let mut ids: Vec<String> = batches.into_iter().flat_map(|b| b.ids).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
    // Exact multiples keep every batch.
    let exact = Loader::new(flat_dataset(8), config(4, true, true, 0));
    assert_eq!(exact.batches_per_epoch(), 2);
    Ok(())
}

#[test]
fn random_transforms_depend_only_on_seed_epoch_and_index() -> Result<()> {
    // Samples with varied pixels, so flips and crops are visible.
    let ds = Arc::new(InMemoryDataset {
        samples: (0..6)
            .map(|i| Sample {
                id: format!("v{i}"),
                image: Array3::from_shape_fn((3, 8, 9), |(c, y, x)| {
                    (i * 1000 + c * 100 + y * 10 + x) as f32
                }),
                mask: Array2::from_shape_fn((8, 9), |(y, x)| ((i + y * 3 + x) % 7) as u8),
            })
            .collect(),
        class_names: vec![],
    });
    let transform = compose(vec![
        hflip_transform(0.5)?,
        scale_crop_transform((0.5, 1.5), (6, 6))?,
    ]);
    let loader = |batch_size| {
        Loader::new(ds.clone(), config(batch_size, true, false, 9))
            .with_transform(transform.clone())
    };
    // The same samples come out whatever the batch size, and again on a rerun.
    let flat = |batches: Vec<Batch>| -> Result<(Vec<String>, Vec<f32>, Vec<u32>)> {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for b in batches {
            out.0.extend(b.ids);
            out.1.extend(b.images.flatten_all()?.to_vec1::<f32>()?);
            out.2.extend(b.masks.flatten_all()?.to_vec1::<u32>()?);
        }
        Ok(out)
    };
    let by_two = flat(epoch_batches(&loader(2), 1)?)?;
    let by_four = flat(epoch_batches(&loader(4), 1)?)?;
    let again = flat(epoch_batches(&loader(2), 1)?)?;
    assert_eq!(by_two, by_four);
    assert_eq!(by_two, again);
    assert_eq!(by_two.2.len(), 6 * 6 * 6);
    // Another epoch draws other augmentations.
    let next = flat(epoch_batches(&loader(2), 2)?)?;
    assert_ne!(by_two.1, next.1);
    Ok(())
}

#[test]
fn mixed_sizes_in_a_batch_are_a_clear_error() -> Result<()> {
    let ds = Arc::new(InMemoryDataset {
        samples: vec![flat_sample(0, 4, 5), flat_sample(1, 6, 7)],
        class_names: vec![],
    });
    let loader = Loader::new(ds, config(2, false, false, 0));
    let err = loader
        .epoch(0, &Device::Cpu)
        .next()
        .and_then(|r| r.err())
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert_eq!(
        err,
        "batch 0 of epoch 0: samples of one batch differ in size (\"s0\" 4x5, \"s1\" 6x7): \
         add a resize or crop transform (transforms::resize_transform / scale_crop_transform) \
         or use batch_size 1"
    );
    Ok(())
}

/// A data set whose sample 3 cannot be read.
struct BrokenAtThree;

impl Dataset for BrokenAtThree {
    fn len(&self) -> usize {
        5
    }
    fn get(&self, index: usize) -> Result<Sample> {
        if index == 3 {
            anyhow::bail!("cannot decode \"img3.jpg\": truncated file");
        }
        Ok(flat_sample(index, 2, 2))
    }
    fn class_names(&self) -> &[String] {
        &[]
    }
}

#[test]
fn dataset_errors_propagate_with_the_sample_index() -> Result<()> {
    let loader = Loader::new(Arc::new(BrokenAtThree), config(2, false, false, 0));
    let results: Vec<Result<Batch>> = loader.epoch(0, &Device::Cpu).collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok());
    // Samples 2 and 3 make batch 1.
    let err = results[1]
        .as_ref()
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert_eq!(
        err,
        "batch 1 of epoch 0: loading sample 3: cannot decode \"img3.jpg\": truncated file"
    );
    assert!(results[2].is_ok());
    Ok(())
}

#[test]
fn bad_samples_and_settings_are_errors() -> Result<()> {
    // Mask and image of different sizes.
    let mut sample = flat_sample(0, 4, 5);
    sample.mask = Array2::zeros((4, 4));
    let ds = Arc::new(InMemoryDataset {
        samples: vec![sample],
        class_names: vec![],
    });
    let err = Loader::new(ds, LoaderConfig::default())
        .batch(0, 0, &Device::Cpu)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert_eq!(err, "sample 0 (\"s0\"): mask is 4x4 but image is 4x5");

    // A grey image where RGB is needed.
    let grey = Sample {
        id: "g".into(),
        image: Array3::zeros((1, 2, 2)),
        mask: Array2::zeros((2, 2)),
    };
    let ds = Arc::new(InMemoryDataset {
        samples: vec![grey],
        class_names: vec![],
    });
    let err = Loader::new(ds, LoaderConfig::default())
        .batch(0, 0, &Device::Cpu)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert_eq!(
        err,
        "sample 0 (\"g\") has a (1, 2, 2) image, expected 3 channels"
    );

    // batch_size 0 and a batch past the end.
    let zero = Loader::new(flat_dataset(3), config(0, false, false, 0));
    assert_eq!(zero.batches_per_epoch(), 0);
    let errs: Vec<String> = zero
        .epoch(0, &Device::Cpu)
        .map(|r| r.err().map(|e| e.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(errs, ["loader batch_size is 0: use at least 1"]);
    let loader = Loader::new(flat_dataset(3), config(2, false, false, 0));
    let err = loader
        .batch(0, 2, &Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(err, "batch 2 asked for, but an epoch has 2");
    // An empty data set has no batches and no error.
    let empty = Loader::new(flat_dataset(0), config(2, true, false, 0));
    assert!(empty.is_empty());
    assert_eq!(empty.epoch(0, &Device::Cpu).count(), 0);
    Ok(())
}

#[test]
fn real_flower_patches_batch() -> Result<()> {
    let Some(dir) = common::data::shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    // The 32x32 positive patches as RGB 0..1, all labelled 1 (flower).
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("Positive"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    paths.truncate(20);
    let mut samples = Vec::new();
    for path in &paths {
        let rgb = image::open(path)?.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        samples.push(Sample {
            id: path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
            image: Array3::from_shape_fn((3, h, w), |(c, y, x)| {
                rgb.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
            }),
            mask: Array2::ones((h, w)),
        });
    }
    let first = samples[0].image.clone();
    let first_id = samples[0].id.clone();
    let ds = Arc::new(InMemoryDataset {
        samples,
        class_names: vec!["background".into(), "flower".into()],
    });
    let loader = Loader::new(ds, config(8, true, false, 5));
    let batches = epoch_batches(&loader, 0)?;
    // 20 patches in batches of 8: 8, 8, 4.
    let sizes: Vec<usize> = batches.iter().map(|b| b.images.dims()[0]).collect();
    assert_eq!(sizes, [8, 8, 4]);
    assert!(batches.iter().all(|b| b.images.dims()[1..] == [3, 32, 32]));
    // The first patch's pixels arrive unchanged wherever the shuffle put it.
    let (batch, row) = batches
        .iter()
        .find_map(|b| b.ids.iter().position(|id| *id == first_id).map(|k| (b, k)))
        .ok_or_else(|| anyhow::anyhow!("{first_id} missing from the epoch"))?;
    let got = batch.images.get(row)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(got, first.iter().copied().collect::<Vec<f32>>());
    Ok(())
}
