//! The FCN's cell (i, j) equals the classifier on the 32x32 crop at (4i, 4j):
//! on several positions of the real `flower.jpg` and on a real 32x32 patch, with
//! twins on the generated scene that always run. Also the padding arithmetic.

use std::path::Path;

use assignment1_classify_to_segment::data::{
    generated_data, load_patches, load_scene, patch_batch, Scene,
};
use assignment1_classify_to_segment::model::{new_classifier, Arch, Classifier};
use assignment1_classify_to_segment::segment::{fcn_map, pad_image, padding_for};
use candle::{Device, Module, Tensor};
use common::data::image_io::{image_to_tensor, save_image};
use common::data::{shared_data_set, Sample};
use ndarray::Array3;

type Result<T> = anyhow::Result<T>;

/// Max |FCN cell (i, j) - classifier(crop at (4i, 4j))| over `positions` of the padded scene.
fn worst_cell_difference(
    net: &Classifier,
    scene: &Scene,
    positions: &[(usize, usize)],
) -> Result<f32> {
    let device = Device::Cpu;
    let (_, h, w) = scene.image.dim();
    let padding = padding_for(h, w, 4)?;
    let padded = pad_image(&image_to_tensor(&scene.image, &device)?, &padding)?;
    let map = fcn_map(&net.to_fcn()?, &padded)?;
    // Rows, cols of the map: one cell per 4x4 block of the image.
    assert_eq!(map.dim(), (2, h.div_ceil(4), w.div_ceil(4)));
    let mut worst = 0f32;
    for &(i, j) in positions {
        let crop = padded
            .narrow(2, 4 * i, 32)?
            .narrow(3, 4 * j, 32)?
            .contiguous()?;
        let logits = net.forward(&crop)?.flatten_all()?.to_vec1::<f32>()?;
        for (k, v) in logits.iter().enumerate() {
            worst = worst.max((v - map[[k, i, j]]).abs());
        }
    }
    Ok(worst)
}

/// Corners, edges and inner cells of a `rows x cols` map.
fn positions(rows: usize, cols: usize) -> Vec<(usize, usize)> {
    vec![
        (0, 0),
        (0, cols - 1),
        (rows - 1, 0),
        (rows - 1, cols - 1),
        (rows / 2, cols / 2),
        (rows / 3, 2 * cols / 3),
        (1, cols / 4),
        (rows - 2, 3),
    ]
}

fn check_scene(scene: &Scene) -> Result<()> {
    let (_, h, w) = scene.image.dim();
    for (arch, seed) in [(Arch::Default, 11), (Arch::Lecture, 12)] {
        let (net, _) = new_classifier(&arch.spec(), seed, &Device::Cpu)?;
        let worst = worst_cell_difference(&net, scene, &positions(h.div_ceil(4), w.div_ceil(4)))?;
        assert!(
            worst < 1e-5,
            "{arch}: FCN differs from the classifier by {worst}"
        );
    }
    Ok(())
}

fn check_single_patch(patch: &Sample) -> Result<()> {
    let device = Device::Cpu;
    let (net, _) = new_classifier(&Arch::Default.spec(), 5, &device)?;
    let (images, _) = patch_batch(std::slice::from_ref(patch), &device)?;
    // (1, 2) and (1, 2, 1, 1): a 32x32 input gives a 1x1 map.
    let a = net.forward(&images)?;
    let b = net.to_fcn()?.forward(&images)?;
    assert_eq!(b.dims(), &[1, 2, 1, 1]);
    let diff = (a - b.flatten_from(1)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-5, "patch {:?}: {diff}", patch.id);
    Ok(())
}

#[test]
fn fcn_cells_equal_classifier_crops_on_real_flower() -> Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let scene = load_scene(&root)?;
    assert_eq!(scene.image.dim(), (3, 427, 640));
    check_scene(&scene)?;
    let patches = load_patches(&root)?;
    assert_eq!(patches.len(), 650);
    check_single_patch(&patches[0])?;
    check_single_patch(&patches[649])
}

#[test]
fn fcn_cells_equal_classifier_crops_on_generated_scene() -> Result<()> {
    let (patches, scene) = generated_data(40, 3);
    check_scene(&scene)?;
    check_single_patch(&patches[0])
}

#[test]
fn padding_makes_the_map_cover_the_image() -> Result<()> {
    // Stride 4 on 427 rows: ceil(427/4) = 107 cells; padded = 4*106 + 32 = 456 = 14 + 427 + 15.
    let p = padding_for(427, 640, 4)?;
    assert_eq!((p.top, p.bottom, p.left, p.right), (14, 15, 14, 14));
    // Stride 1: 15 before, 16 after, one cell per pixel.
    let p = padding_for(5, 7, 1)?;
    assert_eq!((p.top, p.bottom, p.left, p.right), (15, 16, 15, 16));
    let image = Tensor::arange(0f32, 35., &Device::Cpu)?.reshape((1, 5, 7))?;
    let image = Tensor::cat(&[&image, &image, &image], 0)?;
    let padded = pad_image(&image, &p)?;
    assert_eq!(padded.dims(), &[1, 3, 36, 38]);
    // Edge replication: the padded top-left corner repeats pixel (0, 0), the
    // bottom-right repeats pixel (4, 6) = 34.
    let v = padded.squeeze(0)?.to_vec3::<f32>()?;
    assert_eq!(v[0][0][0], 0.0);
    assert_eq!(v[1][35][37], 34.0);
    assert_eq!(v[2][15 + 2][15 + 3], 17.0);
    Ok(())
}

#[test]
fn bad_inputs_are_errors_that_say_why() -> Result<()> {
    let device = Device::Cpu;
    let (net, _) = new_classifier(&Arch::Lecture.spec(), 1, &device)?;
    let big = Tensor::zeros((1, 3, 40, 40), candle::DType::F32, &device)?;
    let err = net.forward(&big).unwrap_err().to_string();
    assert!(
        err.contains("(N, 3, 32, 32)") && err.contains("[1, 3, 40, 40]"),
        "{err}"
    );
    let small = Tensor::zeros((1, 3, 20, 40), candle::DType::F32, &device)?;
    let err = net.to_fcn()?.forward(&small).unwrap_err().to_string();
    assert!(
        err.contains("H, W >= 32") && err.contains("[1, 3, 20, 40]"),
        "{err}"
    );
    let err = padding_for(0, 10, 4).unwrap_err().to_string();
    assert!(err.contains("empty 0x10"), "{err}");
    let err = padding_for(10, 10, 0).unwrap_err().to_string();
    assert!(err.contains("stride must be in 1..=32, got 0"), "{err}");
    let err = load_patches(Path::new("/nonexistent/flowers"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/flowers") && err.contains("Positive/"),
        "{err}"
    );

    // A patch of the wrong size: the error names the file and both sizes.
    let dir = tempfile::tempdir()?;
    for sub in ["Positive", "Negative"] {
        std::fs::create_dir(dir.path().join(sub))?;
        save_image(
            &dir.path().join(sub).join("a.png"),
            &Array3::zeros((3, 32, 32)),
        )?;
    }
    save_image(
        &dir.path().join("Positive/b.png"),
        &Array3::zeros((3, 31, 32)),
    )?;
    let err = load_patches(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("b.png") && err.contains("is 31x32, expected 32x32"),
        "{err}"
    );
    Ok(())
}
