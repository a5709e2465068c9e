//! The Rand score and the connected components behind it, on hand-made
//! segmentations whose figures are worked out in the comments.

use assignment4_unet::rand_score::RandCounts;
use common::segments::connected_components;
use ndarray::{array, Array2};

/// Rows of '#' (membrane, 0) and '.' (cell, 1).
fn mask(rows: &[&str]) -> Array2<u8> {
    let w = rows[0].len();
    Array2::from_shape_fn((rows.len(), w), |(y, x)| {
        u8::from(rows[y].as_bytes()[x] == b'.')
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn components_are_four_connected_and_numbered_in_raster_order() {
    let cells = mask(&["..#.", "#.#.", "..##", "#..."]);
    let segments = connected_components(&cells, 1);
    // The left cells join through column 1; column 3's top pair and bottom row are apart.
    assert_eq!(segments.count, 2);
    assert_eq!(
        segments.labels,
        array![[1, 1, 0, 2], [0, 1, 0, 2], [1, 1, 0, 0], [0, 1, 1, 1]]
    );
    let diagonal = mask(&[".#", "#."]);
    assert_eq!(connected_components(&diagonal, 1).count, 2);
}

#[test]
fn a_perfect_segmentation_scores_one() {
    let truth = mask(&["..#..", "..#..", "#####", "..#.."]);
    let score = RandCounts::of_masks(&truth, &truth, 1).score();
    assert_eq!(
        (score.v_rand, score.v_split, score.v_merge),
        (1.0, 1.0, 1.0)
    );
}

/// Two true cells of 4 pixels merged into one predicted cell of 8:
/// Σ n_ij² = 4² + 4² = 32, Σ t_j² = 32, Σ s_i² = 8² = 64:
/// split 32/32 = 1, merge 32/64 = 1/2, V_rand = 64/96 = 2/3.
#[test]
fn a_merge_halves_v_merge() {
    let truth = mask(&["..#..", "..#.."]);
    let merged = mask(&[".....", "....."]);
    let score = RandCounts::of_masks(&truth, &merged, 1).score();
    assert!(close(score.v_split, 1.0), "{score:?}");
    assert!(close(score.v_merge, 0.5), "{score:?}");
    assert!(close(score.v_rand, 2.0 / 3.0), "{score:?}");
}

/// One true cell of 8 pixels cut by a predicted membrane column: predicted cell a
/// (column 0, 2 px), predicted membrane (column 1, 2 px, segment 0) and predicted
/// cell b (columns 2..4, 4 px). n = (2, 2, 4): Σ n² = 24, Σ t² = 8² = 64, Σ s² = 24:
/// split 24/64, merge 1, V_rand = 48/88.
#[test]
fn a_split_lowers_v_split_and_predicted_membrane_counts_as_a_segment() {
    let truth = mask(&["....", "...."]);
    let split = mask(&[".#..", ".#.."]);
    let score = RandCounts::of_masks(&truth, &split, 1).score();
    assert!(close(score.v_split, 24.0 / 64.0), "{score:?}");
    assert!(close(score.v_merge, 1.0), "{score:?}");
    assert!(close(score.v_rand, 48.0 / 88.0), "{score:?}");
}

/// Counts add over images before the ratios, and pixels on true membranes never count.
#[test]
fn counts_add_over_images_and_true_membrane_is_left_out() {
    let truth = mask(&["..#..", "..#.."]);
    let merged = mask(&[".....", "....."]);
    let mut total = RandCounts::of_masks(&truth, &truth, 1);
    total.add(RandCounts::of_masks(&truth, &merged, 1));
    // perfect: (32, 32, 32); merged: joint 32, predicted 64, truth 32
    assert_eq!(
        (total.joint, total.predicted, total.truth),
        (64.0, 96.0, 64.0)
    );
    // Predicting cells on the true membrane changes nothing but what it merges.
    let no_truth = mask(&["##", "##"]);
    let score = RandCounts::of_masks(&no_truth, &mask(&["..", ".."]), 1).score();
    assert_eq!(score.v_rand, 1.0);
}
