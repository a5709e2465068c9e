//! Tests of `common::loss`: values against independent f64 loops (PyTorch's
//! definitions) and by hand, gradients by finite differences, bad labels.

use candle::{DType, Device, Result, Tensor};
use common::loss::{ce_dice_loss, dice_loss, pixel_cross_entropy, pixel_cross_entropy_weighted};
use common::nn::gradcheck::check_gradient;

fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43758.5453).fract())
        .collect()
}

const N: usize = 2;
const K: usize = 3;
const H: usize = 3;
const W: usize = 4;

/// Logits (N, K, H, W) in (-2, 2) and labels (N, H, W) with some 255.
fn fixture() -> Result<(Vec<f64>, Vec<u32>)> {
    let logits = values(N * K * H * W, 1.0).iter().map(|v| 2.0 * v).collect();
    let labels = (0..N * H * W)
        .map(|i| {
            if i % 5 == 3 {
                255
            } else {
                ((i * 7 + i / 3) % K) as u32
            }
        })
        .collect();
    Ok((logits, labels))
}

fn tensors(logits: &[f64], labels: &[u32]) -> Result<(Tensor, Tensor)> {
    Ok((
        Tensor::from_vec(logits.to_vec(), (N, K, H, W), &Device::Cpu)?,
        Tensor::from_vec(labels.to_vec(), (N, H, W), &Device::Cpu)?,
    ))
}

/// softmax over classes at pixel (n, p): Vec of K probabilities.
fn softmax_at(logits: &[f64], n: usize, p: usize) -> Vec<f64> {
    let z: Vec<f64> = (0..K).map(|k| logits[(n * K + k) * H * W + p]).collect();
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// PyTorch `F.cross_entropy(x, y, weight=w, ignore_index=255)`, written out.
fn reference_ce(logits: &[f64], labels: &[u32], weights: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for n in 0..N {
        for p in 0..H * W {
            let y = labels[n * H * W + p];
            if y == 255 {
                continue;
            }
            let prob = softmax_at(logits, n, p)[y as usize];
            num += -weights[y as usize] * prob.ln();
            den += weights[y as usize];
        }
    }
    num / den
}

/// 1 - mean_k (2 Σ y p + eps) / (Σ y + Σ p + eps), ignored pixels out of all sums.
fn reference_dice(logits: &[f64], labels: &[u32], eps: f64) -> f64 {
    let mut total = 0.0;
    for k in 0..K {
        let (mut inter, mut ys, mut ps) = (0.0, 0.0, 0.0);
        for n in 0..N {
            for p in 0..H * W {
                let y = labels[n * H * W + p];
                if y == 255 {
                    continue;
                }
                let prob = softmax_at(logits, n, p)[k];
                let one = if y as usize == k { 1.0 } else { 0.0 };
                inter += one * prob;
                ys += one;
                ps += prob;
            }
        }
        total += (2.0 * inter + eps) / (ys + ps + eps);
    }
    1.0 - total / K as f64
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[test]
fn cross_entropy_by_hand() -> Result<()> {
    // Equal logits over 2 classes: -log(1/2) = ln 2 at every pixel; the ignored one is out.
    let logits = Tensor::zeros((1, 2, 1, 3), DType::F32, &Device::Cpu)?;
    let targets = Tensor::new(&[[[0u32, 255, 1]]], &Device::Cpu)?;
    let loss = scalar(&pixel_cross_entropy(&logits, &targets, None)?)?;
    assert!((loss - 2f64.ln()).abs() < 1e-6, "{loss}");
    // Logits (0, ln 3) at one pixel with label 1: p = 3/4, loss = ln(4/3).
    let logits = Tensor::new(&[[[[0f64]], [[3f64.ln()]]]], &Device::Cpu)?;
    let targets = Tensor::new(&[[[1u32]]], &Device::Cpu)?;
    let loss = scalar(&pixel_cross_entropy(&logits, &targets, None)?)?;
    assert!((loss - (4f64 / 3.0).ln()).abs() < 1e-12, "{loss}");
    Ok(())
}

#[test]
fn cross_entropy_matches_pytorch_definition_with_ignore_and_weights() -> Result<()> {
    let (logits, labels) = fixture()?;
    let (x, y) = tensors(&logits, &labels)?;
    let weights = [0.2, 1.0, 3.0];
    let w = Tensor::new(&weights, &Device::Cpu)?;
    for dtype in [DType::F64, DType::F32] {
        let xd = x.to_dtype(dtype)?;
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        let got = scalar(&pixel_cross_entropy(&xd, &y, Some(&w))?)?;
        let expected = reference_ce(&logits, &labels, &weights);
        assert!(
            (got - expected).abs() < tol,
            "{dtype:?}: {got} vs {expected}"
        );
        let got = scalar(&pixel_cross_entropy(&xd, &y, None)?)?;
        let expected = reference_ce(&logits, &labels, &[1.0; K]);
        assert!(
            (got - expected).abs() < tol,
            "{dtype:?} unweighted: {got} vs {expected}"
        );
    }
    // u8 targets give the same.
    let got = scalar(&pixel_cross_entropy(&x, &y.to_dtype(DType::U8)?, Some(&w))?)?;
    assert!((got - reference_ce(&logits, &labels, &weights)).abs() < 1e-12);
    Ok(())
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() -> Result<()> {
    let (logits, labels) = fixture()?;
    let (x, y) = tensors(&logits, &labels)?;
    let w = Tensor::new(&[0.2f64, 1.0, 3.0], &Device::Cpu)?;
    let err = check_gradient(|x| pixel_cross_entropy(x, &y, Some(&w)), &x, 1e-5)?;
    assert!(err < 1e-5, "weighted CE gradient error {err}");
    Ok(())
}

/// Per-pixel weights: the class weight of each pixel's label gives the class-weighted
/// loss; arbitrary weights match `Σ w·nll / Σ w` written out; gradients by finite differences.
#[test]
fn pixel_weighted_cross_entropy_matches_its_definition_and_gradient() -> Result<()> {
    let (logits, labels) = fixture()?;
    let (x, y) = tensors(&logits, &labels)?;
    let class_weights = [0.2, 1.0, 3.0];
    let per_label: Vec<f64> = labels
        .iter()
        .map(|&l| class_weights.get(l as usize).copied().unwrap_or(7.0))
        .collect();
    let w = Tensor::from_vec(per_label, (N, H, W), &Device::Cpu)?;
    let got = scalar(&pixel_cross_entropy_weighted(&x, &y, &w)?)?;
    let expected = reference_ce(&logits, &labels, &class_weights);
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");

    let free: Vec<f64> = values(N * H * W, 5.0)
        .iter()
        .map(|v| v.abs() + 0.1)
        .collect();
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &label) in labels.iter().enumerate().filter(|(_, &l)| l != 255) {
        let prob = softmax_at(&logits, i / (H * W), i % (H * W))[label as usize];
        num -= free[i] * prob.ln();
        den += free[i];
    }
    let w = Tensor::from_vec(free, (N, H, W), &Device::Cpu)?;
    let got = scalar(&pixel_cross_entropy_weighted(&x, &y, &w)?)?;
    assert!((got - num / den).abs() < 1e-12, "{got} vs {}", num / den);
    let err = check_gradient(|x| pixel_cross_entropy_weighted(x, &y, &w), &x, 1e-5)?;
    assert!(err < 1e-5, "pixel-weighted CE gradient error {err}");

    let zero = w.zeros_like()?;
    assert_eq!(scalar(&pixel_cross_entropy_weighted(&x, &y, &zero)?)?, 0.0);
    let err = pixel_cross_entropy_weighted(&x, &y, &w.narrow(0, 0, 1)?).unwrap_err();
    assert!(err.to_string().contains("pixel weights must be"), "{err}");
    Ok(())
}

#[test]
fn fully_ignored_batch_gives_zero_not_nan() -> Result<()> {
    let logits = Tensor::new(&[[[[1f32, 2.]], [[0.5, -1.]]]], &Device::Cpu)?;
    let targets = Tensor::new(&[[[255u32, 255]]], &Device::Cpu)?;
    assert_eq!(scalar(&pixel_cross_entropy(&logits, &targets, None)?)?, 0.0);
    Ok(())
}

#[test]
fn dice_matches_definition_and_hand_values() -> Result<()> {
    let (logits, labels) = fixture()?;
    let (x, y) = tensors(&logits, &labels)?;
    for eps in [1.0, 1e-3] {
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let got = scalar(&dice_loss(&x.to_dtype(dtype)?, &y, eps)?)?;
            let expected = reference_dice(&logits, &labels, eps);
            assert!(
                (got - expected).abs() < tol,
                "eps {eps} {dtype:?}: {got} vs {expected}"
            );
        }
    }
    // By hand: 2 classes, equal logits (p = 1/2 everywhere), labels [0, 0, 1], eps 1:
    // class 0: (2*1 + 1) / (2 + 1.5 + 1) = 3/4.5; class 1: (2*0.5 + 1) / (1 + 1.5 + 1) = 2/3.5.
    let logits = Tensor::zeros((1, 2, 1, 3), DType::F64, &Device::Cpu)?;
    let targets = Tensor::new(&[[[0u32, 0, 1]]], &Device::Cpu)?;
    let got = scalar(&dice_loss(&logits, &targets, 1.0)?)?;
    let expected = 1.0 - (3.0 / 4.5 + 2.0 / 3.5) / 2.0;
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    // Confident, right predictions: loss near 0.
    let logits = Tensor::new(&[[[[30f64, -30., 30.]], [[-30., 30., -30.]]]], &Device::Cpu)?;
    let targets = Tensor::new(&[[[0u32, 1, 0]]], &Device::Cpu)?;
    assert!(scalar(&dice_loss(&logits, &targets, 1.0)?)? < 1e-9);
    Ok(())
}

#[test]
fn dice_and_combined_gradients_match_finite_differences() -> Result<()> {
    let (logits, labels) = fixture()?;
    let (x, y) = tensors(&logits, &labels)?;
    let err = check_gradient(|x| dice_loss(x, &y, 1.0), &x, 1e-5)?;
    assert!(err < 1e-5, "Dice gradient error {err}");
    let w = Tensor::new(&[0.5f64, 1.0, 2.0], &Device::Cpu)?;
    let err = check_gradient(|x| ce_dice_loss(x, &y, Some(&w)), &x, 1e-5)?;
    assert!(err < 1e-5, "CE + Dice gradient error {err}");
    let sum = scalar(&ce_dice_loss(&x, &y, Some(&w))?)?;
    let parts =
        reference_ce(&logits, &labels, &[0.5, 1.0, 2.0]) + reference_dice(&logits, &labels, 1.0);
    assert!((sum - parts).abs() < 1e-12, "{sum} vs {parts}");
    Ok(())
}

#[test]
fn bad_inputs_give_clear_errors() -> Result<()> {
    let logits = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu)?;
    let bad_label = Tensor::new(&[[[0u32, 7], [255, 1]]], &Device::Cpu)?;
    let msg = pixel_cross_entropy(&logits, &bad_label, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("target label 7 is out of range for 3 classes"),
        "{msg}"
    );
    let msg = dice_loss(&logits, &bad_label, 1.0).unwrap_err().to_string();
    assert!(msg.starts_with("dice_loss: target label 7"), "{msg}");
    let wrong_size = Tensor::zeros((1, 3, 2), DType::U32, &Device::Cpu)?;
    let msg = pixel_cross_entropy(&logits, &wrong_size, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("targets must be (N, H, W) = [1, 2, 2]"),
        "{msg}"
    );
    let float_targets = Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu)?;
    let msg = pixel_cross_entropy(&logits, &float_targets, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("integer class indices"), "{msg}");
    let ok = Tensor::zeros((1, 2, 2), DType::U32, &Device::Cpu)?;
    let w = Tensor::ones(2, DType::F32, &Device::Cpu)?;
    let msg = pixel_cross_entropy(&logits, &ok, Some(&w))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("class weights must have shape [3], got [2]"),
        "{msg}"
    );
    let msg = dice_loss(&logits.squeeze(0)?, &ok, 1.0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("logits must be (N, K, H, W)"), "{msg}");
    Ok(())
}
