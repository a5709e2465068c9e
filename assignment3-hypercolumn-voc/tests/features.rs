//! Sparse sampling ("3 per class present", never 255), the interpolation weights of
//! the point hypercolumns,
//! the feature cache, and the class weights.

use anyhow::Result;
use assignment3_hypercolumn_voc::features::{hypercolumns_at, pick_pixels, SampledFeatures};
use assignment3_hypercolumn_voc::training::{class_weights, ClassWeighting};
use candle::{DType, Device};
use common::data::transforms::resize_mask;
use common::data::voc::{Split, VocDataset};
use common::data::Dataset;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

/// Per class, how many pixels were picked, and a check that each pick has its label.
fn picked_per_class(mask: &Array2<u8>, picked: &[(usize, usize, u8)]) -> Vec<usize> {
    let mut counts = vec![0; 256];
    for &(y, x, label) in picked {
        assert_eq!(mask[[y, x]], label, "pixel ({y}, {x})");
        counts[usize::from(label)] += 1;
    }
    counts
}

#[test]
fn three_pixels_per_class_present_never_ignore() {
    // 6x6: class 0 everywhere, class 2 on two pixels, class 5 on four, 255 on a row.
    let mut mask = Array2::<u8>::zeros((6, 6));
    mask[[1, 1]] = 2;
    mask[[4, 4]] = 2;
    for x in 0..4 {
        mask[[3, x]] = 5;
    }
    mask.row_mut(5).fill(255);
    let mut rng = StdRng::seed_from_u64(0);
    let picked = pick_pixels(&mask, 3, &mut rng);
    let counts = picked_per_class(&mask, &picked);
    assert_eq!(counts[0], 3);
    assert_eq!(counts[2], 2, "only two pixels of class 2 exist");
    assert_eq!(counts[5], 3);
    assert_eq!(counts[255], 0);
    assert_eq!(picked.len(), 8);
    // Distinct pixels.
    let mut pixels: Vec<(usize, usize)> = picked.iter().map(|&(y, x, _)| (y, x)).collect();
    pixels.sort();
    pixels.dedup();
    assert_eq!(pixels.len(), 8);
    // Same seed, same picks; another seed, (almost surely) others.
    assert_eq!(picked, pick_pixels(&mask, 3, &mut StdRng::seed_from_u64(0)));
    assert_ne!(picked, pick_pixels(&mask, 3, &mut StdRng::seed_from_u64(1)));
    // A mask that is all ignore gives nothing.
    let ignored = Array2::<u8>::from_elem((4, 4), 255);
    assert!(pick_pixels(&ignored, 3, &mut rng).is_empty());
}

#[test]
fn three_per_class_on_real_camvid_labels() -> Result<()> {
    let Some(root) = common::data::shared_data_set("camvid-voc") else {
        return Ok(());
    };
    let ds = VocDataset::open(&root, Split::Train)?;
    let mut rng = StdRng::seed_from_u64(7);
    for index in 0..3 {
        let mask = resize_mask(&ds.get(index)?.mask, 90, 120);
        let picked = pick_pixels(&mask, 3, &mut rng);
        let counts = picked_per_class(&mask, &picked);
        for class in 0..ds.n_classes() {
            let present = mask.iter().filter(|&&v| usize::from(v) == class).count();
            assert_eq!(counts[class], present.min(3), "image {index} class {class}");
        }
        assert_eq!(counts[255], 0);
    }
    Ok(())
}

/// The weights with which `hypercolumns_at` reads each of the `input` samples of one tap
/// axis at each of `output` points: `(output, input)`, row `i` the weights of point `i`.
/// A tap of `input` one-hot channels along that axis (size 1 across) gives them as the
/// hypercolumns.
fn point_weights(input: usize, output: usize, along_rows: bool) -> Result<Vec<Vec<f32>>> {
    let (h, w, height, width) = if along_rows {
        (input, 1, output, 1)
    } else {
        (1, input, 1, output)
    };
    let one_hot =
        candle::Tensor::eye(input, DType::F32, &Device::Cpu)?.reshape((1, input, h, w))?;
    let pixels: Vec<(usize, usize)> = (0..output)
        .map(|i| if along_rows { (i, 0) } else { (0, i) })
        .collect();
    let columns = hypercolumns_at(&[one_hot], height, width, &pixels)?;
    Ok(columns.outer_iter().map(|row| row.to_vec()).collect())
}

#[test]
fn interpolation_matches_the_bilinear_matrix() -> Result<()> {
    for (input, output) in [(224, 112), (14, 112), (7, 90), (90, 90), (5, 3)] {
        let matrix = common::nn::bilinear_matrix(input, output, &Device::Cpu, DType::F32)?
            .to_vec2::<f32>()?;
        for along_rows in [true, false] {
            let weights = point_weights(input, output, along_rows)?;
            for (i, (row, expected)) in matrix.iter().zip(&weights).enumerate() {
                for (a, b) in row.iter().zip(expected) {
                    assert!(
                        (a - b).abs() < 1e-6,
                        "{input}->{output} row {i}: {row:?} vs {expected:?}"
                    );
                }
            }
        }
    }
    // 224 -> 112 averages pixel pairs: output 3 samples at 6.5.
    for along_rows in [true, false] {
        let mut expected = vec![0f32; 224];
        expected[6] = 0.5;
        expected[7] = 0.5;
        assert_eq!(point_weights(224, 112, along_rows)?[3], expected);
    }
    Ok(())
}

#[test]
fn feature_cache_round_trip_and_settings_check() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cache").join("features.safetensors");
    let mut samples = SampledFeatures::empty(3);
    let rows = Array2::from_shape_vec((2, 3), vec![1.0, 2.0, 3.0, -4.0, 5.5, 6.0])?;
    samples.push_image(4, rows.view(), &[1, 7])?;
    samples.push_image(9, rows.view(), &[0, 0])?;
    assert_eq!(samples.len(), 4);
    assert_eq!(samples.image_index, [4, 4, 9, 9]);
    assert_eq!(samples.class_counts(8), [2, 1, 0, 0, 0, 0, 0, 1]);
    let settings = json!({"seed": 3, "input_size": [180, 240]});
    samples.save(&path, &settings)?;
    let loaded = SampledFeatures::load_if_matching(&path, &settings)?;
    assert_eq!(loaded.as_ref(), Some(&samples));
    let other = json!({"seed": 4, "input_size": [180, 240]});
    assert_eq!(SampledFeatures::load_if_matching(&path, &other)?, None);
    assert_eq!(
        SampledFeatures::load_if_matching(&dir.path().join("absent.safetensors"), &settings)?,
        None
    );
    // Wrong row length is refused.
    let err = samples
        .push_image(1, Array2::<f32>::zeros((1, 2)).view(), &[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected length 3"), "{err}");
    // A corrupt cache file is an error naming it.
    std::fs::write(&path, b"garbage!garbage!")?;
    let err = SampledFeatures::load_if_matching(&path, &settings)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a safetensors file"), "{err}");
    Ok(())
}

#[test]
fn median_frequency_weights() -> Result<()> {
    // Frequencies 0.5, 0.3, 0.2 (median 0.3) and an absent class.
    let w = class_weights(&[50, 30, 20, 0]);
    let expected = [0.6, 1.0, 1.5, 0.0];
    for (a, b) in w.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{w:?}");
    }
    assert_eq!(class_weights(&[0, 0]), [1.0, 1.0]);
    let device = candle::Device::Cpu;
    let sqrt = ClassWeighting::SqrtMedian
        .weights(&[50, 30, 20, 0], &device)?
        .map(|t| t.to_vec1::<f32>())
        .transpose()?
        .unwrap_or_default();
    for (a, b) in sqrt.iter().zip([0.6f32.sqrt(), 1.0, 1.5f32.sqrt(), 0.0]) {
        assert!((a - b).abs() < 1e-6, "{sqrt:?}");
    }
    assert!(ClassWeighting::None.weights(&[1, 2], &device)?.is_none());
    Ok(())
}
