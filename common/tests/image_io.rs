//! Tests of `common::data::image_io`: image and mask files, bad files, and the
//! ndarray <-> tensor boundary.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle::{DType, Device, Tensor};
use common::data::image_io::{
    image_to_tensor, load_grey_mask, load_image, load_palette_mask, mask_to_tensor, save_image,
    save_palette_mask, tensor_to_image, tensor_to_mask,
};
use common::data::shared_data_set;
use common::Result;
use ndarray::{Array2, Array3};

/// An image whose values are all multiples of 1/255, so PNG stores them exactly.
fn byte_image(h: usize, w: usize) -> Array3<f32> {
    Array3::from_shape_fn((3, h, w), |(c, y, x)| {
        ((c * 97 + y * 31 + x * 7) % 256) as f32 / 255.0
    })
}

/// Writes an indexed PNG of the given bit depth whose pixels are `values` (row-major).
fn write_indexed_png(path: &Path, w: usize, h: usize, bits: u8, values: &[u8]) -> Result<()> {
    let depth = match bits {
        1 => png::BitDepth::One,
        2 => png::BitDepth::Two,
        4 => png::BitDepth::Four,
        _ => png::BitDepth::Eight,
    };
    let per_byte = 8 / bits as usize;
    let line = w.div_ceil(per_byte);
    let mut data = vec![0u8; line * h];
    for y in 0..h {
        for x in 0..w {
            let shift = 8 - bits as usize * (x % per_byte + 1);
            data[y * line + x / per_byte] |= values[y * w + x] << shift;
        }
    }
    let mut encoder = png::Encoder::new(BufWriter::new(File::create(path)?), w as u32, h as u32);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(depth);
    encoder.set_palette(common::palette::voc_palette()[..3 * (1 << bits)].to_vec());
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&data)?;
    writer.finish()?;
    Ok(())
}

fn error_text<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn png_image_round_trip_is_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("image.png");
    let image = byte_image(5, 7);
    save_image(&path, &image)?;
    let back = load_image(&path)?;
    assert_eq!(back.dim(), (3, 5, 7));
    let max_err = (&back - &image)
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(max_err < 1e-6, "max error {max_err}");
    // Values between the 256 levels round to the nearest: within half a level.
    let smooth = Array3::from_shape_fn((3, 4, 4), |(c, y, x)| (c + y + x) as f32 / 9.3);
    save_image(&path, &smooth)?;
    let max_err = (&load_image(&path)? - &smooth)
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(max_err <= 0.5 / 255.0 + 1e-6, "max error {max_err}");
    // No temporary file is left beside the result.
    let names: Vec<_> = std::fs::read_dir(dir.path())?.collect::<std::io::Result<_>>()?;
    assert_eq!(names.len(), 1);
    Ok(())
}

#[test]
fn jpeg_image_round_trip_is_close() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("image.JPG");
    // A smooth image: JPEG keeps it to a few levels.
    let image = Array3::from_shape_fn((3, 16, 16), |(c, y, x)| {
        0.2 + 0.02 * (x + y) as f32 + 0.1 * c as f32
    });
    save_image(&path, &image)?;
    assert_eq!(
        &std::fs::read(&path)?[..2],
        &[0xFF, 0xD8],
        "not a JPEG file"
    );
    let back = load_image(&path)?;
    let mean_err = (&back - &image).mapv(f32::abs).mean().unwrap_or(1.0);
    assert!(mean_err < 0.02, "mean error {mean_err}");
    Ok(())
}

#[test]
fn grey_and_rgba_images_become_rgb() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let grey_path = dir.path().join("grey.png");
    image::GrayImage::from_raw(2, 1, vec![0, 51])
        .ok_or_else(|| anyhow::anyhow!("bad buffer"))?
        .save(&grey_path)?;
    let grey = load_image(&grey_path)?;
    assert_eq!(grey.dim(), (3, 1, 2));
    for c in 0..3 {
        assert_eq!(grey[[c, 0, 0]], 0.0);
        assert!((grey[[c, 0, 1]] - 0.2).abs() < 1e-6);
    }
    let rgba_path = dir.path().join("rgba.png");
    image::RgbaImage::from_raw(1, 1, vec![255, 0, 102, 10])
        .ok_or_else(|| anyhow::anyhow!("bad buffer"))?
        .save(&rgba_path)?;
    let rgba = load_image(&rgba_path)?;
    // Alpha is dropped, colour kept: (1, 0, 0.4).
    assert_eq!(rgba.dim(), (3, 1, 1));
    assert!((rgba[[0, 0, 0]] - 1.0).abs() < 1e-6);
    assert!(rgba[[1, 0, 0]].abs() < 1e-6);
    assert!((rgba[[2, 0, 0]] - 0.4).abs() < 1e-6);
    Ok(())
}

#[test]
fn palette_mask_round_trip_is_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mask.png");
    let mask = Array2::from_shape_fn(
        (6, 9),
        |(y, x)| if x == 8 { 255 } else { (y * 9 + x) as u8 % 21 },
    );
    save_palette_mask(&path, &mask)?;
    assert_eq!(load_palette_mask(&path)?, mask);
    // The image crate sees the VOC colours, not the indices: label 1 is (128, 0, 0).
    let rgb = image::open(&path)?.to_rgb8();
    assert_eq!(rgb.get_pixel(1, 0).0, [128, 0, 0]);
    assert_eq!(rgb.get_pixel(8, 0).0, [224, 224, 192]);
    Ok(())
}

#[test]
fn low_bit_depth_palette_masks_unpack() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Width 5 is not a whole number of bytes at depths 1, 2, 4: rows are padded.
    let (w, h) = (5, 3);
    for bits in [1u8, 2, 4, 8] {
        let max = ((1u16 << bits) - 1) as usize;
        let values: Vec<u8> = (0..w * h)
            .map(|i| ((i * 7 + 3) % (max + 1)) as u8)
            .collect();
        let path = dir.path().join(format!("mask{bits}.png"));
        write_indexed_png(&path, w, h, bits, &values)?;
        let mask = load_palette_mask(&path)?;
        assert_eq!(
            mask,
            Array2::from_shape_vec((h, w), values)?,
            "depth {bits}"
        );
    }
    Ok(())
}

#[test]
fn grey_png_mask_reads_values_and_rgb_png_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let grey_path = dir.path().join("grey.png");
    image::GrayImage::from_raw(4, 1, vec![0, 1, 20, 255])
        .ok_or_else(|| anyhow::anyhow!("bad buffer"))?
        .save(&grey_path)?;
    assert_eq!(
        load_palette_mask(&grey_path)?.into_raw_vec_and_offset().0,
        vec![0, 1, 20, 255]
    );

    let rgb_path = dir.path().join("colour_mask.png");
    save_image(&rgb_path, &byte_image(2, 2))?;
    let message = error_text(load_palette_mask(&rgb_path));
    assert!(message.contains("colour_mask.png"), "{message}");
    assert!(
        message.contains("an RGB 8-bit PNG") && message.contains("not a palette"),
        "{message}"
    );
    Ok(())
}

#[test]
fn grey_masks_threshold_png_and_jpeg() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let png_path = dir.path().join("mask.png");
    image::GrayImage::from_raw(4, 1, vec![0, 127, 128, 255])
        .ok_or_else(|| anyhow::anyhow!("bad buffer"))?
        .save(&png_path)?;
    assert_eq!(
        load_grey_mask(&png_path, 128)?.into_raw_vec_and_offset().0,
        vec![0, 0, 1, 1]
    );
    // A JPEG of a half-black, half-white square: near-0/255 values threshold cleanly.
    let jpeg_path = dir.path().join("mask.jpg");
    let square = Array3::from_shape_fn((3, 16, 16), |(_, _, x)| if x < 8 { 0.0 } else { 1.0 });
    save_image(&jpeg_path, &square)?;
    let mask = load_grey_mask(&jpeg_path, 128)?;
    let expected = Array2::from_shape_fn((16, 16), |(_, x)| u8::from(x >= 8));
    assert_eq!(mask, expected);
    Ok(())
}

#[test]
fn corrupt_truncated_and_missing_files_are_errors_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"this is not an image at all")?;
    let message = error_text(load_image(&corrupt));
    assert!(
        message.contains("corrupt.png") && message.contains("corrupt"),
        "{message}"
    );
    let message = error_text(load_palette_mask(&corrupt));
    assert!(
        message.contains("corrupt.png") && message.contains("not a readable PNG"),
        "{message}"
    );
    let message = error_text(load_grey_mask(&corrupt, 128));
    assert!(message.contains("corrupt.png"), "{message}");

    // A PNG cut in half: the header reads, the pixel data ends early.
    let whole = dir.path().join("whole.png");
    let mask = Array2::from_shape_fn((64, 64), |(y, x)| ((x * y) % 21) as u8);
    save_palette_mask(&whole, &mask)?;
    let bytes = std::fs::read(&whole)?;
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let message = error_text(load_palette_mask(&truncated));
    assert!(
        message.contains("truncated.png") && message.contains("truncated"),
        "{message}"
    );

    let image_path = dir.path().join("whole_image.png");
    save_image(&image_path, &byte_image(32, 32))?;
    let bytes = std::fs::read(&image_path)?;
    let truncated_image = dir.path().join("cut.png");
    std::fs::write(&truncated_image, &bytes[..bytes.len() / 2])?;
    let message = error_text(load_image(&truncated_image));
    assert!(message.contains("cut.png"), "{message}");

    let missing = dir.path().join("missing.png");
    let message = error_text(load_image(&missing));
    assert!(
        message.contains("missing.png") && message.contains("cannot open"),
        "{message}"
    );
    let message = error_text(load_palette_mask(&missing));
    assert!(
        message.contains("missing.png") && message.contains("cannot open"),
        "{message}"
    );
    Ok(())
}

#[test]
fn saving_refuses_bad_extension_and_channel_count() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let message = error_text(save_image(&dir.path().join("image.bmp"), &byte_image(2, 2)));
    assert!(
        message.contains("image.bmp") && message.contains("extension"),
        "{message}"
    );
    let four = Array3::<f32>::zeros((4, 2, 2));
    let message = error_text(save_image(&dir.path().join("image.png"), &four));
    assert!(message.contains("4 channels"), "{message}");
    let message = error_text(save_palette_mask(
        &dir.path().join("m.png"),
        &Array2::zeros((0, 3)),
    ));
    assert!(message.contains("empty"), "{message}");
    // A missing folder is created (as for checkpoints and pictures).
    let nested = dir.path().join("no/such/dir/a.png");
    save_image(&nested, &byte_image(2, 2))?;
    assert_eq!(load_image(&nested)?.dim(), (3, 2, 2));
    // A folder that cannot be created (a file in its way): the error names it.
    std::fs::write(dir.path().join("blocker"), b"x")?;
    let message = error_text(save_image(
        &dir.path().join("blocker/a.png"),
        &byte_image(2, 2),
    ));
    assert!(message.contains("blocker"), "{message}");
    Ok(())
}

#[test]
fn image_tensor_round_trip() -> Result<()> {
    let device = Device::Cpu;
    let image = byte_image(3, 4);
    let t = image_to_tensor(&image, &device)?;
    assert_eq!(t.dims(), &[3, 3, 4]);
    assert_eq!(t.dtype(), DType::F32);
    // Element (c=2, y=1, x=3) stays in place.
    let value = t.get(2)?.get(1)?.get(3)?.to_scalar::<f32>()?;
    assert_eq!(value, image[[2, 1, 3]]);
    assert_eq!(tensor_to_image(&t)?, image);
    // Other float dtypes and non-contiguous layouts come back too.
    assert_eq!(tensor_to_image(&t.to_dtype(DType::F64)?)?, image);
    let transposed = t.transpose(1, 2)?; // (3, 4, 3), not contiguous
    let back = tensor_to_image(&transposed)?;
    assert_eq!(back.dim(), (3, 4, 3));
    assert_eq!(back[[1, 3, 2]], image[[1, 2, 3]]);
    let half = tensor_to_image(&t.to_dtype(DType::F16)?)?;
    let max_err = (&half - &image)
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(max_err < 1e-3, "f16 error {max_err}");
    Ok(())
}

#[test]
fn mask_tensor_round_trip_and_bad_tensors() -> Result<()> {
    let device = Device::Cpu;
    let mask = Array2::from_shape_fn((2, 3), |(y, x)| {
        if y == 1 && x == 2 {
            255
        } else {
            (y * 3 + x) as u8
        }
    });
    let t = mask_to_tensor(&mask, &device)?;
    assert_eq!(t.dims(), &[2, 3]);
    assert_eq!(t.dtype(), DType::U32);
    assert_eq!(t.to_vec2::<u32>()?, vec![vec![0, 1, 2], vec![3, 4, 255]]);
    assert_eq!(tensor_to_mask(&t)?, mask);
    assert_eq!(tensor_to_mask(&t.to_dtype(DType::I64)?)?, mask);
    assert_eq!(tensor_to_mask(&t.to_dtype(DType::U8)?)?, mask);

    let too_big = Tensor::new(&[[0i64, 300]], &device)?;
    let message = error_text(tensor_to_mask(&too_big));
    assert!(
        message.contains("300") && message.contains("(0, 1)"),
        "{message}"
    );
    let negative = Tensor::new(&[[-1i64]], &device)?;
    assert!(error_text(tensor_to_mask(&negative)).contains("-1"));
    let float = Tensor::zeros((2, 2), DType::F32, &device)?;
    assert!(error_text(tensor_to_mask(&float)).contains("integer"));
    let rank3 = Tensor::zeros((1, 2, 2), DType::U32, &device)?;
    assert!(error_text(tensor_to_mask(&rank3)).contains("[1, 2, 2]"));
    let rank2 = Tensor::zeros((2, 2), DType::F32, &device)?;
    assert!(error_text(tensor_to_image(&rank2)).contains("(3, H, W)"));
    let ints = Tensor::zeros((3, 2, 2), DType::U32, &device)?;
    assert!(error_text(tensor_to_image(&ints)).contains("float"));
    Ok(())
}

/// The real VOC 2012 label PNGs are palette PNGs: indices 0..=20 and 255, not colours.
#[test]
fn voc2012_label_sample_decodes_to_indices() -> Result<()> {
    let Some(root) = shared_data_set("voc2012-labels-sample") else {
        return Ok(());
    };
    let dir = root.join("SegmentationClass");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "png"));
    assert_eq!(paths.len(), 40);
    let mut with_ignore = 0;
    for path in &paths {
        let mask = load_palette_mask(path)?;
        assert!(
            mask.iter().all(|&v| v <= 20 || v == 255),
            "{path:?} holds a value outside 0..=20 and 255"
        );
        // Every label map has background and at least one object.
        assert!(mask.iter().any(|&v| v == 0), "{path:?}");
        assert!(mask.iter().any(|&v| (1..=20).contains(&v)), "{path:?}");
        if mask.iter().any(|&v| v == 255) {
            with_ignore += 1;
        }
    }
    assert!(with_ignore > 0, "no VOC label map holds the 255 boundary");
    Ok(())
}

/// Twin of the real-data test: palette masks written here read back as indices.
#[test]
fn generated_label_maps_decode_to_indices() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for seed in 0..4u8 {
        let mask = Array2::from_shape_fn((7, 11), |(y, x)| {
            let v = (y * 11 + x + seed as usize) % 23;
            if v > 20 {
                255
            } else {
                v as u8
            }
        });
        let path = dir.path().join(format!("{seed}.png"));
        save_palette_mask(&path, &mask)?;
        let back = load_palette_mask(&path)?;
        assert_eq!(back, mask);
        assert!(back.iter().all(|&v| v <= 20 || v == 255));
        assert!(back.iter().any(|&v| v == 255));
    }
    Ok(())
}

/// An RGB image full of detail, so that its JPEG is well over 3000 bytes.
fn noisy_rgb(side: u32) -> image::RgbImage {
    image::RgbImage::from_fn(side, side, |x, y| {
        let v = (x * 131 + y * 71 + x * y * 13) % 256;
        image::Rgb([v as u8, (v * 7 % 256) as u8, (255 - v) as u8])
    })
}

/// Writes `bytes[..len]` beside `whole` under `name` and returns its path.
fn cut(dir: &Path, whole: &[u8], len: usize, name: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, &whole[..len])?;
    Ok(path)
}

#[test]
fn jpeg_cut_short_is_refused_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let whole = dir.path().join("whole.jpg");
    noisy_rgb(96).save(&whole)?;
    let bytes = std::fs::read(&whole)?;
    assert!(
        bytes.len() > 6000,
        "the test JPEG is only {} bytes",
        bytes.len()
    );
    // The good file loads, as an image and as a grey mask.
    assert_eq!(load_image(&whole)?.dim(), (3, 96, 96));
    assert_eq!(load_grey_mask(&whole, 128)?.dim(), (96, 96));

    // Cut to 3000 bytes (inside the pixel data), and only the last two bytes
    // (the end-of-image marker) lost: the `image` crate decodes both without error.
    for (len, name) in [(3000, "cut3000.jpg"), (bytes.len() - 2, "no_eoi.jpg")] {
        let path = cut(dir.path(), &bytes, len, name)?;
        let message = error_text(load_image(&path));
        assert!(
            message.contains(name) && message.contains("truncated"),
            "{message}"
        );
        let message = error_text(load_grey_mask(&path, 128));
        assert!(message.contains(name), "{message}");
    }
    // Only the header: no start-of-scan marker at all.
    let header_only = cut(dir.path(), &bytes, 200, "header.jpg")?;
    let message = error_text(load_image(&header_only));
    assert!(message.contains("header.jpg"), "{message}");
    Ok(())
}

#[test]
fn png_cut_short_or_damaged_is_refused_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let whole = dir.path().join("whole.png");
    noisy_rgb(64).save(&whole)?;
    let bytes = std::fs::read(&whole)?;
    assert_eq!(load_image(&whole)?.dim(), (3, 64, 64));

    // Cut inside the pixel data, and cut after it with only IEND lost.
    for (len, name) in [
        (bytes.len() / 2, "half.png"),
        (bytes.len() - 12, "no_iend.png"),
    ] {
        let path = cut(dir.path(), &bytes, len, name)?;
        let message = error_text(load_image(&path));
        assert!(
            message.contains(name) && message.contains("truncated"),
            "{message}"
        );
    }
    // One byte of the pixel data changed: the chunk's CRC no longer matches.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    let damaged_path = dir.path().join("damaged.png");
    std::fs::write(&damaged_path, &damaged)?;
    let message = error_text(load_image(&damaged_path));
    assert!(
        message.contains("damaged.png") && message.contains("CRC"),
        "{message}"
    );

    // A palette mask that lost only its IEND chunk.
    let mask_path = dir.path().join("mask.png");
    let mask = Array2::from_shape_fn((40, 40), |(y, x)| ((x + y) % 3) as u8);
    save_palette_mask(&mask_path, &mask)?;
    assert_eq!(load_palette_mask(&mask_path)?, mask);
    let mask_bytes = std::fs::read(&mask_path)?;
    let cut_mask = cut(
        dir.path(),
        &mask_bytes,
        mask_bytes.len() - 12,
        "cut_mask.png",
    )?;
    let message = error_text(load_palette_mask(&cut_mask));
    assert!(
        message.contains("cut_mask.png") && message.contains("truncated"),
        "{message}"
    );
    Ok(())
}

#[test]
fn garbage_bytes_are_refused_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 37 % 251) as u8).collect();
    // Garbage under a JPEG name, and garbage behind a real JPEG start marker.
    let plain = dir.path().join("garbage.jpg");
    std::fs::write(&plain, &garbage)?;
    let message = error_text(load_image(&plain));
    assert!(message.contains("garbage.jpg"), "{message}");
    let mut marked = vec![0xFF, 0xD8];
    marked.extend_from_slice(&garbage);
    let marked_path = dir.path().join("marked.jpg");
    std::fs::write(&marked_path, &marked)?;
    let message = error_text(load_image(&marked_path));
    assert!(message.contains("marked.jpg"), "{message}");
    // Garbage behind a real PNG signature.
    let mut png_marked = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];
    png_marked.extend_from_slice(&garbage);
    let png_path = dir.path().join("marked.png");
    std::fs::write(&png_path, &png_marked)?;
    let message = error_text(load_image(&png_path));
    assert!(message.contains("marked.png"), "{message}");
    let message = error_text(load_palette_mask(&png_path));
    assert!(message.contains("marked.png"), "{message}");
    Ok(())
}

#[test]
fn real_flower_jpeg_cut_to_3000_bytes_is_refused() -> Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let flower = root.join("flower.jpg");
    let (_, h, w) = load_image(&flower)?.dim();
    assert!(h > 0 && w > 0);
    let bytes = std::fs::read(&flower)?;
    let dir = tempfile::tempdir()?;
    let path = cut(
        dir.path(),
        &bytes,
        3000.min(bytes.len() - 2),
        "flower_cut.jpg",
    )?;
    let message = error_text(load_image(&path));
    assert!(
        message.contains("flower_cut.jpg") && message.contains("truncated"),
        "{message}"
    );
    Ok(())
}
