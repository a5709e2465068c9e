//! The batches the two phases train on: the same seeded order as
//! `common::data::loader::Loader` (so runs compare with those made with it), every
//! row once per epoch, and the images' taps stacked per level.

use std::sync::Arc;

use anyhow::Result;
use assignment3_hypercolumn_voc::features::SampledFeatures;
use assignment3_hypercolumn_voc::taps::TapImage;
use assignment3_hypercolumn_voc::training::{FeatureRows, Shuffled, TapBatches};
use candle::{DType, Device, Tensor};
use common::data::loader::{Loader, LoaderConfig};
use common::data::{InMemoryDataset, Sample};
use common::train::EpochBatches;
use ndarray::{Array2, Array3};

#[test]
fn shuffled_batches_follow_the_loaders_order() -> Result<()> {
    for (n, batch_size, seed) in [(10, 3, 0), (128, 128, 7), (301, 128, 42), (5, 8, 1)] {
        let samples = (0..n)
            .map(|i| Sample {
                id: i.to_string(),
                image: Array3::zeros((3, 1, 1)),
                mask: Array2::zeros((1, 1)),
            })
            .collect();
        let ds = InMemoryDataset {
            samples,
            class_names: vec!["a".into()],
        };
        let loader = Loader::new(
            Arc::new(ds),
            LoaderConfig {
                batch_size,
                shuffle: true,
                drop_last: false,
                seed,
            },
        );
        let order = Shuffled {
            n,
            batch_size,
            seed,
        };
        assert_eq!(order.batches(), loader.batches_per_epoch());
        for epoch in 1..4 {
            let batches = order.epoch(epoch);
            assert_eq!(batches.concat(), loader.order(epoch), "n {n} epoch {epoch}");
            assert!(batches.iter().all(|b| b.len() <= batch_size));
        }
        assert_ne!(order.epoch(1), order.epoch(2), "n {n}: epochs reshuffle");
    }
    Ok(())
}

#[test]
fn feature_rows_serve_every_row_once_per_epoch() -> Result<()> {
    let device = Device::Cpu;
    let mut samples = SampledFeatures::empty(2);
    // Row i is (i, -i) with label i % 3.
    let rows = Array2::from_shape_fn((7, 2), |(i, j)| if j == 0 { i as f32 } else { -(i as f32) });
    let labels: Vec<u8> = (0..7).map(|i| (i % 3) as u8).collect();
    samples.push_image(0, rows.view(), &labels)?;
    let batches = FeatureRows::new(&samples, 3, 5, &device)?;
    assert_eq!(batches.batches_per_epoch(), 3); // 7 rows in batches of 3: 3 + 3 + 1
    let mut seen = Vec::new();
    for batch in batches.epoch_batches(1, &device) {
        let (xs, ys) = batch?;
        assert_eq!(xs.dims()[1], 2);
        let xs = xs.to_vec2::<f32>()?;
        let ys = ys.to_vec1::<u32>()?;
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(x[1], -x[0], "features stay in their rows");
            assert_eq!(*y, x[0] as u32 % 3, "labels follow their rows");
            seen.push(x[0] as usize);
        }
    }
    seen.sort();
    assert_eq!(seen, (0..7).collect::<Vec<_>>());
    let empty = SampledFeatures::empty(2);
    let err = FeatureRows::new(&empty, 3, 5, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no sampled features"), "{err}");
    Ok(())
}

#[test]
fn tap_batches_stack_the_images_per_level() -> Result<()> {
    let device = Device::Cpu;
    let image = |value: f32| -> Result<TapImage> {
        Ok(TapImage {
            id: value.to_string(),
            // (1, 2, 4, 4) and (1, 3, 2, 2) taps, f16 as extraction keeps them.
            taps: vec![
                Tensor::full(value, (1, 2, 4, 4), &device)?.to_dtype(DType::F16)?,
                Tensor::full(value, (1, 3, 2, 2), &device)?.to_dtype(DType::F16)?,
            ],
            labels: Tensor::zeros((1, 4, 4), DType::U32, &device)?,
            mask: None,
            flipped: None,
        })
    };
    let images = vec![image(1.0)?, image(2.0)?, image(3.0)?];
    assert_eq!(images[0].feature_size()?, (4, 4));
    let batches = TapBatches::new(&images, 2, 0)?;
    let mut sizes = Vec::new();
    for batch in batches.epoch_batches(1, &device) {
        let (taps, labels) = batch?;
        let b = labels.dims()[0];
        sizes.push(b);
        assert_eq!(taps[0].dims(), [b, 2, 4, 4]);
        assert_eq!(taps[1].dims(), [b, 3, 2, 2]);
        assert_eq!(taps[0].dtype(), DType::F32);
    }
    sizes.sort();
    assert_eq!(sizes, [1, 2]);
    assert!(TapBatches::new(&[], 2, 0).is_err());
    Ok(())
}
