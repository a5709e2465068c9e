//! Why it is called a transposed convolution: a convolution is a linear map
//! `y = M x`; build `M` column by column by convolving basis images, then check
//! that `conv_transpose2d` with the SAME weight tensor computes `M^T y`.

use anyhow::Result;
use candle::{Device, Module, Tensor};
use common::nn::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `len` values uniform in -1..1 from a seeded generator.
fn random(len: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// The dense `(out_len, in_len)` matrix of `conv` on `(1, c, h, w)` inputs: column
/// `j` is the flattened output for the `j`-th basis image.
fn dense_matrix(
    conv: &Conv2d,
    c: usize,
    h: usize,
    w: usize,
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let in_len = c * h * w;
    let mut columns = Vec::with_capacity(in_len);
    let mut out_dims = Vec::new();
    for j in 0..in_len {
        let mut basis = vec![0f64; in_len];
        basis[j] = 1.0;
        let xs = Tensor::from_vec(basis, (1, c, h, w), &Device::Cpu)?;
        let ys = conv.forward(&xs)?;
        out_dims = ys.dims().to_vec();
        columns.push(ys.flatten_all()?.to_vec1::<f64>()?);
    }
    let out_len = columns[0].len();
    // Columns -> rows: M[i][j] = columns[j][i].
    let matrix = (0..out_len)
        .map(|i| columns.iter().map(|col| col[i]).collect())
        .collect();
    Ok((matrix, out_dims))
}

/// Builds the conv, its matrix, and compares the transposed conv with `M^T`;
/// returns the largest absolute difference.
fn check(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    (h, w): (usize, usize),
    seed: u64,
) -> Result<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = Device::Cpu;
    // One weight tensor, (C_out, C_in, k, k) for the conv = (C_in', C_out', k, k)
    // for the transposed conv that goes the other way.
    let weight = Tensor::from_vec(
        random(c_out * c_in * k * k, &mut rng),
        (c_out, c_in, k, k),
        &device,
    )?;
    let conv_config = ConvConfig {
        stride,
        padding,
        bias: false,
        ..ConvConfig::default()
    };
    let conv = Conv2d::new(weight.clone(), None, conv_config)?;
    let (matrix, out_dims) = dense_matrix(&conv, c_in, h, w)?;
    let (out_h, out_w) = (out_dims[2], out_dims[3]);
    assert_eq!(matrix.len(), c_out * out_h * out_w);
    assert_eq!(matrix[0].len(), c_in * h * w);

    // The matrix IS the convolution: M x == conv(x) for a random x.
    let x = random(c_in * h * w, &mut rng);
    let conv_x = conv
        .forward(&Tensor::from_vec(x.clone(), (1, c_in, h, w), &device)?)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    for (row, expected) in matrix.iter().zip(&conv_x) {
        let mx: f64 = row.iter().zip(&x).map(|(m, v)| m * v).sum();
        assert!((mx - expected).abs() < 1e-12, "M x {mx} vs conv {expected}");
    }

    // The transposed conv with the same weight, and the output padding that
    // restores h x w (the rows the conv's floor dropped).
    let output_padding_h = (h + 2 * padding - k) % stride;
    let output_padding_w = (w + 2 * padding - k) % stride;
    assert_eq!(
        output_padding_h, output_padding_w,
        "pick sizes with one output padding"
    );
    let transposed = ConvTranspose2d::new(
        weight,
        None,
        ConvTransposeConfig {
            stride,
            padding,
            output_padding: output_padding_h,
            ..ConvTransposeConfig::default()
        },
    )?;
    let y = random(c_out * out_h * out_w, &mut rng);
    let t_y = transposed.forward(&Tensor::from_vec(
        y.clone(),
        (1, c_out, out_h, out_w),
        &device,
    )?)?;
    assert_eq!(t_y.dims(), &[1, c_in, h, w]);
    let t_y = t_y.flatten_all()?.to_vec1::<f64>()?;
    // (M^T y)_j = sum_i M[i][j] y_i
    let mut worst = 0f64;
    for (j, got) in t_y.iter().enumerate() {
        let expected: f64 = matrix.iter().zip(&y).map(|(row, yi)| row[j] * yi).sum();
        worst = worst.max((got - expected).abs());
    }
    Ok(worst)
}

#[test]
fn conv_transpose_is_multiplication_by_the_transposed_conv_matrix() -> Result<()> {
    // 3x3 stride 1 "same" conv, 2 -> 3 channels on 5x4: M is 60 x 40.
    assert!(check(2, 3, 3, 1, 1, (5, 4), 1)? < 1e-12);
    // 3x3 stride 2 padding 1 on 5x5 -> 3x3 (no rows dropped): M is 27 x 50.
    assert!(check(2, 3, 3, 2, 1, (5, 5), 2)? < 1e-12);
    // The same on 6x6 -> 3x3: one row and column dropped, output padding 1.
    assert!(check(2, 3, 3, 2, 1, (6, 6), 3)? < 1e-12);
    // 4x4 stride 2 padding 1 (the skip net's kernel), 1 -> 2 channels on 6x8.
    assert!(check(1, 2, 4, 2, 1, (6, 8), 4)? < 1e-12);
    Ok(())
}

#[test]
fn a_wrong_transpose_is_caught() -> Result<()> {
    // The comparison can fail: for a square M (stride 1, same padding) the
    // transposed conv differs from M y, the matrix NOT transposed.
    let mut rng = StdRng::seed_from_u64(9);
    let device = Device::Cpu;
    let weight = Tensor::from_vec(random(9, &mut rng), (1, 1, 3, 3), &device)?;
    let conv = Conv2d::new(
        weight.clone(),
        None,
        ConvConfig {
            padding: 1,
            ..ConvConfig::default()
        },
    )?;
    let (matrix, _) = dense_matrix(&conv, 1, 4, 4)?;
    let y = random(16, &mut rng);
    let transposed = ConvTranspose2d::new(
        weight,
        None,
        ConvTransposeConfig {
            padding: 1,
            ..ConvTransposeConfig::default()
        },
    )?;
    let t_y = transposed
        .forward(&Tensor::from_vec(y.clone(), (1, 1, 4, 4), &device)?)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let m_y: Vec<f64> = matrix
        .iter()
        .map(|row| row.iter().zip(&y).map(|(m, v)| m * v).sum())
        .collect();
    let differs = t_y.iter().zip(&m_y).any(|(a, b)| (a - b).abs() > 1e-6);
    assert!(
        differs,
        "a random 3x3 kernel is not symmetric, so M y != M^T y"
    );
    Ok(())
}
