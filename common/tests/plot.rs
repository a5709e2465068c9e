//! Loss-curve and confusion-matrix PNGs: size, not blank, lines and cells where
//! they belong, awkward curves (empty, one point, NaN) and bad input.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use common::data::shared_data_set;
use common::metrics::ConfusionMatrix;
use common::plot::{plot_confusion_matrix, plot_loss_curves, Curve};
use common::Result;
use image::RgbImage;

/// Number of distinct colours in the picture.
fn distinct_colours(picture: &RgbImage) -> usize {
    picture.pixels().map(|p| p.0).collect::<HashSet<_>>().len()
}

/// Number of pixels that are not white inside the box `[x0, x1) x [y0, y1)`.
fn inked(picture: &RgbImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .filter(|&(x, y)| picture.get_pixel(x, y).0 != [255, 255, 255])
        .count()
}

/// Number of pixels of exactly `rgb` in the picture.
fn count_colour(picture: &RgbImage, rgb: [u8; 3]) -> usize {
    picture.pixels().filter(|p| p.0 == rgb).count()
}

fn read_png(path: &Path) -> Result<RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("opening {path:?}"))?
        .to_rgb8())
}

/// The first two line colours of `plot_loss_curves` (matplotlib's blue and orange).
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

fn loss_curves() -> Vec<Curve> {
    let train = (0..20)
        .map(|e| (e as f64, 2.0 * (-0.2 * e as f64).exp()))
        .collect();
    let val = (0..20)
        .map(|e| (e as f64, 2.2 * (-0.15 * e as f64).exp() + 0.1))
        .collect();
    vec![Curve::new("train", train), Curve::new("val", val)]
}

#[test]
fn loss_and_metric_panels() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("loss.png");
    let miou = Curve::new(
        "val mIoU",
        (0..20).map(|e| (e as f64, 0.1 + 0.03 * e as f64)).collect(),
    );
    plot_loss_curves(&path, "U-Net on ISBI", &loss_curves(), Some(&miou))?;
    let picture = read_png(&path)?;
    // Two 640x480 panels side by side.
    assert_eq!(picture.dimensions(), (1280, 480));
    assert!(distinct_colours(&picture) > 10);
    // Both line colours appear in the left panel, only the first in the right one.
    let left = image::imageops::crop_imm(&picture, 0, 0, 640, 480).to_image();
    let right = image::imageops::crop_imm(&picture, 640, 0, 640, 480).to_image();
    assert!(count_colour(&left, BLUE) > 200, "train curve missing");
    assert!(count_colour(&left, ORANGE) > 200, "val curve missing");
    assert!(count_colour(&right, BLUE) > 200, "metric curve missing");
    assert_eq!(count_colour(&right, ORANGE), 0);
    // Ink in the middle of each plot area (lines, grid), and a title on top.
    assert!(inked(&picture, (150, 600), (100, 400)) > 500);
    assert!(inked(&picture, (790, 1240), (100, 400)) > 500);
    assert!(inked(&picture, (500, 780), (0, 30)) > 50, "title missing");
    Ok(())
}

#[test]
fn loss_panel_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/run/loss.png");
    plot_loss_curves(&path, "loss", &loss_curves(), None)?;
    let picture = read_png(&path)?;
    assert_eq!(picture.dimensions(), (640, 480));
    assert!(count_colour(&picture, BLUE) > 200);
    assert!(count_colour(&picture, ORANGE) > 200);
    Ok(())
}

#[test]
fn awkward_curves_do_not_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("awkward.png");
    let curves = vec![
        Curve::new("empty", vec![]),
        Curve::new("one point", vec![(3.0, 0.5)]),
        Curve::new(
            "with NaN",
            vec![
                (0.0, 1.0),
                (1.0, f64::NAN),
                (2.0, 0.8),
                (f64::INFINITY, 0.1),
            ],
        ),
    ];
    let metric = Curve::new("nothing finite", vec![(0.0, f64::NAN)]);
    plot_loss_curves(&path, "awkward", &curves, Some(&metric))?;
    let picture = read_png(&path)?;
    assert_eq!(picture.dimensions(), (1280, 480));
    // The single point is drawn as a dot in the second colour; the NaN curve's
    // finite points in the third (green).
    assert!(count_colour(&picture, ORANGE) > 10, "single point missing");
    assert!(
        count_colour(&picture, [44, 160, 44]) > 50,
        "finite part missing"
    );
    // The metric panel says "no data" in its middle.
    assert!(inked(&picture, (900, 1100), (220, 280)) > 30);

    // All curves empty, no title text: still a picture with axes.
    plot_loss_curves(&path, "", &[], None)?;
    assert!(inked(&read_png(&path)?, (0, 640), (0, 480)) > 500);
    Ok(())
}

#[test]
fn bad_paths_are_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("loss.svg");
    let err = plot_loss_curves(&path, "t", &loss_curves(), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{path:?}: unsupported image extension (use .png, .jpg or .jpeg)")
    );
    let cm = ConfusionMatrix::new(2);
    let names = vec!["a".to_string()];
    let png = dir.path().join("cm.png");
    let err = plot_confusion_matrix(&png, &cm, &names).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{png:?}: confusion matrix has 2 classes but 1 class names were given")
    );
    let err = plot_confusion_matrix(&png, &ConfusionMatrix::new(0), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{png:?}: confusion matrix has no class to draw")
    );
    Ok(())
}

/// Plots `cm` and checks the picture: size from the layout (cell = clamp(640 / K,
/// 16, 64); margins 150 left + 110 right, 60 top + 150 bottom), many colours,
/// and the colour of cell (truth, prediction) = (0, 0).
fn check_confusion_plot(cm: &ConfusionMatrix, names: &[String]) -> Result<RgbImage> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("confusion.png");
    plot_confusion_matrix(&path, cm, names)?;
    let picture = read_png(&path)?;
    let k = cm.n_classes() as u32;
    let cell = (640 / k).clamp(16, 64);
    assert_eq!(
        picture.dimensions(),
        (150 + k * cell + 110, 60 + k * cell + 150)
    );
    assert!(distinct_colours(&picture) > 10);
    // Class names left of the matrix and below it.
    assert!(inked(&picture, (20, 145), (60, 60 + k * cell)) > 100);
    assert!(
        inked(
            &picture,
            (150, 150 + k * cell),
            (60 + k * cell + 5, 60 + k * cell + 120)
        ) > 100
    );
    // Top-left cell corner (clear of any text): the colour map of row 0's share.
    let row0: u64 = cm.counts().row(0).sum();
    let share = cm.counts()[[0, 0]] as f32 / row0.max(1) as f32;
    let corner = picture.get_pixel(152, 62).0;
    assert_eq!(corner, common::viz::colormap(share));
    Ok(picture)
}

#[test]
fn small_confusion_matrix_with_values() -> Result<()> {
    // Rows = truth: [8, 2, 0], [1, 3, 0], [0, 0, 0] (class 2 never true).
    let mut cm = ConfusionMatrix::new(3);
    let truth: Vec<u8> = [vec![0; 10], vec![1; 4]].concat();
    let pred: Vec<u8> = [vec![0; 8], vec![1; 2], vec![0], vec![1; 3]].concat();
    cm.update(&pred, &truth)?;
    let names: Vec<String> = ["background", "flower", "a very long class name indeed"]
        .map(String::from)
        .to_vec();
    let picture = check_confusion_plot(&cm, &names)?;
    // K = 3: cells of 64 px. Cell (0, 0) is 0.8 -> bright, with dark text in it.
    let cell_00 = image::imageops::crop_imm(&picture, 150, 60, 64, 64).to_image();
    assert!(count_colour(&cell_00, [0, 0, 0]) > 10, "value text missing");
    // Cell (2, 2) of an absent truth class is 0 -> the dark end of the map.
    assert_eq!(
        picture.get_pixel(150 + 2 * 64 + 2, 60 + 2 * 64 + 2).0,
        [68, 1, 84]
    );
    Ok(())
}

#[test]
fn camvid_sized_confusion_matrix() -> Result<()> {
    // Eleven CamVid classes (real names when the data set is here); counts made
    // from a fixed pattern: mostly right, some confusion with the next class.
    let names: Vec<String> = match shared_data_set("camvid-voc") {
        Some(root) => std::fs::read_to_string(root.join("classes.txt"))?
            .lines()
            .map(String::from)
            .collect(),
        None => (0..11).map(|c| format!("class {c}")).collect(),
    };
    assert_eq!(names.len(), 11);
    let (mut pred, mut truth) = (Vec::new(), Vec::new());
    for t in 0..11u8 {
        for i in 0..(20 + t as usize) {
            truth.push(t);
            pred.push(if i % 4 == 0 { (t + 1) % 11 } else { t });
        }
    }
    let mut cm = ConfusionMatrix::new(11);
    cm.update(&pred, &truth)?;
    check_confusion_plot(&cm, &names)?;
    Ok(())
}

#[test]
fn voc_sized_confusion_matrix_without_values() -> Result<()> {
    // K = 21 > 12: no numbers in the cells; cell = 640 / 21 = 30 px.
    let names: Vec<String> = (0..21).map(|c| format!("c{c}")).collect();
    let truth: Vec<u8> = (0..21u8).flat_map(|c| vec![c; 5]).collect();
    let pred: Vec<u8> = truth
        .iter()
        .map(|&t| if t % 3 == 0 { 0 } else { t })
        .collect();
    let mut cm = ConfusionMatrix::new(21);
    cm.update(&pred, &truth)?;
    let picture = check_confusion_plot(&cm, &names)?;
    // Row 1 is all on the diagonal: cell (1, 1) is uniformly the top colour.
    let cell_11 = image::imageops::crop_imm(&picture, 150 + 30, 60 + 30, 30, 30).to_image();
    assert_eq!(count_colour(&cell_11, [253, 231, 37]), 30 * 30);
    Ok(())
}
