//! The size arithmetic of transposed convolutions the slides teach:
//! `out = (in - 1) * stride - 2 * pad + kernel + output_padding`, checked against
//! hand values and against the real layers, and the fact that a transposed
//! convolution with the same kernel/stride/padding maps a convolution's output
//! back to the convolution's input size (with the right output padding).

use anyhow::Result;
use assignment2_transposed_conv::model::{
    SKIP_CONFIG, SKIP_KERNEL, TRANSPOSED_CONFIG, TRANSPOSED_KERNEL,
};
use assignment2_transposed_conv::size_rule::{conv_out_size, transposed_out_size};
use candle::{DType, Device, Module, Tensor};
use common::nn::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};

/// A transposed conv layer of ones with `c_in = c_out = 1`.
fn transposed_layer(
    k: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<ConvTranspose2d> {
    let weight = Tensor::ones((1, 1, k, k), DType::F32, &Device::Cpu)?;
    let config = ConvTransposeConfig {
        stride,
        padding,
        output_padding,
        ..ConvTransposeConfig::default()
    };
    Ok(ConvTranspose2d::new(weight, None, config)?)
}

#[test]
fn rule_matches_hand_computed_sizes() {
    // (in, kernel, stride, padding, output_padding) -> out, worked by hand:
    let cases = [
        ((5, 3, 2, 1, 0), Some(9)),   // 4*2 - 2 + 3 = 9
        ((5, 3, 2, 1, 1), Some(10)),  // + output padding 1
        ((8, 7, 4, 2, 1), Some(32)),  // 7*4 - 4 + 7 + 1 = 32: the transposed net
        ((16, 4, 2, 1, 0), Some(32)), // 15*2 - 2 + 4 = 32: the skip net
        ((7, 7, 5, 1, 0), Some(35)),  // 6*5 - 2 + 7 = 35: the lecture's 7x7 stride 5
        ((3, 2, 2, 0, 0), Some(6)),   // 2*2 + 2 = 6
        ((1, 1, 1, 0, 0), Some(1)),
        ((1, 2, 1, 1, 0), None), // 0 - 2 + 2 = 0: no output
        ((0, 3, 1, 0, 0), None), // an empty input
    ];
    for ((input, k, s, p, op), expected) in cases {
        assert_eq!(
            transposed_out_size(input, k, s, p, op),
            expected,
            "in {input} k {k} s {s} p {p} op {op}"
        );
    }
}

#[test]
fn layers_produce_the_sizes_of_the_rule() -> Result<()> {
    for k in 1..=5 {
        for stride in 1..=3 {
            for padding in 0..=2 {
                for output_padding in 0..stride {
                    for input in [1, 2, 5, 6] {
                        let Some(expected) =
                            transposed_out_size(input, k, stride, padding, output_padding)
                        else {
                            continue;
                        };
                        let layer = transposed_layer(k, stride, padding, output_padding)?;
                        let xs = Tensor::ones((1, 1, input, input + 1), DType::F32, &Device::Cpu)?;
                        let ys = layer.forward(&xs)?;
                        let expected_w =
                            transposed_out_size(input + 1, k, stride, padding, output_padding);
                        assert_eq!(
                            ys.dims(),
                            &[1, 1, expected, expected_w.unwrap_or(0)],
                            "in {input}x{} k {k} s {stride} p {padding} op {output_padding}",
                            input + 1
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn transposed_conv_maps_a_conv_output_back_to_the_conv_input_size() -> Result<()> {
    // For each (kernel, stride, padding) and input size n, conv gives
    // m = floor((n + 2p - k) / s) + 1; the floor loses (n + 2p - k) % s rows,
    // which is exactly the output padding that brings m back to n.
    let choices = [
        (3, 1, 1),
        (3, 2, 1),
        (4, 2, 1),
        (5, 2, 2),
        (7, 4, 2),
        (7, 5, 1),
        (2, 2, 0),
    ];
    for (k, s, p) in choices {
        for n in 7..=21 {
            let m = conv_out_size(n, k, s, p).expect("kernel fits");
            let output_padding = (n + 2 * p - k) % s;
            assert_eq!(
                transposed_out_size(m, k, s, p, output_padding),
                Some(n),
                "k {k} s {s} p {p}: {n} -> {m} -> back"
            );
            // And the real layers agree: (1, 1, n, n) -> conv -> (1, 1, m, m) -> transposed -> (1, 1, n, n).
            let conv = Conv2d::new(
                Tensor::ones((1, 1, k, k), DType::F32, &Device::Cpu)?,
                None,
                ConvConfig {
                    stride: s,
                    padding: p,
                    ..ConvConfig::default()
                },
            )?;
            let xs = Tensor::ones((1, 1, n, n), DType::F32, &Device::Cpu)?;
            let down = conv.forward(&xs)?;
            assert_eq!(down.dims(), &[1, 1, m, m]);
            let up = transposed_layer(k, s, p, output_padding)?.forward(&down)?;
            assert_eq!(up.dims(), &[1, 1, n, n], "k {k} s {s} p {p} n {n}");
        }
    }
    Ok(())
}

#[test]
fn the_nets_decoders_multiply_sizes_exactly() {
    let t = TRANSPOSED_CONFIG;
    let s = SKIP_CONFIG;
    for h in 1..=120 {
        // 7x7 stride 4, padding 2, output padding 1: (h - 1) * 4 - 4 + 7 + 1 = 4h.
        assert_eq!(
            transposed_out_size(h, TRANSPOSED_KERNEL, t.stride, t.padding, t.output_padding),
            Some(4 * h)
        );
        // 4x4 stride 2, padding 1: (h - 1) * 2 - 2 + 4 = 2h.
        assert_eq!(
            transposed_out_size(h, SKIP_KERNEL, s.stride, s.padding, s.output_padding),
            Some(2 * h)
        );
    }
}
