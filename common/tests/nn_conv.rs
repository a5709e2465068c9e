//! Tests of `common::nn` convolution layers: output sizes, forward values against
//! direct loops, gradients (input, weight, bias) against finite differences, the
//! default init, convolutionalize, and errors on bad input.

use candle::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::nn::gradcheck::{check_gradient_vars, check_gradients};
use common::nn::{
    conv2d, conv_transpose2d, convolutionalize, convolutionalize_linear, ops, Conv2d, ConvConfig,
    ConvTranspose2d, ConvTransposeConfig,
};

/// Deterministic, distinct-looking values in (-1, 1).
fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43758.5453).fract())
        .collect()
}

fn tensor(shape: &[usize], seed: f64) -> Result<Tensor> {
    Tensor::from_vec(values(shape.iter().product(), seed), shape, &Device::Cpu)
}

/// `sum(ys * r)` with fixed random `r`.
fn weighted_sum(ys: &Tensor, seed: f64) -> Result<Tensor> {
    (ys * tensor(ys.dims(), seed)?)?.sum_all()
}

/// Direct loop: `y[n,o,i,j] = Σ x[n,c,i*s-p+a*d, j*s-p+b*d] w[o,c,a,b]` (groups 1).
fn reference_conv(x: &Tensor, w: &Tensor, s: usize, p: usize, d: usize) -> Result<Vec<f64>> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, _, k, _) = w.dims4()?;
    let (xv, wv) = (
        x.flatten_all()?.to_vec1::<f64>()?,
        w.flatten_all()?.to_vec1::<f64>()?,
    );
    let ho = (h + 2 * p - d * (k - 1) - 1) / s + 1;
    let wo = (wd + 2 * p - d * (k - 1) - 1) / s + 1;
    let mut y = vec![0.0; n * o * ho * wo];
    for b in 0..n {
        for oc in 0..o {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = 0.0;
                    for ic in 0..c {
                        for a in 0..k {
                            for e in 0..k {
                                let (yy, xx) = (
                                    (i * s + a * d) as isize - p as isize,
                                    (j * s + e * d) as isize - p as isize,
                                );
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                    acc += xv[((b * c + ic) * h + yy as usize) * wd + xx as usize]
                                        * wv[((oc * c + ic) * k + a) * k + e];
                                }
                            }
                        }
                    }
                    y[((b * o + oc) * ho + i) * wo + j] = acc;
                }
            }
        }
    }
    Ok(y)
}

/// Direct loop of a transposed conv: each input pixel scatters `x * w[c, o]` to
/// `(i*s - p + a*d, j*s - p + b*d)` (PyTorch's definition).
fn reference_conv_transpose(x: &Tensor, w: &Tensor, cfg: &ConvTransposeConfig) -> Result<Vec<f64>> {
    let (n, c, h, wd) = x.dims4()?;
    let (_, o, k, _) = w.dims4()?;
    let (s, p, d, op) = (cfg.stride, cfg.padding, cfg.dilation, cfg.output_padding);
    let (xv, wv) = (
        x.flatten_all()?.to_vec1::<f64>()?,
        w.flatten_all()?.to_vec1::<f64>()?,
    );
    let ho = (h - 1) * s + d * (k - 1) + op + 1 - 2 * p;
    let wo = (wd - 1) * s + d * (k - 1) + op + 1 - 2 * p;
    let mut y = vec![0.0; n * o * ho * wo];
    for b in 0..n {
        for ic in 0..c {
            for i in 0..h {
                for j in 0..wd {
                    for oc in 0..o {
                        for a in 0..k {
                            for e in 0..k {
                                let yy = (i * s + a * d) as isize - p as isize;
                                let xx = (j * s + e * d) as isize - p as isize;
                                if yy >= 0 && xx >= 0 && (yy as usize) < ho && (xx as usize) < wo {
                                    y[((b * o + oc) * ho + yy as usize) * wo + xx as usize] += xv
                                        [((b * c + ic) * h + i) * wd + j]
                                        * wv[((ic * o + oc) * k + a) * k + e];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(y)
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < tol, "{what}: element {i}: {x} vs {y}");
    }
}

#[test]
fn conv_output_sizes() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let x = Tensor::zeros((2, 3, 11, 13), DType::F32, &Device::Cpu)?;
    // k3 s2 p1: floor((11 + 2 - 2 - 1) / 2) + 1 = 6, floor((13 + 2 - 2 - 1) / 2) + 1 = 7
    let cfg = ConvConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    assert_eq!(
        conv2d(3, 8, 3, cfg, vb.pp("a"))?.forward(&x)?.dims(),
        &[2, 8, 6, 7]
    );
    // k3 d2 p2 s1 keeps the size: 11 + 4 - 4 - 1 + 1 = 11
    let cfg = ConvConfig {
        padding: 2,
        dilation: 2,
        ..Default::default()
    };
    assert_eq!(
        conv2d(3, 4, 3, cfg, vb.pp("b"))?.forward(&x)?.dims(),
        &[2, 4, 11, 13]
    );
    // groups 3: weight (6, 1, 1, 1)
    let cfg = ConvConfig {
        groups: 3,
        ..Default::default()
    };
    let grouped = conv2d(3, 6, 1, cfg, vb.pp("g"))?;
    assert_eq!(grouped.weight().dims(), &[6, 1, 1, 1]);
    assert_eq!(grouped.forward(&x)?.dims(), &[2, 6, 11, 13]);
    // Transposed k3 s2 p1 op1: (5 - 1) * 2 - 2 + 2 + 1 + 1 = 10, (6 - 1) * 2 - 2 + 2 + 1 + 1 = 12
    let x = Tensor::zeros((2, 4, 5, 6), DType::F32, &Device::Cpu)?;
    let cfg = ConvTransposeConfig {
        stride: 2,
        padding: 1,
        output_padding: 1,
        ..Default::default()
    };
    let up = conv_transpose2d(4, 3, 3, cfg, vb.pp("t"))?;
    assert_eq!(up.weight().dims(), &[4, 3, 3, 3]);
    assert_eq!(up.forward(&x)?.dims(), &[2, 3, 10, 12]);
    // k4 s2 p1 doubles exactly: (5 - 1) * 2 - 2 + 3 + 1 = 10
    let cfg = ConvTransposeConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    assert_eq!(
        conv_transpose2d(4, 3, 4, cfg, vb.pp("u"))?
            .forward(&x)?
            .dims(),
        &[2, 3, 10, 12]
    );
    Ok(())
}

#[test]
fn conv_forward_matches_direct_loops() -> Result<()> {
    let x = tensor(&[2, 3, 7, 6], 1.0)?;
    let w = tensor(&[4, 3, 3, 3], 2.0)?;
    for (s, p, d) in [(1, 0, 1), (2, 1, 1), (1, 2, 2)] {
        let cfg = ConvConfig {
            stride: s,
            padding: p,
            dilation: d,
            ..Default::default()
        };
        let y = ops::conv2d(&x, &w, &cfg)?.flatten_all()?.to_vec1::<f64>()?;
        assert_close(
            &y,
            &reference_conv(&x, &w, s, p, d)?,
            1e-12,
            &format!("conv s{s} p{p} d{d}"),
        );
    }
    let wt = tensor(&[3, 2, 3, 3], 3.0)?;
    for (s, p, op) in [(2, 1, 1), (2, 0, 0), (3, 1, 2)] {
        let cfg = ConvTransposeConfig {
            stride: s,
            padding: p,
            output_padding: op,
            ..Default::default()
        };
        let y = ops::conv_transpose2d(&x, &wt, &cfg)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let expected = reference_conv_transpose(&x, &wt, &cfg)?;
        assert_close(
            &y,
            &expected,
            1e-12,
            &format!("conv_transpose s{s} p{p} op{op}"),
        );
    }
    Ok(())
}

#[test]
fn conv2d_gradients_match_finite_differences() -> Result<()> {
    let x = tensor(&[2, 3, 6, 7], 4.0)?;
    let w = tensor(&[4, 3, 3, 3], 5.0)?;
    // 6x7 with k3 s2 p1 leaves 1 unused row but 0 unused columns: candle's own
    // backward fails there (shape error), ops::conv2d must not.
    for (s, p, d, shape) in [
        (2, 1, 1, [2, 3, 6, 7]),
        (2, 1, 1, [2, 3, 7, 7]),
        (1, 2, 2, [1, 3, 6, 5]),
        (3, 0, 1, [1, 3, 8, 7]),
    ] {
        let x = tensor(&shape, 4.5)?;
        let cfg = ConvConfig {
            stride: s,
            padding: p,
            dilation: d,
            ..Default::default()
        };
        let errs = check_gradients(
            |t| weighted_sum(&ops::conv2d(&t[0], &t[1], &cfg)?, 6.0),
            &[x, w.clone()],
            1e-5,
        )?;
        assert!(
            errs.iter().all(|e| *e < 1e-5),
            "conv2d s{s} p{p} d{d} {shape:?}: input/weight errors {errs:?}"
        );
    }
    // Grouped convolution (candle's own backward ignores groups).
    let wg = tensor(&[4, 1, 3, 3], 5.5)?;
    let xg = tensor(&[1, 2, 5, 5], 6.5)?;
    let cfg = ConvConfig {
        groups: 2,
        padding: 1,
        ..Default::default()
    };
    let errs = check_gradients(
        |t| weighted_sum(&ops::conv2d(&t[0], &t[1], &cfg)?, 6.0),
        &[xg, wg],
        1e-5,
    )?;
    assert!(
        errs.iter().all(|e| *e < 1e-5),
        "grouped conv2d errors {errs:?}"
    );
    let cfg = ConvConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };

    // The layer, with its bias, through its VarMap variables.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let layer = conv2d(3, 4, 3, cfg, vb)?;
    let vars = varmap.all_vars();
    assert_eq!(vars.len(), 2);
    let errs = check_gradient_vars(|| weighted_sum(&layer.forward(&x)?, 7.0), &vars, 1e-5)?;
    assert!(
        errs.iter().all(|e| *e < 1e-5),
        "conv2d weight/bias errors {errs:?}"
    );
    Ok(())
}

#[test]
fn conv_transpose2d_gradients_match_finite_differences() -> Result<()> {
    // candle's backward checked with stride 2, padding and output padding.
    let x = tensor(&[2, 3, 4, 5], 8.0)?;
    let w = tensor(&[3, 2, 3, 3], 9.0)?;
    for (s, p, op, k) in [(2, 1, 1, 3), (2, 0, 0, 3), (2, 1, 0, 4), (3, 2, 2, 3)] {
        let w = if k == 3 {
            w.clone()
        } else {
            tensor(&[3, 2, k, k], 10.0)?
        };
        let cfg = ConvTransposeConfig {
            stride: s,
            padding: p,
            output_padding: op,
            ..Default::default()
        };
        let errs = check_gradients(
            |t| weighted_sum(&ops::conv_transpose2d(&t[0], &t[1], &cfg)?, 11.0),
            &[x.clone(), w],
            1e-5,
        )?;
        assert!(
            errs.iter().all(|e| *e < 1e-5),
            "s{s} p{p} op{op} k{k}: errors {errs:?}"
        );
    }
    Ok(())
}

#[test]
fn default_init_is_kaiming_uniform_with_pytorch_names() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    conv2d(8, 16, 3, ConvConfig::default(), vb.pp("conv"))?;
    conv_transpose2d(16, 4, 2, ConvTransposeConfig::default(), vb.pp("up"))?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["conv.bias", "conv.weight", "up.bias", "up.weight"]);
    // bound = 1 / sqrt(fan_in): conv 8*3*3 = 72, transposed C_out*k*k = 4*2*2 = 16
    for (name, bound) in [("conv.weight", 1.0 / 72f32.sqrt()), ("up.weight", 0.25)] {
        let v = data[name].as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            max <= bound && max > 0.5 * bound,
            "{name}: max |w| {max}, bound {bound}"
        );
    }
    Ok(())
}

#[test]
fn convolutionalized_linear_equals_linear_on_flattened_input() -> Result<()> {
    let (c, k, hidden, classes) = (3, 4, 5, 2);
    let dev = Device::Cpu;
    let fc1 = candle_nn::Linear::new(
        tensor(&[hidden, c * k * k], 12.0)?,
        Some(tensor(&[hidden], 13.0)?),
    );
    let fc2 = candle_nn::Linear::new(
        tensor(&[classes, hidden], 14.0)?,
        Some(tensor(&[classes], 15.0)?),
    );
    let conv1 = convolutionalize_linear(&fc1, (c, k, k))?;
    let conv2 = convolutionalize(fc2.weight(), fc2.bias(), (hidden, 1, 1))?;
    assert_eq!(conv1.weight().dims(), &[hidden, c, k, k]);
    assert_eq!(conv2.weight().dims(), &[classes, hidden, 1, 1]);

    // (N, C, k, k): conv = Linear on x.flatten(1)
    let x = tensor(&[2, c, k, k], 16.0)?;
    let linear = fc2.forward(&fc1.forward(&x.flatten_from(1)?)?.relu()?)?; // (2, classes)
    let conv = conv2.forward(&conv1.forward(&x)?.relu()?)?; // (2, classes, 1, 1)
    assert_eq!(conv.dims(), &[2, classes, 1, 1]);
    assert_close(
        &conv.flatten_all()?.to_vec1()?,
        &linear.flatten_all()?.to_vec1()?,
        1e-12,
        "1x1",
    );

    // A larger input slides the classifier: output (1, classes, 3, 2); position (1, 0)
    // equals the Linear layers on the crop starting at row 1, column 0.
    let big = Tensor::from_vec(
        values(c * (k + 2) * (k + 1), 17.0),
        (1, c, k + 2, k + 1),
        &dev,
    )?;
    let map = conv2.forward(&conv1.forward(&big)?.relu()?)?;
    assert_eq!(map.dims(), &[1, classes, 3, 2]);
    let crop = big.narrow(2, 1, k)?.narrow(3, 0, k)?;
    let expected = fc2
        .forward(&fc1.forward(&crop.flatten_from(1)?)?.relu()?)?
        .flatten_all()?
        .to_vec1()?;
    let got = map
        .narrow(2, 1, 1)?
        .narrow(3, 0, 1)?
        .flatten_all()?
        .to_vec1()?;
    assert_close(&got, &expected, 1e-12, "sliding");
    Ok(())
}

#[test]
fn bad_inputs_give_clear_errors() -> Result<()> {
    let x = tensor(&[1, 3, 5, 5], 18.0)?;
    let w = tensor(&[4, 2, 3, 3], 19.0)?;
    let msg = ops::conv2d(&x, &w, &ConvConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("input has 3 channels") && msg.contains("expects 2"),
        "{msg}"
    );
    let w = tensor(&[4, 3, 7, 7], 19.0)?;
    let msg = ops::conv2d(&x, &w, &ConvConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("too small for a 7x7 kernel"), "{msg}");
    let wt = tensor(&[3, 2, 3, 3], 20.0)?;
    let cfg = ConvTransposeConfig {
        stride: 2,
        output_padding: 2,
        ..Default::default()
    };
    let msg = ops::conv_transpose2d(&x, &wt, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("output_padding 2 must be smaller than stride 2"),
        "{msg}"
    );
    // A bias that does not have one value per output channel.
    let bias = tensor(&[3], 22.0)?;
    let msg = Conv2d::new(w.clone(), Some(bias.clone()), ConvConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Conv2d: bias shape [3] does not match 4 output channels"),
        "{msg}"
    );
    assert!(Conv2d::new(w, Some(tensor(&[4], 22.0)?), ConvConfig::default()).is_ok());
    let msg = ConvTranspose2d::new(wt.clone(), Some(bias), cfg)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ConvTranspose2d: bias shape [3] does not match 2 output channels"),
        "{msg}"
    );
    assert!(ConvTranspose2d::new(wt, Some(tensor(&[2], 22.0)?), cfg).is_ok());
    let lw = tensor(&[2, 10], 21.0)?;
    let msg = convolutionalize(&lw, None, (3, 2, 2))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("takes 10 inputs") && msg.contains("has 12"),
        "{msg}"
    );
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ConvConfig {
        groups: 2,
        ..Default::default()
    };
    let msg = conv2d(3, 4, 3, cfg, vb).unwrap_err().to_string();
    assert!(msg.contains("not divisible by groups 2"), "{msg}");
    Ok(())
}
