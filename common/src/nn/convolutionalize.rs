//! Turning fully connected layers into convolutions (Long, Shelhamer & Darrell 2015,
//! "Fully Convolutional Networks"): a Linear layer over a flattened `(C, k, k)`
//! feature map is a `k x k` convolution with the same numbers, so the classifier
//! slides over a larger image and yields a map of scores.

use super::conv::{Conv2d, ConvConfig};
use candle::{bail, Result, Tensor};

/// A `k x k` [`Conv2d`] (stride 1, no padding) equal to a Linear layer with
/// `weight (out, C*k*k)` and optional `bias (out)` applied to a `(C, k, k)` input
/// flattened in PyTorch order (C, then H, then W). A later Linear layer over a
/// plain vector is `in_shape = (in, 1, 1)`, giving a 1x1 convolution.
///
/// # Shapes
/// `weight (out, C*k*k) -> (out, C, k, k)`; the conv maps `(N, C, k, k) -> (N, out, 1, 1)`.
pub fn convolutionalize(
    weight: &Tensor,
    bias: Option<&Tensor>,
    in_shape: (usize, usize, usize),
) -> Result<Conv2d> {
    let (c, kh, kw) = in_shape;
    let (out, n_in) = match weight.dims() {
        &[out, n_in] => (out, n_in),
        dims => bail!("convolutionalize: the Linear weight must be (out, in), got shape {dims:?}"),
    };
    if kh != kw {
        bail!("convolutionalize: input shape {in_shape:?} is not square");
    }
    if n_in != c * kh * kw {
        bail!(
            "convolutionalize: the Linear layer takes {n_in} inputs but the input shape {in_shape:?} has {}",
            c * kh * kw
        );
    }
    // BEGIN SOLUTION a1.convolutionalize reshape the Linear weight into a k x k kernel (PyTorch flattens C, then H, then W)
    // (out, C*k*k) -> (out, C, k, k): row-major reshape = PyTorch's flatten order.
    let conv_weight = weight.reshape((out, c, kh, kw))?;
    let config = ConvConfig {
        bias: bias.is_some(),
        ..Default::default()
    };
    Conv2d::new(conv_weight, bias.cloned(), config)
    // END SOLUTION
}

/// [`convolutionalize`] for a `candle_nn::Linear`.
pub fn convolutionalize_linear(
    linear: &candle_nn::Linear,
    in_shape: (usize, usize, usize),
) -> Result<Conv2d> {
    convolutionalize(linear.weight(), linear.bias(), in_shape)
}
