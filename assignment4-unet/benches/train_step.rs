//! Benchmark of one assignment-4 training step with the real U-Net at the default width
//! (24, `Config::default()`), the default batch (4 random 256x256 RGB crops), cross-entropy + Dice and Adam:
//! `common`'s fast CPU kernels against candle's own ops (`set_force_candle_ops`).
//!
//! `cargo bench -p assignment4-unet --bench train_step [-- --runs N] [--fast-only]
//! [--device cpu|cuda]` prints the median ms per step over N timed steps (default 5)
//! after one warm-up, the convolution GFLOP/s (backward counted as twice the forward) and
//! the speed-up over candle's ops (`--fast-only` skips candle's ops, for profiling). On
//! CUDA (a `--features cuda` build) candle's own ops are the only ones, so it prints the
//! step time alone. The PyTorch twin is the `unet-default-step` case of
//! `bench/pytorch_bench.py` (`--device cuda` there too).

use assignment4_unet::config::Config;
use assignment4_unet::model::{UNet, UNetConfig};
use candle::{DType, Device, ModuleT, Tensor};
use candle_nn::VarMap;
use common::bench::{compare_with_candle, device_arg, median_ms, runs_arg};
use common::device::open_device;
use common::optim::{param_group, Adam, AdamConfig, Optimizer};

/// The net and batch of a default `cargo run -p assignment4-unet`.
fn config() -> (UNetConfig, usize, usize) {
    let cfg = Config::default();
    (cfg.unet(2), cfg.batch_size, cfg.crop)
}

/// Convolution FLOPs of one forward pass of the (transposed-conv) U-Net of width `w` on
/// `n` RGB images of `h x w_px` pixels into 2 classes.
fn unet_flops(w: usize, n: usize, h: usize, w_px: usize) -> f64 {
    let px = |level: u32| (n * h * w_px) as f64 / 4f64.powi(level as i32);
    // 3x3 conv of c_in -> c_out at a level: 2 * 9 c_in c_out per output pixel.
    let conv =
        |c_in: usize, c_out: usize, level: u32| 2.0 * 9.0 * (c_in * c_out) as f64 * px(level);
    let double = |c_in: usize, c_out: usize, level: u32| {
        conv(c_in, c_out, level) + conv(c_out, c_out, level)
    };
    let mut flops = double(3, w, 0);
    for level in 1..=4u32 {
        let c = w << (level - 1);
        flops += double(c, 2 * c, level);
    }
    for level in (0..4u32).rev() {
        // c channels come up from level + 1.
        let c = w << (level + 1);
        // 2x2 stride-2 transposed conv c -> c/2, 2 * 4 c (c/2) per input pixel.
        flops += 2.0 * 4.0 * (c * c / 2) as f64 * px(level + 1);
        flops += double(c, c / 2, level);
    }
    flops + 2.0 * (w * 2) as f64 * px(0)
}

/// Median ms of `runs` training steps after one warm-up (with the ops chosen by
/// `common::bench::compare_with_candle`).
fn time_steps(runs: usize, device: &Device) -> anyhow::Result<f64> {
    let device = device.clone();
    let varmap = VarMap::new();
    let vb = common::init::seeded_var_builder(&varmap, 0, DType::F32, &device);
    let (net, batch, crop) = config();
    let model = UNet::new(net, vb)?;
    let mut optimizer = Adam::new(
        vec![param_group("unet", &varmap, None, 1.0)],
        AdamConfig::adam(2e-3),
    )?;
    let images = Tensor::randn(0f32, 1., (batch, 3, crop, crop), &device)?;
    let masks = (Tensor::rand(0f32, 2., (batch, crop, crop), &device)?.floor()?)
        .to_dtype(DType::U32)?
        .minimum(1u32)?;
    median_ms(runs, || {
        let logits = model.forward_t(&images, true)?;
        let loss = common::loss::ce_dice_loss(&logits, &masks, None)?;
        anyhow::ensure!(loss.to_scalar::<f32>()?.is_finite(), "loss is not finite");
        optimizer.step(&loss.backward()?)?;
        device.synchronize()?;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = runs_arg(&args, 5)?;
    let (net, batch, crop) = config();
    let flops = 3.0 * unet_flops(net.width, batch, crop, crop);
    let title = format!(
        "assignment-4 U-Net train step (width {}, {batch}x3x{crop}x{crop}, CE + Dice, Adam), median of {runs}", net.width
    );
    let device = open_device(device_arg(&args)?)?;
    if device.is_cuda() {
        let ms = time_steps(runs, &device)?;
        println!("{title}, CUDA");
        println!("{:<18} {:>9} {:>8}", "case", "cuda ms", "GFLOP/s");
        println!(
            "{:<18} {ms:>9.1} {:>8.1}",
            "unet-default-step",
            flops / ms / 1e6
        );
        return Ok(());
    }
    // `--fast-only` skips candle's ops (for profiling the fast path); their column is NaN.
    let fast_only = args.iter().any(|a| a == "--fast-only");
    compare_with_candle(&title, "unet-default-step", flops, fast_only, || {
        time_steps(runs, &device)
    })?;
    Ok(())
}
