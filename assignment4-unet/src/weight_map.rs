//! The U-Net paper's border weight map (Ronneberger et al. 2015, eq. 2):
//! `w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))`, with `w_c` balancing the
//! class frequencies, `d1` and `d2` the distances to the nearest and the second
//! nearest cell (4-connected components of the cell class), and `w0 = 10`,
//! `σ = 5` px as in the paper. The border term is added on the pixels between
//! cells (not in a cell), where touching cells must be told apart.
//!
//! Distances are exact Euclidean (Felzenszwalb & Huttenlocher's separable squared
//! distance transform), computed per cell in its bounding box grown by `6σ`: beyond
//! that `d1 + d2 > 6σ` and the term is below `w0 · e^-18`.

use candle::Tensor;
use ndarray::{s, Array2};
use serde::{Deserialize, Serialize};

use common::data::image_io::tensor_to_mask;
use common::data::IGNORE_LABEL;

use common::segments::connected_components;

/// The weight map's constants (the paper's values by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightMapConfig {
    /// Height of the border term, `w0`.
    pub w0: f32,
    /// Width of the border term in pixels, `σ`.
    pub sigma: f32,
    /// The class whose connected components are the cells.
    pub cell_class: u8,
}

impl Default for WeightMapConfig {
    fn default() -> Self {
        Self {
            w0: 10.0,
            sigma: 5.0,
            cell_class: 1,
        }
    }
}

/// The weight of every pixel of `mask` (`(H, W)` labels, 255 = ignore, weight 0).
pub fn border_weight_map(
    mask: &Array2<u8>,
    n_classes: usize,
    cfg: &WeightMapConfig,
) -> Array2<f32> {
    let class_weight = class_balance(mask, n_classes);
    let (d1, d2) = two_nearest_cell_distances(mask, cfg);
    let two_sigma_sq = 2.0 * cfg.sigma * cfg.sigma;
    Array2::from_shape_fn(mask.dim(), |(y, x)| {
        let label = mask[[y, x]];
        if label == IGNORE_LABEL {
            return 0.0;
        }
        let base = class_weight[usize::from(label).min(n_classes - 1)];
        if label == cfg.cell_class {
            return base;
        }
        let gap = d1[[y, x]] + d2[[y, x]];
        base + cfg.w0 * (-(gap * gap) / two_sigma_sq).exp()
    })
}

/// The weight maps of a batch of label masks, `(N, H, W)` -> `(N, H, W)` f32 on
/// the masks' device: computed on the crops as augmented, so the weights follow
/// every rotation and elastic warp of the labels they were made from.
pub fn batch_weight_maps(
    masks: &Tensor,
    n_classes: usize,
    cfg: &WeightMapConfig,
) -> candle::Result<Tensor> {
    let (n, h, w) = masks.dims3()?;
    let mut values = Vec::with_capacity(n * h * w);
    for index in 0..n {
        let mask = tensor_to_mask(&masks.get(index)?).map_err(candle::Error::wrap)?; // (H, W)
        values.extend(border_weight_map(&mask, n_classes, cfg).iter().copied());
    }
    Tensor::from_vec(values, (n, h, w), masks.device())
}

/// Saves the weight map of `mask` as a heat map PNG (scaled to its maximum) at `path`.
pub fn save_weight_map_png(
    path: &std::path::Path,
    mask: &Array2<u8>,
    n_classes: usize,
) -> common::Result<()> {
    let weights = border_weight_map(mask, n_classes, &WeightMapConfig::default());
    let max = weights.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    common::viz::save_rgb(path, &common::viz::heat_map(&weights.mapv(|w| w / max)))
}

/// `w_c`: `n / (K' · n_k)` for each class `k` present (`n` labelled pixels, `K'`
/// classes present), so the labelled pixels' weights average 1; 0 for absent classes.
pub fn class_balance(mask: &Array2<u8>, n_classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; n_classes];
    for &label in mask.iter().filter(|&&l| l != IGNORE_LABEL) {
        counts[usize::from(label).min(n_classes - 1)] += 1;
    }
    let total: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count();
    counts
        .iter()
        .map(|&c| match c {
            0 => 0.0,
            c => total as f32 / (present * c) as f32,
        })
        .collect()
}

/// `(d1, d2)`: per pixel, the distances to the nearest and second-nearest cell
/// (0 inside a cell for `d1`); `f32::INFINITY` where fewer cells are within `6σ`.
pub fn two_nearest_cell_distances(
    mask: &Array2<u8>,
    cfg: &WeightMapConfig,
) -> (Array2<f32>, Array2<f32>) {
    let (h, w) = mask.dim();
    let segments = connected_components(mask, cfg.cell_class);
    let mut d1 = Array2::from_elem((h, w), f32::INFINITY);
    let mut d2 = Array2::from_elem((h, w), f32::INFINITY);
    let reach = (6.0 * cfg.sigma).ceil() as usize;
    for (cell, (top, bottom, left, right)) in bounding_boxes(&segments.labels, segments.count) {
        let (y0, y1) = (top.saturating_sub(reach), (bottom + reach + 1).min(h));
        let (x0, x1) = (left.saturating_sub(reach), (right + reach + 1).min(w));
        let window = segments.labels.slice(s![y0..y1, x0..x1]);
        let inside = window.mapv(|label| label == cell);
        let distance = squared_distance_transform(&inside);
        for ((wy, wx), &sq) in distance.indexed_iter() {
            let (y, x) = (y0 + wy, x0 + wx);
            let d = sq.sqrt();
            if d < d1[[y, x]] {
                d2[[y, x]] = d1[[y, x]];
                d1[[y, x]] = d;
            } else if d < d2[[y, x]] {
                d2[[y, x]] = d;
            }
        }
    }
    (d1, d2)
}

/// `(cell number, (top, bottom, left, right))` of every cell 1..=count, inclusive bounds.
fn bounding_boxes(labels: &Array2<u32>, count: usize) -> Vec<(u32, (usize, usize, usize, usize))> {
    let mut boxes = vec![(usize::MAX, 0, usize::MAX, 0); count + 1];
    for ((y, x), &label) in labels.indexed_iter().filter(|(_, &l)| l != 0) {
        let b = &mut boxes[label as usize];
        *b = (b.0.min(y), b.1.max(y), b.2.min(x), b.3.max(x));
    }
    (1..=count).map(|c| (c as u32, boxes[c])).collect()
}

/// Exact squared Euclidean distance of every pixel to the nearest `true` pixel of
/// `feature` (rows, then columns; `f32::INFINITY` when there is none).
pub fn squared_distance_transform(feature: &Array2<bool>) -> Array2<f32> {
    let (h, w) = feature.dim();
    let mut grid = feature.mapv(|f| if f { 0.0f64 } else { f64::INFINITY });
    for mut row in grid.rows_mut() {
        let line = distance_1d(&row.to_vec());
        row.iter_mut().zip(line).for_each(|(cell, d)| *cell = d);
    }
    for mut column in grid.columns_mut() {
        let line = distance_1d(&column.to_vec());
        column.iter_mut().zip(line).for_each(|(cell, d)| *cell = d);
    }
    debug_assert_eq!(grid.dim(), (h, w));
    grid.mapv(|d| d as f32)
}

/// The 1-D squared distance transform of `f` (lower envelope of the parabolas
/// `(q - p)² + f(p)`; Felzenszwalb & Huttenlocher 2012, algorithm 1).
fn distance_1d(f: &[f64]) -> Vec<f64> {
    let sites: Vec<usize> = (0..f.len()).filter(|&p| f[p].is_finite()).collect();
    if sites.is_empty() {
        return vec![f64::INFINITY; f.len()];
    }
    let parabola = |p: usize| f[p] + (p * p) as f64;
    // `hull[k]` is a parabola of the envelope, lowest from `starts[k]` on.
    let mut hull: Vec<usize> = vec![sites[0]];
    let mut starts: Vec<f64> = vec![f64::NEG_INFINITY];
    for &q in &sites[1..] {
        loop {
            let p = hull[hull.len() - 1];
            let meet = (parabola(q) - parabola(p)) / (2.0 * (q - p) as f64);
            if meet <= starts[starts.len() - 1] && hull.len() > 1 {
                hull.pop();
                starts.pop();
                continue;
            }
            hull.push(q);
            starts.push(meet);
            break;
        }
    }
    let mut k = 0;
    (0..f.len())
        .map(|q| {
            while k + 1 < hull.len() && starts[k + 1] < q as f64 {
                k += 1;
            }
            let p = hull[k];
            let offset = q as f64 - p as f64;
            offset * offset + f[p]
        })
        .collect()
}
