//! Pictures of segmentations: VOC-coloured masks, overlays on the image,
//! image | truth | prediction panels, probability heat maps, and atomic PNG/JPEG
//! writing with the `image` crate.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use ndarray::{Array2, Array3};

use crate::data::IGNORE_LABEL;
use crate::palette::voc_color;
use crate::Result;

/// Width in pixels of the white gap between the pictures of a panel.
pub const PANEL_GAP: u32 = 4;

/// How [`save_mask_png`] draws a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskStyle {
    /// 8-bit grey PNG holding the label values as they are (reads back unchanged).
    Grey,
    /// 8-bit grey PNG: label 0 black, every other label white (foreground masks).
    Binary,
    /// RGB PNG in the VOC palette, as [`colorize_mask`].
    Colour,
}

/// Converts a `(C, H, W)` image in 0..1 to 8-bit RGB: values are clamped, NaN
/// becomes 0, a one-channel image is drawn grey, channels past the third are ignored.
pub fn to_rgb_image(image: &Array3<f32>) -> RgbImage {
    let (channels, height, width) = image.dim();
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let value = |c: usize| match channels {
            0 => 0,
            1 | 2 => unit_to_u8(image[[0, y, x]]),
            _ => unit_to_u8(image[[c, y, x]]),
        };
        Rgb([value(0), value(1), value(2)])
    })
}

/// `round(255 * v)` with `v` clamped to 0..1 and NaN read as 0.
fn unit_to_u8(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// The mask in VOC colours (`W x H` RGB); 255 (ignore) is the devkit's cream.
pub fn colorize_mask(mask: &Array2<u8>) -> RgbImage {
    let (height, width) = mask.dim();
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        Rgb(voc_color(mask[[y as usize, x as usize]]))
    })
}

/// The image with the VOC colour of the mask blended in where the label is
/// neither 0 (background) nor 255 (ignore):
/// `out = round((1 - alpha) * image_u8 + alpha * colour)`, with
/// `image_u8 = round(255 * image)`; elsewhere the image is unchanged.
///
/// `alpha` is clamped to 0..1 (NaN reads as 0). A mask of another size than the
/// image is stretched to it (nearest neighbour), so the call never fails.
pub fn overlay(image: &Array3<f32>, mask: &Array2<u8>, alpha: f32) -> RgbImage {
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let mut out = to_rgb_image(image);
    let (mask_h, mask_w) = mask.dim();
    if mask_h == 0 || mask_w == 0 {
        return out;
    }
    let (width, height) = out.dimensions();
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        // Nearest source pixel; the identity when the sizes agree.
        let my = y as usize * mask_h / height as usize;
        let mx = x as usize * mask_w / width as usize;
        let label = mask[[my, mx]];
        if label == 0 || label == IGNORE_LABEL {
            continue;
        }
        let colour = voc_color(label);
        for (channel, value) in pixel.0.iter_mut().enumerate() {
            let blended = (1.0 - alpha) * *value as f32 + alpha * colour[channel] as f32;
            *value = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Probabilities (or any values in 0..1) as a viridis-like colour map, `W x H`
/// RGB: 0 dark purple, 0.5 teal, 1 yellow. Values are clamped; NaN is black.
pub fn heat_map(probabilities: &Array2<f32>) -> RgbImage {
    let (height, width) = probabilities.dim();
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        Rgb(colormap(probabilities[[y as usize, x as usize]]))
    })
}

/// Anchors of the viridis colour map at 0, 0.125, ..., 1 (matplotlib values).
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// The colour of `value` (0..1, clamped) in a viridis-like map, linear between
/// nine anchors; NaN is black.
pub fn colormap(value: f32) -> [u8; 3] {
    if value.is_nan() {
        return [0, 0, 0];
    }
    let position = value.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f32;
    let low = (position.floor() as usize).min(VIRIDIS.len() - 2);
    let fraction = position - low as f32;
    let mut rgb = [0u8; 3];
    for (channel, out) in rgb.iter_mut().enumerate() {
        let a = VIRIDIS[low][channel] as f32;
        let b = VIRIDIS[low + 1][channel] as f32;
        *out = (a + (b - a) * fraction).round() as u8;
    }
    rgb
}

/// The picture `image | truth | prediction` (masks in VOC colours) side by side
/// on white, [`PANEL_GAP`] pixels apart: width `3 W + 2 gap` (or `2 W + gap`
/// without truth), height `H`. Masks must have the image's size.
pub fn panel(
    image: &Array3<f32>,
    truth: Option<&Array2<u8>>,
    prediction: &Array2<u8>,
) -> Result<RgbImage> {
    let (_, height, width) = image.dim();
    let mut parts = vec![to_rgb_image(image)];
    for (name, mask) in [("truth", truth), ("prediction", Some(prediction))] {
        let Some(mask) = mask else { continue };
        if mask.dim() != (height, width) {
            bail!(
                "panel: {name} mask is {}x{} but the image is {height}x{width}",
                mask.nrows(),
                mask.ncols()
            );
        }
        parts.push(colorize_mask(mask));
    }
    let n = parts.len() as u32;
    let (w, h) = (width as u32, height as u32);
    let mut out = RgbImage::from_pixel(n * w + (n - 1) * PANEL_GAP, h, Rgb([255, 255, 255]));
    for (index, part) in parts.iter().enumerate() {
        let left = index as u32 * (w + PANEL_GAP);
        image::imageops::replace(&mut out, part, left as i64, 0);
    }
    Ok(out)
}

/// Writes [`panel`] to `path` (PNG or JPEG by extension), atomically.
pub fn save_panel(
    path: &Path,
    image: &Array3<f32>,
    truth: Option<&Array2<u8>>,
    prediction: &Array2<u8>,
) -> Result<()> {
    let picture = panel(image, truth, prediction).with_context(|| format!("saving {path:?}"))?;
    save_rgb(path, &picture)
}

/// Writes a mask as a PNG in the given [`MaskStyle`], atomically.
pub fn save_mask_png(path: &Path, mask: &Array2<u8>, style: MaskStyle) -> Result<()> {
    let (height, width) = mask.dim();
    let grey = |f: fn(u8) -> u8| {
        GrayImage::from_fn(width as u32, height as u32, |x, y| {
            Luma([f(mask[[y as usize, x as usize]])])
        })
    };
    let picture = match style {
        MaskStyle::Grey => DynamicImage::ImageLuma8(grey(|v| v)),
        MaskStyle::Binary => DynamicImage::ImageLuma8(grey(|v| if v == 0 { 0 } else { 255 })),
        MaskStyle::Colour => DynamicImage::ImageRgb8(colorize_mask(mask)),
    };
    if image_format(path)? != ImageFormat::Png {
        bail!("{path:?}: a mask must be saved as .png (JPEG would blur the labels)");
    }
    save_image_atomic(path, &picture)
}

/// Writes an RGB image to `path`, PNG or JPEG by extension, atomically: a
/// temporary file in the same folder, then a rename. Missing parent folders are
/// created.
pub fn save_rgb(path: &Path, img: &RgbImage) -> Result<()> {
    save_image_atomic(path, &DynamicImage::ImageRgb8(img.clone()))
}

/// PNG or JPEG from the file extension, an error otherwise.
fn image_format(path: &Path) -> Result<ImageFormat> {
    match ImageFormat::from_path(path) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => Ok(format),
        _ => bail!("{path:?}: unsupported image extension (use .png, .jpg or .jpeg)"),
    }
}

/// Encodes to a temporary sibling of `path`, then renames it over `path`.
pub(crate) fn save_image_atomic(path: &Path, picture: &DynamicImage) -> Result<()> {
    let format = image_format(path)?;
    if picture.width() == 0 || picture.height() == 0 {
        bail!(
            "{path:?}: cannot save an empty {}x{} image",
            picture.width(),
            picture.height()
        );
    }
    crate::atomic_write::write_atomically(path, |file| {
        // JPEG has no alpha and the encoder wants RGB8 or L8, which is what we hold.
        let mut out = BufWriter::new(file);
        picture.write_to(&mut out, format)?;
        out.flush()?;
        Ok(())
    })
}
