//! Reading candle CPU storages inside the custom ops: the contiguous slice of an operand,
//! with its shape checked, and the f32/f64 dispatch of one- and two-operand kernels.

use candle::backend::BackendStorage;
use candle::{CpuStorage, Layout, Shape, WithDType};

/// The contiguous slice of a storage, or an error naming the op and the operand.
pub(crate) fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> candle::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle::bail!("{op}: {what} must be contiguous"),
    }
}

/// [`contiguous`], after checking that the operand has the `expected` shape.
pub(crate) fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    expected: &Shape,
    op: &str,
    what: &str,
) -> candle::Result<&'a [T]> {
    if l.shape() != expected {
        candle::bail!(
            "{op}: {what} has shape {:?}, expected {expected:?}",
            l.shape()
        )
    }
    contiguous(s, l, op, what)
}

/// Runs a kernel on one CPU storage of shape `shape` and float dtype (f32 or f64).
pub(crate) fn run1(
    op: &str,
    (s, l, shape): (&CpuStorage, &Layout, &Shape),
    f32_kernel: impl Fn(&[f32]) -> Vec<f32>,
    f64_kernel: impl Fn(&[f64]) -> Vec<f64>,
) -> candle::Result<CpuStorage> {
    Ok(match s {
        CpuStorage::F32(_) => CpuStorage::F32(f32_kernel(slice(s, l, shape, op, "input")?)),
        CpuStorage::F64(_) => CpuStorage::F64(f64_kernel(slice(s, l, shape, op, "input")?)),
        other => candle::bail!("{op}: needs f32 or f64, got {:?}", other.dtype()),
    })
}

/// Runs a kernel on two CPU storages of the same float dtype (f32 or f64).
pub(crate) fn run2(
    op: &str,
    (s1, l1, shape1): (&CpuStorage, &Layout, Shape),
    (s2, l2, shape2): (&CpuStorage, &Layout, Shape),
    f32_kernel: impl Fn(&[f32], &[f32]) -> candle::Result<Vec<f32>>,
    f64_kernel: impl Fn(&[f64], &[f64]) -> candle::Result<Vec<f64>>,
) -> candle::Result<CpuStorage> {
    match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => {
            let a = slice::<f32>(s1, l1, &shape1, op, "first operand")?;
            let b = slice::<f32>(s2, l2, &shape2, op, "second operand")?;
            Ok(CpuStorage::F32(f32_kernel(a, b)?))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_)) => {
            let a = slice::<f64>(s1, l1, &shape1, op, "first operand")?;
            let b = slice::<f64>(s2, l2, &shape2, op, "second operand")?;
            Ok(CpuStorage::F64(f64_kernel(a, b)?))
        }
        _ => candle::bail!(
            "{op}: needs two f32 or two f64 tensors, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    }
}
