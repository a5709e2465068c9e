//! The two nets of issue 16 and the receptive fields of all five: `unpool` (SegNet's
//! decoder) and `dilated` (Yu & Koltun's context module) have right gradients
//! (finite differences in f64 through the whole net), the dilated convolutions'
//! fast CPU kernel agrees with candle's op forward and backward, the context module
//! starts as the identity, and every net's receptive-field table by hand.

use anyhow::Result;
use assignment2_transposed_conv::model::{receptive_field, SegNet, Variant, CHANNELS_2, DILATIONS};
use candle::{DType, Device, IndexOp, Module, Tensor, Var};
use candle_nn::VarMap;
use common::init::seeded_var_builder;
use common::nn::gradcheck::{check_gradient, check_gradients};
use common::nn::ops::conv2d;
use common::nn::ConvConfig;

fn net(variant: Variant, dtype: DType, varmap: &VarMap) -> Result<SegNet> {
    let vb = seeded_var_builder(varmap, 11, dtype, &Device::Cpu);
    Ok(SegNet::new(variant, 2, vb)?)
}

/// Deterministic values in (0, 1) with no ties inside a pooling window.
fn noise(len: usize, phase: f64) -> Vec<f64> {
    (0..len)
        .map(|i| {
            ((i as f64 * 12.9898 + phase).sin() * 43758.5453)
                .fract()
                .abs()
        })
        .collect()
}

#[test]
fn unpool_and_dilated_gradients_match_finite_differences() -> Result<()> {
    // d/dx sum(net(x) * r) on a 12x10 image (aligned: no edge padding), in f64.
    // eps 1e-4: the error falls as 1/eps down to there (round-off in a sum over
    // 240 scores, measured 1e-4 at eps 1e-6, 5e-7 at 1e-4), and no ReLU or pooling
    // tie is that close on this input.
    for variant in [Variant::Unpool, Variant::Dilated] {
        let model = net(variant, DType::F64, &VarMap::new())?;
        let x = Tensor::new(noise(3 * 12 * 10, 0.0), &Device::Cpu)?.reshape((1, 3, 12, 10))?;
        let r = Tensor::new(noise(2 * 12 * 10, 1.0), &Device::Cpu)?.reshape((1, 2, 12, 10))?;
        let err = check_gradient(|x| (model.forward(x)? * &r)?.sum_all(), &x, 1e-4)?;
        assert!(err < 1e-5, "{variant}: relative error {err}");
    }
    Ok(())
}

#[test]
fn dilated_convolutions_agree_with_candle_and_finite_differences() -> Result<()> {
    // The context module's layers: 3x3, padding = dilation, up to dilation 8 on a
    // map only just larger than the dilated window (17x17 for d = 8).
    for d in DILATIONS {
        let cfg = ConvConfig {
            padding: d,
            dilation: d,
            ..ConvConfig::default()
        };
        let side = 2 * d + 3;
        let x = Tensor::new(noise(2 * 4 * side * side, d as f64), &Device::Cpu)?
            .reshape((2, 4, side, side))?;
        let w = Tensor::new(noise(3 * 4 * 9, 7.0), &Device::Cpu)?.reshape((3, 4, 3, 3))?;
        // common::nn's CPU kernel against candle's op.
        let ours = conv2d(&x, &w, &cfg)?;
        let candle = x.conv2d(&w, d, 1, d, 1)?;
        assert_eq!(ours.dims(), &[2, 3, side, side], "dilation {d}");
        let diff = (&ours - &candle)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "dilation {d}: forward differs by {diff}");
        let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let r = ours.sin()?;
        let ours_g = (conv2d(xv.as_tensor(), wv.as_tensor(), &cfg)? * &r)?
            .sum_all()?
            .backward()?;
        let candle_g = (xv.as_tensor().conv2d(wv.as_tensor(), d, 1, d, 1)? * &r)?
            .sum_all()?
            .backward()?;
        for v in [&xv, &wv] {
            let (Some(a), Some(b)) = (ours_g.get(v.as_tensor()), candle_g.get(v.as_tensor()))
            else {
                anyhow::bail!("dilation {d}: a gradient is missing");
            };
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-10, "dilation {d}: gradients differ by {diff}");
        }
        // And both against central differences (eps 1e-4: smooth in x and w, and
        // the round-off of smaller steps reads 5e-6 at dilation 8 with eps 1e-6).
        let errs = check_gradients(
            |t| (conv2d(&t[0], &t[1], &cfg)? * &r)?.sum_all(),
            &[x, w],
            1e-4,
        )?;
        assert!(errs.iter().all(|&e| e < 1e-6), "dilation {d}: {errs:?}");
    }
    Ok(())
}

#[test]
fn the_context_module_starts_as_the_identity() -> Result<()> {
    let varmap = VarMap::new();
    net(Variant::Dilated, DType::F32, &varmap)?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    for layer in 1..=DILATIONS.len() {
        let w = vars[&format!("ctx{layer}.weight")].as_tensor().clone();
        let b = vars[&format!("ctx{layer}.bias")].as_tensor().clone();
        assert_eq!(w.dims(), &[CHANNELS_2, CHANNELS_2, 3, 3]);
        // 1 at the centre tap from each channel to itself: the sum is C, the trace of
        // the centre taps is C, and the bias is 0.
        assert_eq!(w.sum_all()?.to_scalar::<f32>()?, CHANNELS_2 as f32);
        let centre = w.i((.., .., 1, 1))?;
        let trace: f32 = (0..CHANNELS_2)
            .map(|c| centre.i((c, c)).and_then(|v| v.to_scalar::<f32>()))
            .sum::<candle::Result<f32>>()?;
        assert_eq!(trace, CHANNELS_2 as f32, "ctx{layer}");
        assert_eq!(b.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    }
    // A net built over variables that exist (a checkpoint loaded first) keeps them.
    let ones = Tensor::ones((CHANNELS_2, CHANNELS_2, 3, 3), DType::F32, &Device::Cpu)?;
    vars["ctx3.weight"].set(&ones)?;
    net(Variant::Dilated, DType::F32, &varmap)?;
    let kept = vars["ctx3.weight"]
        .as_tensor()
        .sum_all()?
        .to_scalar::<f32>()?;
    assert_eq!(kept, (CHANNELS_2 * CHANNELS_2 * 9) as f32);
    Ok(())
}

#[test]
fn receptive_fields_of_the_five_nets_by_hand() -> Result<()> {
    // Encoder: conv 3x3 r 3 (j 1), pool 2 r 4 (j 2), conv 3x3 r 4 + 2*2 = 8 (j 2),
    // pool 2 r 8 + 1*2 = 10 (j 4). Then:
    // transposed: 7x7 at j 4/4 = 1: 10 + 6 = 16.
    // skip: 4x4 at j 2: 10 + 3*2 = 16; 4x4 at j 1: 16 + 3 = 19.
    // bilinear: 1x1 10; bilinear x4 reads 2 cells 4 apart: 10 + 4 = 14.
    // unpool: unpool (j 2) 10; 3x3 at j 2: 14; unpool (j 1) 14; 3x3: 16; 1x1: 16.
    // dilated (no pool 2, j 2 from conv2's r 8): d 1, 1, 2, 4, 8 add 2*d*2:
    //   12, 16, 24, 40, 72; 1x1 72; bilinear x2 reads 2 cells 2 apart: 74.
    // All end at jump 1 (full resolution); all but dilated pass through a 1/4 grid.
    let want = [
        (Variant::Transposed, 16, 4),
        (Variant::Skip, 19, 4),
        (Variant::Bilinear, 14, 4),
        (Variant::Unpool, 16, 4),
        (Variant::Dilated, 74, 2),
    ];
    for (variant, field, coarsest) in want {
        let table = receptive_field(variant)?;
        assert_eq!(
            (table.receptive_field, table.jump, table.coarsest_jump),
            (field, 1, coarsest),
            "{variant}\n{}",
            table.to_text()
        );
    }
    // The dilated module's own growth is the paper's (Yu & Koltun 2016, Table 1):
    // at its grid spacing j = 2, fields 3, 5, 9, 17, 33 cells on top of conv2's 8 px.
    let table = receptive_field(Variant::Dilated)?;
    let module: Vec<usize> = table
        .layers
        .iter()
        .filter(|l| l.layer.name.starts_with("ctx"))
        .map(|l| (l.receptive_field - 8) / l.jump + 1)
        .collect();
    assert_eq!(module, vec![3, 5, 9, 17, 33]);
    Ok(())
}
