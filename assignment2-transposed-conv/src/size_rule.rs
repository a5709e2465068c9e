//! The size arithmetic of the lecture's slides: how many rows (or columns) a
//! convolution and a transposed convolution give along one axis. The decoders of
//! [`crate::model`] are chosen so that these rules undo the encoder's pools exactly.

/// Output size of a transposed convolution along one axis, the rule the slides
/// teach: `(in - 1) * stride - 2 * padding + kernel + output_padding`, or `None`
/// when that is not positive.
pub fn transposed_out_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Option<usize> {
    // BEGIN SOLUTION a2.size_rule the slides' rule along one axis; None for an empty input or a size that is not positive
    let full = (input.checked_sub(1)?) * stride + kernel + output_padding;
    full.checked_sub(2 * padding).filter(|&size| size > 0)
    // END SOLUTION
}

/// Output size of a convolution along one axis: `floor((in + 2p - k) / s) + 1`,
/// or `None` when the kernel does not fit.
pub fn conv_out_size(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input + 2 * padding;
    (stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}
