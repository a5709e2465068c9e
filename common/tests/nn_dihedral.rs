//! The eight flips and quarter turns against hand-made arrays, their inverses, and
//! the test-time average of a net that sees every view the same.

use candle::{Device, Tensor};
use common::nn::{dihedral_probabilities, flip, Dihedral};

/// A (1, 1, 2, 3) image with entries 0..6 row by row.
fn ramp() -> candle::Result<Tensor> {
    Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((1, 1, 2, 3))
}

fn rows(xs: &Tensor) -> candle::Result<Vec<Vec<f32>>> {
    xs.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()
}

#[test]
fn flips_reverse_one_axis() -> candle::Result<()> {
    assert_eq!(rows(&flip(&ramp()?, 2)?)?, [[3., 4., 5.], [0., 1., 2.]]);
    assert_eq!(rows(&flip(&ramp()?, 3)?)?, [[2., 1., 0.], [5., 4., 3.]]);
    Ok(())
}

#[test]
fn the_eight_views_are_distinct_and_invert() -> candle::Result<()> {
    let image = ramp()?;
    let views = Dihedral::all();
    assert_eq!(views.len(), 8);
    assert_eq!(
        views[0],
        Dihedral {
            transpose: false,
            flip_rows: false,
            flip_columns: false
        }
    );
    let mut seen = Vec::new();
    for view in &views {
        let seen_as = view.apply(&image)?;
        let expected_dims = if view.transpose {
            [1, 1, 3, 2]
        } else {
            [1, 1, 2, 3]
        };
        assert_eq!(seen_as.dims(), expected_dims, "{view:?}");
        let flat = seen_as.flatten_all()?.to_vec1::<f32>()?;
        assert!(
            !seen.contains(&(seen_as.dims().to_vec(), flat.clone())),
            "{view:?} repeats"
        );
        seen.push((seen_as.dims().to_vec(), flat));
        let back = view.invert(&seen_as)?;
        assert_eq!(rows(&back)?, rows(&image)?, "{view:?}");
    }
    // A quarter turn by hand: transpose, then flip the columns.
    let turned = Dihedral {
        transpose: true,
        flip_rows: false,
        flip_columns: true,
    }
    .apply(&image)?;
    assert_eq!(rows(&turned)?, [[3., 0.], [4., 1.], [5., 2.]]);
    Ok(())
}

#[test]
fn averaged_views_of_a_pointwise_net_equal_its_softmax() -> candle::Result<()> {
    // A net that scores each pixel alone commutes with every view, so the average
    // of the eight mapped-back softmaxes is its plain softmax.
    let xs = Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((1, 2, 3, 4))?;
    let net = |x: &Tensor| -> candle::Result<Tensor> { (x * 0.3)?.sin() };
    let averaged = dihedral_probabilities(&xs, net)?;
    let plain = candle_nn::ops::softmax(&net(&xs)?, 1)?;
    let diff = (averaged - plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-6, "max difference {diff}");
    Ok(())
}

#[test]
fn averaged_views_of_a_position_aware_net_mix_them() -> candle::Result<()> {
    // A net whose score grows down the rows: its eight views average to the same
    // probability at every pixel of a 2x2 image's corners.
    let xs = Tensor::zeros((1, 1, 2, 2), candle::DType::F32, &Device::Cpu)?;
    let net = |x: &Tensor| -> candle::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let row = Tensor::arange(0f32, h as f32, x.device())?.reshape((1, 1, h, 1))?;
        let score = row.broadcast_as((1, 1, h, w))?.contiguous()?;
        Tensor::cat(&[&score, &score.zeros_like()?], 1)
    };
    let averaged = dihedral_probabilities(&xs, net)?; // (1, 2, 2, 2)
    let first = averaged.get(0)?.get(0)?.flatten_all()?.to_vec1::<f32>()?;
    let expected = 0.5 * (0.5 + 1.0 / (1.0 + (-1f32).exp()));
    for p in first {
        assert!((p - expected).abs() < 1e-6, "{p} against {expected}");
    }
    Ok(())
}
