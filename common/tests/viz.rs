//! Mask colours, overlay blending, panels, heat maps and atomic PNG/JPEG writing,
//! on generated arrays and on the real flower photo and mask.

use std::path::Path;

use anyhow::Context;
use common::data::shared_data_set;
use common::viz::{
    colorize_mask, colormap, heat_map, overlay, panel, save_mask_png, save_panel, save_rgb,
    to_rgb_image, MaskStyle, PANEL_GAP,
};
use common::Result;
use image::{Rgb, RgbImage};
use ndarray::{array, Array2, Array3};

/// A `(3, H, W)` image with every pixel `rgb`.
fn flat_image(h: usize, w: usize, rgb: [f32; 3]) -> Array3<f32> {
    Array3::from_shape_fn((3, h, w), |(c, _, _)| rgb[c])
}

#[test]
fn colorize_uses_the_voc_palette() {
    let mask = array![[0u8, 1, 2], [15, 255, 0]];
    let rgb = colorize_mask(&mask);
    assert_eq!(rgb.dimensions(), (3, 2)); // (width, height)
    assert_eq!(rgb.get_pixel(0, 0), &Rgb([0, 0, 0]));
    assert_eq!(rgb.get_pixel(1, 0), &Rgb([128, 0, 0])); // aeroplane
    assert_eq!(rgb.get_pixel(2, 0), &Rgb([0, 128, 0])); // bicycle
    assert_eq!(rgb.get_pixel(0, 1), &Rgb([192, 128, 128])); // person
    assert_eq!(rgb.get_pixel(1, 1), &Rgb([224, 224, 192])); // ignore
}

#[test]
fn overlay_blends_only_labelled_pixels() {
    // Image (0.2, 0.6, 1.0) -> (51, 153, 255) in 8 bits.
    let image = flat_image(2, 2, [0.2, 0.6, 1.0]);
    let mask = array![[0u8, 1], [255, 15]];
    let out = overlay(&image, &mask, 0.25);
    // Background and ignore: unchanged.
    assert_eq!(out.get_pixel(0, 0), &Rgb([51, 153, 255]));
    assert_eq!(out.get_pixel(0, 1), &Rgb([51, 153, 255]));
    // Label 1 = (128, 0, 0): 0.75*51 + 0.25*128 = 70.25, 0.75*153 = 114.75,
    // 0.75*255 = 191.25 -> (70, 115, 191).
    assert_eq!(out.get_pixel(1, 0), &Rgb([70, 115, 191]));
    // Label 15 = (192, 128, 128): 38.25 + 48 = 86.25, 114.75 + 32 = 146.75,
    // 191.25 + 32 = 223.25 -> (86, 147, 223).
    assert_eq!(out.get_pixel(1, 1), &Rgb([86, 147, 223]));

    // alpha 1 paints the colour, out-of-range alpha is clamped, NaN is 0.
    assert_eq!(
        overlay(&image, &mask, 1.0).get_pixel(1, 0),
        &Rgb([128, 0, 0])
    );
    assert_eq!(
        overlay(&image, &mask, 7.0).get_pixel(1, 0),
        &Rgb([128, 0, 0])
    );
    assert_eq!(
        overlay(&image, &mask, f32::NAN).get_pixel(1, 0),
        &Rgb([51, 153, 255])
    );
}

#[test]
fn overlay_stretches_a_mask_of_another_size() {
    // A 1x2 mask over a 2x4 image: the left half stays, the right half is label 2.
    let image = flat_image(2, 4, [0.0, 0.0, 0.0]);
    let mask = array![[0u8, 2]];
    let out = overlay(&image, &mask, 1.0);
    assert_eq!(out.dimensions(), (4, 2));
    assert_eq!(out.get_pixel(1, 1), &Rgb([0, 0, 0]));
    assert_eq!(out.get_pixel(2, 0), &Rgb([0, 128, 0]));
}

#[test]
fn rgb_conversion_clamps_and_handles_grey() {
    let mut image = flat_image(1, 3, [0.5, 0.0, 1.0]);
    image[[0, 0, 1]] = -3.0;
    image[[0, 0, 2]] = f32::NAN;
    let rgb = to_rgb_image(&image);
    // round(0.5 * 255) = 128; -3 clamps to 0; NaN reads as 0.
    assert_eq!(rgb.get_pixel(0, 0), &Rgb([128, 0, 255]));
    assert_eq!(rgb.get_pixel(1, 0), &Rgb([0, 0, 255]));
    assert_eq!(rgb.get_pixel(2, 0), &Rgb([0, 0, 255]));
    let grey = Array3::from_elem((1, 1, 1), 0.2f32);
    assert_eq!(to_rgb_image(&grey).get_pixel(0, 0), &Rgb([51, 51, 51]));
}

#[test]
fn heat_map_follows_the_colour_map() {
    let probabilities = array![[0.0f32, 0.5, 1.0], [0.0625, 2.0, f32::NAN]];
    let heat = heat_map(&probabilities);
    assert_eq!(heat.get_pixel(0, 0), &Rgb([68, 1, 84]));
    assert_eq!(heat.get_pixel(1, 0), &Rgb([33, 144, 141]));
    assert_eq!(heat.get_pixel(2, 0), &Rgb([253, 231, 37]));
    // Half way between the first two anchors (68,1,84) and (71,44,122):
    // (69.5, 22.5, 103) -> (70, 23, 103).
    assert_eq!(heat.get_pixel(0, 1), &Rgb([70, 23, 103]));
    assert_eq!(heat.get_pixel(1, 1), &Rgb([253, 231, 37]));
    assert_eq!(heat.get_pixel(2, 1), &Rgb([0, 0, 0]));
    assert_eq!(colormap(-1.0), [68, 1, 84]);
}

#[test]
fn panel_is_image_truth_prediction_with_gaps() -> Result<()> {
    let (h, w) = (4, 5);
    let image = flat_image(h, w, [0.0, 0.0, 1.0]);
    let truth = Array2::from_elem((h, w), 1u8);
    let prediction = Array2::from_elem((h, w), 2u8);
    let picture = panel(&image, Some(&truth), &prediction)?;
    // 3 W + 2 gaps = 15 + 8.
    assert_eq!(
        picture.dimensions(),
        (3 * w as u32 + 2 * PANEL_GAP, h as u32)
    );
    assert_eq!(picture.get_pixel(4, 3), &Rgb([0, 0, 255]));
    assert_eq!(picture.get_pixel(5, 0), &Rgb([255, 255, 255])); // gap
    assert_eq!(picture.get_pixel(5 + PANEL_GAP, 0), &Rgb([128, 0, 0]));
    assert_eq!(picture.get_pixel(2 * (5 + PANEL_GAP), 3), &Rgb([0, 128, 0]));

    let without_truth = panel(&image, None, &prediction)?;
    assert_eq!(
        without_truth.dimensions(),
        (2 * w as u32 + PANEL_GAP, h as u32)
    );

    let small = Array2::zeros((3, 5));
    let err = panel(&image, Some(&small), &prediction)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "panel: truth mask is 3x5 but the image is 4x5");

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("panels/sample.png");
    save_panel(&path, &image, Some(&truth), &prediction)?;
    let read = image::open(&path)?.to_rgb8();
    assert_eq!(read, picture);
    let err = save_panel(&path, &image, None, &small).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!("saving {path:?}: panel: prediction mask is 3x5 but the image is 4x5")
    );
    Ok(())
}

#[test]
fn save_rgb_writes_png_and_jpeg_atomically() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let picture = RgbImage::from_fn(6, 3, |x, y| Rgb([x as u8 * 40, y as u8 * 80, 7]));
    let png_path = dir.path().join("out.png");
    save_rgb(&png_path, &picture)?;
    assert_eq!(image::open(&png_path)?.to_rgb8(), picture);
    // Overwriting works, and no temporary file is left behind.
    save_rgb(&png_path, &picture)?;
    let jpeg_path = dir.path().join("out.jpg");
    save_rgb(&jpeg_path, &picture)?;
    let jpeg = image::open(&jpeg_path)?;
    assert_eq!((jpeg.width(), jpeg.height()), (6, 3));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    assert_eq!(names, ["out.jpg", "out.png"]);

    let bad = dir.path().join("out.bmp");
    let err = save_rgb(&bad, &picture).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{bad:?}: unsupported image extension (use .png, .jpg or .jpeg)")
    );
    let empty = RgbImage::new(0, 4);
    let err = save_rgb(&png_path, &empty).unwrap_err().to_string();
    assert_eq!(err, format!("{png_path:?}: cannot save an empty 0x4 image"));
    Ok(())
}

#[test]
fn masks_save_as_grey_binary_or_colour() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mask = array![[0u8, 1, 2], [3, 255, 0]];
    let path = dir.path().join("grey.png");
    save_mask_png(&path, &mask, MaskStyle::Grey)?;
    let grey = image::open(&path)?.to_luma8();
    assert_eq!(grey.into_raw(), vec![0, 1, 2, 3, 255, 0]);

    save_mask_png(&path, &mask, MaskStyle::Binary)?;
    let binary = image::open(&path)?.to_luma8();
    assert_eq!(binary.into_raw(), vec![0, 255, 255, 255, 255, 0]);

    save_mask_png(&path, &mask, MaskStyle::Colour)?;
    assert_eq!(image::open(&path)?.to_rgb8(), colorize_mask(&mask));

    let jpeg = dir.path().join("mask.jpg");
    let err = save_mask_png(&jpeg, &mask, MaskStyle::Grey)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("{jpeg:?}: a mask must be saved as .png (JPEG would blur the labels)")
    );
    Ok(())
}

/// Reads the indices of an 8-bit palette PNG with the `png` crate.
fn read_palette_png(path: &Path) -> Result<Array2<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path:?}"))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().context("png size")?];
    let info = reader.next_frame(&mut buffer)?;
    let (h, w) = (info.height as usize, info.width as usize);
    let rows: Vec<u8> = (0..h)
        .flat_map(|y| buffer[y * info.line_size..y * info.line_size + w].to_vec())
        .collect();
    Ok(Array2::from_shape_vec((h, w), rows)?)
}

/// Panel and overlay of a two-class segmentation: sizes, and colours only where
/// the mask says so.
fn check_foreground_pictures(image: &Array3<f32>, mask: &Array2<u8>) -> Result<()> {
    let (_, h, w) = image.dim();
    let picture = panel(image, Some(mask), mask)?;
    assert_eq!(
        picture.dimensions(),
        (3 * w as u32 + 2 * PANEL_GAP, h as u32)
    );
    let plain = to_rgb_image(image);
    let blended = overlay(image, mask, 0.5);
    for ((y, x), &label) in mask.indexed_iter() {
        let (px, py) = (x as u32, y as u32);
        let truth_colour = picture.get_pixel(w as u32 + PANEL_GAP + px, py);
        let expected = if label == 1 { [128, 0, 0] } else { [0, 0, 0] };
        assert_eq!(truth_colour, &Rgb(expected));
        if label == 0 {
            assert_eq!(blended.get_pixel(px, py), plain.get_pixel(px, py));
        } else {
            let red = (0.5 * plain.get_pixel(px, py)[0] as f32 + 64.0).round() as u8;
            assert_eq!(blended.get_pixel(px, py)[0], red);
        }
    }
    Ok(())
}

#[test]
fn flower_photo_and_mask() -> Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let photo = image::open(root.join("flower.jpg"))?.to_rgb8();
    let (w, h) = photo.dimensions();
    let image = Array3::from_shape_fn((3, h as usize, w as usize), |(c, y, x)| {
        photo.get_pixel(x as u32, y as u32)[c] as f32 / 255.0
    });
    let mask = read_palette_png(&root.join("flower_mask.png"))?;
    assert_eq!(mask.dim(), (427, 640));
    assert!(mask.iter().all(|&v| v <= 1) && mask.iter().any(|&v| v == 1));
    check_foreground_pictures(&image, &mask)
}

#[test]
fn generated_photo_and_mask() -> Result<()> {
    // Twin of the flower test: a gradient image with a disc of class 1.
    let (h, w) = (24, 32);
    let image = Array3::from_shape_fn((3, h, w), |(c, y, x)| {
        ((c + 1) * (x + y)) as f32 / (3 * (h + w)) as f32
    });
    let mask = Array2::from_shape_fn((h, w), |(y, x)| {
        let (dy, dx) = (y as f32 - 12.0, x as f32 - 16.0);
        u8::from(dy * dy + dx * dx < 64.0)
    });
    check_foreground_pictures(&image, &mask)
}
