//! Small generated segmentation sets, so that every program and test runs with
//! no data on disk: textured shapes (discs, rectangles, triangles, diamonds,
//! rings) on textured backgrounds, with exact masks (class = shape kind,
//! 0 = background). Also re-exports the writers that put any data set on disk in
//! the VOC or the pairs layout.

use std::f32::consts::TAU;

use ndarray::{Array2, Array3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{InMemoryDataset, Sample};

pub use super::pairs::write_pairs_layout;
pub use super::voc::write_voc_layout;

/// The shape kinds, in class order: class `k >= 1` is kind `(k - 1) % 5`.
pub const SHAPE_KINDS: [&str; 5] = ["disc", "rectangle", "triangle", "diamond", "ring"];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Number of samples.
    pub n_samples: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes including background (0). Classes past the five shape
    /// kinds repeat the kinds with their own colours; at most 255 are used.
    pub n_classes: usize,
    /// Seed; sample `i` depends only on `(seed, i, height, width, n_classes)`.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// 32 samples of 64x64 with background + disc, rectangle, triangle, seed 0.
    fn default() -> Self {
        SyntheticConfig {
            n_samples: 32,
            height: 64,
            width: 64,
            n_classes: 4,
            seed: 0,
        }
    }
}

/// The class names for `n_classes`: `"background"`, then the shape kinds
/// (`"disc"`, ...; a repeated kind gets a suffix, `"disc_2"`).
pub fn synthetic_class_names(n_classes: usize) -> Vec<String> {
    (0..n_classes.min(255))
        .map(|class| match class {
            0 => "background".to_owned(),
            k => {
                let kind = SHAPE_KINDS[(k - 1) % SHAPE_KINDS.len()];
                let round = (k - 1) / SHAPE_KINDS.len();
                if round == 0 {
                    kind.to_owned()
                } else {
                    format!("{kind}_{}", round + 1)
                }
            }
        })
        .collect()
}

/// Generates the set described by `cfg`; ids are `synth_0000`, `synth_0001`, ...
/// Each image holds one to three shapes of random classes (later shapes cover
/// earlier ones; the mask follows exactly what is drawn).
pub fn synthetic_dataset(cfg: &SyntheticConfig) -> InMemoryDataset {
    let class_names = synthetic_class_names(cfg.n_classes);
    let samples = (0..cfg.n_samples)
        .map(|index| synthetic_sample(cfg, class_names.len(), index))
        .collect();
    InMemoryDataset {
        samples,
        class_names,
    }
}

/// A texture: a base colour with stripes of one direction and frequency, plus noise.
struct Texture {
    color: [f32; 3],
    stripe_direction: (f32, f32),
    stripe_frequency: f32,
    stripe_amplitude: f32,
    noise: f32,
}

impl Texture {
    /// A random texture around the colour of `class`.
    fn random(rng: &mut StdRng, class: usize, n_classes: usize) -> Self {
        let color = class_color(class, n_classes, rng);
        let angle = rng.random_range(0.0..TAU);
        Texture {
            color,
            stripe_direction: (angle.cos(), angle.sin()),
            stripe_frequency: rng.random_range(0.15..0.6),
            stripe_amplitude: rng.random_range(0.03..0.12),
            noise: rng.random_range(0.01..0.05),
        }
    }

    fn pixel(&self, x: f32, y: f32, rng: &mut StdRng) -> [f32; 3] {
        let (dx, dy) = self.stripe_direction;
        let stripe = self.stripe_amplitude * (self.stripe_frequency * (dx * x + dy * y)).sin();
        self.color.map(|c| {
            let noise = self.noise * rng.random_range(-1.0f32..1.0);
            (c + stripe + noise).clamp(0.0, 1.0)
        })
    }
}

/// A shape: a kind and its placement, with an inside test at a pixel centre.
struct Shape {
    kind: usize,
    center: (f32, f32),
    size: f32,
    /// Rectangle half-height / half-width ratio; triangle orientation.
    aspect: f32,
    corners: [(f32, f32); 3],
}

impl Shape {
    fn random(rng: &mut StdRng, kind: usize, height: usize, width: usize) -> Self {
        let (h, w) = (height as f32, width as f32);
        let size = rng.random_range(0.12..0.3) * h.min(w) + 1.0;
        // `random::<f32>()` is in 0..1, so an empty image (w or h = 0) cannot panic.
        let center = (rng.random::<f32>() * w, rng.random::<f32>() * h);
        let turn = rng.random_range(0.0..TAU);
        let corners = [0.0, 1.0, 2.0].map(|i: f32| {
            let a = turn + i * TAU / 3.0;
            (center.0 + size * a.cos(), center.1 + size * a.sin())
        });
        Shape {
            kind,
            center,
            size,
            aspect: rng.random_range(0.5..1.5),
            corners,
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.center.0, y - self.center.1);
        match self.kind {
            // disc
            0 => dx * dx + dy * dy <= self.size * self.size,
            // axis-aligned rectangle
            1 => dx.abs() <= self.size && dy.abs() <= self.size * self.aspect,
            // triangle: same side of all three edges
            2 => {
                let [a, b, c] = self.corners;
                let side = |p: (f32, f32), q: (f32, f32)| {
                    (q.0 - p.0) * (y - p.1) - (q.1 - p.1) * (x - p.0)
                };
                let (s1, s2, s3) = (side(a, b), side(b, c), side(c, a));
                (s1 >= 0.0 && s2 >= 0.0 && s3 >= 0.0) || (s1 <= 0.0 && s2 <= 0.0 && s3 <= 0.0)
            }
            // diamond
            3 => dx.abs() + dy.abs() <= self.size,
            // ring
            _ => {
                let r2 = dx * dx + dy * dy;
                r2 <= self.size * self.size && r2 >= 0.25 * self.size * self.size
            }
        }
    }
}

/// The base colour of `class`: hues spread around the colour wheel, so classes
/// differ in colour as well as in shape; the background is grey-ish.
fn class_color(class: usize, n_classes: usize, rng: &mut StdRng) -> [f32; 3] {
    let jitter = |rng: &mut StdRng| rng.random_range(-0.06f32..0.06);
    if class == 0 {
        let grey = rng.random_range(0.3f32..0.6);
        return [grey + jitter(rng), grey + jitter(rng), grey + jitter(rng)];
    }
    let hue = (class - 1) as f32 / (n_classes - 1).max(1) as f32;
    [0.0f32, 1.0 / 3.0, 2.0 / 3.0].map(|offset| {
        // A smooth hue wheel: each channel a raised cosine of the hue.
        let value = 0.5 + 0.4 * (TAU * (hue - offset)).cos();
        (value + jitter(rng)).clamp(0.0, 1.0)
    })
}

fn synthetic_sample(cfg: &SyntheticConfig, n_classes: usize, index: usize) -> Sample {
    let (height, width) = (cfg.height, cfg.width);
    // Mix seed and index so every sample has its own stream, whatever n_samples is.
    let mut rng = StdRng::seed_from_u64(
        cfg.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(index as u64),
    );
    let background = Texture::random(&mut rng, 0, n_classes);
    let mut shapes = Vec::new();
    if n_classes > 1 {
        for _ in 0..rng.random_range(1..=3) {
            let class = rng.random_range(1..n_classes);
            let kind = (class - 1) % SHAPE_KINDS.len();
            let shape = Shape::random(&mut rng, kind, height, width);
            let texture = Texture::random(&mut rng, class, n_classes);
            shapes.push((class as u8, shape, texture));
        }
    }
    let mut image = Array3::<f32>::zeros((3, height, width));
    let mut mask = Array2::<u8>::zeros((height, width));
    for y in 0..height {
        for x in 0..width {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            // The last shape that covers the pixel wins, both in the image and the mask.
            let top = shapes.iter().rev().find(|(_, s, _)| s.contains(px, py));
            let (label, texture) = match top {
                Some((class, _, texture)) => (*class, texture),
                None => (0, &background),
            };
            let rgb = texture.pixel(px, py, &mut rng);
            for (channel, value) in rgb.into_iter().enumerate() {
                image[[channel, y, x]] = value;
            }
            mask[[y, x]] = label;
        }
    }
    Sample {
        id: format!("synth_{index:04}"),
        image,
        mask,
    }
}
