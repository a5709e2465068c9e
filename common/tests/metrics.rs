//! Confusion-matrix metrics against hand-computed values, ignore handling,
//! merging, tensor updates, bad input, and a CamVid label map (real data).

use std::path::Path;

use anyhow::Context;
use candle::{Device, Tensor};
use common::data::shared_data_set;
use common::metrics::ConfusionMatrix;
use common::Result;
use ndarray::{array, Array2};

const TOL: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < TOL
}

fn assert_options(got: &[Option<f64>], want: &[Option<f64>]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Some(g), Some(w)) => assert!(close(*g, *w), "{got:?} vs {want:?}"),
            (None, None) => {}
            _ => panic!("{got:?} vs {want:?}"),
        }
    }
}

/// Pixel lists (pred, truth) that produce `counts` (rows = truth, cols = pred).
fn pixels_for(counts: &Array2<u64>) -> (Vec<u32>, Vec<u32>) {
    let (mut pred, mut truth) = (Vec::new(), Vec::new());
    for ((t, p), &n) in counts.indexed_iter() {
        for _ in 0..n {
            pred.push(p as u32);
            truth.push(t as u32);
        }
    }
    (pred, truth)
}

#[test]
fn two_classes_by_hand() -> Result<()> {
    // Pairs (truth, pred): (0,0) (0,0) (0,1) (1,1) (1,0), and one ignored pixel.
    let truth: [u8; 6] = [0, 0, 0, 1, 1, 255];
    let pred: [u8; 6] = [0, 0, 1, 1, 0, 1];
    let mut cm = ConfusionMatrix::new(2);
    cm.update(&pred, &truth)?;
    // counts = [[2, 1], [1, 1]]: rows = truth, columns = prediction.
    assert_eq!(cm.counts(), &array![[2u64, 1], [1, 1]]);
    assert_eq!(cm.total(), 5);
    // 3 correct of 5.
    assert!(close(cm.pixel_accuracy(), 0.6));
    // class 0: 2/3, class 1: 1/2; mean 7/12.
    assert_options(&cm.accuracy_per_class(), &[Some(2.0 / 3.0), Some(0.5)]);
    assert!(close(cm.mean_accuracy(), 7.0 / 12.0));
    // IoU0 = 2 / (3 + 3 - 2) = 1/2, IoU1 = 1 / (2 + 2 - 1) = 1/3; mean 5/12.
    assert_options(&cm.iou_per_class(), &[Some(0.5), Some(1.0 / 3.0)]);
    assert!(close(cm.mean_iou(), 5.0 / 12.0));
    // fwIoU = 3/5 * 1/2 + 2/5 * 1/3 = 13/30.
    assert!(close(cm.fw_iou(), 13.0 / 30.0));
    // Dice0 = 2*2 / (3 + 3) = 2/3, Dice1 = 2*1 / (2 + 2) = 1/2.
    assert_options(&cm.dice_per_class(), &[Some(2.0 / 3.0), Some(0.5)]);
    assert!(close(cm.mean_dice(), 7.0 / 12.0));
    Ok(())
}

#[test]
fn three_classes_by_hand() -> Result<()> {
    // Row sums (truth) 5, 5, 8; column sums (prediction) 5, 6, 7; diagonal 4, 3, 6.
    let counts = array![[4u64, 1, 0], [1, 3, 1], [0, 2, 6]];
    let (pred, truth) = pixels_for(&counts);
    let mut cm = ConfusionMatrix::new(3);
    cm.update(&pred, &truth)?;
    assert_eq!(cm.counts(), &counts);
    // 13 correct of 18.
    assert!(close(cm.pixel_accuracy(), 13.0 / 18.0));
    // 4/5, 3/5, 6/8.
    assert!(close(cm.mean_accuracy(), (0.8 + 0.6 + 0.75) / 3.0));
    // IoU: 4/(5+5-4) = 2/3, 3/(5+6-3) = 3/8, 6/(8+7-6) = 2/3.
    assert_options(
        &cm.iou_per_class(),
        &[Some(2.0 / 3.0), Some(3.0 / 8.0), Some(2.0 / 3.0)],
    );
    // (16/24 + 9/24 + 16/24) / 3 = 41/72.
    assert!(close(cm.mean_iou(), 41.0 / 72.0));
    // 5/18 * 2/3 + 5/18 * 3/8 + 8/18 * 2/3.
    let fw = 5.0 / 18.0 * 2.0 / 3.0 + 5.0 / 18.0 * 3.0 / 8.0 + 8.0 / 18.0 * 2.0 / 3.0;
    assert!(close(cm.fw_iou(), fw));
    // Dice: 8/10, 6/11, 12/15.
    assert_options(
        &cm.dice_per_class(),
        &[Some(0.8), Some(6.0 / 11.0), Some(0.8)],
    );
    Ok(())
}

#[test]
fn absent_classes_follow_the_documented_convention() -> Result<()> {
    // K = 4: class 2 is predicted but never true, class 3 occurs nowhere.
    // counts rows: [3,1,0,0], [0,2,2,0], [0,0,0,0], [0,0,0,0]
    // truth sums 4, 4, 0, 0; prediction sums 3, 3, 2, 0; 8 pixels, 5 correct.
    let counts = array![[3u64, 1, 0, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]];
    let (pred, truth) = pixels_for(&counts);
    let mut cm = ConfusionMatrix::new(4);
    cm.update(&pred, &truth)?;
    assert!(close(cm.pixel_accuracy(), 5.0 / 8.0));
    // Mean accuracy over classes present in the truth only: (3/4 + 2/4) / 2.
    assert_options(
        &cm.accuracy_per_class(),
        &[Some(0.75), Some(0.5), None, None],
    );
    assert!(close(cm.mean_accuracy(), 0.625));
    // IoU: 3/(4+3-3) = 3/4, 2/(4+3-2) = 2/5, 0/(0+2-0) = 0, class 3 None.
    assert_options(
        &cm.iou_per_class(),
        &[Some(0.75), Some(0.4), Some(0.0), None],
    );
    // Mean over the three classes that occur: (0.75 + 0.4 + 0) / 3.
    assert!(close(cm.mean_iou(), 1.15 / 3.0));
    // fwIoU: 4/8 * 3/4 + 4/8 * 2/5 = 0.575 (class 2 has no truth weight).
    assert!(close(cm.fw_iou(), 0.575));
    // Dice: 6/7, 4/7, 0, None.
    assert_options(
        &cm.dice_per_class(),
        &[Some(6.0 / 7.0), Some(4.0 / 7.0), Some(0.0), None],
    );
    Ok(())
}

#[test]
fn empty_matrix_gives_nan_not_a_panic() {
    let cm = ConfusionMatrix::new(3);
    assert!(cm.pixel_accuracy().is_nan());
    assert!(cm.mean_accuracy().is_nan());
    assert!(cm.mean_iou().is_nan());
    assert!(cm.fw_iou().is_nan());
    assert_eq!(cm.iou_per_class(), vec![None, None, None]);
}

#[test]
fn ignored_truth_skips_the_pixel_whatever_the_prediction() -> Result<()> {
    let mut cm = ConfusionMatrix::new(2);
    // Truth 255 with predictions 1 and 200 (out of range, but ignored).
    cm.update(&[0u32, 1, 200], &[0u32, 255, 255])?;
    assert_eq!(cm.counts(), &array![[1u64, 0], [0, 0]]);
    Ok(())
}

#[test]
fn bad_labels_are_errors_and_leave_the_matrix_unchanged() -> Result<()> {
    let mut cm = ConfusionMatrix::new(3);
    cm.update(&[0u8, 1], &[0u8, 1])?;
    let before = cm.clone();

    let err = cm.update(&[0u8, 3], &[0u8, 1]).unwrap_err().to_string();
    assert_eq!(err, "predicted label 3 at pixel 1 is outside 0..3");
    let err = cm.update(&[0u8, 1], &[7u8, 1]).unwrap_err().to_string();
    assert_eq!(
        err,
        "truth label 7 at pixel 0 is outside 0..3 (and is not the ignore label 255)"
    );
    let err = cm.update(&[0u8, 1, 2], &[0u8, 1]).unwrap_err().to_string();
    assert_eq!(
        err,
        "confusion matrix update: prediction has 3 pixels but truth has 2"
    );
    assert_eq!(cm, before);
    Ok(())
}

#[test]
fn merge_adds_counts_and_checks_the_class_count() -> Result<()> {
    let truth: Vec<u32> = vec![0, 1, 2, 2, 1, 0, 255, 2];
    let pred: Vec<u32> = vec![0, 2, 2, 1, 1, 0, 0, 2];
    let mut whole = ConfusionMatrix::new(3);
    whole.update(&pred, &truth)?;
    let (mut first, mut second) = (ConfusionMatrix::new(3), ConfusionMatrix::new(3));
    first.update(&pred[..3], &truth[..3])?;
    second.update(&pred[3..], &truth[3..])?;
    first.merge(&second)?;
    assert_eq!(first, whole);
    assert_eq!(whole.total(), 7);

    let err = first
        .merge(&ConfusionMatrix::new(4))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cannot merge a confusion matrix of 4 classes into one of 3"
    );
    first.reset();
    assert_eq!(first.total(), 0);
    Ok(())
}

#[test]
fn tensors_update_like_slices() -> Result<()> {
    let device = Device::Cpu;
    // (N, H, W) = (2, 2, 3).
    let truth: Vec<u32> = vec![0, 1, 2, 255, 1, 1, 2, 2, 0, 0, 1, 255];
    let pred: Vec<u32> = vec![0, 1, 1, 2, 1, 0, 2, 2, 0, 1, 1, 0];
    let mut from_slices = ConfusionMatrix::new(3);
    from_slices.update(&pred, &truth)?;

    let truth_t = Tensor::from_vec(truth.clone(), (2, 2, 3), &device)?;
    let pred_u32 = Tensor::from_vec(pred.clone(), (2, 2, 3), &device)?;
    let mut from_u32 = ConfusionMatrix::new(3);
    from_u32.update_tensors(&pred_u32, &truth_t)?;
    assert_eq!(from_u32, from_slices);

    // argmax-style i64 and u8 predictions count the same.
    let pred_i64 = Tensor::from_vec(
        pred.iter().map(|&p| p as i64).collect::<Vec<_>>(),
        (2, 2, 3),
        &device,
    )?;
    let mut from_i64 = ConfusionMatrix::new(3);
    from_i64.update_tensors(&pred_i64, &truth_t)?;
    assert_eq!(from_i64, from_slices);
    let pred_u8 = pred_u32.to_dtype(candle::DType::U8)?;
    let mut from_u8 = ConfusionMatrix::new(3);
    from_u8.update_tensors(&pred_u8, &truth_t)?;
    assert_eq!(from_u8, from_slices);

    // A real argmax over logits (N, K, H, W) -> (N, H, W).
    let logits = Tensor::from_vec(
        vec![
            0.9f32, 0.1, 0.3, 0.2, 0.05, 0.6, 0.4, 0.2, //
            0.0, 0.8, 0.4, 0.1,
        ],
        (1, 3, 2, 2),
        &device,
    )?;
    // Per pixel over classes: (0.9,0.05,0.0)->0, (0.1,0.6,0.8)->2,
    // (0.3,0.4,0.4)->first max 1, (0.2,0.2,0.1)->first max 0.
    let argmax = logits.argmax(1)?;
    let mut cm = ConfusionMatrix::new(3);
    let small_truth = Tensor::from_vec(vec![0u32, 2, 1, 1], (1, 2, 2), &device)?;
    cm.update_tensors(&argmax, &small_truth)?;
    assert_eq!(cm.counts(), &array![[1u64, 0, 0], [1, 1, 0], [0, 0, 1]]);
    Ok(())
}

#[test]
fn bad_tensors_are_errors() -> Result<()> {
    let device = Device::Cpu;
    let truth = Tensor::from_vec(vec![0u32, 1, 1, 0], (1, 2, 2), &device)?;
    let mut cm = ConfusionMatrix::new(2);

    let float_pred = Tensor::zeros((1, 2, 2), candle::DType::F32, &device)?;
    let err = cm
        .update_tensors(&float_pred, &truth)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "the prediction tensor must hold integer labels, not F32"
    );

    let wrong_shape = Tensor::zeros((1, 4), candle::DType::U32, &device)?;
    let err = cm
        .update_tensors(&wrong_shape, &truth)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "confusion matrix update: prediction shape [1, 4] differs from truth shape [1, 2, 2]"
    );

    let negative = Tensor::from_vec(vec![0i64, -1, 1, 0], (1, 2, 2), &device)?;
    let err = cm
        .update_tensors(&negative, &truth)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "predicted label -1 at pixel 1 is outside 0..2");
    assert_eq!(cm.total(), 0);
    Ok(())
}

#[test]
fn json_summary_names_the_classes() -> Result<()> {
    // The two-class example above, plus an absent third class.
    let mut cm = ConfusionMatrix::new(3);
    cm.update(&[0u8, 0, 1, 1, 0], &[0u8, 0, 0, 1, 1])?;
    let names: Vec<String> = ["background", "flower", "stem"].map(String::from).to_vec();
    let json = serde_json::to_value(cm.scores(&names)?)?;
    assert_eq!(json["n_classes"], 3);
    assert_eq!(json["pixels"], 5);
    assert!(close(json["pixel_accuracy"].as_f64().context("pa")?, 0.6));
    assert!(close(
        json["mean_iou"].as_f64().context("miou")?,
        5.0 / 12.0
    ));
    let flower = json["iou_per_class"]["flower"].as_f64().context("flower")?;
    assert!(close(flower, 1.0 / 3.0));
    assert!(json["iou_per_class"]["stem"].is_null());
    assert_eq!(json["truth_pixels_per_class"]["background"], 3.0);

    let err = cm.scores(&names[..2]).unwrap_err().to_string();
    assert_eq!(
        err,
        "confusion matrix has 3 classes but 2 class names were given"
    );
    let twice: Vec<String> = ["a", "b", "a"].map(String::from).to_vec();
    let err = cm.scores(&twice).unwrap_err().to_string();
    assert_eq!(err, "class name \"a\" appears twice");

    // An empty matrix writes null, not NaN (which JSON cannot hold).
    let empty = serde_json::to_value(ConfusionMatrix::new(3).scores(&names)?)?;
    assert!(empty["mean_iou"].is_null());
    assert!(serde_json::to_string(&empty).is_ok());
    Ok(())
}

/// Reads the indices of an 8-bit palette PNG with the `png` crate.
fn read_palette_png(path: &Path) -> Result<Array2<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path:?}"))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().context("png size")?];
    let info = reader.next_frame(&mut buffer)?;
    anyhow::ensure!(
        info.color_type == png::ColorType::Indexed && info.bit_depth == png::BitDepth::Eight,
        "{path:?} is not an 8-bit palette PNG"
    );
    let (h, w) = (info.height as usize, info.width as usize);
    let rows: Vec<u8> = (0..h)
        .flat_map(|y| buffer[y * info.line_size..y * info.line_size + w].to_vec())
        .collect();
    Ok(Array2::from_shape_vec((h, w), rows)?)
}

/// A label map scored against itself with void (255) replaced by class 0:
/// every counted pixel is correct, void pixels are not counted, and the
/// diagonal is the class histogram.
fn check_against_itself(truth: &Array2<u8>, n_classes: usize) -> Result<()> {
    let pred = truth.mapv(|v| if v == 255 { 0 } else { v });
    let mut cm = ConfusionMatrix::new(n_classes);
    cm.update(
        pred.as_slice().context("pred")?,
        truth.as_slice().context("truth")?,
    )?;
    let void = truth.iter().filter(|&&v| v == 255).count() as u64;
    assert_eq!(cm.total(), truth.len() as u64 - void);
    assert_eq!(cm.pixel_accuracy(), 1.0);
    for c in 0..n_classes {
        let n = truth.iter().filter(|&&v| v as usize == c).count() as u64;
        assert_eq!(cm.counts()[[c, c]], n);
    }
    for iou in cm.iou_per_class().into_iter().flatten() {
        assert_eq!(iou, 1.0);
    }
    Ok(())
}

#[test]
fn camvid_label_map_against_itself() -> Result<()> {
    let Some(root) = shared_data_set("camvid-voc") else {
        return Ok(());
    };
    let truth = read_palette_png(&root.join("SegmentationClass/0001TP_006690.png"))?;
    assert_eq!(truth.dim(), (360, 480));
    assert!(truth.iter().any(|&v| v == 255), "expected void pixels");
    check_against_itself(&truth, 11)
}

#[test]
fn generated_label_map_against_itself() -> Result<()> {
    // Twin of the CamVid test: stripes of classes 0..4 with a void border.
    let truth = Array2::from_shape_fn((30, 40), |(y, x)| {
        if y == 0 || x == 0 {
            255
        } else {
            (x / 10) as u8
        }
    });
    check_against_itself(&truth, 4)
}
