//! The training loop: a small conv net learns the lecture's 38 patch/mask pairs,
//! a resumed run repeats an uninterrupted one, and a NaN loss stops the run.

use std::path::Path;
use std::sync::Arc;

use candle::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::checkpoint::load_checkpoint;
use common::data::loader::{Batch, Loader, LoaderConfig};
use common::data::pairs::{MaskFormat, PairsDataset};
use common::data::synthetic::{synthetic_dataset, SyntheticConfig};
use common::data::transforms::hflip_transform;
use common::data::{shared_data_set, Dataset, InMemoryDataset};
use common::init::seeded_var_builder;
use common::loss::pixel_cross_entropy;
use common::metrics::ConfusionMatrix;
use common::nn::{conv2d, Conv2d, ConvConfig};
use common::optim::{param_group, Adam, AdamConfig};
use common::run_dir::{RunDir, CHECKPOINT_FILE, LOSS_PNG};
use common::schedule::{LrSchedule, ScheduleKind};
use common::train::{fit, History, TrainConfig, Validation};

/// conv 3x3 (3 -> 16) + ReLU, conv 3x3 (16 -> 16) + ReLU, conv 1x1 (16 -> K): a
/// tiny fully convolutional net that keeps the input's size.
struct TinyNet {
    conv1: Conv2d,
    conv2: Conv2d,
    head: Conv2d,
}

impl TinyNet {
    fn new(n_classes: usize, vb: VarBuilder) -> candle::Result<Self> {
        let same = ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv1: conv2d(3, 16, 3, same, vb.pp("conv1"))?,
            conv2: conv2d(16, 16, 3, same, vb.pp("conv2"))?,
            head: conv2d(16, n_classes, 1, ConvConfig::default(), vb.pp("head"))?,
        })
    }
}

impl Module for TinyNet {
    /// # Shapes
    /// `(N, 3, H, W) -> (N, K, H, W)`
    fn forward(&self, xs: &Tensor) -> candle::Result<Tensor> {
        let xs = self.conv1.forward(xs)?.relu()?;
        let xs = self.conv2.forward(&xs)?.relu()?;
        self.head.forward(&xs)
    }
}

struct Run {
    varmap: VarMap,
    model: TinyNet,
    optimizer: Adam,
}

fn new_run(n_classes: usize, seed: u64) -> anyhow::Result<Run> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    let model = TinyNet::new(n_classes, vb)?;
    let group = param_group("all", &varmap, None, 1.0);
    let optimizer = Adam::new(vec![group], AdamConfig::adam(0.01))?;
    Ok(Run {
        varmap,
        model,
        optimizer,
    })
}

fn config(out_dir: &Path, epochs: usize, steps_per_epoch: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        run_dir: RunDir::create_empty(out_dir).expect("test run folder"),
        seed: 3,
        schedule: LrSchedule::new(
            0.01,
            ScheduleKind::Cosine { min_lr: 0.001 },
            epochs * steps_per_epoch,
        ),
        resume: false,
        title: "tiny net".into(),
        run_config: serde_json::json!({ "test": true }),
        progress: false,
    }
}

/// Pixel accuracy of `model` over every sample of `dataset`.
fn pixel_accuracy(model: &TinyNet, dataset: Arc<dyn Dataset>) -> anyhow::Result<f64> {
    let n_classes = dataset.n_classes();
    let loader = Loader::new(
        dataset,
        LoaderConfig {
            batch_size: 16,
            ..Default::default()
        },
    );
    let mut cm = ConfusionMatrix::new(n_classes);
    for batch in loader.epoch(0, &Device::Cpu) {
        let batch = batch?;
        let prediction = model.forward(&batch.images)?.argmax(1)?;
        cm.update_tensors(&prediction, &batch.masks)?;
    }
    Ok(cm.pixel_accuracy())
}

/// Trains the tiny net on `dataset` and checks that the loss fell and the pixel
/// accuracy on the training set reached `min_accuracy`.
fn learns(dataset: Arc<dyn Dataset>, epochs: usize, min_accuracy: f64) -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let mut run = new_run(dataset.n_classes(), 1)?;
    let loader = Loader::new(
        dataset.clone(),
        LoaderConfig {
            batch_size: 8,
            shuffle: true,
            drop_last: false,
            seed: 3,
        },
    )
    .with_transform(hflip_transform(0.5)?);
    let cfg = config(out.path(), epochs, loader.batches_per_epoch());
    let model = &run.model;
    let history = fit(
        &cfg,
        &run.varmap,
        &mut run.optimizer,
        &loader,
        &Device::Cpu,
        |batch: &Batch| pixel_cross_entropy(&model.forward(&batch.images)?, &batch.masks, None),
        |_| Ok(None),
    )?;
    let first = history.epochs[0].train_loss;
    let last = history.last_train_loss().unwrap_or(f64::NAN);
    assert!(last < 0.7 * first, "loss fell only from {first} to {last}");
    let accuracy = pixel_accuracy(&run.model, dataset)?;
    assert!(
        accuracy >= min_accuracy,
        "pixel accuracy {accuracy:.3} below {min_accuracy} (loss {first:.3} -> {last:.3})"
    );
    assert!(out.path().join(LOSS_PNG).is_file());
    assert!(out.path().join(CHECKPOINT_FILE).is_file());
    Ok(())
}

#[test]
fn learns_the_lecture_patches() -> anyhow::Result<()> {
    let Some(root) = shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let dataset = PairsDataset::open(
        &root.join("TrainingImages"),
        &root.join("TrainingLabels"),
        MaskFormat::Grey { threshold: 128 },
        vec!["background".into(), "flower".into()],
    )?;
    assert_eq!(dataset.len(), 38);
    // Decode the 38 JPEG pairs once instead of every epoch.
    let in_memory = InMemoryDataset {
        samples: (0..dataset.len())
            .map(|i| dataset.get(i))
            .collect::<anyhow::Result<_>>()?,
        class_names: dataset.class_names().to_vec(),
    };
    learns(Arc::new(in_memory), 25, 0.90)
}

#[test]
fn learns_generated_shapes() -> anyhow::Result<()> {
    let dataset = synthetic_dataset(&SyntheticConfig {
        n_samples: 24,
        height: 32,
        width: 32,
        n_classes: 2,
        seed: 5,
    });
    learns(Arc::new(dataset), 25, 0.90)
}

fn small_set() -> Arc<dyn Dataset> {
    Arc::new(synthetic_dataset(&SyntheticConfig {
        n_samples: 12,
        height: 16,
        width: 16,
        n_classes: 3,
        seed: 9,
    }))
}

/// Trains up to `epochs`, stopping (as a killed run would) after `stop_after`
/// epochs when given, and returns the history.
fn train_epochs(out: &Path, epochs: usize, resume: bool) -> anyhow::Result<History> {
    let dataset = small_set();
    let mut run = new_run(dataset.n_classes(), 11)?;
    let loader = Loader::new(
        dataset,
        LoaderConfig {
            batch_size: 4,
            shuffle: true,
            drop_last: false,
            seed: 3,
        },
    )
    .with_transform(hflip_transform(0.5)?);
    // The schedule always spans the whole 4-epoch run, as a real resumed run's config would.
    let mut cfg = config(out, 4, loader.batches_per_epoch());
    cfg.epochs = epochs;
    cfg.resume = resume;
    let model = &run.model;
    fit(
        &cfg,
        &run.varmap,
        &mut run.optimizer,
        &loader,
        &Device::Cpu,
        |batch: &Batch| pixel_cross_entropy(&model.forward(&batch.images)?, &batch.masks, None),
        |epoch| {
            Ok(Some(Validation {
                loss: None,
                metric: Some(("epoch".into(), epoch as f64)),
            }))
        },
    )
}

#[test]
fn resumed_run_repeats_the_uninterrupted_run() -> anyhow::Result<()> {
    let whole_dir = tempfile::tempdir()?;
    let whole = train_epochs(whole_dir.path(), 4, false)?;

    let split_dir = tempfile::tempdir()?;
    let first_half = train_epochs(split_dir.path(), 2, false)?;
    assert_eq!(first_half.epochs.len(), 2);
    // A fresh process: new model and optimiser (other seed, so nothing is shared but
    // the checkpoint), resumed from the checkpoint written after epoch 2.
    let resumed = train_epochs(split_dir.path(), 4, true)?;
    assert_eq!(resumed.epochs.len(), 4);

    let expected = whole.step_losses();
    let got = resumed.step_losses();
    assert_eq!(expected.len(), got.len());
    for (step, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "step {step}: uninterrupted loss {a}, resumed loss {b}"
        );
    }
    // The later epochs really trained (the losses changed after the resume point).
    assert_ne!(got[got.len() - 1], got[got.len() / 2]);
    Ok(())
}

#[test]
fn nan_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let dataset = small_set();
    let mut run = new_run(dataset.n_classes(), 2)?;
    let loader = Loader::new(
        dataset,
        LoaderConfig {
            batch_size: 4,
            ..Default::default()
        },
    );
    let cfg = config(out.path(), 3, loader.batches_per_epoch());
    let model = &run.model;
    let mut calls = 0usize;
    // 3 batches per epoch: call 5 is epoch 2, step 2.
    let result = fit(
        &cfg,
        &run.varmap,
        &mut run.optimizer,
        &loader,
        &Device::Cpu,
        |batch: &Batch| {
            calls += 1;
            let loss = pixel_cross_entropy(&model.forward(&batch.images)?, &batch.masks, None)?;
            if calls == 5 {
                loss.affine(f64::NAN, 0.0)
            } else {
                Ok(loss)
            }
        },
        |_| Ok(None),
    );
    let message = format!("{:#}", result.expect_err("a NaN loss must stop the run"));
    assert!(message.contains("epoch 2 step 2"), "{message}");
    assert!(message.contains("NaN"), "{message}");
    let checkpoint = load_checkpoint(&out.path().join(CHECKPOINT_FILE), &Device::Cpu)?;
    assert_eq!(checkpoint.meta.epoch, 1);
    assert_eq!(History::load(&RunDir::open(out.path())?)?.epochs.len(), 1);
    Ok(())
}
