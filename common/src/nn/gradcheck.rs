//! Gradient checking by central finite differences in f64, reused by every module
//! whose backward we rely on.
//!
//! For each element `i` the analytic gradient `a_i` (candle's backward) is compared
//! with the numeric one `n_i = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`. The
//! reported error is the maximum over `i` of
//!
//! ```text
//! err_i = |a_i - n_i| / max(|a_i| + |n_i|, 1e-2 * s, 1e-12),   s = max_j (|a_j| + |n_j|)
//! ```
//!
//! i.e. a relative error, with a floor at 1% of the largest gradient so that the
//! round-off noise of `n_i` (about 1e-10 with `eps = 1e-5`) on elements whose true
//! gradient is zero does not read as a 100% error. A wrong gradient (scaled,
//! missing, overwritten) gives errors of order 0.1 to 1; a right one, below 1e-6.
//! `eps = 1e-5` suits smooth functions of values of order 1; keep `eps` well below
//! the distance to any kink (ReLU at 0, ties of a max).

use candle::{bail, DType, Result, Tensor, Var};

/// Max relative error (see the module doc) between candle's gradient of the
/// scalar `f(x)` with respect to `x` and central differences. `x` must be f64.
pub fn check_gradient(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, eps: f64) -> Result<f64> {
    let errors = check_gradients(|xs: &[Tensor]| f(&xs[0]), std::slice::from_ref(x), eps)?;
    Ok(errors[0])
}

/// Like [`check_gradient`] for a function of several inputs: one max relative
/// error per input, in order.
pub fn check_gradients(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    xs: &[Tensor],
    eps: f64,
) -> Result<Vec<f64>> {
    let vars = xs
        .iter()
        .map(|x| {
            if x.dtype() != DType::F64 {
                bail!("gradcheck needs f64 inputs, got {:?}", x.dtype());
            }
            Var::from_tensor(&x.detach().copy()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    check_gradient_vars(|| f(&tensors), &vars, eps)
}

/// Checks the gradient of the scalar `f()` with respect to every element of each
/// variable in `vars` (layer parameters, say): one max relative error per
/// variable. The variables are perturbed in place with `Var::set` and restored.
pub fn check_gradient_vars(
    f: impl Fn() -> Result<Tensor>,
    vars: &[Var],
    eps: f64,
) -> Result<Vec<f64>> {
    if eps.is_nan() || eps <= 0.0 {
        bail!("gradcheck: eps must be positive, got {eps}");
    }
    for v in vars {
        if v.dtype() != DType::F64 {
            bail!("gradcheck needs f64 variables, got {:?}", v.dtype());
        }
    }
    let loss = f()?;
    if loss.elem_count() != 1 {
        bail!(
            "gradcheck: f must return a scalar, got shape {:?}",
            loss.dims()
        );
    }
    let grads = loss.backward()?;
    let eval = || -> Result<f64> { f()?.flatten_all()?.to_vec1::<f64>().map(|v| v[0]) };

    let mut errors = Vec::with_capacity(vars.len());
    for var in vars {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        };
        let original = var.as_tensor().detach().copy()?;
        let values = original.flatten_all()?.to_vec1::<f64>()?;
        let mut numeric = Vec::with_capacity(values.len());
        for i in 0..values.len() {
            let mut shifted = values.clone();
            shifted[i] = values[i] + eps;
            var.set(&Tensor::from_vec(
                shifted.clone(),
                var.shape(),
                var.device(),
            )?)?;
            let plus = eval()?;
            shifted[i] = values[i] - eps;
            var.set(&Tensor::from_vec(shifted, var.shape(), var.device())?)?;
            let minus = eval()?;
            numeric.push((plus - minus) / (2.0 * eps));
        }
        var.set(&original)?;
        errors.push(max_relative_error(&analytic, &numeric));
    }
    Ok(errors)
}

/// The error measure of the module doc over two gradient vectors.
pub fn max_relative_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    let scale = analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| a.abs() + n.abs())
        .fold(0.0, f64::max);
    analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| {
            let err = (a - n).abs() / (a.abs() + n.abs()).max(1e-2 * scale).max(1e-12);
            if err.is_nan() {
                f64::INFINITY
            } else {
                err
            }
        })
        .fold(0.0, f64::max)
}
