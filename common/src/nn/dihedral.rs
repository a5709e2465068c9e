//! The eight flips and quarter turns of an image (the dihedral group of the square),
//! for test-time augmentation: a net's softmax averaged over all eight views, each
//! mapped back to the original orientation.

use candle::{Result, Tensor};

/// One of the eight symmetries of a square: an optional transpose of height and
/// width, then optional flips of the rows and of the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral {
    pub transpose: bool,
    pub flip_rows: bool,
    pub flip_columns: bool,
}

impl Dihedral {
    /// All eight, the identity first.
    pub fn all() -> Vec<Dihedral> {
        (0..8)
            .map(|bits| Dihedral {
                transpose: bits & 4 != 0,
                flip_rows: bits & 2 != 0,
                flip_columns: bits & 1 != 0,
            })
            .collect()
    }

    /// `(N, C, H, W)` seen under this symmetry: `(N, C, H, W)`, or `(N, C, W, H)` when it transposes.
    pub fn apply(self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.transpose {
            xs.transpose(2, 3)?.contiguous()?
        } else {
            xs.clone()
        };
        self.flips(&xs)
    }

    /// The inverse of [`Dihedral::apply`]: `invert(apply(x)) == x`.
    pub fn invert(self, ys: &Tensor) -> Result<Tensor> {
        let ys = self.flips(ys)?;
        if self.transpose {
            ys.transpose(2, 3)?.contiguous()
        } else {
            Ok(ys)
        }
    }

    fn flips(self, xs: &Tensor) -> Result<Tensor> {
        let xs = if self.flip_rows {
            flip(xs, 2)?
        } else {
            xs.clone()
        };
        if self.flip_columns {
            flip(&xs, 3)
        } else {
            Ok(xs)
        }
    }
}

/// `xs` with the entries along `dim` in reverse order.
pub fn flip(xs: &Tensor, dim: usize) -> Result<Tensor> {
    let n = xs.dim(dim)?;
    let reversed: Vec<u32> = (0..n as u32).rev().collect();
    xs.index_select(&Tensor::from_vec(reversed, n, xs.device())?, dim)
}

/// The softmax over classes (dim 1) of `net` on `(N, C, H, W)` images, averaged over
/// the eight views of [`Dihedral::all`], each mapped back: `(N, K, H, W)`.
pub fn dihedral_probabilities(
    xs: &Tensor,
    net: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let views = Dihedral::all();
    let mut sum: Option<Tensor> = None;
    for view in &views {
        let logits = net(&view.apply(xs)?)?; // (N, K, H', W')
        let probs = view.invert(&candle_nn::ops::softmax(&logits, 1)?)?; // (N, K, H, W)
        sum = Some(match sum {
            Some(total) => (total + probs)?,
            None => probs,
        });
    }
    match sum {
        Some(total) => total / views.len() as f64,
        None => candle::bail!("no views"),
    }
}
