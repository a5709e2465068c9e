//! How scores become masks (`predict::classify`, `Readout`): the membrane threshold on
//! two-class sets against hand-computed probabilities, the argmax elsewhere, and the
//! flag's checks and its default for runs saved before it.

use anyhow::Result;
use assignment4_unet::config::Config;
use assignment4_unet::predict::{classify, HeldBack};
use candle::{Device, Tensor};

/// Logits `(1, 2, 1, 3)` whose membrane probabilities are 0.2, 0.4 and 0.7.
fn two_class_logits() -> Result<Tensor> {
    let membrane = [0.2f32, 0.4, 0.7];
    // softmax([l, 0])[0] = p  <=>  l = ln(p / (1 - p))
    let l0: Vec<f32> = membrane.iter().map(|p| (p / (1.0 - p)).ln()).collect();
    let mut values = l0;
    values.extend([0.0f32; 3]);
    Ok(Tensor::from_vec(values, (1, 2, 1, 3), &Device::Cpu)?)
}

fn classes(scores: &Tensor, threshold: f64) -> Result<Vec<u32>> {
    Ok(classify(scores, threshold)?
        .flatten_all()?
        .to_vec1::<u32>()?)
}

#[test]
fn membrane_threshold_calls_membrane_from_its_probability() -> Result<()> {
    let logits = two_class_logits()?;
    assert_eq!(classes(&logits, 0.5)?, [1, 1, 0], "0.5: only p = 0.7");
    assert_eq!(classes(&logits, 0.35)?, [1, 0, 0], "0.35: p = 0.4 and 0.7");
    assert_eq!(classes(&logits, 0.1)?, [0, 0, 0]);
    assert_eq!(classes(&logits, 0.8)?, [1, 1, 1]);
    // Log-probabilities (what the eight test-time views give) read the same.
    let log_probs = candle_nn::ops::log_softmax(&logits, 1)?;
    assert_eq!(classes(&log_probs, 0.35)?, [1, 0, 0]);
    Ok(())
}

#[test]
fn half_is_the_argmax_and_more_classes_take_the_argmax() -> Result<()> {
    let two = Tensor::randn(0f32, 3.0, (2, 2, 8, 8), &Device::Cpu)?;
    assert_eq!(
        classes(&two, 0.5)?,
        two.argmax(1)?.flatten_all()?.to_vec1::<u32>()?
    );
    let three = Tensor::randn(0f32, 3.0, (2, 3, 8, 8), &Device::Cpu)?;
    let argmax = three.argmax(1)?.flatten_all()?.to_vec1::<u32>()?;
    assert_eq!(
        classes(&three, 0.2)?,
        argmax,
        "the threshold is for two classes"
    );
    assert!(argmax.contains(&2));
    Ok(())
}

#[test]
fn thresholds_outside_zero_one_are_refused_by_name() {
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        let cfg = Config {
            membrane_threshold: bad,
            ..Config::default()
        };
        let err = cfg
            .check()
            .expect_err("accepted a bad threshold")
            .to_string();
        assert!(err.contains("--membrane-threshold"), "{err}");
    }
    assert!(Config::default().check().is_ok());
}

#[test]
fn runs_saved_before_the_flag_read_back_the_argmax() -> Result<()> {
    let old: HeldBack = serde_json::from_str(r#"{"n_val": 5, "seed": 0, "tta": true}"#)?;
    assert_eq!(old.membrane_threshold, 0.5);
    let new: HeldBack = serde_json::from_value(serde_json::json!({
        "n_val": 5, "seed": 0, "membrane_threshold": Config::default().membrane_threshold,
    }))?;
    assert_eq!(new.membrane_threshold, Config::default().membrane_threshold);
    Ok(())
}
