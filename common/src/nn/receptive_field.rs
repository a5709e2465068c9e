//! Receptive fields by the standard recurrence (the lecture's "how big should this
//! patch be?"; Araujo, Norris & Sim 2019, "Computing receptive fields of
//! convolutional neural networks"): along one axis, a layer of kernel `k`, stride
//! `s` and dilation `d` on features of jump (cumulative stride, input pixels
//! between neighbouring cells) `j_in` and receptive field `r_in` gives
//!
//! ```text
//! r_out = r_in + (k - 1) * d * j_in,    j_out = j_in * s
//! ```
//!
//! starting from `r = 1, j = 1` at the input. Padding does not change the size of
//! the field (only where it sits), so the table lists it without using it.
//!
//! Upsampling layers divide the jump instead:
//! - a transposed convolution of stride `s` is zero insertion (`j_out = j_in / s`)
//!   followed by a stride-1 convolution at the finer spacing: `r_out = r_in + (k - 1) * d * j_out`;
//! - max-unpooling puts each cell back in its window: every output reads one
//!   coarse cell, so `r_out = r_in` and `j_out = j_in / s` (listed with kernel 1);
//! - a bilinear resize reads two neighbouring coarse cells along each axis:
//!   `r_out = r_in + j_in`, `j_out = j_in / s` (listed with kernel 2).
//!
//! A net with branches (a skip connection adding shallower features) is listed
//! along its deepest path: the skipped features have a smaller field.

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// What a layer does to the grid, as the recurrence sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// A convolution: `r += (k - 1) d j`, `j *= s`.
    Conv,
    /// A max (or average) pool: the same recurrence as a convolution.
    Pool,
    /// A transposed convolution of stride `s`: `j /= s`, then `r += (k - 1) d j`.
    TransposedConv,
    /// Max-unpooling by a factor `s`: `j /= s`, the field unchanged.
    Unpool,
    /// A bilinear resize by a factor `s`: `r += j`, then `j /= s`.
    Bilinear,
}

/// One layer (square kernels, the same on both axes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    pub kernel: usize,
    /// The stride, or for the upsampling kinds the factor the grid is refined by.
    pub stride: usize,
    pub dilation: usize,
    pub padding: usize,
}

impl Layer {
    fn new(name: &str, kind: LayerKind, kernel: usize, stride: usize) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            kernel,
            stride,
            dilation: 1,
            padding: 0,
        }
    }

    /// A convolution of kernel `k`, stride `s`, dilation `d`, padding `p`.
    pub fn conv(name: &str, k: usize, s: usize, d: usize, p: usize) -> Self {
        Self {
            dilation: d,
            padding: p,
            ..Self::new(name, LayerKind::Conv, k, s)
        }
    }

    /// A `k x k` max pool of stride `k`, no padding.
    pub fn pool(name: &str, k: usize) -> Self {
        Self::new(name, LayerKind::Pool, k, k)
    }

    /// A transposed convolution of kernel `k`, stride `s`, padding `p`.
    pub fn transposed_conv(name: &str, k: usize, s: usize, p: usize) -> Self {
        Self {
            padding: p,
            ..Self::new(name, LayerKind::TransposedConv, k, s)
        }
    }

    /// Max-unpooling by `factor` (the pool's size).
    pub fn unpool(name: &str, factor: usize) -> Self {
        Self::new(name, LayerKind::Unpool, 1, factor)
    }

    /// A bilinear resize by `factor`.
    pub fn bilinear(name: &str, factor: usize) -> Self {
        Self::new(name, LayerKind::Bilinear, 2, factor)
    }

    /// Whether the layer refines the grid (its stride divides the jump).
    pub fn upsamples(&self) -> bool {
        matches!(
            self.kind,
            LayerKind::TransposedConv | LayerKind::Unpool | LayerKind::Bilinear
        )
    }

    /// `(r, j)` after this layer, from `(r, j)` before it.
    fn apply(&self, (r, j): (usize, usize)) -> anyhow::Result<(usize, usize)> {
        if self.kernel == 0 || self.stride == 0 || self.dilation == 0 {
            bail!(
                "layer {:?}: kernel, stride and dilation must be at least 1, got {}, {}, {}",
                self.name,
                self.kernel,
                self.stride,
                self.dilation
            );
        }
        if self.upsamples() && j % self.stride != 0 {
            bail!(
                "layer {:?} refines the grid by {} but the jump before it is {j}",
                self.name,
                self.stride
            );
        }
        let span = (self.kernel - 1) * self.dilation;
        Ok(match self.kind {
            LayerKind::Conv | LayerKind::Pool => (r + span * j, j * self.stride),
            LayerKind::TransposedConv => (r + span * (j / self.stride), j / self.stride),
            LayerKind::Unpool => (r, j / self.stride),
            LayerKind::Bilinear => (r + j, j / self.stride),
        })
    }
}

/// A layer with the jump and receptive field after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerField {
    #[serde(flatten)]
    pub layer: Layer,
    /// Cumulative stride after the layer (input pixels between neighbouring cells).
    pub jump: usize,
    /// Receptive field after the layer, in input pixels along one axis.
    pub receptive_field: usize,
}

/// A net's table: every layer, and the field and jump of its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceptiveField {
    pub layers: Vec<LayerField>,
    /// Receptive field of the last layer's output.
    pub receptive_field: usize,
    /// Cumulative stride of the last layer's output.
    pub jump: usize,
    /// The largest jump along the way: the stride of the coarsest grid the net
    /// computes on (4 after two 2x2 pools, even when a decoder returns to 1).
    pub coarsest_jump: usize,
}

impl ReceptiveField {
    /// The table as text, one layer a line (an upsampling stride reads `1/s`).
    pub fn to_text(&self) -> String {
        let row = |cells: [&str; 7]| {
            format!(
                "{:<12} {:>6} {:>6} {:>8} {:>7} {:>5} {:>6}\n",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
            )
        };
        let mut out = row([
            "layer", "kernel", "stride", "dilation", "padding", "jump", "field",
        ]);
        for l in &self.layers {
            let stride = if l.layer.upsamples() {
                format!("1/{}", l.layer.stride)
            } else {
                l.layer.stride.to_string()
            };
            out.push_str(&row([
                &l.layer.name,
                &l.layer.kernel.to_string(),
                &stride,
                &l.layer.dilation.to_string(),
                &l.layer.padding.to_string(),
                &l.jump.to_string(),
                &l.receptive_field.to_string(),
            ]));
        }
        out
    }
}

/// Runs the recurrence (see the module documentation) over `layers` from
/// `r = 1, j = 1`. An error names the layer whose kernel, stride or dilation is 0,
/// or whose upsampling factor does not divide the jump before it.
pub fn receptive_field_table(layers: &[Layer]) -> anyhow::Result<ReceptiveField> {
    let mut state = (1, 1);
    let mut rows = Vec::with_capacity(layers.len());
    for layer in layers {
        state = layer.apply(state)?;
        rows.push(LayerField {
            layer: layer.clone(),
            receptive_field: state.0,
            jump: state.1,
        });
    }
    let coarsest_jump = rows.iter().map(|l| l.jump).max().unwrap_or(1);
    Ok(ReceptiveField {
        layers: rows,
        receptive_field: state.0,
        jump: state.1,
        coarsest_jump,
    })
}
