//! The border weight map: the exact distance transform against brute force, the
//! class balance by hand, and the border term between two cells worked out by hand.

use assignment4_unet::weight_map::{
    border_weight_map, class_balance, squared_distance_transform, two_nearest_cell_distances,
    WeightMapConfig,
};
use ndarray::Array2;

/// Rows of '#' (membrane, 0), '.' (cell, 1) and '?' (ignore, 255).
fn mask(rows: &[&str]) -> Array2<u8> {
    Array2::from_shape_fn((rows.len(), rows[0].len()), |(y, x)| {
        match rows[y].as_bytes()[x] {
            b'.' => 1,
            b'?' => 255,
            _ => 0,
        }
    })
}

#[test]
fn distance_transform_is_exact() {
    let feature = Array2::from_shape_fn((9, 13), |(y, x)| (y * 7 + x * 3) % 11 == 0 && x != 6);
    let fast = squared_distance_transform(&feature);
    for ((y, x), &got) in fast.indexed_iter() {
        let brute = feature
            .indexed_iter()
            .filter(|(_, &f)| f)
            .map(|((fy, fx), _)| (fy as f32 - y as f32).powi(2) + (fx as f32 - x as f32).powi(2))
            .fold(f32::INFINITY, f32::min);
        assert_eq!(got, brute, "at ({y}, {x})");
    }
    let empty = squared_distance_transform(&Array2::from_elem((3, 4), false));
    assert!(empty.iter().all(|d| d.is_infinite()));
}

/// 3 membrane pixels and 9 cell pixels: w_c = 12 / (2 · 3) = 2 and 12 / (2 · 9) = 2/3,
/// so the labelled weights average 1; ignored pixels do not count.
#[test]
fn class_balance_averages_one() {
    let labels = mask(&["#...", "#...", "#...", "????"]);
    let weights = class_balance(&labels, 2);
    assert!((weights[0] - 2.0).abs() < 1e-6 && (weights[1] - 2.0 / 3.0).abs() < 1e-6);
}

/// Two cells (columns 0-1 and 4-5) with a 2-pixel gap (columns 2-3). At column 2:
/// d1 = 1, d2 = 2, so w = w_c(0) + 10 · exp(-9 / 50); w_c(0) = 24 / (2 · 8) = 1.5,
/// w_c(1) = 24 / (2 · 16) = 0.75. Cells get w_c(1) only; ignored pixels 0.
#[test]
fn the_border_term_is_largest_between_touching_cells() {
    let labels = mask(&["..##..", "..##..", "..##..", "..##.."]);
    let cfg = WeightMapConfig::default();
    let (d1, d2) = two_nearest_cell_distances(&labels, &cfg);
    assert_eq!((d1[[1, 2]], d2[[1, 2]]), (1.0, 2.0));
    assert_eq!((d1[[1, 0]], d2[[1, 0]]), (0.0, 4.0));
    let weights = border_weight_map(&labels, 2, &cfg);
    let expected = 1.5 + 10.0 * (-9.0f32 / 50.0).exp();
    assert!(
        (weights[[0, 2]] - expected).abs() < 1e-5,
        "{}",
        weights[[0, 2]]
    );
    assert!((weights[[0, 3]] - expected).abs() < 1e-5);
    assert!((weights[[2, 0]] - 0.75).abs() < 1e-6);

    let mut with_ignore = labels.clone();
    with_ignore[[3, 2]] = 255;
    assert_eq!(border_weight_map(&with_ignore, 2, &cfg)[[3, 2]], 0.0);
}

/// Next to a single cell there is no second cell: d2 is infinite and the
/// membrane keeps its class weight alone.
#[test]
fn one_cell_adds_no_border_term() {
    let labels = mask(&["..####", "..####"]);
    let weights = border_weight_map(&labels, 2, &WeightMapConfig::default());
    // w_c(0) = 12 / (2 · 8) = 0.75
    assert!((weights[[0, 3]] - 0.75).abs() < 1e-6, "{}", weights[[0, 3]]);
}
