//! Data augmentation for U-Net training on `ndarray` samples: random crops, flips,
//! 90-degree rotations and the elastic deformation of Simard et al. (2003) that
//! Ronneberger et al. (2015) credit for learning from 30 images.
//!
//! Elastic deformation: a random displacement field (uniform in -1..1 per pixel
//! and axis) is smoothed by a Gaussian of standard deviation `sigma` and scaled by
//! `alpha`; output pixel `(y, x)` then reads the input at `(y + dy, x + dx)`,
//! bilinearly for the image and nearest for the mask, with the same field.

use std::sync::Arc;

use common::data::transforms::Transform;
use common::data::{Sample, IGNORE_LABEL};
use ndarray::{s, Array2, Array3, Axis};
use rand::rngs::StdRng;
use rand::Rng;

/// Elastic deformation strength (Simard et al.'s `alpha` and `sigma`, in pixels):
/// flags of `train`, with their defaults written once, here.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
pub struct ElasticConfig {
    /// Elastic deformation scale alpha in pixels (the displacement's standard deviation is
    /// about alpha * 0.577 / (2 sqrt(pi) sigma): 4 px for the defaults)
    #[arg(long = "elastic-alpha", default_value_t = 250.0)]
    pub alpha: f32,
    /// Elastic deformation smoothness sigma: the Gaussian's standard deviation in pixels
    #[arg(long = "elastic-sigma", default_value_t = 10.0)]
    pub sigma: f32,
    /// Chance that a training crop is elastically deformed at all
    #[arg(long = "elastic-probability", default_value_t = 0.5)]
    pub probability: f64,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        common::cli::defaults()
    }
}

/// What the training transform does to each sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Side of the square random crop (images smaller than this are padded:
    /// image with 0, mask with the ignore label 255).
    pub crop: usize,
    /// Random horizontal and vertical flips and 90-degree rotations.
    pub flips_and_rotations: bool,
    /// Elastic deformation, or none.
    pub elastic: Option<ElasticConfig>,
}

/// Crops a random `crop x crop` window; a side shorter than `crop` is padded
/// (image 0, mask [`IGNORE_LABEL`]) so every output has the same size.
pub fn random_crop(sample: Sample, crop: usize, rng: &mut StdRng) -> Sample {
    let (h, w) = sample.size();
    let (c, _, _) = sample.image.dim();
    let top = if h > crop {
        rng.random_range(0..=h - crop)
    } else {
        0
    };
    let left = if w > crop {
        rng.random_range(0..=w - crop)
    } else {
        0
    };
    let (ch, cw) = (crop.min(h), crop.min(w));
    let mut image = Array3::<f32>::zeros((c, crop, crop));
    let mut mask = Array2::<u8>::from_elem((crop, crop), IGNORE_LABEL);
    image
        .slice_mut(s![.., ..ch, ..cw])
        .assign(&sample.image.slice(s![.., top..top + ch, left..left + cw]));
    mask.slice_mut(s![..ch, ..cw])
        .assign(&sample.mask.slice(s![top..top + ch, left..left + cw]));
    Sample {
        id: sample.id,
        image,
        mask,
    }
}

/// Rotates image and mask by `quarter_turns * 90` degrees counter-clockwise.
pub fn rot90(sample: Sample, quarter_turns: usize) -> Sample {
    let mut image = sample.image;
    let mut mask = sample.mask;
    for _ in 0..quarter_turns % 4 {
        // Counter-clockwise: transpose then flip the rows (new row 0 = old last column).
        let mut turned = image.view();
        turned.swap_axes(1, 2);
        turned.invert_axis(Axis(1));
        image = turned.to_owned();
        let mut turned = mask.view();
        turned.swap_axes(0, 1);
        turned.invert_axis(Axis(0));
        mask = turned.to_owned();
    }
    Sample {
        id: sample.id,
        image,
        mask,
    }
}

/// Mirrors image and mask left-right (`horizontal`) or top-bottom.
pub fn flip(sample: Sample, horizontal: bool) -> Sample {
    let (image_axis, mask_axis) = if horizontal { (2, 1) } else { (1, 0) };
    let mut image = sample.image;
    let mut mask = sample.mask;
    image.invert_axis(Axis(image_axis));
    mask.invert_axis(Axis(mask_axis));
    Sample {
        id: sample.id,
        image: image.as_standard_layout().to_owned(),
        mask: mask.as_standard_layout().to_owned(),
    }
}

/// One of the eight flips/rotations of the square, chosen at random.
pub fn random_flip_rotate(sample: Sample, rng: &mut StdRng) -> Sample {
    let sample = if rng.random_bool(0.5) {
        flip(sample, true)
    } else {
        sample
    };
    rot90(sample, rng.random_range(0..4))
}

/// The 1-D Gaussian kernel of standard deviation `sigma`, truncated at 3 sigma,
/// summing to one.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.into_iter().map(|k| k / sum).collect()
}

/// Separable Gaussian blur with edge-replicating borders.
fn gaussian_blur(field: &Array2<f32>, sigma: f32) -> Array2<f32> {
    if sigma <= 0.0 {
        return field.clone();
    }
    let kernel = gaussian_kernel(sigma);
    let radius = (kernel.len() / 2) as isize;
    let (h, w) = field.dim();
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut rows = Array2::<f32>::zeros((h, w));
    for y in 0..h {
        for x in 0..w {
            rows[[y, x]] = kernel
                .iter()
                .enumerate()
                .map(|(k, weight)| weight * field[[y, clamp(x as isize + k as isize - radius, w)]])
                .sum();
        }
    }
    let mut out = Array2::<f32>::zeros((h, w));
    for y in 0..h {
        for x in 0..w {
            out[[y, x]] = kernel
                .iter()
                .enumerate()
                .map(|(k, weight)| weight * rows[[clamp(y as isize + k as isize - radius, h), x]])
                .sum();
        }
    }
    out
}

/// A smooth random displacement field `(dy, dx)` of size `h x w`, in pixels:
/// uniform noise in -1..1, Gaussian-smoothed by `sigma`, times `alpha`.
pub fn displacement_field(
    h: usize,
    w: usize,
    alpha: f32,
    sigma: f32,
    rng: &mut StdRng,
) -> (Array2<f32>, Array2<f32>) {
    let mut noise = || Array2::from_shape_simple_fn((h, w), || rng.random_range(-1.0f32..1.0));
    let dy = gaussian_blur(&noise(), sigma) * alpha;
    let dx = gaussian_blur(&noise(), sigma) * alpha;
    (dy, dx)
}

/// Samples `image` at `(y + dy, x + dx)` bilinearly; positions outside the image
/// read the nearest edge pixel.
///
/// # Shapes
/// `image (C, H, W)`, `dy, dx (H, W)` -> `(C, H, W)`
pub fn warp_image(image: &Array3<f32>, dy: &Array2<f32>, dx: &Array2<f32>) -> Array3<f32> {
    let (c, h, w) = image.dim();
    let mut out = Array3::<f32>::zeros((c, h, w));
    let (max_y, max_x) = ((h - 1) as f32, (w - 1) as f32);
    for y in 0..h {
        for x in 0..w {
            let sy = (y as f32 + dy[[y, x]]).clamp(0.0, max_y);
            let sx = (x as f32 + dx[[y, x]]).clamp(0.0, max_x);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
            for ch in 0..c {
                let top = image[[ch, y0, x0]] * (1.0 - fx) + image[[ch, y0, x1]] * fx;
                let bottom = image[[ch, y1, x0]] * (1.0 - fx) + image[[ch, y1, x1]] * fx;
                out[[ch, y, x]] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
}

/// Samples `mask` at the nearest pixel to `(y + dy, x + dx)` (labels must not be
/// blended); positions outside the mask read the nearest edge pixel.
///
/// # Shapes
/// `mask (H, W)`, `dy, dx (H, W)` -> `(H, W)`
pub fn warp_mask(mask: &Array2<u8>, dy: &Array2<f32>, dx: &Array2<f32>) -> Array2<u8> {
    let (h, w) = mask.dim();
    let (max_y, max_x) = ((h - 1) as f32, (w - 1) as f32);
    Array2::from_shape_fn((h, w), |(y, x)| {
        let sy = (y as f32 + dy[[y, x]]).clamp(0.0, max_y).round() as usize;
        let sx = (x as f32 + dx[[y, x]]).clamp(0.0, max_x).round() as usize;
        mask[[sy, sx]]
    })
}

/// Warps image and mask with one random field (see the module notes).
pub fn elastic_deform(sample: Sample, cfg: &ElasticConfig, rng: &mut StdRng) -> Sample {
    let (h, w) = sample.size();
    if h == 0 || w == 0 {
        return sample;
    }
    let (dy, dx) = displacement_field(h, w, cfg.alpha, cfg.sigma, rng);
    Sample {
        image: warp_image(&sample.image, &dy, &dx),
        mask: warp_mask(&sample.mask, &dy, &dx),
        id: sample.id,
    }
}

/// Crop, then (with its probability) elastic deformation, then a random flip/rotation.
pub fn augment(sample: Sample, cfg: &AugmentConfig, rng: &mut StdRng) -> Sample {
    let mut sample = random_crop(sample, cfg.crop, rng);
    if let Some(elastic) = &cfg.elastic {
        if rng.random_bool(elastic.probability.clamp(0.0, 1.0)) {
            sample = elastic_deform(sample, elastic, rng);
        }
    }
    if cfg.flips_and_rotations {
        sample = random_flip_rotate(sample, rng);
    }
    sample
}

/// [`augment`] as a loader transform.
pub fn augment_transform(cfg: AugmentConfig) -> Transform {
    Arc::new(move |sample, rng| Ok(augment(sample, &cfg, rng)))
}
