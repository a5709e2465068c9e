//! Receptive fields by the standard recurrence (the lecture's "how big should this
//! patch be?"): along one axis, a layer of kernel `k`, stride `s` and dilation `d`
//! on features of jump (cumulative stride) `j_in` and receptive field `r_in` gives
//!
//! ```text
//! r_out = r_in + (k - 1) * d * j_in,    j_out = j_in * s
//! ```
//!
//! starting from `r = 1, j = 1` at the input. Upsampling layers (transposed
//! convolutions, unpooling, bilinear resizes) are not in the recurrence: they are
//! listed with their own factor only as far as they change the jump (`j / s`); the
//! field of a decoder's output is the field of the coarse features it reads,
//! grown by its kernels at the jump it works at.

use serde::{Deserialize, Serialize};

/// One layer, as the recurrence sees it (square kernels, same on both axes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub padding: usize,
    /// `true` for an upsampling layer of factor `stride` (the jump divides by it).
    #[serde(default)]
    pub upsample: bool,
}

impl Layer {
    /// A convolution (or pool) of kernel `k`, stride `s`, dilation `d`, padding `p`.
    pub fn conv(name: &str, k: usize, s: usize, d: usize, p: usize) -> Self {
        Self {
            name: name.to_owned(),
            kernel: k,
            stride: s,
            dilation: d,
            padding: p,
            upsample: false,
        }
    }

    /// A `k x k` max pool of stride `k`, no padding.
    pub fn pool(name: &str, k: usize) -> Self {
        Self::conv(name, k, k, 1, 0)
    }

    /// An upsampling of factor `factor` whose own kernel is `k` at the OUTPUT
    /// resolution (a transposed convolution: `k` taps spaced `j_out` apart; a
    /// bilinear resize or unpooling: `k = 1`, no field of its own).
    pub fn upsample(name: &str, k: usize, factor: usize, p: usize) -> Self {
        Self {
            name: name.to_owned(),
            kernel: k,
            stride: factor,
            dilation: 1,
            padding: p,
            upsample: true,
        }
    }
}

/// A layer with the jump and receptive field after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerField {
    #[serde(flatten)]
    pub layer: Layer,
    /// Cumulative stride after the layer (input pixels between neighbouring outputs).
    pub jump: usize,
    /// Receptive field after the layer, in input pixels.
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
}

impl ReceptiveField {
    /// The table as text, one layer a line.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{:<14} {:>6} {:>6} {:>8} {:>7} {:>5} {:>6}\n",
            "layer", "kernel", "stride", "dilation", "padding", "jump", "field"
        );
        for l in &self.layers {
            let stride = if l.layer.upsample {
                format!("1/{}", l.layer.stride)
            } else {
                l.layer.stride.to_string()
            };
            out.push_str(&format!(
                "{:<14} {:>6} {:>6} {:>8} {:>7} {:>5} {:>6}\n",
                l.layer.name,
                l.layer.kernel,
                stride,
                l.layer.dilation,
                l.layer.padding,
                l.jump,
                l.receptive_field
            ));
        }
        out
    }
}

/// Runs the recurrence over `layers` from `r = 1, j = 1`.
///
/// Upsampling layers first divide the jump by their factor (integer: the factor
/// must divide it, else the jump stays at least 1), then add their kernel at the
/// new jump: `r += (k - 1) * j_out`.
pub fn receptive_field_table(layers: &[Layer]) -> ReceptiveField {
    let (mut r, mut j) = (1usize, 1usize);
    let layers = layers
        .iter()
        .map(|layer| {
            if layer.upsample {
                j = (j / layer.stride.max(1)).max(1);
                r += (layer.kernel.max(1) - 1) * layer.dilation * j;
            } else {
                r += (layer.kernel.max(1) - 1) * layer.dilation * j;
                j *= layer.stride;
            }
            LayerField {
                layer: layer.clone(),
                jump: j,
                receptive_field: r,
            }
        })
        .collect();
    ReceptiveField {
        layers,
        receptive_field: r,
        jump: j,
    }
}
