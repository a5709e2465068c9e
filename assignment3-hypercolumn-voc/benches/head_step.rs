//! Benchmark of one assignment-3 fine-tuning step of the convolutionalised head at the
//! default run's sizes (`Config::default()`): a batch of 4 images' VGG16 taps for a
//! 180x240 input (Z = 1472 channels, as `prepare_taps` keeps them for the 180x240
//! features: 64 at 180x240, 128 at 90x120, 256 at 45x60, 512 at 22x30, 512 at 11x15),
//! head 1472-128-128-11 through `ConvHead::forward_taps` (first layer per tap at its own
//! resolution, then bilinear upsampling), pixel cross-entropy at the feature size and
//! Adam: `common`'s fast CPU kernels against candle's own ops (`set_force_candle_ops`).
//!
//! `cargo bench -p assignment3-hypercolumn-voc --bench head_step [-- --runs N]
//! [--fast-only]` prints the median ms per step over N timed steps (default 5) after one
//! warm-up, the 1x1-conv GFLOP/s (backward counted as twice the forward) and the speed-up
//! over candle's ops (`--fast-only` skips candle's ops, for profiling). The PyTorch twin is
//! the `a3-head-step` case of `bench/pytorch_bench.py`.

use assignment3_hypercolumn_voc::config::Config;
use assignment3_hypercolumn_voc::model::{head, prepare_taps, FeatureNorm, HeadConfig};
use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::bench::{compare_with_candle, median_ms, runs_arg};
use common::optim::{param_group, Adam, AdamConfig, Optimizer};

const BATCH: usize = 4;
const HIDDEN: usize = 128;
const CLASSES: usize = 11;
/// Channels of the five VGG16 taps (the layer before each pool).
const TAP_CHANNELS: [usize; 5] = [64, 128, 256, 512, 512];

/// The default run's feature size (height, width).
fn feature_size() -> (usize, usize) {
    Config::default().feature_size()
}

/// Random VGG16 taps of the default input as the head receives them: tap `i` at the
/// input size halved `i` times, through `prepare_taps` at the feature size.
///
/// # Shapes
/// `taps[i] (BATCH, TAP_CHANNELS[i], h_i, w_i)`
fn default_taps(device: &Device) -> anyhow::Result<Vec<Tensor>> {
    let (ih, iw) = Config::default().input_size;
    let (fh, fw) = feature_size();
    let raw = TAP_CHANNELS
        .iter()
        .enumerate()
        .map(|(i, &c)| Tensor::rand(0f32, 4., (BATCH, c, ih >> i, iw >> i), device))
        .collect::<candle::Result<Vec<_>>>()?;
    Ok(prepare_taps(&raw, fh, fw, DType::F32)?)
}

/// 1x1-conv FLOPs of one forward pass on `taps`: the first layer per tap at its
/// resolution, the other two at the feature resolution.
fn head_flops(taps: &[Tensor]) -> anyhow::Result<f64> {
    let mut first = 0;
    for tap in taps {
        let (_, c, h, w) = tap.dims4()?;
        first += HIDDEN * c * h * w;
    }
    let (fh, fw) = feature_size();
    let rest = (HIDDEN * HIDDEN + CLASSES * HIDDEN) * fh * fw;
    Ok(2.0 * (BATCH * (first + rest)) as f64)
}

/// Median ms of `runs` fine-tuning steps after one warm-up (with the ops chosen by
/// `common::bench::compare_with_candle`).
fn time_steps(taps: &[Tensor], runs: usize) -> anyhow::Result<f64> {
    let device = Device::Cpu;
    let z: usize = TAP_CHANNELS.iter().sum();
    // The normalisation fitted on 64 random hypercolumns, as phase 1 fits it on samples.
    let samples =
        ndarray::Array2::from_shape_fn((64, z), |(i, j)| ((i * 31 + j * 17) % 97) as f32 / 97.0);
    let norm = FeatureNorm::fit(&samples, &device)?;
    let varmap = VarMap::new();
    let vb = common::init::seeded_var_builder(&varmap, 0, DType::F32, &device);
    let cfg = HeadConfig {
        feature_dim: z,
        hidden: HIDDEN,
        n_classes: CLASSES,
    };
    let conv_head = head(&cfg, norm, vb)?.convolutionalize()?;
    let mut optimizer = Adam::new(
        vec![param_group("head", &varmap, None, 1.0)],
        AdamConfig::adam(1e-4),
    )?;
    let (fh, fw) = feature_size();
    let labels = (Tensor::rand(0f32, CLASSES as f32, (BATCH, fh, fw), &device)?.floor()?)
        .to_dtype(DType::U32)?
        .minimum(CLASSES as u32 - 1)?;
    median_ms(runs, || {
        let logits = conv_head.forward_taps(taps, fh, fw)?;
        let loss = common::loss::pixel_cross_entropy(&logits, &labels, None)?;
        anyhow::ensure!(loss.to_scalar::<f32>()?.is_finite(), "loss is not finite");
        optimizer.step(&loss.backward()?)?;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = runs_arg(&args, 5)?;
    let taps = default_taps(&Device::Cpu)?;
    let flops = 3.0 * head_flops(&taps)?;
    let (ih, iw) = Config::default().input_size;
    let (fh, fw) = feature_size();
    let title = format!(
        "assignment-3 head fine-tuning step ({BATCH} images, taps of a {ih}x{iw} input, head \
         1472-{HIDDEN}-{HIDDEN}-{CLASSES} at {fh}x{fw}), median of {runs}"
    );
    // `--fast-only` skips candle's ops (for profiling the fast path); their column is NaN.
    let fast_only = args.iter().any(|a| a == "--fast-only");
    compare_with_candle(&title, "a3-head-step", flops, fast_only, || {
        time_steps(&taps, runs)
    })?;
    Ok(())
}
