//! Layers whose forward AND backward are right on CPU and CUDA.
//!
//! candle 0.11's own `max_pool2d`, `upsample_nearest2d` and `upsample_bilinear2d`
//! have wrong or missing gradients (see DESIGN.md, "candle 0.11 pitfalls"), so the
//! layers here are built from plain candle ops whose backward is right, and each is
//! checked against central finite differences ([`gradcheck`]) in `common/tests/nn_*.rs`.

pub mod batch_norm;
pub mod conv;
pub mod convolutionalize;
pub mod dihedral;
pub mod double_conv;
pub mod gradcheck;
pub mod ops;
pub mod pool;
pub mod receptive_field;
pub mod unpool;
pub mod upsample;

/// `max(0, x)` with PyTorch's zero gradient at 0: the one ReLU of the course.
pub use crate::kernels::relu;
pub use batch_norm::{batch_norm2d, is_batch_norm_buffer, BatchNorm2d, BatchNorm2dConfig};
pub use conv::{
    conv2d, conv_transpose2d, Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig,
};
pub use convolutionalize::{convolutionalize, convolutionalize_linear};
pub use dihedral::{dihedral_probabilities, flip, Dihedral};
pub use double_conv::{double_conv, double_conv_with_mid, DoubleConv};
pub use pool::max_pool2d;
pub use receptive_field::{receptive_field_table, Layer, LayerField, LayerKind, ReceptiveField};
pub use unpool::{max_pool2d_with_indices, max_unpool2d};
pub use upsample::{
    bilinear_matrix, linear_taps, resize_bilinear, resize_bilinear_by_matrices, upsample_nearest2d,
    LinearTap,
};
