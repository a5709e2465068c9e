//! Tests of `common::data::transforms`: resize values against the PyTorch
//! formulas worked by hand, flips, scale + crop padding, normalisation presets.

use common::data::transforms::{
    compose, hflip, hflip_transform, normalize_transform, random_scale_crop, resize_image,
    resize_mask, resize_transform, scale_crop_transform, Normalization,
};
use common::data::{Sample, IGNORE_LABEL};
use common::Result;
use ndarray::{array, Array2, Array3};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn assert_close(actual: &Array3<f32>, expected: &Array3<f32>, tol: f32) {
    assert_eq!(actual.dim(), expected.dim());
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert!((a - e).abs() <= tol, "element {i}: {a} vs {e}");
    }
}

/// A 3-channel image whose channel c equals `plane + 100 c`.
fn three_channels(plane: &Array2<f32>) -> Array3<f32> {
    let (h, w) = plane.dim();
    Array3::from_shape_fn((3, h, w), |(c, y, x)| plane[[y, x]] + 100.0 * c as f32)
}

fn sample_with(id: &str, image: Array3<f32>, mask: Array2<u8>) -> Sample {
    Sample {
        id: id.to_string(),
        image,
        mask,
    }
}

#[test]
fn bilinear_2x2_to_3x3_matches_pytorch() -> Result<()> {
    // F.interpolate(torch.tensor([[[[0., 1], [2, 3]]]]), size=(3, 3), mode="bilinear",
    //               align_corners=False)
    // src = max((dst + 0.5) * 2/3 - 0.5, 0): dst 0 -> 0 (clamped from -1/6), dst 1 -> 0.5,
    // dst 2 -> 7/6 (i0 = 1, i1 = min(2, 1) = 1, so x[1]). Each axis takes x0, (x0+x1)/2, x1.
    let input = three_channels(&array![[0.0, 1.0], [2.0, 3.0]]);
    let expected = three_channels(&array![[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]]);
    assert_close(&resize_image(&input, 3, 3), &expected, 1e-5);
    Ok(())
}

#[test]
fn bilinear_4x4_to_3x5_matches_pytorch() -> Result<()> {
    // x[i, j] = 10 i^2 + j^2 (not linear, so weights and clamps both matter).
    // F.interpolate(x[None, None], size=(3, 5), mode="bilinear", align_corners=False)
    // Rows, scale 4/3: src = 1/6, 1.5, 17/6 -> i^2 interpolated:
    //   (5/6)*0 + (1/6)*1 = 1/6,  (1 + 4)/2 = 2.5,  (1/6)*4 + (5/6)*9 = 49/6.
    // Columns, scale 4/5: src = -0.1 -> 0, 0.7, 1.5, 2.3, 3.1 -> i0 = i1 = 3:
    //   0,  0.7,  (1 + 4)/2 = 2.5,  0.7*4 + 0.3*9 = 5.5,  9.
    // Bilinear weights sum to 1, so out[y, x] = 10 * rows[y] + cols[x].
    let plane = Array2::from_shape_fn((4, 4), |(i, j)| (10 * i * i + j * j) as f32);
    let rows = [1.0 / 6.0, 2.5, 49.0 / 6.0];
    let cols = [0.0, 0.7, 2.5, 5.5, 9.0];
    let expected = Array2::from_shape_fn((3, 5), |(y, x)| 10.0 * rows[y] + cols[x]);
    assert_close(
        &resize_image(&three_channels(&plane), 3, 5),
        &three_channels(&expected),
        1e-4,
    );
    Ok(())
}

#[test]
fn bilinear_same_size_is_identity_and_empty_is_safe() -> Result<()> {
    let image = Array3::from_shape_fn((3, 5, 7), |(c, y, x)| (c * 35 + y * 7 + x) as f32);
    assert_close(&resize_image(&image, 5, 7), &image, 0.0);
    // Bad input: no pixels to interpolate gives zeros, not a panic.
    let empty = Array3::<f32>::zeros((3, 0, 4));
    assert_eq!(resize_image(&empty, 2, 2), Array3::<f32>::zeros((3, 2, 2)));
    assert_eq!(resize_image(&image, 0, 3).dim(), (3, 0, 3));
    Ok(())
}

/// Halving with align_corners=False samples at 2 d + 0.5, so it equals 2x2 average pooling.
fn check_halving_is_average_pooling(image: &Array3<f32>) {
    let (c, h, w) = image.dim();
    let half = resize_image(image, h / 2, w / 2);
    let pooled = Array3::from_shape_fn((c, h / 2, w / 2), |(ch, y, x)| {
        (image[[ch, 2 * y, 2 * x]]
            + image[[ch, 2 * y, 2 * x + 1]]
            + image[[ch, 2 * y + 1, 2 * x]]
            + image[[ch, 2 * y + 1, 2 * x + 1]])
            / 4.0
    });
    assert_close(&half, &pooled, 1e-5);
}

#[test]
fn halving_equals_average_pooling_on_generated_image() -> Result<()> {
    let image = Array3::from_shape_fn((3, 10, 14), |(c, y, x)| {
        ((c * 31 + y * 7 + x * x * 3) % 17) as f32 / 17.0
    });
    check_halving_is_average_pooling(&image);
    Ok(())
}

#[test]
fn halving_equals_average_pooling_on_real_flower() -> Result<()> {
    let Some(dir) = common::data::shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let path = dir.join("flower.jpg");
    let rgb = image::open(&path)?.to_rgb8();
    // Even sides so that every output pixel pools a whole 2x2 block.
    let (w, h) = (rgb.width() as usize / 2 * 2, rgb.height() as usize / 2 * 2);
    let image = Array3::from_shape_fn((3, h, w), |(c, y, x)| {
        rgb.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
    });
    check_halving_is_average_pooling(&image);
    Ok(())
}

#[test]
fn nearest_mask_resize_matches_pytorch_indices() -> Result<()> {
    // F.interpolate(m[None, None].float(), size=(4, 2), mode="nearest"):
    // rows floor(d * 2/4) = 0, 0, 1, 1; columns floor(d * 3/2) = 0, 1.
    let mask = array![[1u8, 2, 3], [4, 5, 6]];
    assert_eq!(
        resize_mask(&mask, 4, 2),
        array![[1u8, 2], [1, 2], [4, 5], [4, 5]]
    );
    // 3 -> 5 columns: floor(d * 0.6) = 0, 0, 1, 1, 2; 2 -> 1 row: floor(0) = 0.
    assert_eq!(resize_mask(&mask, 1, 5), array![[1u8, 1, 2, 2, 3]]);
    // Bad input: an empty mask gives ignore labels, not a panic.
    let empty = Array2::<u8>::zeros((0, 3));
    assert_eq!(
        resize_mask(&empty, 2, 2),
        Array2::from_elem((2, 2), IGNORE_LABEL)
    );
    Ok(())
}

#[test]
fn hflip_mirrors_image_and_mask() -> Result<()> {
    let image = three_channels(&array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let mask = array![[0u8, 1, 2], [3, 4, 5]];
    let flipped = hflip(sample_with("a", image, mask));
    assert_eq!(flipped.id, "a");
    assert_eq!(flipped.mask, array![[2u8, 1, 0], [5, 4, 3]]);
    assert_close(
        &flipped.image,
        &three_channels(&array![[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]),
        0.0,
    );
    Ok(())
}

#[test]
fn scale_crop_pads_mask_with_ignore_and_image_with_zero() -> Result<()> {
    // 4x4 at scale 0.5 -> 2x2, then padded to the 3x3 crop: only the top-left
    // 2x2 holds data, so the crop position (0..=0) is forced.
    let plane = Array2::from_shape_fn((4, 4), |(y, x)| (1 + y * 4 + x) as f32);
    let mask = Array2::from_shape_fn((4, 4), |(y, x)| (y * 4 + x) as u8);
    let sample = sample_with("s", three_channels(&plane), mask.clone());
    let mut rng = StdRng::seed_from_u64(7);
    let out = random_scale_crop(sample.clone(), (0.5, 0.5), (3, 3), &mut rng);

    let small_image = resize_image(&sample.image, 2, 2);
    let small_mask = resize_mask(&mask, 2, 2);
    // Nearest rows/cols floor(d * 2) = 0, 2.
    assert_eq!(small_mask, array![[0u8, 2], [8, 10]]);
    assert_eq!(out.image.dim(), (3, 3, 3));
    for y in 0..3 {
        for x in 0..3 {
            if y < 2 && x < 2 {
                assert_eq!(out.mask[[y, x]], small_mask[[y, x]]);
                for c in 0..3 {
                    assert_eq!(out.image[[c, y, x]], small_image[[c, y, x]]);
                }
            } else {
                assert_eq!(out.mask[[y, x]], IGNORE_LABEL, "({y}, {x})");
                for c in 0..3 {
                    assert_eq!(out.image[[c, y, x]], 0.0);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn scale_crop_at_scale_one_cuts_a_window_reproducibly() -> Result<()> {
    let plane = Array2::from_shape_fn((6, 6), |(y, x)| (y * 6 + x) as f32);
    let mask = Array2::from_shape_fn((6, 6), |(y, x)| (y * 6 + x) as u8);
    let sample = sample_with("s", three_channels(&plane), mask.clone());
    let mut seen_positions = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let out = random_scale_crop(
            sample.clone(),
            (1.0, 1.0),
            (3, 4),
            &mut StdRng::seed_from_u64(seed),
        );
        let again = random_scale_crop(
            sample.clone(),
            (1.0, 1.0),
            (3, 4),
            &mut StdRng::seed_from_u64(seed),
        );
        assert_eq!(out, again, "same seed, same crop");
        // The window's top-left value tells its position; the rest must follow.
        let (top, left) = (out.mask[[0, 0]] as usize / 6, out.mask[[0, 0]] as usize % 6);
        assert!(
            top <= 3 && left <= 2,
            "window at ({top}, {left}) leaves the image"
        );
        for y in 0..3 {
            for x in 0..4 {
                assert_eq!(out.mask[[y, x]], mask[[top + y, left + x]]);
                assert_eq!(out.image[[1, y, x]], plane[[top + y, left + x]] + 100.0);
            }
        }
        seen_positions.insert((top, left));
    }
    assert!(
        seen_positions.len() > 1,
        "the crop position must vary with the seed"
    );
    Ok(())
}

#[test]
fn scale_crop_keeps_labels_over_a_scale_range() -> Result<()> {
    let mask = Array2::from_shape_fn((10, 12), |(y, x)| ((y / 5) * 2 + x / 6) as u8);
    let image = Array3::from_elem((3, 10, 12), 0.5f32);
    let sample = sample_with("s", image, mask);
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..20 {
        let out = random_scale_crop(sample.clone(), (0.5, 2.0), (8, 8), &mut rng);
        assert_eq!(out.size(), (8, 8));
        assert_eq!(out.mask.dim(), (8, 8));
        // Nearest resizing never invents labels: only 0..=3 or the padding label.
        assert!(out.mask.iter().all(|&l| l <= 3 || l == IGNORE_LABEL));
        // Padded pixels are 0, data pixels stay 0.5 (bilinear of a constant).
        for ((y, x), &label) in out.mask.indexed_iter() {
            let expected = if label == IGNORE_LABEL { 0.0 } else { 0.5 };
            assert!((out.image[[0, y, x]] - expected).abs() < 1e-6);
        }
    }
    Ok(())
}

#[test]
fn normalisation_presets_hand_values() -> Result<()> {
    // ImageNet: (x - mean) / std per RGB channel.
    let mut image = Array3::<f32>::zeros((3, 1, 1));
    image[[0, 0, 0]] = 0.485 + 0.229; // -> 1
    image[[1, 0, 0]] = 0.456; // -> 0
    image[[2, 0, 0]] = 0.406 - 2.0 * 0.225; // -> -2
    let out = Normalization::Imagenet.apply(&image);
    assert_close(&out, &array![[[1.0f32]], [[0.0]], [[-2.0]]], 1e-5);

    // Caffe: channel order B, G, R on 0..255 minus the BGR mean.
    let rgb = array![[[1.0f32]], [[0.5]], [[0.0]]]; // R = 1, G = 0.5, B = 0
    let out = Normalization::Caffe.apply(&rgb);
    let expected = array![
        [[0.0 - 104.00699f32]],
        [[127.5 - 116.66877]],
        [[255.0 - 122.67892]]
    ];
    assert_close(&out, &expected, 1e-3);
    assert_eq!(Normalization::None.apply(&rgb), rgb);
    Ok(())
}

#[test]
fn normalisation_round_trips() -> Result<()> {
    let image = Array3::from_shape_fn((3, 4, 5), |(c, y, x)| {
        ((c * 20 + y * 5 + x) % 13) as f32 / 12.0
    });
    for normalization in [
        Normalization::None,
        Normalization::Imagenet,
        Normalization::Caffe,
    ] {
        let back = normalization.invert(&normalization.apply(&image));
        assert_close(&back, &image, 1e-5);
        let parsed: Normalization = normalization.to_string().parse()?;
        assert_eq!(parsed, normalization);
    }
    Ok(())
}

#[test]
fn normalisation_rejects_bad_input() -> Result<()> {
    let grey = Array3::<f32>::zeros((1, 2, 2));
    let err = Normalization::Caffe
        .try_apply(&grey)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("caffe normalisation needs a (3, H, W) RGB image, got (1, 2, 2)")
    );
    let err = "vgg".parse::<Normalization>().err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("unknown normalisation \"vgg\": use none, imagenet or caffe")
    );
    let transform = normalize_transform(Normalization::Imagenet);
    let bad = sample_with("grey-7", grey, Array2::zeros((2, 2)));
    let err = transform(bad, &mut StdRng::seed_from_u64(0))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("grey-7") && err.contains("(1, 2, 2)"), "{err}");
    Ok(())
}

#[test]
fn ready_transforms_compose() -> Result<()> {
    let plane = Array2::from_shape_fn((4, 6), |(y, x)| (y * 6 + x) as f32);
    let mask = Array2::from_shape_fn((4, 6), |(y, x)| (x % 3 + y) as u8);
    let sample = sample_with("c", three_channels(&plane), mask);
    let pipeline = compose(vec![
        resize_transform(2, 3)?,
        hflip_transform(1.0)?,
        normalize_transform(Normalization::Caffe),
    ]);
    let out = pipeline(sample.clone(), &mut StdRng::seed_from_u64(1))?;
    let by_hand = hflip(sample_with(
        "c",
        resize_image(&sample.image, 2, 3),
        resize_mask(&sample.mask, 2, 3),
    ));
    assert_eq!(out.mask, by_hand.mask);
    assert_close(
        &out.image,
        &Normalization::Caffe.apply(&by_hand.image),
        1e-4,
    );
    // p = 0 never flips.
    let kept = hflip_transform(0.0)?(sample.clone(), &mut StdRng::seed_from_u64(1))?;
    assert_eq!(kept, sample);
    Ok(())
}

#[test]
fn ready_transforms_reject_bad_parameters() -> Result<()> {
    let message = |r: Result<common::data::transforms::Transform>| {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert_eq!(
        message(hflip_transform(1.5)),
        "flip probability must lie in 0..=1, got 1.5"
    );
    assert_eq!(
        message(scale_crop_transform((0.0, 2.0), (8, 8))),
        "scale range must be finite and positive, got (0, 2)"
    );
    assert_eq!(
        message(scale_crop_transform((0.5, 2.0), (0, 8))),
        "crop size must be at least 1x1, got 0x8"
    );
    assert_eq!(
        message(resize_transform(0, 3)),
        "resize target must be at least 1x1, got 0x3"
    );
    Ok(())
}
