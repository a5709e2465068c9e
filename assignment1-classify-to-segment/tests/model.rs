//! The conversion classifier -> FCN on random weights (FCN = stride-4 sliding
//! window, shift-and-stitch = stride-1 sliding window, single patch), and the
//! output size rule layer by layer.

use assignment1_classify_to_segment::model::{fcn_output_size, Arch, Classifier};
use assignment1_classify_to_segment::segment::{
    fcn_map, max_abs_diff, shift_and_stitch, sliding_window,
};
use candle::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use common::init::seeded_var_builder;

type Result<T> = anyhow::Result<T>;

fn classifier(arch: Arch, seed: u64) -> Result<Classifier> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    Ok(Classifier::new(&arch.spec(), vb)?)
}

#[test]
fn fcn_equals_classifier_on_random_weights() -> Result<()> {
    for arch in [Arch::Lecture, Arch::Default] {
        let net = classifier(arch, 3)?;
        let fcn = net.to_fcn()?;
        let image = Tensor::rand(0f32, 1f32, (1, 3, 48, 56), &Device::Cpu)?;
        let fcn_out = fcn_map(&fcn, &image)?;
        let window = sliding_window(&net, &image, 4, 7, false)?;
        assert_eq!(fcn_out.dim(), (2, 5, 7));
        let diff = max_abs_diff(&fcn_out, &window)?;
        assert!(diff < 1e-5, "{arch}: {diff}");
        let stitched = shift_and_stitch(&fcn, &image)?;
        let stride1 = sliding_window(&net, &image, 1, 64, false)?;
        assert_eq!(stitched.dim(), (2, 17, 25));
        let diff = max_abs_diff(&stitched, &stride1)?;
        assert!(diff < 1e-5, "{arch}: {diff}");
        // A single patch: the FCN gives a 1x1 map equal to the classifier's logits.
        let patch = image.narrow(2, 3, 32)?.narrow(3, 5, 32)?.contiguous()?;
        let a = net.forward(&patch)?.flatten_all()?;
        let b = fcn.forward(&patch)?.flatten_all()?;
        let d = (a - b)?.abs()?.max(0)?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
    }
    Ok(())
}

#[test]
fn output_size_rule() -> Result<()> {
    let net = classifier(Arch::Default, 1)?;
    let fcn = net.to_fcn()?;
    // Layer by layer, 37: conv 33, pool 16, conv 12, pool 6, 5x5 conv 2 = (37-32)/4 + 1.
    for size in [32usize, 35, 36, 37, 40, 63, 64] {
        let image = Tensor::zeros((1, 3, size, 33), DType::F32, &Device::Cpu)?;
        let out = fcn.forward(&image)?;
        assert_eq!(out.dims()[2], fcn_output_size(size).unwrap(), "size {size}");
        assert_eq!(fcn_output_size(size), Some((size - 32) / 4 + 1));
    }
    assert_eq!(fcn_output_size(31), None);
    Ok(())
}
