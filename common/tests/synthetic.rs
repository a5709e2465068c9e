//! Tests of `common::data::synthetic`: the generated shapes sets are seeded,
//! deterministic, in range, and their masks match what is drawn.

use common::data::synthetic::{synthetic_class_names, synthetic_dataset, SyntheticConfig};
use common::data::{Dataset, Sample};
use common::Result;

fn small(seed: u64, n_samples: usize) -> SyntheticConfig {
    SyntheticConfig {
        n_samples,
        height: 32,
        width: 40,
        n_classes: 4,
        seed,
    }
}

#[test]
fn same_seed_same_set_other_seed_other_set() -> Result<()> {
    let a = synthetic_dataset(&small(1, 4));
    let b = synthetic_dataset(&small(1, 4));
    assert_eq!(a.samples, b.samples);
    let c = synthetic_dataset(&small(2, 4));
    assert_ne!(a.samples[0].image, c.samples[0].image);
    // Sample i does not depend on how many samples were asked for.
    let longer = synthetic_dataset(&small(1, 6));
    assert_eq!(longer.samples[..4], a.samples[..]);
    Ok(())
}

#[test]
fn shapes_sizes_ranges_and_names() -> Result<()> {
    let ds = synthetic_dataset(&small(0, 24));
    assert_eq!(ds.len(), 24);
    assert_eq!(
        ds.class_names(),
        ["background", "disc", "rectangle", "triangle"]
    );
    let mut class_pixels = [0usize; 4];
    for (index, sample) in ds.samples.iter().enumerate() {
        assert_eq!(sample.id, format!("synth_{index:04}"));
        assert_eq!(sample.image.dim(), (3, 32, 40));
        assert_eq!(sample.mask.dim(), (32, 40));
        assert!(sample.image.iter().all(|v| (0.0..=1.0).contains(v)));
        for &v in &sample.mask {
            class_pixels[v as usize] += 1; // panics (fails) on a label >= 4
        }
    }
    // Every class shows up, and the background is not swamped.
    assert!(class_pixels.iter().all(|&n| n > 0), "{class_pixels:?}");
    let total: usize = class_pixels.iter().sum();
    assert!(class_pixels[0] * 4 > total, "{class_pixels:?}");
    // More classes than shape kinds repeat the kinds with a suffix.
    let names = synthetic_class_names(8);
    assert_eq!(names[5], "ring");
    assert_eq!(names[6], "disc_2");
    assert_eq!(synthetic_class_names(300).len(), 255);
    Ok(())
}

/// Per image, each labelled region has its own colour: nearly every pixel is
/// nearer the mean colour of its own label than that of any other label in the
/// image (measured: all of them). The same mask shifted by one pixel must do
/// clearly worse, so the check sees edges, not only region interiors.
#[test]
fn masks_match_the_drawn_colours() -> Result<()> {
    let ds = synthetic_dataset(&small(5, 12));
    let mut total = 0usize;
    let mut nearest_own = 0usize;
    let mut nearest_own_shifted = 0usize;
    for sample in &ds.samples {
        let shifted = Sample {
            mask: shift_right(&sample.mask, 1),
            ..sample.clone()
        };
        let (own, n) = own_colour_hits(sample);
        total += n;
        nearest_own += own;
        nearest_own_shifted += own_colour_hits(&shifted).0;
    }
    let accuracy = nearest_own as f64 / total as f64;
    let shifted_accuracy = nearest_own_shifted as f64 / total as f64;
    assert!(accuracy > 0.999, "own-colour accuracy {accuracy}");
    assert!(
        shifted_accuracy < accuracy - 0.01,
        "shifted {shifted_accuracy} vs {accuracy}"
    );
    Ok(())
}

/// Moves a mask `by` pixels to the right, repeating the first column.
fn shift_right(mask: &ndarray::Array2<u8>, by: usize) -> ndarray::Array2<u8> {
    ndarray::Array2::from_shape_fn(mask.dim(), |(y, x)| mask[[y, x.saturating_sub(by)]])
}

/// (pixels nearest the mean colour of their own label, pixels counted).
fn own_colour_hits(sample: &Sample) -> (usize, usize) {
    let (_, h, w) = sample.image.dim();
    let mut sums = [[0f64; 3]; 256];
    let mut counts = [0usize; 256];
    for y in 0..h {
        for x in 0..w {
            let label = sample.mask[[y, x]] as usize;
            counts[label] += 1;
            for c in 0..3 {
                sums[label][c] += f64::from(sample.image[[c, y, x]]);
            }
        }
    }
    let means: Vec<(usize, [f64; 3])> = (0..256)
        .filter(|&l| counts[l] > 0)
        .map(|l| (l, sums[l].map(|s| s / counts[l] as f64)))
        .collect();
    let mut hits = 0;
    for y in 0..h {
        for x in 0..w {
            let pixel = [0, 1, 2].map(|c| f64::from(sample.image[[c, y, x]]));
            let nearest = means
                .iter()
                .min_by(|a, b| distance(&pixel, &a.1).total_cmp(&distance(&pixel, &b.1)))
                .map(|m| m.0);
            if nearest == Some(sample.mask[[y, x]] as usize) {
                hits += 1;
            }
        }
    }
    (hits, h * w)
}

fn distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

#[test]
fn degenerate_configs_do_not_panic() -> Result<()> {
    // Background only.
    let one = synthetic_dataset(&SyntheticConfig {
        n_classes: 1,
        ..small(0, 2)
    });
    assert!(one.samples.iter().all(|s| s.mask.iter().all(|&v| v == 0)));
    // Tiny and empty images, no samples.
    let tiny = synthetic_dataset(&SyntheticConfig {
        height: 1,
        width: 2,
        ..small(0, 3)
    });
    assert_eq!(tiny.samples[0].mask.dim(), (1, 2));
    let empty = synthetic_dataset(&SyntheticConfig {
        height: 0,
        ..small(0, 1)
    });
    assert_eq!(empty.samples[0].image.dim(), (3, 0, 40));
    assert!(synthetic_dataset(&small(0, 0)).is_empty());
    let default = SyntheticConfig::default();
    assert_eq!(
        (default.height, default.width, default.n_classes),
        (64, 64, 4)
    );
    Ok(())
}
