//! Overlap-tile prediction equals the prediction of the whole mirrored image (no
//! seams) for both upsampling kinds and sizes that are not multiples of the tile.

use anyhow::Result;
use assignment4_unet::model::{build_unet, UNetConfig};
use assignment4_unet::tiling::{context_margin, predict_mirrored, predict_tiled};
use candle::{Device, Tensor};

fn max_difference(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Exact for the paper's up-convolutions (transposed 2x2). Bilinear upsampling with
/// aligned corners (as PyTorch-UNet) scales by `(n - 1) / (2n - 1)`, which depends on
/// the input's size, so tiles and whole image differ slightly (about 1e-5 here).
#[test]
fn tiles_stitch_to_the_whole_mirrored_prediction() -> Result<()> {
    let device = Device::Cpu;
    let margin = context_margin();
    assert_eq!(margin % 16, 0);
    for (bilinear, bound) in [(false, 1e-6), (true, 1e-4)] {
        let config = UNetConfig {
            width: 4,
            bilinear,
            ..UNetConfig::default()
        };
        let (model, _varmap) = build_unet(config, 3, &device)?;
        let image = Tensor::rand(0f32, 1.0, (1, 3, 40, 56), &device)?;
        let whole = predict_mirrored(&model, &image, margin)?; // (1, 2, 40, 56)
        let tiled = predict_tiled(&model, &image, 16, margin)?;
        assert_eq!(tiled.dims(), [1, 2, 40, 56]);
        let difference = max_difference(&whole, &tiled)?;
        assert!(
            difference < bound,
            "bilinear {bilinear}: tiles differ by {difference}"
        );
        // Without a border the tiles see zeros where their context was: seams.
        let seams = max_difference(&whole, &predict_tiled(&model, &image, 16, 0)?)?;
        assert!(
            seams > 1e-3,
            "bilinear {bilinear}: no border differs by only {seams}"
        );
    }
    Ok(())
}

#[test]
fn tiles_off_the_pooling_grid_are_refused() -> Result<()> {
    let (model, _varmap) = build_unet(
        UNetConfig {
            width: 4,
            ..UNetConfig::default()
        },
        0,
        &Device::Cpu,
    )?;
    let image = Tensor::zeros((1, 3, 20, 20), candle::DType::F32, &Device::Cpu)?;
    let err = predict_tiled(&model, &image, 24, 128)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 16"), "{err}");
    Ok(())
}
