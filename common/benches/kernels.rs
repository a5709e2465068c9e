//! Benchmark of the fast CPU kernels (`common::kernels`) against candle's own ops, on
//! the cases of the issue "Fast CPU training": a 3x3 conv forward, the same with input
//! and weight gradients, a mini U-Net training step and the VGG11 conv stack forward.
//!
//! `cargo bench -p common --bench kernels` runs every case twice (fast kernels, then
//! candle's ops via `set_force_candle_ops`), each in its own child process so that the
//! peak resident memory (VmHWM) belongs to that case alone, and prints one table: median
//! ms per call over the timed runs after one warm-up, GFLOP/s (convolution FLOPs only)
//! and the speed-up over candle. Arguments after `--`: `--runs N` (default 5),
//! `--case NAME` (one case, both modes), `--fast-only` (the fast kernels alone),
//! `--breakdown` (where a U-Net step spends its time). The case `gemm-4096` (not run by
//! default) times one 4096x4096 f32 product through the `gemm` crate: the machine's
//! single-precision limit that the convolutions are measured against.
//! Both modes run with the allocator tuned as the programs run it
//! (`common::alloc::reuse_freed_memory`); `SEGKIT_MALLOC_DEFAULTS=1` keeps glibc's defaults.

use std::process::Command;

use candle::{DType, Device, Tensor, Var};
use common::bench::{median_ms, runs_arg};
use common::kernels::{self, Conv2dParams, ConvTranspose2dParams};
use common::optim::{Adam, AdamConfig, Optimizer, ParamGroup};

type Result<T> = candle::Result<T>;

const CASES: [&str; 4] = ["conv-fwd", "conv-fwd-bwd", "unet-train-step", "vgg11-fwd"];

/// One convolution layer: weight (c_out, c_in, k, k) and bias (c_out).
struct Conv {
    w: Var,
    b: Option<Var>,
    padding: usize,
}

impl Conv {
    fn new(c_in: usize, c_out: usize, k: usize, bias: bool, dev: &Device) -> Result<Self> {
        // He-style scale keeps activations finite through deep random stacks.
        let std = (2.0 / (c_in * k * k) as f64).sqrt();
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1., (c_out, c_in, k, k), dev)? * std)?)?;
        let b = if bias {
            Some(Var::from_tensor(&Tensor::zeros(c_out, DType::F32, dev)?)?)
        } else {
            None
        };
        Ok(Self {
            w,
            b,
            padding: k / 2,
        })
    }
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let p = Conv2dParams {
            stride: 1,
            padding: self.padding,
            dilation: 1,
        };
        // The bias is fused into the conv on the fast path (broadcast_add with candle's ops).
        kernels::conv2d_bias(
            xs,
            self.w.as_tensor(),
            self.b.as_ref().map(|b| b.as_tensor()),
            &p,
        )
    }
    fn vars(&self) -> Vec<Var> {
        std::iter::once(self.w.clone())
            .chain(self.b.clone())
            .collect()
    }
    /// FLOPs of one forward call on an `h x w` input of batch `n`.
    fn flops(&self, n: usize, h: usize, w: usize) -> f64 {
        2.0 * (n * self.w.elem_count() * h * w) as f64
    }
}

/// Training-mode batch norm + ReLU: `kernels::batch_norm_relu_train`, which is one fused
/// op on the fast path and the textbook chain of candle ops (mean, centre, variance,
/// scale, shift, ReLU) when candle's ops are forced. Running statistics are left out of
/// the step.
struct BatchNorm {
    gamma: Var,
    beta: Var,
}

impl BatchNorm {
    fn new(c: usize, dev: &Device) -> Result<Self> {
        Ok(Self {
            gamma: Var::from_tensor(&Tensor::ones(c, DType::F32, dev)?)?,
            beta: Var::from_tensor(&Tensor::zeros(c, DType::F32, dev)?)?,
        })
    }
    fn forward_relu(&self, xs: &Tensor) -> Result<Tensor> {
        let (gamma, beta) = (self.gamma.as_tensor(), self.beta.as_tensor());
        Ok(kernels::batch_norm_relu_train(xs, gamma, beta, 1e-5)?.0)
    }
}

/// (conv 3x3 => BN => ReLU) * 2, without conv bias (BN has the shift).
struct DoubleConv {
    convs: [Conv; 2],
    norms: [BatchNorm; 2],
}

impl DoubleConv {
    fn new(c_in: usize, c_out: usize, dev: &Device) -> Result<Self> {
        Ok(Self {
            convs: [
                Conv::new(c_in, c_out, 3, false, dev)?,
                Conv::new(c_out, c_out, 3, false, dev)?,
            ],
            norms: [BatchNorm::new(c_out, dev)?, BatchNorm::new(c_out, dev)?],
        })
    }
    fn forward(&self, xs: &Tensor, use_bn: bool) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            xs = conv.forward(&xs)?;
            xs = if use_bn {
                norm.forward_relu(&xs)?
            } else {
                kernels::relu(&xs)?
            };
        }
        Ok(xs)
    }
    fn vars(&self) -> Vec<Var> {
        let norms = self
            .norms
            .iter()
            .flat_map(|n| [n.gamma.clone(), n.beta.clone()]);
        self.convs
            .iter()
            .flat_map(Conv::vars)
            .chain(norms)
            .collect()
    }
    fn flops(&self, n: usize, h: usize, w: usize) -> f64 {
        self.convs.iter().map(|c| c.flops(n, h, w)).sum()
    }
}

/// Mini U-Net: 32/64/128 channels, two 2x2 max-pool downs, two 2x2 stride-2 transposed
/// conv ups with skip concatenation, 1x1 output conv.
struct MiniUnet {
    enc1: DoubleConv,
    enc2: DoubleConv,
    mid: DoubleConv,
    up1: Var,
    dec1: DoubleConv,
    up2: Var,
    dec2: DoubleConv,
    out: Conv,
}

impl MiniUnet {
    fn new(n_classes: usize, dev: &Device) -> Result<Self> {
        let up = |c_in: usize, c_out: usize| -> Result<Var> {
            Var::from_tensor(
                &(Tensor::randn(0f32, 1., (c_in, c_out, 2, 2), dev)?
                    * (1.0 / (c_in as f64)).sqrt())?,
            )
        };
        Ok(Self {
            enc1: DoubleConv::new(3, 32, dev)?,
            enc2: DoubleConv::new(32, 64, dev)?,
            mid: DoubleConv::new(64, 128, dev)?,
            up1: up(128, 64)?,
            dec1: DoubleConv::new(128, 64, dev)?,
            up2: up(64, 32)?,
            dec2: DoubleConv::new(64, 32, dev)?,
            out: Conv::new(32, n_classes, 1, true, dev)?,
        })
    }
    /// `(N, 3, H, W) -> (N, K, H, W)` logits.
    fn forward(&self, xs: &Tensor, use_bn: bool) -> Result<Tensor> {
        let up = ConvTranspose2dParams {
            stride: 2,
            ..Default::default()
        };
        let x1 = self.enc1.forward(xs, use_bn)?; // (N, 32, H, W)
        let x2 = self.enc2.forward(&kernels::max_pool2d(&x1, 2)?, use_bn)?; // (N, 64, H/2, W/2)
        let x3 = self.mid.forward(&kernels::max_pool2d(&x2, 2)?, use_bn)?; // (N, 128, H/4, W/4)
        let u1 = kernels::conv_transpose2d(&x3, self.up1.as_tensor(), &up)?; // (N, 64, H/2, W/2)
        let d1 = self.dec1.forward(&Tensor::cat(&[&x2, &u1], 1)?, use_bn)?;
        let u2 = kernels::conv_transpose2d(&d1, self.up2.as_tensor(), &up)?; // (N, 32, H, W)
        let d2 = self.dec2.forward(&Tensor::cat(&[&x1, &u2], 1)?, use_bn)?;
        self.out.forward(&d2)
    }
    fn vars(&self) -> Vec<Var> {
        let blocks = [&self.enc1, &self.enc2, &self.mid, &self.dec1, &self.dec2];
        let mut vars: Vec<Var> = blocks.iter().flat_map(|b| b.vars()).collect();
        vars.extend([self.up1.clone(), self.up2.clone()]);
        vars.extend(self.out.vars());
        vars
    }
    /// Forward convolution FLOPs (3x3, transposed 2x2 and 1x1 convs).
    fn flops(&self, n: usize, h: usize, w: usize) -> f64 {
        let up = |v: &Var, h: usize, w: usize| 2.0 * (n * v.elem_count() * h * w) as f64;
        self.enc1.flops(n, h, w)
            + self.enc2.flops(n, h / 2, w / 2)
            + self.mid.flops(n, h / 4, w / 4)
            + up(&self.up1, h / 4, w / 4)
            + self.dec1.flops(n, h / 2, w / 2)
            + up(&self.up2, h / 2, w / 2)
            + self.dec2.flops(n, h, w)
            + self.out.flops(n, h, w)
    }
}

/// Pixel-wise cross-entropy: `log_softmax` over classes, `gather` the target, mean.
fn pixel_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    // (N, K, H, W) -> (N, 1, H, W) log-probabilities of the targets
    let log_probs = candle_nn::ops::log_softmax(logits, 1)?;
    log_probs
        .gather(&targets.unsqueeze(1)?, 1)?
        .mean_all()?
        .neg()
}

/// `torch.optim.AdamW(lr=1e-3, weight_decay=1e-2)` over `vars`, as `common::optim` gives it
/// to the programs.
fn adamw(vars: Vec<Var>) -> Result<Adam> {
    let group = ParamGroup {
        name: "unet".to_string(),
        vars: vars
            .into_iter()
            .enumerate()
            .map(|(i, var)| (format!("v{i}"), var))
            .collect(),
        lr_scale: 1.0,
    };
    Adam::new(vec![group], AdamConfig::adamw(1e-3, 1e-2))
}

/// A benchmark case: a closure doing one call, and the FLOPs of one call.
type Case = (Box<dyn FnMut() -> Result<()>>, f64);

/// The machine's single-precision limit: one 4096x4096 @ 4096x4096 f32 product through
/// the `gemm` crate on every rayon thread, as the convolutions call it.
fn gemm_peak_case() -> Case {
    const N: usize = 4096;
    let lhs: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut dst = vec![0f32; N * N];
    let threads = match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    let run = move || -> Result<()> {
        // SAFETY: three row-major N x N buffers of exactly N * N elements, no aliasing.
        unsafe {
            gemm::gemm(
                N,
                N,
                N,
                dst.as_mut_ptr(),
                1,
                N as isize,
                false,
                lhs.as_ptr(),
                1,
                N as isize,
                rhs.as_ptr(),
                1,
                N as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                threads,
            )
        };
        Ok(())
    };
    (Box::new(run), 2.0 * (N * N * N) as f64)
}

fn make_case(name: &str, dev: &Device) -> Result<Case> {
    match name {
        "gemm-4096" => Ok(gemm_peak_case()),
        "conv-fwd" | "conv-fwd-bwd" => {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 64, 128, 128), dev)?)?;
            let conv = Conv::new(64, 64, 3, false, dev)?;
            let flops = conv.flops(4, 128, 128);
            if name == "conv-fwd" {
                Ok((
                    Box::new(move || conv.forward(x.as_tensor()).map(drop)),
                    flops,
                ))
            } else {
                let run = move || -> Result<()> {
                    let grads = conv.forward(x.as_tensor())?.sum_all()?.backward()?;
                    let ok = grads.get(x.as_tensor()).is_some()
                        && grads.get(conv.w.as_tensor()).is_some();
                    if !ok {
                        candle::bail!("conv-fwd-bwd: missing gradient")
                    }
                    Ok(())
                };
                Ok((Box::new(run), 3.0 * flops))
            }
        }
        "unet-train-step" | "unet-no-bn" | "unet-no-optim" | "unet-fwd" => {
            let (n, h, w, k) = (4, 128, 128, 4);
            let model = MiniUnet::new(k, dev)?;
            let flops = model.flops(n, h, w);
            let images = Tensor::randn(0f32, 1., (n, 3, h, w), dev)?;
            let targets = (Tensor::rand(0f32, k as f32, (n, h, w), dev)?
                .floor()?
                .to_dtype(DType::U32)?)
            .minimum(k as u32 - 1)?;
            let mut optim = adamw(model.vars())?;
            let use_bn = name != "unet-no-bn";
            let (backward, optimise) = match name {
                "unet-fwd" => (false, false),
                "unet-no-optim" => (true, false),
                _ => (true, true),
            };
            let run = move || -> Result<()> {
                let loss = pixel_cross_entropy(&model.forward(&images, use_bn)?, &targets)?;
                if !loss.to_scalar::<f32>()?.is_finite() {
                    candle::bail!("unet: loss is not finite")
                }
                if backward {
                    let grads = loss.backward()?;
                    if optimise {
                        optim.step(&grads)?;
                    }
                }
                Ok(())
            };
            Ok((Box::new(run), if backward { 3.0 * flops } else { flops }))
        }
        "vgg11-fwd" => {
            let cfg = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
            let (mut c_in, mut size, mut flops) = (3, 224, 0.0);
            let mut convs = Vec::new();
            for &c in &cfg {
                if c == 0 {
                    size /= 2;
                    convs.push(None);
                } else {
                    let conv = Conv::new(c_in, c, 3, true, dev)?;
                    flops += conv.flops(1, size, size);
                    convs.push(Some(conv));
                    c_in = c;
                }
            }
            let x = Tensor::randn(0f32, 1., (1, 3, 224, 224), dev)?;
            let run = move || -> Result<()> {
                let mut xs = x.clone();
                for layer in &convs {
                    xs = match layer {
                        Some(conv) => kernels::relu(&conv.forward(&xs)?)?,
                        None => kernels::max_pool2d(&xs, 2)?,
                    };
                }
                let (_, c, h, w) = xs.dims4()?;
                if (c, h, w) != (512, 7, 7) {
                    candle::bail!("vgg11: output ({c}, {h}, {w}) is not (512, 7, 7)")
                }
                Ok(())
            };
            Ok((Box::new(run), flops))
        }
        other => candle::bail!(
            "unknown case {other:?}; cases: {CASES:?}, unet-no-bn, unet-no-optim, unet-fwd"
        ),
    }
}

/// Peak resident memory of this process in MiB (VmHWM from /proc/self/status).
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Child mode: runs one case in one mode and prints `RESULT median_ms flops peak_mib`.
fn run_child(case: &str, mode: &str, runs: usize) -> anyhow::Result<()> {
    kernels::set_force_candle_ops(mode == "candle");
    let dev = Device::Cpu;
    let (mut call, flops) = make_case(case, &dev)?;
    let median = median_ms(runs, || Ok(call()?))?;
    println!("RESULT {median} {flops} {}", peak_mib().unwrap_or(f64::NAN));
    Ok(())
}

/// Runs one case in a child process; returns (median ms, FLOPs, peak MiB).
fn spawn(case: &str, mode: &str, runs: usize) -> anyhow::Result<(f64, f64, f64)> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["--child", case, mode, "--runs", &runs.to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT ")) else {
        anyhow::bail!(
            "case {case} ({mode}) failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().unwrap_or(f64::NAN))
        .collect();
    Ok((v[0], v[1], v[2]))
}

fn main() -> anyhow::Result<()> {
    // As the assignments' programs do when they open the CPU (children too: they run main).
    let tuned = common::alloc::reuse_freed_memory();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs = runs_arg(&args, 5)?;
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (case, mode) = (&args[i + 1], &args[i + 2]);
        return run_child(case, mode, runs);
    }
    let cases: Vec<String> = if args.iter().any(|a| a == "--breakdown") {
        ["unet-train-step", "unet-no-optim", "unet-no-bn", "unet-fwd"]
            .map(String::from)
            .to_vec()
    } else if let Some(case) = value("--case") {
        vec![case]
    } else {
        CASES.map(String::from).to_vec()
    };
    println!(
        "segkit kernels vs stock candle ops, {} rayon threads, {}, median of {runs} runs after 1 warm-up",
        rayon::current_num_threads(),
        common::bench::allocator_note(tuned)
    );
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8}",
        "case", "fast ms", "GFLOP/s", "peak MiB", "candle ms", "GFLOP/s", "peak MiB", "speed-up"
    );
    // `--fast-only` skips candle's ops (their columns are NaN): for timing against PyTorch.
    let fast_only = args.iter().any(|a| a == "--fast-only");
    for case in &cases {
        let (fast_ms, flops, fast_mib) = spawn(case, "fast", runs)?;
        let (candle_ms, _, candle_mib) = if fast_only || case == "gemm-4096" {
            (f64::NAN, flops, f64::NAN)
        } else {
            spawn(case, "candle", runs)?
        };
        let gflops = |ms: f64| flops / ms / 1e6;
        println!(
            "{case:<16} {fast_ms:>10.1} {:>9.1} {fast_mib:>9.0} {candle_ms:>11.1} {:>9.1} {candle_mib:>9.0} {:>7.2}x",
            gflops(fast_ms),
            gflops(candle_ms),
            candle_ms / fast_ms
        );
    }
    Ok(())
}
