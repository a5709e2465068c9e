//! Forward values against numbers printed by PyTorch 2.15 (CPU, float64) on fixed
//! small inputs; each reference sits beside the PyTorch expression that produced it.

use candle::{DType, Device, Tensor};
use common::loss::{dice_loss, pixel_cross_entropy};
use common::nn::resize_bilinear;

type Result<T> = anyhow::Result<T>;

fn assert_all_close(got: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "element {i}: got {g}, PyTorch {e}");
    }
}

#[test]
fn bilinear_resize_to_a_non_integer_size_matches_pytorch() -> Result<()> {
    // x = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4) ** 1.5
    // F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False).flatten()
    let expected = [
        0.0,
        0.3571428571,
        0.9285714286,
        1.9142135624,
        2.9975503603,
        4.3505362449,
        5.1961524227,
        3.2,
        3.8686199839,
        4.9384119582,
        6.3239838063,
        7.7865433337,
        9.4722367435,
        10.5257951246,
        8.0,
        9.1358356741,
        10.9531727527,
        12.9386391721,
        14.9700327939,
        17.1547874915,
        18.5202591775,
        16.7764501988,
        18.1677665403,
        20.3938726867,
        22.7622886493,
        25.1699689111,
        27.7101894503,
        29.2978272873,
        22.627416998,
        24.1890537844,
        26.6876726427,
        29.3113883008,
        31.9699263226,
        34.7471240895,
        36.4828726939,
    ];
    let values: Vec<f64> = (0..12).map(|i| (i as f64).powf(1.5)).collect();
    let xs = Tensor::from_vec(values, (1, 1, 3, 4), &Device::Cpu)?;
    let ys = resize_bilinear(&xs, 5, 7)?;
    assert_eq!(ys.dims(), &[1, 1, 5, 7]);
    assert_all_close(&ys.flatten_all()?.to_vec1::<f64>()?, &expected, 1e-9);
    Ok(())
}

/// Logits `(1, 3, 2, 3)` and targets `(1, 2, 3)` with two ignored pixels.
fn ce_inputs() -> Result<(Tensor, Tensor)> {
    // logits = torch.tensor([...], dtype=torch.float64).reshape(1, 3, 2, 3)
    let logits = Tensor::from_vec(
        vec![
            0.2, -1.0, 0.5, 1.5, 0.3, -0.7, 0.0, 2.0, -0.5, 0.4, 0.1, 0.9, -1.2, 0.6, 0.3, 0.8,
            -0.4, 1.1f64,
        ],
        (1, 3, 2, 3),
        &Device::Cpu,
    )?;
    // target = torch.tensor([[0, 255, 2], [1, 2, 255]]).reshape(1, 2, 3)
    let targets = Tensor::from_vec(vec![0u32, 255, 2, 1, 2, 255], (1, 2, 3), &Device::Cpu)?;
    Ok((logits, targets))
}

#[test]
fn pixel_cross_entropy_with_ignore_and_weights_matches_pytorch() -> Result<()> {
    let (logits, targets) = ce_inputs()?;
    // w = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    // F.cross_entropy(logits, target, weight=w, ignore_index=255) -> 1.3983513072691007
    let weights = Tensor::new(&[0.5f64, 2.0, 1.0], &Device::Cpu)?;
    let weighted = pixel_cross_entropy(&logits, &targets, Some(&weights))?.to_scalar::<f64>()?;
    assert!(
        (weighted - 1.398_351_307_269_100_7).abs() < 1e-12,
        "{weighted}"
    );
    // F.cross_entropy(logits, target, ignore_index=255) -> 1.237801618320699
    let plain = pixel_cross_entropy(&logits, &targets, None)?.to_scalar::<f64>()?;
    assert!((plain - 1.237_801_618_320_699).abs() < 1e-12, "{plain}");
    // The same in f32, to f32 precision.
    let weighted32 = pixel_cross_entropy(
        &logits.to_dtype(DType::F32)?,
        &targets,
        Some(&weights.to_dtype(DType::F32)?),
    )?
    .to_scalar::<f32>()?;
    assert!((weighted32 as f64 - 1.398_351_307_269_100_7).abs() < 1e-5);
    Ok(())
}

#[test]
fn soft_dice_matches_pytorch() -> Result<()> {
    let (logits, targets) = ce_inputs()?;
    // p = logits.softmax(1); valid = target != 255; t = target.clone(); t[~valid] = 0
    // y = F.one_hot(t, 3).permute(0, 3, 1, 2).double() * valid.unsqueeze(1)
    // pv = p * valid.unsqueeze(1); inter = (y * pv).sum((0, 2, 3))
    // den = y.sum((0, 2, 3)) + pv.sum((0, 2, 3))
    // 1 - ((2 * inter + 1) / (den + 1)).mean() -> 0.5035692143672303
    let dice = dice_loss(&logits, &targets, 1.0)?.to_scalar::<f64>()?;
    assert!((dice - 0.503_569_214_367_230_3).abs() < 1e-12, "{dice}");
    Ok(())
}
