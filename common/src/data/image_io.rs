//! Reading and writing images and class-index masks, and the one boundary
//! between host arrays (`ndarray`) and candle tensors.
//!
//! Images are `(3, H, W)` RGB `f32` in 0..1. Masks are `(H, W)` `u8` class indices,
//! 255 meaning "ignore". PASCAL VOC stores masks as palette (indexed) PNGs whose
//! pixel values ARE the class indices; the `image` crate would expand the palette
//! to RGB, so masks are read with the `png` crate and the palette left alone.
//!
//! Every file is checked whole before it is decoded ([`check_complete`]): the
//! JPEG decoder fills a file cut short with grey and reports no error, and the PNG
//! decoder stops after the pixel data, so a cut or damaged file would otherwise be
//! trained on silently.

use std::fs::File;
use std::io::{BufWriter, Cursor, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use candle::{DType, Device, Tensor};
use image::{DynamicImage, ImageFormat, RgbImage};
use ndarray::{Array2, Array3};

use crate::palette::voc_palette;
use crate::Result;

/// Reads any JPEG or PNG (RGB, grey, with or without alpha, 8 or 16 bit) as a
/// `(3, H, W)` RGB array in 0..1; alpha is dropped and grey is copied to R, G, B.
pub fn load_image(path: &Path) -> Result<Array3<f32>> {
    let rgb = decode(path)?.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    // (H, W, 3) interleaved bytes -> (3, H, W) planes in 0..1
    let hwc = Array3::from_shape_vec((h, w, 3), rgb.into_raw())
        .with_context(|| format!("image {path:?}: pixel buffer does not match {w}x{h}"))?;
    Ok(hwc
        .permuted_axes([2, 0, 1])
        .mapv(|v| f32::from(v) / 255.0)
        .as_standard_layout()
        .into_owned())
}

/// Writes a `(3, H, W)` RGB array in 0..1 (values outside are clamped) as PNG or
/// JPEG (quality 95), chosen by the extension of `path`. The file is written to a
/// temporary name in the same folder and renamed, so readers never see half a file;
/// missing folders are created.
pub fn save_image(path: &Path, image: &Array3<f32>) -> Result<()> {
    let (c, h, w) = image.dim();
    if c != 3 {
        bail!("cannot save {path:?}: image has {c} channels, expected 3 (shape (3, H, W))");
    }
    if h == 0 || w == 0 {
        bail!("cannot save {path:?}: image is empty ({h}x{w})");
    }
    let format = format_from_extension(path)?;
    // (3, H, W) planes -> (H, W, 3) interleaved bytes
    let bytes: Vec<u8> = image
        .view()
        .permuted_axes([1, 2, 0])
        .iter()
        .map(|&v| to_byte(v))
        .collect();
    let rgb = RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| anyhow!("cannot save {path:?}: pixel buffer does not match {w}x{h}"))?;
    write_atomically(path, |out| match format {
        ImageFormat::Jpeg => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(out, 95);
            DynamicImage::ImageRgb8(rgb).write_with_encoder(encoder)?;
            Ok(())
        }
        _ => {
            let encoder = image::codecs::png::PngEncoder::new(out);
            DynamicImage::ImageRgb8(rgb).write_with_encoder(encoder)?;
            Ok(())
        }
    })
}

/// Reads a mask PNG as class indices: an indexed (palette) PNG of bit depth
/// 1, 2, 4 or 8 gives its palette indices, a grey PNG of depth up to 8 gives its
/// values as they are. Any other PNG (RGB, RGBA, grey+alpha, 16-bit) is an error
/// naming the file: its colours are not class indices.
pub fn load_palette_mask(path: &Path) -> Result<Array2<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open mask {path:?}"))?;
    check_complete(path, &bytes)?;
    // Transformations::IDENTITY (the default) keeps palette indices and bit depth as stored.
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().with_context(|| {
        format!("mask {path:?} is not a readable PNG (corrupt, truncated or another format)")
    })?;
    let (color, depth) = reader.output_color_type();
    let bits = match (color, depth) {
        (png::ColorType::Indexed | png::ColorType::Grayscale, png::BitDepth::One) => 1,
        (png::ColorType::Indexed | png::ColorType::Grayscale, png::BitDepth::Two) => 2,
        (png::ColorType::Indexed | png::ColorType::Grayscale, png::BitDepth::Four) => 4,
        (png::ColorType::Indexed | png::ColorType::Grayscale, png::BitDepth::Eight) => 8,
        _ => {
            let kind = match color {
                png::ColorType::Rgb => "an RGB",
                png::ColorType::Rgba => "an RGBA",
                png::ColorType::GrayscaleAlpha => "a grey+alpha",
                png::ColorType::Grayscale => "a grey",
                png::ColorType::Indexed => "a palette",
            };
            bail!(
                "mask {path:?} is {kind} {}-bit PNG, not a palette or 8-bit grey PNG of class indices",
                depth as u8
            )
        }
    };
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| anyhow!("mask {path:?} is too large to decode"))?;
    let mut buffer = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buffer)
        .with_context(|| format!("mask {path:?} is corrupt or truncated"))?;
    let (h, w) = (frame.height as usize, frame.width as usize);
    let line_size = frame.line_size;
    // Each row is `line_size` bytes of `bits`-bit samples, most significant bits first.
    let per_byte = 8 / bits;
    let low_mask = ((1u16 << bits) - 1) as u8;
    let mut values = Vec::with_capacity(h * w);
    for row in buffer[..h * line_size].chunks_exact(line_size) {
        for x in 0..w {
            let byte = row[x / per_byte];
            let shift = 8 - bits * (x % per_byte + 1);
            values.push((byte >> shift) & low_mask);
        }
    }
    Array2::from_shape_vec((h, w), values)
        .with_context(|| format!("mask {path:?}: pixel buffer does not match {w}x{h}"))
}

/// Reads any image the `image` crate decodes (PNG, JPEG; colour or grey) as a
/// binary mask: luma `>= threshold` gives 1, else 0. JPEG masks are not exactly
/// 0 and 255 near edges, hence the threshold.
pub fn load_grey_mask(path: &Path, threshold: u8) -> Result<Array2<u8>> {
    Ok(load_luma(path)?.mapv(|v| u8::from(v >= threshold)))
}

/// Reads any image the `image` crate decodes as its `(H, W)` 8-bit luma, unchanged.
pub fn load_luma(path: &Path) -> Result<Array2<u8>> {
    let luma = decode(path)?.to_luma8();
    let (w, h) = (luma.width() as usize, luma.height() as usize);
    Array2::from_shape_vec((h, w), luma.into_raw())
        .with_context(|| format!("mask {path:?}: pixel buffer does not match {w}x{h}"))
}

/// How a mask file stores its pixels, read from its header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskStorage {
    /// An indexed (palette) PNG: the pixels are palette indices.
    PalettePng,
    /// A grey PNG of at most 8 bits: the pixels are grey values.
    GreyPng,
    /// Anything else (JPEG, colour or 16-bit PNG): only its luma means something.
    Other,
}

/// The [`MaskStorage`] of `path`; errors when the file cannot be read.
pub fn mask_storage(path: &Path) -> Result<MaskStorage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open mask {path:?}"))?;
    if !bytes.starts_with(&PNG_SIGNATURE) {
        return Ok(MaskStorage::Other);
    }
    let info = png::Decoder::new(Cursor::new(bytes))
        .read_info()
        .with_context(|| format!("mask {path:?} is not a readable PNG"))?
        .info()
        .clone();
    Ok(match (info.color_type, info.bit_depth) {
        (png::ColorType::Indexed, _) => MaskStorage::PalettePng,
        (png::ColorType::Grayscale, png::BitDepth::Sixteen) => MaskStorage::Other,
        (png::ColorType::Grayscale, _) => MaskStorage::GreyPng,
        _ => MaskStorage::Other,
    })
}

/// Writes a mask as an 8-bit palette PNG with the VOC colours
/// ([`voc_palette`]), so it reads back exactly with [`load_palette_mask`] and
/// shows in colour in any viewer. Written to a temporary name and renamed.
pub fn save_palette_mask(path: &Path, mask: &Array2<u8>) -> Result<()> {
    let (h, w) = mask.dim();
    if h == 0 || w == 0 {
        bail!("cannot save mask {path:?}: mask is empty ({h}x{w})");
    }
    let values: Vec<u8> = mask.iter().copied().collect();
    write_atomically(path, |out| {
        let mut encoder = png::Encoder::new(out, w as u32, h as u32);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(voc_palette());
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&values)?;
        writer.finish()?;
        Ok(())
    })
}

/// `(3, H, W)` host image -> `(3, H, W)` f32 tensor on `device`.
pub fn image_to_tensor(image: &Array3<f32>, device: &Device) -> Result<Tensor> {
    let dims = image.dim();
    let values: Vec<f32> = image.iter().copied().collect();
    Ok(Tensor::from_vec(values, dims, device)?)
}

/// `(C, H, W)` tensor of any float dtype on any device -> host `f32` array
/// (C is 3 for an RGB image).
pub fn tensor_to_image(t: &Tensor) -> Result<Array3<f32>> {
    let (c, h, w) = t.dims3().map_err(|_| {
        anyhow!(
            "expected an image tensor (3, H, W), got shape {:?}",
            t.dims()
        )
    })?;
    if !t.dtype().is_float() {
        bail!("expected a float image tensor, got dtype {:?}", t.dtype());
    }
    // Any layout or device -> contiguous f32 on the host.
    let values = t
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Array3::from_shape_vec((c, h, w), values)?)
}

/// `(H, W)` host mask -> `(H, W)` u32 tensor on `device`.
pub fn mask_to_tensor(mask: &Array2<u8>, device: &Device) -> Result<Tensor> {
    let dims = mask.dim();
    let values: Vec<u32> = mask.iter().map(|&v| u32::from(v)).collect();
    Ok(Tensor::from_vec(values, dims, device)?)
}

/// `(H, W)` integer tensor (u8, u32, i16, i32, i64) on any device -> host `u8`
/// mask. A value outside 0..=255 is an error, not a silent wrap.
pub fn tensor_to_mask(t: &Tensor) -> Result<Array2<u8>> {
    let (h, w) = t
        .dims2()
        .map_err(|_| anyhow!("expected a mask tensor (H, W), got shape {:?}", t.dims()))?;
    if !t.dtype().is_int() {
        bail!("expected an integer mask tensor, got dtype {:?}", t.dtype());
    }
    // i64 holds every value of every integer dtype candle has.
    let wide = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1::<i64>()?;
    let mut values = Vec::with_capacity(wide.len());
    for (index, &v) in wide.iter().enumerate() {
        let byte = u8::try_from(v).map_err(|_| {
            anyhow!(
                "mask tensor value {v} at ({}, {}) does not fit a u8 label (0..=255)",
                index / w.max(1),
                index % w.max(1)
            )
        })?;
        values.push(byte);
    }
    Ok(Array2::from_shape_vec((h, w), values)?)
}

/// Decodes an image file, guessing the format from its content (not its name),
/// after [`check_complete`].
fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open image {path:?}"))?;
    check_complete(path, &bytes)?;
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {path:?}"))?
        .decode()
        .with_context(|| format!("image {path:?} is corrupt, truncated or not a JPEG/PNG"))
}

/// The JPEG start-of-image marker and the PNG signature.
const JPEG_START: [u8; 2] = [0xFF, 0xD8];
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// Refuses a JPEG or PNG file that is cut short or damaged, naming the file.
/// Files of other formats pass (the decoder then says what it makes of them).
///
/// - JPEG: the end-of-image marker `FF D9` must follow the last start-of-scan
///   marker `FF DA`. Inside the compressed data a byte `FF` is always followed by
///   `00` or a restart marker `D0..D7`, so neither marker occurs there; a file cut
///   anywhere before its end lacks the final `FF D9`. (zune-jpeg, behind `image`,
///   decodes such a file without error, the missing rows grey.)
/// - PNG: every chunk must be whole with a correct CRC-32, up to `IEND`.
pub fn check_complete(path: &Path, bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(&JPEG_START) {
        let last_scan = find_last(bytes, &[0xFF, 0xDA]);
        let Some(scan) = last_scan else {
            bail!("JPEG {path:?} is truncated or corrupt: it holds no image data (no start-of-scan marker)");
        };
        if find_last(&bytes[scan..], &[0xFF, 0xD9]).is_none() {
            bail!(
                "JPEG {path:?} is truncated or corrupt: its {} bytes end without the end-of-image marker FF D9",
                bytes.len()
            );
        }
    } else if bytes.starts_with(&PNG_SIGNATURE) {
        check_png_chunks(path, bytes)?;
    }
    Ok(())
}

/// Walks the chunks of a PNG: each whole, with a correct CRC-32, the last `IEND`.
fn check_png_chunks(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut at = PNG_SIGNATURE.len();
    loop {
        // length (4 bytes, big-endian) + type (4) + data (length) + CRC-32 of type and data (4)
        let Some(header) = bytes.get(at..at + 8) else {
            bail!(
                "PNG {path:?} is truncated: it ends after {} bytes, before its IEND chunk",
                bytes.len()
            );
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        let Some(chunk) = bytes.get(at + 4..at + 8 + length + 4) else {
            bail!(
                "PNG {path:?} is truncated: chunk {kind:?} at byte {at} needs {length} bytes of data, the file ends after {}",
                bytes.len()
            );
        };
        let (typed_data, stored) = chunk.split_at(4 + length);
        let stored = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
        if crc32(typed_data) != stored {
            bail!("PNG {path:?} is corrupt: chunk {kind:?} at byte {at} fails its CRC check");
        }
        if kind == "IEND" {
            return Ok(());
        }
        at += 12 + length;
    }
}

/// The start of the last occurrence of `needle` in `haystack`.
fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// CRC-32 (ISO 3309, the polynomial PNG uses), a byte at a time through [`CRC_TABLE`].
fn crc32(bytes: &[u8]) -> u32 {
    let crc = bytes.iter().fold(0xFFFF_FFFFu32, |crc, &byte| {
        CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8)
    });
    !crc
}

/// The CRC-32 of each byte value, reflected polynomial `0xEDB88320`.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// PNG or JPEG from the extension of `path`.
fn format_from_extension(path: &Path) -> Result<ImageFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        _ => bail!("cannot save {path:?}: extension must be .png, .jpg or .jpeg"),
    }
}

/// 0..1 -> 0..255, rounded; NaN becomes 0.
fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// [`crate::atomic_write::write_atomically`] through a buffered writer.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    crate::atomic_write::write_atomically(path, |file| {
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        out.flush()?;
        Ok(())
    })
}
