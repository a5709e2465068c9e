//! Pixel-wise losses for semantic segmentation: cross-entropy with an ignore label
//! and class weights (as PyTorch `F.cross_entropy`) or a weight per pixel (the
//! U-Net paper's weight map), soft Dice (Milletari et al. 2016, V-Net), and their sum.
//!
//! All take logits `(N, K, H, W)` (f32 or f64) and targets `(N, H, W)` of class
//! indices (u32; u8 and i64 are accepted too), where 255 marks a pixel to ignore.

use crate::data::IGNORE_LABEL;
use candle::{bail, DType, Result, Tensor, D};

/// Checks shapes and labels; returns `(K, targets as u32, valid mask (N, H, W) u8)`.
fn prepare(logits: &Tensor, targets: &Tensor, what: &str) -> Result<(usize, Tensor, Tensor)> {
    let (n, k, h, w) = match logits.dims() {
        &[n, k, h, w] => (n, k, h, w),
        dims => bail!("{what}: logits must be (N, K, H, W), got shape {dims:?}"),
    };
    if !matches!(
        logits.dtype(),
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    ) {
        bail!(
            "{what}: logits must be floating point, got {:?}",
            logits.dtype()
        );
    }
    if targets.dims() != [n, h, w] {
        bail!(
            "{what}: targets must be (N, H, W) = {:?} to match logits {:?}, got {:?}",
            [n, h, w],
            logits.dims(),
            targets.dims()
        );
    }
    let targets = match targets.dtype() {
        DType::U32 => targets.clone(),
        DType::U8 | DType::I64 => targets.to_dtype(DType::U32)?,
        dtype => bail!("{what}: targets must be integer class indices (u32), got {dtype:?}"),
    };
    let ignore = f64::from(IGNORE_LABEL);
    let valid = targets.ne(ignore)?; // (N, H, W) u8
                                     // Largest label that is not ignored: one host sync to refuse bad labels clearly.
    let max_label = valid
        .where_cond(&targets, &targets.zeros_like()?)?
        .flatten_all()?
        .max(0)?
        .to_scalar::<u32>()?;
    if max_label as usize >= k {
        bail!("{what}: target label {max_label} is out of range for {k} classes (255 = ignore)");
    }
    Ok((k, targets, valid))
}

/// Pixel-wise cross-entropy, reduced like PyTorch
/// `F.cross_entropy(logits, targets, weight=weights, ignore_index=255)`:
/// `Σ w[y] · (-log softmax(logits)[y]) / Σ w[y]` over the pixels whose label is
/// not 255 (without weights, the mean over those pixels).
///
/// When every pixel is ignored (or their weights sum to 0) PyTorch returns NaN;
/// this returns 0 with a zero gradient instead, so a fully ignored crop does not
/// poison training.
///
/// # Shapes
/// `logits (N, K, H, W)`, `targets (N, H, W)`, `weights (K)` -> scalar
pub fn pixel_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let what = "pixel_cross_entropy";
    let (k, targets, valid) = prepare(logits, targets, what)?;
    // BEGIN SOLUTION a2.cross_entropy -log softmax at the label, weighted, averaged over the pixels not labelled 255 (0 when none)
    // Ignored pixels read class 0; their term is masked out below.
    let safe = valid.where_cond(&targets, &targets.zeros_like()?)?; // (N, H, W) u32
                                                                    // (N, K, H, W) -> (N, 1, H, W) -> (N, H, W)
    let log_p = candle_nn::ops::log_softmax(logits, 1)?;
    let nll = log_p.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let valid = valid.to_dtype(logits.dtype())?;
    let pixel_weights = match weights {
        Some(weights) => {
            if weights.dims() != [k] {
                bail!(
                    "{what}: class weights must have shape [{k}], got {:?}",
                    weights.dims()
                );
            }
            let weights = weights.to_dtype(logits.dtype())?;
            // (K) indexed by (N*H*W) labels -> (N, H, W)
            let per_pixel = weights
                .index_select(&safe.flatten_all()?, 0)?
                .reshape(safe.shape())?;
            (per_pixel * &valid)?
        }
        None => valid,
    };
    let total = (nll * &pixel_weights)?.sum_all()?;
    let denominator = pixel_weights.sum_all()?;
    // A zero denominator means a zero numerator too: 0 / 1 = 0.
    let denominator = denominator
        .eq(0.0)?
        .where_cond(&denominator.ones_like()?, &denominator)?;
    total / denominator
    // END SOLUTION
}

/// Pixel-wise cross-entropy with one weight per pixel, the U-Net paper's eq. 1
/// with its weight map `w(x)`: `Σ w(x) · (-log softmax(logits)[y(x)]) / Σ w(x)` over
/// the pixels not labelled 255 (weights of ignored pixels do not count); 0 with a
/// zero gradient when those weights sum to 0. With `w(x)` the class weight of
/// `y(x)` it equals [`pixel_cross_entropy`] with those class weights.
///
/// # Shapes
/// `logits (N, K, H, W)`, `targets (N, H, W)`, `pixel_weights (N, H, W)` -> scalar
pub fn pixel_cross_entropy_weighted(
    logits: &Tensor,
    targets: &Tensor,
    pixel_weights: &Tensor,
) -> Result<Tensor> {
    let what = "pixel_cross_entropy_weighted";
    let (_, targets, valid) = prepare(logits, targets, what)?;
    if pixel_weights.dims() != targets.dims() {
        bail!(
            "{what}: pixel weights must be (N, H, W) = {:?}, got {:?}",
            targets.dims(),
            pixel_weights.dims()
        );
    }
    // BEGIN SOLUTION a4.weighted_cross_entropy -log softmax at the label times the pixel's weight, summed over the pixels not labelled 255, divided by their weights' sum (0 when it is 0)
    let dtype = logits.dtype();
    let safe = valid.where_cond(&targets, &targets.zeros_like()?)?; // (N, H, W) u32
    let log_p = candle_nn::ops::log_softmax(logits, 1)?; // (N, K, H, W)
    let nll = log_p.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?; // (N, H, W)
    let weights = (pixel_weights.to_dtype(dtype)? * valid.to_dtype(dtype)?)?;
    let total = (nll * &weights)?.sum_all()?;
    let weight_sum = weights.sum_all()?;
    let weight_sum = weight_sum
        .eq(0.0)?
        .where_cond(&weight_sum.ones_like()?, &weight_sum)?;
    total / weight_sum
    // END SOLUTION
}

/// Soft Dice loss `1 - (1/K) Σ_k (2 Σ y ŷ + ε) / (Σ y + Σ ŷ + ε)`, with `ŷ` the
/// softmax probabilities, `y` the one-hot targets, sums over all pixels of the
/// batch (not per image), pixels labelled 255 left out of every sum, and every
/// class (also background) in the mean. `eps` (ε) smooths the ratio; 1 is the
/// usual value ([`ce_dice_loss`] uses it): a class absent from both targets and
/// predictions then scores 1, not 0/0.
///
/// # Shapes
/// `logits (N, K, H, W)`, `targets (N, H, W)` -> scalar
pub fn dice_loss(logits: &Tensor, targets: &Tensor, eps: f64) -> Result<Tensor> {
    let what = "dice_loss";
    if eps.is_nan() || eps < 0.0 {
        bail!("{what}: eps must be non-negative, got {eps}");
    }
    let (k, targets, valid) = prepare(logits, targets, what)?;
    // BEGIN SOLUTION a4.dice softmax probabilities against one-hot targets, ignored pixels out of every sum, mean over classes
    let dtype = logits.dtype();
    let probs = candle_nn::ops::softmax(logits, 1)?; // (N, K, H, W)
                                                     // (N, H, W) -> (N, 1, H, W)
    let valid = valid.to_dtype(dtype)?.unsqueeze(1)?;
    let probs = probs.broadcast_mul(&valid)?;
    // One-hot: (1, K, 1, 1) == (N, 1, H, W) -> (N, K, H, W); label 255 matches no class.
    let classes = Tensor::arange(0u32, k as u32, logits.device())?.reshape((1, k, 1, 1))?;
    let one_hot = classes
        .broadcast_eq(&targets.unsqueeze(1)?)?
        .to_dtype(dtype)?;
    // Sums over (N, H, W) per class: (N, K, H, W) -> (K)
    let per_class =
        |t: &Tensor| -> Result<Tensor> { t.transpose(0, 1)?.flatten_from(1)?.sum(D::Minus1) };
    let intersection = per_class(&(&probs * &one_hot)?)?;
    let target_sum = per_class(&one_hot)?;
    let prob_sum = per_class(&probs)?;
    let dice = ((intersection * 2.0)? + eps)?.div(&((target_sum + prob_sum)? + eps)?)?;
    dice.mean_all()?.affine(-1.0, 1.0)
    // END SOLUTION
}

/// Cross-entropy plus soft Dice (ε = 1): `pixel_cross_entropy(logits, targets,
/// weights) + dice_loss(logits, targets, 1.0)`.
pub fn ce_dice_loss(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    pixel_cross_entropy(logits, targets, weights)? + dice_loss(logits, targets, 1.0)?
}
