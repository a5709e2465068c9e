//! Host-side sample transforms: bilinear image and nearest mask resizing (the
//! PyTorch `F.interpolate` formulas), horizontal flip, random scale + crop (the
//! augmentation of FCN/DeepLab training), and the input normalisations that
//! ImageNet (torchvision) and Caffe (VGG/HED) weights expect.
//!
//! A [`Transform`] is a boxed closure over a [`Sample`] and the loader's seeded
//! random generator, so a run's augmentation is reproducible.

use std::sync::Arc;

use ndarray::{s, Array2, Array3, Axis};
use rand::rngs::StdRng;
use rand::Rng;

use super::{Sample, IGNORE_LABEL};
use crate::Result;

/// A sample transform; the generator comes from the loader, seeded from (seed, epoch, index).
pub type Transform = Arc<dyn Fn(Sample, &mut StdRng) -> Result<Sample> + Send + Sync>;

/// Source index pair and weight of one output coordinate of a bilinear resize,
/// PyTorch `align_corners=False`: `src = max((dst + 0.5) * in / out - 0.5, 0)`,
/// `i0 = floor(src)`, `i1 = min(i0 + 1, in - 1)`, `value = (1 - t) * x[i0] + t * x[i1]`.
fn bilinear_taps(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32)> {
    let scale = in_size as f64 / out_size as f64;
    (0..out_size)
        .map(|dst| {
            let src = ((dst as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_size - 1);
            let i1 = (i0 + 1).min(in_size - 1);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

/// Source index of one output coordinate of a nearest resize, PyTorch mode
/// `"nearest"`: `src = min(floor(dst * in / out), in - 1)` (with a float32 scale, as PyTorch).
fn nearest_index(dst: usize, in_size: usize, out_size: usize) -> usize {
    let scale = in_size as f32 / out_size as f32;
    ((dst as f32 * scale).floor() as usize).min(in_size - 1)
}

/// Bilinear resize of a `(C, H, W)` image to `(C, h, w)`, the same values as PyTorch
/// `F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)` (no antialias).
///
/// An image with no pixels has nothing to interpolate: the result is all zeros.
pub fn resize_image(image: &Array3<f32>, h: usize, w: usize) -> Array3<f32> {
    let (c, in_h, in_w) = image.dim();
    if in_h == 0 || in_w == 0 || h == 0 || w == 0 {
        return Array3::zeros((c, h, w));
    }
    let rows = bilinear_taps(in_h, h);
    let cols = bilinear_taps(in_w, w);
    Array3::from_shape_fn((c, h, w), |(ch, y, x)| {
        let (y0, y1, ty) = rows[y];
        let (x0, x1, tx) = cols[x];
        let top = (1.0 - tx) * image[[ch, y0, x0]] + tx * image[[ch, y0, x1]];
        let bottom = (1.0 - tx) * image[[ch, y1, x0]] + tx * image[[ch, y1, x1]];
        (1.0 - ty) * top + ty * bottom
    })
}

/// Nearest-neighbour resize of an `(H, W)` mask to `(h, w)`, the same indices as
/// PyTorch `F.interpolate(mask, size=(h, w), mode="nearest")`; labels are never mixed.
///
/// A mask with no pixels gives an all-[`IGNORE_LABEL`] result.
pub fn resize_mask(mask: &Array2<u8>, h: usize, w: usize) -> Array2<u8> {
    let (in_h, in_w) = mask.dim();
    if in_h == 0 || in_w == 0 || h == 0 || w == 0 {
        return Array2::from_elem((h, w), IGNORE_LABEL);
    }
    let rows: Vec<usize> = (0..h).map(|y| nearest_index(y, in_h, h)).collect();
    let cols: Vec<usize> = (0..w).map(|x| nearest_index(x, in_w, w)).collect();
    Array2::from_shape_fn((h, w), |(y, x)| mask[[rows[y], cols[x]]])
}

/// Mirrors image and mask left to right.
pub fn hflip(sample: Sample) -> Sample {
    Sample {
        id: sample.id,
        image: sample.image.slice(s![.., .., ..;-1]).to_owned(),
        mask: sample.mask.slice(s![.., ..;-1]).to_owned(),
    }
}

/// Resizes image (bilinear) and mask (nearest) to `(h, w)`.
fn resize_sample(sample: Sample, h: usize, w: usize) -> Sample {
    Sample {
        image: resize_image(&sample.image, h, w),
        mask: resize_mask(&sample.mask, h, w),
        id: sample.id,
    }
}

/// Random scale then random crop, the usual segmentation augmentation.
///
/// The scale factor is drawn uniformly from `scale` (bounds in any order; a factor
/// that is not a positive number counts as 1; no side shrinks below one pixel), the image is resized bilinearly and the
/// mask by nearest neighbour, both are padded at the bottom and right (image with 0,
/// mask with [`IGNORE_LABEL`]) when smaller than `crop = (height, width)`, and a
/// `crop` window is cut at a uniformly random position.
pub fn random_scale_crop(
    sample: Sample,
    scale: (f32, f32),
    crop: (usize, usize),
    rng: &mut StdRng,
) -> Sample {
    let (lo, hi) = if scale.0 <= scale.1 {
        (scale.0, scale.1)
    } else {
        (scale.1, scale.0)
    };
    let factor = if lo < hi && (hi - lo).is_finite() {
        lo + (hi - lo) * rng.random::<f32>()
    } else {
        lo
    };
    // A factor that is not a positive number keeps the size (no panic on bad input).
    let factor = if factor.is_finite() && factor > 0.0 {
        factor
    } else {
        1.0
    };
    let (h, w) = sample.size();
    let new_h = ((h as f32 * factor).round() as usize).max(1);
    let new_w = ((w as f32 * factor).round() as usize).max(1);
    let sample = resize_sample(sample, new_h, new_w);

    // Pad to at least the crop size; padded pixels are ignored by losses and metrics.
    let (crop_h, crop_w) = crop;
    let (pad_h, pad_w) = (new_h.max(crop_h), new_w.max(crop_w));
    let channels = sample.image.dim().0;
    let mut image = Array3::<f32>::zeros((channels, pad_h, pad_w));
    image
        .slice_mut(s![.., ..new_h, ..new_w])
        .assign(&sample.image);
    let mut mask = Array2::from_elem((pad_h, pad_w), IGNORE_LABEL);
    mask.slice_mut(s![..new_h, ..new_w]).assign(&sample.mask);

    let top = rng.random_range(0..=pad_h - crop_h);
    let left = rng.random_range(0..=pad_w - crop_w);
    Sample {
        id: sample.id,
        image: image
            .slice(s![.., top..top + crop_h, left..left + crop_w])
            .to_owned(),
        mask: mask
            .slice(s![top..top + crop_h, left..left + crop_w])
            .to_owned(),
    }
}

/// The ImageNet mean of the R, G, B channels (torchvision).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The ImageNet standard deviation of the R, G, B channels (torchvision).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The Caffe VGG mean of the B, G, R channels, on the 0..255 scale.
pub const CAFFE_MEAN_BGR: [f32; 3] = [104.00699, 116.66877, 122.67892];

/// How a model expects its input, applied to an RGB 0..1 `(3, H, W)` image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    /// RGB 0..1 as is.
    #[default]
    None,
    /// RGB, `(x - mean) / std` with [`IMAGENET_MEAN`] and [`IMAGENET_STD`] (torchvision weights).
    Imagenet,
    /// BGR channel order, 0..255, minus [`CAFFE_MEAN_BGR`], no std (Caffe VGG, HED weights).
    Caffe,
}

impl std::str::FromStr for Normalization {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "imagenet" => Ok(Self::Imagenet),
            "caffe" => Ok(Self::Caffe),
            other => anyhow::bail!("unknown normalisation {other:?}: use none, imagenet or caffe"),
        }
    }
}

impl std::fmt::Display for Normalization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Imagenet => "imagenet",
            Self::Caffe => "caffe",
        })
    }
}

impl Normalization {
    /// Normalises an RGB 0..1 `(3, H, W)` image for the model.
    ///
    /// # Panics
    /// When the image does not have 3 channels (a [`Sample`] always has);
    /// [`Normalization::try_apply`] returns an error instead.
    pub fn apply(&self, image: &Array3<f32>) -> Array3<f32> {
        match self.try_apply(image) {
            Ok(out) => out,
            Err(err) => panic!("{err}"),
        }
    }

    /// Undoes [`Normalization::apply`], back to RGB 0..1 for display.
    ///
    /// # Panics
    /// When the image does not have 3 channels; [`Normalization::try_invert`] returns an error instead.
    pub fn invert(&self, image: &Array3<f32>) -> Array3<f32> {
        match self.try_invert(image) {
            Ok(out) => out,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`Normalization::apply`] that returns an error for an image without 3 channels.
    pub fn try_apply(&self, image: &Array3<f32>) -> Result<Array3<f32>> {
        self.check_channels(image)?;
        let mut out = image.clone();
        match self {
            Self::None => {}
            Self::Imagenet => {
                for (c, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
                    plane.mapv_inplace(|x| (x - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
                }
            }
            Self::Caffe => {
                // Output channel c (B, G, R) comes from input channel 2 - c (R, G, B).
                for (c, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
                    let source = image.index_axis(Axis(0), 2 - c);
                    plane.zip_mut_with(&source, |o, &x| *o = x * 255.0 - CAFFE_MEAN_BGR[c]);
                }
            }
        }
        Ok(out)
    }

    /// [`Normalization::invert`] that returns an error for an image without 3 channels.
    pub fn try_invert(&self, image: &Array3<f32>) -> Result<Array3<f32>> {
        self.check_channels(image)?;
        let mut out = image.clone();
        match self {
            Self::None => {}
            Self::Imagenet => {
                for (c, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
                    plane.mapv_inplace(|x| x * IMAGENET_STD[c] + IMAGENET_MEAN[c]);
                }
            }
            Self::Caffe => {
                // Output channel c (R, G, B) comes from input channel 2 - c (R, G, B reversed).
                for (c, mut plane) in out.axis_iter_mut(Axis(0)).enumerate() {
                    let source = image.index_axis(Axis(0), 2 - c);
                    plane.zip_mut_with(&source, |o, &x| *o = (x + CAFFE_MEAN_BGR[2 - c]) / 255.0);
                }
            }
        }
        Ok(out)
    }

    fn check_channels(&self, image: &Array3<f32>) -> Result<()> {
        let (c, h, w) = image.dim();
        if c != 3 && *self != Self::None {
            anyhow::bail!("{self} normalisation needs a (3, H, W) RGB image, got ({c}, {h}, {w})");
        }
        Ok(())
    }
}

/// Runs transforms one after the other.
pub fn compose(transforms: Vec<Transform>) -> Transform {
    Arc::new(move |mut sample, rng| {
        for transform in &transforms {
            sample = transform(sample, rng)?;
        }
        Ok(sample)
    })
}

/// Normalises the image of each sample (see [`Normalization`]); the mask is kept.
pub fn normalize_transform(normalization: Normalization) -> Transform {
    Arc::new(move |sample, _rng| {
        let image = normalization
            .try_apply(&sample.image)
            .map_err(|err| anyhow::anyhow!("sample {:?}: {err}", sample.id))?;
        Ok(Sample { image, ..sample })
    })
}

/// Flips each sample left to right with probability `p` (0..=1).
pub fn hflip_transform(p: f64) -> Result<Transform> {
    if !(0.0..=1.0).contains(&p) {
        anyhow::bail!("flip probability must lie in 0..=1, got {p}");
    }
    Ok(Arc::new(move |sample, rng| {
        Ok(if rng.random_bool(p) {
            hflip(sample)
        } else {
            sample
        })
    }))
}

/// [`random_scale_crop`] as a transform; `scale` bounds must be finite and positive,
/// `crop` sides at least 1.
pub fn scale_crop_transform(scale: (f32, f32), crop: (usize, usize)) -> Result<Transform> {
    let valid = |x: f32| x.is_finite() && x > 0.0;
    if !valid(scale.0) || !valid(scale.1) {
        anyhow::bail!(
            "scale range must be finite and positive, got ({}, {})",
            scale.0,
            scale.1
        );
    }
    if crop.0 == 0 || crop.1 == 0 {
        anyhow::bail!("crop size must be at least 1x1, got {}x{}", crop.0, crop.1);
    }
    Ok(Arc::new(move |sample, rng| {
        Ok(random_scale_crop(sample, scale, crop, rng))
    }))
}

/// Resizes every sample to `(h, w)`: image bilinear, mask nearest; sides at least 1.
pub fn resize_transform(h: usize, w: usize) -> Result<Transform> {
    if h == 0 || w == 0 {
        anyhow::bail!("resize target must be at least 1x1, got {h}x{w}");
    }
    Ok(Arc::new(move |sample, _rng| {
        Ok(resize_sample(sample, h, w))
    }))
}
