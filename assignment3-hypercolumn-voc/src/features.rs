//! Sparse sampling of hypercolumns (Hariharan et al. 2015; the course homework
//! "semantic-segmentation-with-cnn"): a few random pixels of every class present
//! in each training image, at the feature resolution, each with its
//! `Z`-dimensional hypercolumn, plus a safetensors cache of the samples so a
//! second run with the same settings skips the extraction.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle::Tensor;
use common::data::loader::mix;
use common::data::IGNORE_LABEL;
use common::nn::linear_taps;
use ndarray::{Array2, ArrayView2};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use safetensors::tensor::{Dtype, TensorView};

/// Sampled `(feature, label)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledFeatures {
    /// `(P, Z)` raw (not normalised) hypercolumns.
    pub features: Array2<f32>,
    /// `(P)` class labels, never [`IGNORE_LABEL`].
    pub labels: Vec<u8>,
    /// `(P)` index of the image each sample comes from.
    pub image_index: Vec<u32>,
}

impl SampledFeatures {
    /// An empty set of `Z`-dimensional samples.
    pub fn empty(feature_dim: usize) -> Self {
        Self {
            features: Array2::zeros((0, feature_dim)),
            labels: Vec::new(),
            image_index: Vec::new(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends the samples of one image.
    pub fn push_image(
        &mut self,
        image_index: usize,
        features: ArrayView2<f32>,
        labels: &[u8],
    ) -> anyhow::Result<()> {
        if features.nrows() != labels.len() || features.ncols() != self.features.ncols() {
            bail!(
                "image {image_index}: {} features of length {} for {} labels; expected length {}",
                features.nrows(),
                features.ncols(),
                labels.len(),
                self.features.ncols()
            );
        }
        for row in features.rows() {
            self.features.push_row(row)?;
        }
        self.labels.extend_from_slice(labels);
        self.image_index
            .extend(std::iter::repeat_n(image_index as u32, labels.len()));
        Ok(())
    }

    /// Number of samples of each of `n_classes` classes.
    pub fn class_counts(&self, n_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; n_classes];
        for &label in &self.labels {
            if let Some(count) = counts.get_mut(usize::from(label)) {
                *count += 1;
            }
        }
        counts
    }

    /// Writes the samples and `settings` (JSON in `__metadata__`) to a
    /// safetensors file, atomically.
    pub fn save(&self, path: &Path, settings: &serde_json::Value) -> anyhow::Result<()> {
        let (p, z) = self.features.dim();
        let features: Vec<u8> = self.features.iter().flat_map(|v| v.to_le_bytes()).collect();
        let index: Vec<u8> = self
            .image_index
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let err = |e: safetensors::SafeTensorError| anyhow::anyhow!("{e}");
        let views = vec![
            (
                "features",
                TensorView::new(Dtype::F32, vec![p, z], &features).map_err(err)?,
            ),
            (
                "labels",
                TensorView::new(Dtype::U8, vec![p], &self.labels).map_err(err)?,
            ),
            (
                "image_index",
                TensorView::new(Dtype::U32, vec![p], &index).map_err(err)?,
            ),
        ];
        let metadata = HashMap::from([("settings".to_owned(), settings.to_string())]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(err)
            .with_context(|| format!("cannot serialise sampled features for {path:?}"))?;
        common::run_dir::write_file(path, &bytes)
    }

    /// Reads samples written by [`SampledFeatures::save`] if the file exists and
    /// was made with exactly these `settings`; `Ok(None)` otherwise.
    pub fn load_if_matching(
        path: &Path,
        settings: &serde_json::Value,
    ) -> anyhow::Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path:?}"))?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{path:?} is not a safetensors file: {e}"))?;
        let stored = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("settings"))
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
        if stored.as_ref() != Some(settings) {
            return Ok(None);
        }
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{path:?} is not a safetensors file: {e}"))?;
        let get = |name: &str, dtype: Dtype| -> anyhow::Result<TensorView<'_>> {
            let view = tensors
                .tensor(name)
                .map_err(|e| anyhow::anyhow!("{path:?}: {e}"))?;
            if view.dtype() != dtype {
                bail!("{path:?}: {name} is {:?}, expected {dtype:?}", view.dtype());
            }
            Ok(view)
        };
        let features = get("features", Dtype::F32)?;
        let &[p, z] = features.shape() else {
            bail!(
                "{path:?}: features have shape {:?}, expected (P, Z)",
                features.shape()
            );
        };
        let values: Vec<f32> = features
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let labels = get("labels", Dtype::U8)?.data().to_vec();
        let image_index: Vec<u32> = get("image_index", Dtype::U32)?
            .data()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if labels.len() != p || image_index.len() != p {
            bail!(
                "{path:?}: {p} features but {} labels and {} image indices",
                labels.len(),
                image_index.len()
            );
        }
        Ok(Some(Self {
            features: Array2::from_shape_vec((p, z), values)?,
            labels,
            image_index,
        }))
    }
}

/// Picks up to `per_class` distinct random pixels of every class present in
/// `mask` (never [`IGNORE_LABEL`]), in class order; pixels as `(y, x)`.
pub fn pick_pixels(
    mask: &Array2<u8>,
    per_class: usize,
    rng: &mut StdRng,
) -> Vec<(usize, usize, u8)> {
    // BEGIN SOLUTION a3.sparse_sampling up to per_class distinct random pixels of every class present, never 255, in class order
    let mut by_class: Vec<Vec<(usize, usize)>> = vec![Vec::new(); 256];
    for ((y, x), &label) in mask.indexed_iter() {
        if label != IGNORE_LABEL {
            by_class[usize::from(label)].push((y, x));
        }
    }
    let mut picked = Vec::new();
    for (label, pixels) in by_class.iter().enumerate() {
        if pixels.is_empty() {
            continue;
        }
        let amount = per_class.min(pixels.len());
        for i in sample(rng, pixels.len(), amount) {
            let (y, x) = pixels[i];
            picked.push((y, x, label as u8));
        }
    }
    picked
    // END SOLUTION
}

/// How many pixels of each class an image gives, and the run's seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub per_class: usize,
    pub seed: u64,
}

/// The sparse sample of one training image: up to `per_class` random pixels of every
/// class present in `labels` (the image's labels at the feature resolution), each with
/// its hypercolumn. The pixels depend only on the seed and the image's index.
///
/// # Shapes
/// `taps[i] (1, C_i, h_i, w_i)`, `labels (fh, fw)` -> `(P, Z)` features and `(P)` labels
pub fn sample_image(
    taps: &[Tensor],
    labels: &Array2<u8>,
    sampling: Sampling,
    image_index: usize,
) -> anyhow::Result<(Array2<f32>, Vec<u8>)> {
    let (fh, fw) = labels.dim();
    // A per-image seed from the run seed and the image index (the loader's SplitMix64).
    let seed = mix(sampling.seed ^ mix(image_index as u64));
    let picked = pick_pixels(labels, sampling.per_class, &mut StdRng::seed_from_u64(seed));
    let pixels: Vec<(usize, usize)> = picked.iter().map(|&(y, x, _)| (y, x)).collect();
    let features = hypercolumns_at(taps, fh, fw, &pixels)?;
    Ok((
        features,
        picked.iter().map(|&(_, _, label)| label).collect(),
    ))
}

/// The two source indices and f32 weights with which each output of a resize from
/// `in_size` to `out_size` samples its input: [`linear_taps`] (PyTorch's
/// `align_corners=False`, the rule of the resize kernels), one entry per output.
fn tap_weights(in_size: usize, out_size: usize) -> Vec<[(usize, f32); 2]> {
    linear_taps(in_size, out_size)
        .into_iter()
        .map(|tap| {
            let lambda = tap.lambda as f32;
            [(tap.i0, 1.0 - lambda), (tap.i1, lambda)]
        })
        .collect()
}

/// The hypercolumns at `pixels` of a `height x width` feature map without
/// building the map: each tap is interpolated bilinearly at the point.
///
/// # Shapes
/// `taps[i] (1, C_i, h_i, w_i)` -> `(P, Σ C_i)`
pub fn hypercolumns_at(
    taps: &[Tensor],
    height: usize,
    width: usize,
    pixels: &[(usize, usize)],
) -> anyhow::Result<Array2<f32>> {
    // BEGIN SOLUTION a3.hypercolumns every tap bilinearly interpolated at each pixel, the taps' channels side by side
    let z: usize = taps
        .iter()
        .map(|t| t.dim(1))
        .sum::<candle::Result<usize>>()?;
    let mut out = Array2::<f32>::zeros((pixels.len(), z));
    let mut offset = 0;
    for tap in taps {
        let (n, c, h, w) = tap.dims4()?;
        if n != 1 {
            bail!("hypercolumns_at takes the taps of one image, got a batch of {n}");
        }
        // (1, C, h, w) -> host C*h*w, row-major.
        let values = tap
            .to_dtype(candle::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (rows, cols) = (tap_weights(h, height), tap_weights(w, width));
        for (p, &(y, x)) in pixels.iter().enumerate() {
            if y >= height || x >= width {
                bail!("pixel ({y}, {x}) lies outside the {height}x{width} feature map");
            }
            for channel in 0..c {
                let plane = &values[channel * h * w..(channel + 1) * h * w];
                let mut v = 0f32;
                for &(yy, wy) in &rows[y] {
                    for &(xx, wx) in &cols[x] {
                        v += wy * wx * plane[yy * w + xx];
                    }
                }
                out[[p, offset + channel]] = v;
            }
        }
        offset += c;
    }
    Ok(out)
    // END SOLUTION
}
