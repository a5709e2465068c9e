//! U-Net model tests: the reference parameter counts, PyTorch variable names,
//! output shapes (any size through `predict_logits`), padding and the
//! align-corners upsampling against hand-computed values and finite differences.

use anyhow::Result;
use assignment4_unet::model::{
    align_corners_matrix, build_unet, count_parameters, pad_to, upsample_bilinear_align_corners,
    UNetConfig,
};
use assignment4_unet::predict::{predict_logits, predict_scores};
use candle::{DType, Device, ModuleT, Tensor};
use common::nn::Dihedral;

fn config(bilinear: bool, width: usize) -> UNetConfig {
    UNetConfig {
        n_channels: 3,
        n_classes: 2,
        bilinear,
        width,
    }
}

#[test]
fn parameter_counts_equal_the_reference() -> Result<()> {
    // milesial/Pytorch-UNet: sum(p.numel() for p in UNet(3, 2, bilinear).parameters()).
    let (_, varmap) = build_unet(config(false, 64), 0, &Device::Cpu)?;
    assert_eq!(count_parameters(&varmap), 31_037_698);
    let (_, varmap) = build_unet(config(true, 64), 0, &Device::Cpu)?;
    assert_eq!(count_parameters(&varmap), 17_263_042);
    Ok(())
}

#[test]
fn variables_have_the_pytorch_names_and_shapes() -> Result<()> {
    let (_, varmap) = build_unet(config(false, 8), 0, &Device::Cpu)?;
    let data = varmap.data().lock().unwrap();
    let shape = |name: &str| -> Vec<usize> {
        data.get(name)
            .map(|v| v.as_tensor().dims().to_vec())
            .unwrap_or_else(|| panic!("no variable {name:?}"))
    };
    assert_eq!(shape("inc.double_conv.0.weight"), [8, 3, 3, 3]);
    assert_eq!(shape("inc.double_conv.1.running_var"), [8]);
    assert_eq!(shape("inc.double_conv.4.bias"), [8]);
    assert_eq!(
        shape("down1.maxpool_conv.1.double_conv.0.weight"),
        [16, 8, 3, 3]
    );
    assert_eq!(
        shape("down4.maxpool_conv.1.double_conv.3.weight"),
        [128, 128, 3, 3]
    );
    // ConvTranspose2d(in, in // 2, 2, stride 2): weight (c_in, c_out, 2, 2) and a bias.
    assert_eq!(shape("up1.up.weight"), [128, 64, 2, 2]);
    assert_eq!(shape("up1.up.bias"), [64]);
    assert_eq!(shape("up4.conv.double_conv.0.weight"), [8, 16, 3, 3]);
    assert_eq!(shape("outc.conv.weight"), [2, 8, 1, 1]);
    assert_eq!(shape("outc.conv.bias"), [2]);
    // The 3x3 convolutions have no bias, as in the reference.
    assert!(!data.contains_key("inc.double_conv.0.bias"));
    drop(data);

    // Bilinear: DoubleConv(in, out // 2, in // 2) in up1..up3, no `up` weights.
    let (_, varmap) = build_unet(config(true, 8), 0, &Device::Cpu)?;
    let data = varmap.data().lock().unwrap();
    assert!(!data.contains_key("up1.up.weight"));
    let dims = |name: &str| data[name].as_tensor().dims().to_vec();
    // up1: in = 128 (64 skip + 64 upsampled), mid = 64, out = 64 / 2 = 32.
    assert_eq!(dims("up1.conv.double_conv.0.weight"), [64, 128, 3, 3]);
    assert_eq!(dims("up1.conv.double_conv.3.weight"), [32, 64, 3, 3]);
    assert_eq!(
        dims("down4.maxpool_conv.1.double_conv.0.weight"),
        [64, 64, 3, 3]
    );
    Ok(())
}

#[test]
fn output_has_the_input_size_in_both_variants() -> Result<()> {
    for bilinear in [false, true] {
        let (net, _) = build_unet(config(bilinear, 4), 1, &Device::Cpu)?;
        let xs = Tensor::randn(0f32, 1.0, (2, 3, 32, 48), &Device::Cpu)?;
        // (2, 3, 32, 48) -> (2, 2, 32, 48); both modes.
        assert_eq!(net.forward_t(&xs, true)?.dims(), [2, 2, 32, 48]);
        assert_eq!(net.forward_t(&xs, false)?.dims(), [2, 2, 32, 48]);
    }
    Ok(())
}

#[test]
fn predict_keeps_odd_sizes() -> Result<()> {
    let (net, _) = build_unet(config(false, 4), 2, &Device::Cpu)?;
    // 37x23 pads to 48x32 inside; 5x7 (smaller than 16) pads to 16x16.
    for (h, w) in [(37, 23), (5, 7), (16, 33)] {
        let xs = Tensor::rand(0f32, 1.0, (1, 3, h, w), &Device::Cpu)?;
        let logits = predict_logits(&net, &xs)?;
        assert_eq!(logits.dims(), [1, 2, h, w], "input {h}x{w}");
        assert!(logits
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite()));
    }
    Ok(())
}

#[test]
fn test_time_scores_average_the_softmax_of_the_eight_views() -> Result<()> {
    let (net, _) = build_unet(config(false, 4), 3, &Device::Cpu)?;
    // Not square and not a multiple of 16: the turned views pad differently.
    let xs = Tensor::rand(0f32, 1.0, (1, 3, 20, 37), &Device::Cpu)?;
    let plain = predict_scores(&net, &xs, false)?;
    let direct = predict_logits(&net, &xs)?;
    assert_eq!(max_abs_diff(&plain, &direct)?, 0.0);
    // By hand: each view through the net, softmax, mapped back, averaged.
    let mut sum = Tensor::zeros((1, 2, 20, 37), DType::F32, &Device::Cpu)?;
    for view in Dihedral::all() {
        let probs = candle_nn::ops::softmax(&predict_logits(&net, &view.apply(&xs)?)?, 1)?;
        sum = (sum + view.invert(&probs)?)?;
    }
    let by_hand = (sum / 8.0)?;
    let averaged = predict_scores(&net, &xs, true)?.exp()?; // (1, 2, 20, 37)
    assert_eq!(averaged.dims(), [1, 2, 20, 37]);
    assert!(max_abs_diff(&averaged, &by_hand)? < 1e-6);
    let total = averaged.sum(1)?; // (1, 20, 37): probabilities
    assert!(max_abs_diff(&total, &total.ones_like()?)? < 1e-5);
    // The eight views see the image differently: the average is not the plain softmax.
    let plain_probs = candle_nn::ops::softmax(&plain, 1)?;
    assert!(max_abs_diff(&averaged, &plain_probs)? > 1e-4);
    Ok(())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

#[test]
fn bad_inputs_are_errors_that_say_why() -> Result<()> {
    let (net, _) = build_unet(config(false, 4), 0, &Device::Cpu)?;
    let grey = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu)?;
    let err = net.forward_t(&grey, false).unwrap_err().to_string();
    assert!(err.contains("3 input channels got 1"), "{err}");
    let small = Tensor::zeros((1, 3, 8, 32), DType::F32, &Device::Cpu)?;
    let err = net.forward_t(&small, false).unwrap_err().to_string();
    assert!(err.contains("at least 16x16"), "{err}");
    let err = match build_unet(config(false, 0), 0, &Device::Cpu) {
        Ok(_) => anyhow::bail!("width 0 was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("width"), "{err}");
    Ok(())
}

#[test]
fn pad_to_splits_the_difference_like_pytorch() -> Result<()> {
    // F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2]) with dy = 1, dx = 3:
    // rows: 0 above, 1 below; columns: 1 left, 2 right.
    let xs = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
    let padded = pad_to(&xs, 3, 5)?
        .squeeze(0)?
        .squeeze(0)?
        .to_vec2::<f32>()?;
    assert_eq!(
        padded,
        [
            [0., 1., 2., 0., 0.],
            [0., 3., 4., 0., 0.],
            [0., 0., 0., 0., 0.]
        ]
    );
    assert!(pad_to(&xs, 1, 5).is_err());
    Ok(())
}

#[test]
fn align_corners_upsampling_matches_hand_values() -> Result<()> {
    // 2 -> 4 with aligned corners samples positions 0, 1/3, 2/3, 1.
    let m = align_corners_matrix(2, 4, &Device::Cpu, DType::F32)?.to_vec2::<f32>()?;
    let expected = [
        [1.0, 0.0],
        [2.0 / 3.0, 1.0 / 3.0],
        [1.0 / 3.0, 2.0 / 3.0],
        [0.0, 1.0],
    ];
    for (row, want) in m.iter().zip(expected) {
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{m:?}");
        }
    }
    // A 1x2 row [0, 3] upsampled x2 (to 2x4): both rows [0, 1, 2, 3].
    let xs = Tensor::new(&[[[[0f32, 3.]]]], &Device::Cpu)?;
    let ys = upsample_bilinear_align_corners(&xs, 2)?
        .squeeze(0)?
        .squeeze(0)?
        .to_vec2::<f32>()?;
    for row in ys {
        for (a, b) in row.iter().zip([0., 1., 2., 3.]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
    Ok(())
}

#[test]
fn align_corners_upsampling_gradient_matches_finite_differences() -> Result<()> {
    let xs = Tensor::randn(0f64, 1.0, (1, 2, 3, 4), &Device::Cpu)?;
    let weights = Tensor::randn(0f64, 1.0, (1, 2, 6, 8), &Device::Cpu)?;
    let f = |x: &Tensor| (upsample_bilinear_align_corners(x, 2)? * &weights)?.sum_all();
    let err = common::nn::gradcheck::check_gradient(f, &xs, 1e-6)?;
    assert!(err < 1e-5, "max relative error {err}");
    Ok(())
}
