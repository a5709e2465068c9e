//! Augmentation tests: the elastic warp keeps image and mask aligned, a constant
//! field shifts exactly, rotations and flips against hand-made arrays, crops pad
//! with the ignore label.

use anyhow::Result;
use assignment4_unet::augment::{
    augment, displacement_field, elastic_deform, flip, random_crop, rot90, warp_image, warp_mask,
    AugmentConfig, ElasticConfig,
};
use common::data::{Sample, IGNORE_LABEL};
use ndarray::{array, Array2, Array3};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A mask of discs and stripes, and an image drawn from the same pattern
/// (class 1 = 1.0 in all three channels, class 0 = 0.0).
fn pattern(h: usize, w: usize) -> Sample {
    let mask = Array2::from_shape_fn((h, w), |(y, x)| {
        let (cy, cx) = ((y % 24) as f32 - 12.0, (x % 24) as f32 - 12.0);
        let disc = cy * cy + cx * cx < 49.0;
        let stripe = (x + 2 * y) % 31 < 5;
        u8::from(disc || stripe)
    });
    let image = Array3::from_shape_fn((3, h, w), |(_, y, x)| f32::from(mask[[y, x]]));
    Sample {
        id: "pattern".into(),
        image,
        mask,
    }
}

#[test]
fn elastic_warp_keeps_image_and_mask_aligned() -> Result<()> {
    let sample = pattern(96, 80);
    let mut rng = StdRng::seed_from_u64(3);
    let cfg = ElasticConfig {
        alpha: 250.0,
        sigma: 8.0,
        probability: 1.0,
    };
    let warped = elastic_deform(sample.clone(), &cfg, &mut rng);
    assert_eq!(warped.image.dim(), (3, 96, 80));
    assert_eq!(warped.mask.dim(), (96, 80));
    // The warp moved the pattern: many labels changed place.
    let moved = warped
        .mask
        .iter()
        .zip(&sample.mask)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        moved > 96 * 80 / 20,
        "only {moved} pixels changed: the field did not move the pattern"
    );
    // The image, thresholded at 0.5, is the mask again: bilinear and nearest
    // sampling of one field only disagree on a few boundary pixels.
    let mut disagree = 0;
    for c in 0..3 {
        for ((y, x), &label) in warped.mask.indexed_iter() {
            if u8::from(warped.image[[c, y, x]] > 0.5) != label {
                disagree += 1;
            }
        }
    }
    let fraction = disagree as f64 / (3.0 * 96.0 * 80.0);
    assert!(
        fraction < 0.01,
        "image and mask disagree on {:.2}% of pixels",
        100.0 * fraction
    );
    Ok(())
}

#[test]
fn a_constant_field_shifts_exactly() {
    // Output (y, x) reads input (y + 1, x + 2): a shift up by 1 and left by 2,
    // edges repeated.
    let image = Array3::from_shape_fn((1, 3, 4), |(_, y, x)| (10 * y + x) as f32);
    let mask = Array2::from_shape_fn((3, 4), |(y, x)| (10 * y + x) as u8);
    let dy = Array2::from_elem((3, 4), 1.0f32);
    let dx = Array2::from_elem((3, 4), 2.0f32);
    let expected = array![
        [12., 13., 13., 13.],
        [22., 23., 23., 23.],
        [22., 23., 23., 23.]
    ];
    assert_eq!(
        warp_image(&image, &dy, &dx).index_axis(ndarray::Axis(0), 0),
        expected
    );
    assert_eq!(warp_mask(&mask, &dy, &dx), expected.mapv(|v| v as u8));
    // Half a pixel to the right: the image blends neighbours, the mask rounds.
    let dx = Array2::from_elem((3, 4), 0.5f32);
    let dy = Array2::zeros((3, 4));
    let warped = warp_image(&image, &dy, &dx);
    assert_eq!(warped[[0, 1, 0]], 10.5);
    assert_eq!(warped[[0, 1, 3]], 13.0);
}

#[test]
fn displacement_field_is_smooth_and_scaled() {
    let mut rng = StdRng::seed_from_u64(0);
    let (dy, dx) = displacement_field(128, 128, 250.0, 10.0, &mut rng);
    let std = |a: &Array2<f32>| (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
    // Uniform(-1, 1) noise (std 0.577) blurred by a 2-D Gaussian (sigma 10) keeps
    // about 0.577 / (2 sqrt(pi) 10) = 0.016 of its std; times 250: about 4 px.
    for field in [&dy, &dx] {
        let s = std(field);
        assert!((1.5..10.0).contains(&s), "displacement std {s}");
        // Smooth: neighbouring displacements differ by far less than the std.
        let step = (0..127)
            .map(|x| (field[[64, x + 1]] - field[[64, x]]).abs())
            .fold(0.0f32, f32::max);
        assert!(step < 0.3 * s, "neighbour step {step} vs std {s}");
    }
    // Seeded: the same seed gives the same field.
    let (again, _) = displacement_field(128, 128, 250.0, 10.0, &mut StdRng::seed_from_u64(0));
    assert_eq!(again, dy);
}

#[test]
fn rotations_and_flips_match_hand_made_arrays() {
    let sample = Sample {
        id: "s".into(),
        image: Array3::from_shape_vec((1, 2, 3), vec![1., 2., 3., 4., 5., 6.]).unwrap(),
        mask: array![[1, 2, 3], [4, 5, 6]],
    };
    // 90 degrees counter-clockwise: [[1,2,3],[4,5,6]] -> [[3,6],[2,5],[1,4]].
    let turned = rot90(sample.clone(), 1);
    assert_eq!(turned.mask, array![[3, 6], [2, 5], [1, 4]]);
    assert_eq!(
        turned.image.index_axis(ndarray::Axis(0), 0),
        array![[3., 6.], [2., 5.], [1., 4.]]
    );
    assert_eq!(rot90(sample.clone(), 4), sample);
    assert_eq!(rot90(rot90(sample.clone(), 3), 1), sample);
    assert_eq!(
        flip(sample.clone(), true).mask,
        array![[3, 2, 1], [6, 5, 4]]
    );
    assert_eq!(
        flip(sample.clone(), false).mask,
        array![[4, 5, 6], [1, 2, 3]]
    );
}

#[test]
fn crops_pad_small_images_with_the_ignore_label() {
    let sample = pattern(20, 40);
    let mut rng = StdRng::seed_from_u64(1);
    let cropped = random_crop(sample, 32, &mut rng);
    assert_eq!(cropped.image.dim(), (3, 32, 32));
    // Rows 20.. do not exist in the 20-row image: mask 255, image 0.
    assert!(cropped
        .mask
        .slice(ndarray::s![20.., ..])
        .iter()
        .all(|&v| v == IGNORE_LABEL));
    assert!(cropped
        .image
        .slice(ndarray::s![.., 20.., ..])
        .iter()
        .all(|&v| v == 0.0));
    assert!(cropped
        .mask
        .slice(ndarray::s![..20, ..])
        .iter()
        .all(|&v| v <= 1));
}

#[test]
fn full_augmentation_keeps_alignment_and_size() {
    let cfg = AugmentConfig {
        crop: 48,
        flips_and_rotations: true,
        elastic: Some(ElasticConfig {
            probability: 1.0,
            ..ElasticConfig::default()
        }),
    };
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..4 {
        let out = augment(pattern(64, 64), &cfg, &mut rng);
        assert_eq!(out.mask.dim(), (48, 48));
        let disagree = out
            .mask
            .indexed_iter()
            .filter(|((y, x), &label)| u8::from(out.image[[0, *y, *x]] > 0.5) != label)
            .count();
        assert!(disagree < 48 * 48 / 50, "{disagree} misaligned pixels");
    }
}
