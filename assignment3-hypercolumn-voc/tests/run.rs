//! End-to-end runs: the whole pipeline on a generated VOC-layout set with a
//! random VGG11 (always), and on a few real CamVid images with the shared VGG16
//! (when present); both must learn and write every output.

use std::path::Path;

use anyhow::Result;
use assignment3_hypercolumn_voc::data::write_generated_voc;
use assignment3_hypercolumn_voc::model::{Arch, Backbone};
use assignment3_hypercolumn_voc::run::{parse_size, run, RunConfig, RunSummary};
use candle::Device;

fn check_outputs(out: &Path, summary: &RunSummary) -> Result<()> {
    for file in [
        "config.json",
        "metrics.json",
        "history.json",
        "history.csv",
        "loss.png",
        "confusion.png",
        "checkpoint.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert!(std::fs::read_dir(out.join("predictions"))?.count() >= 2);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json"))?)?;
    for key in [
        "pixel_accuracy",
        "mean_accuracy",
        "mean_iou",
        "fw_iou",
        "per_class_iou",
        "n_sampled_features",
        "feature_dim",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json lacks {key}");
    }
    assert_eq!(metrics["feature_dim"], 1472);
    assert_eq!(metrics["n_sampled_features"], summary.n_sampled_features);
    assert_eq!(
        metrics["per_class_iou"].as_object().map(|m| m.len()),
        Some(summary.class_names.len())
    );
    // Both phases learn: the training loss falls.
    for history in [&summary.head_history, &summary.finetune_history] {
        let first = history
            .epochs
            .first()
            .map(|e| e.train_loss)
            .unwrap_or(f64::NAN);
        let last = history.last_train_loss().unwrap_or(f64::NAN);
        assert!(last < first, "train loss went from {first} to {last}");
    }
    let checkpoint =
        common::checkpoint::load_checkpoint(&out.join("checkpoint.safetensors"), &Device::Cpu)?;
    for key in ["fc1.weight", "fc3.bias", "norm.mean", "norm.std"] {
        assert!(checkpoint.model.contains_key(key), "checkpoint lacks {key}");
    }
    Ok(())
}

#[test]
fn whole_pipeline_on_generated_data_with_random_vgg11() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("generated");
    write_generated_voc(&data, 0)?;
    let weights = dir.path().join("vgg11-random.safetensors");
    Backbone::random(Arch::Vgg11, 5, &Device::Cpu)?.save(&weights)?;
    let cfg = RunConfig {
        data_dir: Some(data),
        weights: Some(weights),
        out: dir.path().join("out"),
        cache_dir: dir.path().join("cache"),
        head_epochs: 15,
        finetune_epochs: 2,
        input_size: (48, 64),
        hidden: 32,
        n_panels: 2,
        progress: false,
        ..RunConfig::default()
    };
    let summary = run(&cfg)?;
    assert_eq!(summary.arch, Arch::Vgg11);
    check_outputs(&cfg.out, &summary)?;
    // 48 images with 1..3 shapes (background + 5 classes), up to 3 pixels each per class.
    assert!(
        summary.n_sampled_features > 48 * 3 * 2,
        "{}",
        summary.n_sampled_features
    );
    assert!(summary.n_sampled_features <= 48 * 3 * 6);
    eprintln!(
        "generated: mIoU {:.3}, pixel accuracy {:.3}",
        summary.mean_iou, summary.pixel_accuracy
    );
    assert!(
        summary.pixel_accuracy > 0.8,
        "pixel accuracy {}",
        summary.pixel_accuracy
    );
    assert!(summary.mean_iou > 0.3, "mIoU {}", summary.mean_iou);

    // A second run with the same settings reuses the sampled features.
    let again = RunConfig {
        out: dir.path().join("again"),
        finetune_epochs: 0,
        head_epochs: 2,
        ..cfg.clone()
    };
    let second = run(&again)?;
    assert_eq!(second.n_sampled_features, summary.n_sampled_features);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.out.join("metrics.json"))?)?;
    assert!(
        metrics["timings"].get("train_extraction_s").is_none(),
        "train images were read again"
    );
    Ok(())
}

/// A small VOC-layout copy of CamVid: every `step_train`-th train and every
/// `step_val`-th val image (spread over the sequences, not consecutive frames).
fn camvid_subset(source: &Path, root: &Path, step_train: usize, step_val: usize) -> Result<()> {
    for folder in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"] {
        std::fs::create_dir_all(root.join(folder))?;
    }
    std::fs::copy(source.join("classes.txt"), root.join("classes.txt"))?;
    for (split, step) in [("train", step_train), ("val", step_val)] {
        let list =
            std::fs::read_to_string(source.join(format!("ImageSets/Segmentation/{split}.txt")))?;
        let ids: Vec<&str> = list
            .lines()
            .filter(|l| !l.trim().is_empty())
            .step_by(step)
            .collect();
        for id in &ids {
            for (folder, ext) in [("JPEGImages", "jpg"), ("SegmentationClass", "png")] {
                let name = format!("{folder}/{id}.{ext}");
                std::fs::copy(source.join(&name), root.join(&name))?;
            }
        }
        std::fs::write(
            root.join(format!("ImageSets/Segmentation/{split}.txt")),
            ids.join("\n"),
        )?;
    }
    Ok(())
}

#[test]
fn short_real_camvid_run_learns() -> Result<()> {
    let Some(camvid) = common::data::shared_data_set("camvid-voc") else {
        return Ok(());
    };
    let Some(weights) = common::weights::shared_weights_dir()
        .map(|d| d.join("vgg16-hed-bsds500.safetensors"))
        .filter(|p| p.is_file())
    else {
        eprintln!("skipped: shared VGG16 weights not found");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("camvid-subset");
    // 367 / 30 -> 13 train images, 101 / 20 -> 6 val images.
    camvid_subset(&camvid, &data, 30, 20)?;
    let cfg = RunConfig {
        data_dir: Some(data),
        weights: Some(weights),
        out: dir.path().join("out"),
        cache_dir: dir.path().join("cache"),
        head_epochs: 20,
        finetune_epochs: 3,
        input_size: (96, 128),
        hidden: 64,
        finetune_batch_size: 2,
        n_panels: 2,
        progress: false,
        ..RunConfig::default()
    };
    let summary = run(&cfg)?;
    assert_eq!(summary.arch, Arch::Vgg16);
    check_outputs(&cfg.out, &summary)?;
    eprintln!(
        "camvid: mIoU {:.3} (head alone {:.3}), pixel accuracy {:.3}",
        summary.mean_iou, summary.head_only_mean_iou, summary.pixel_accuracy
    );
    // Fine-tuning on whole images lowers the val loss of the head alone.
    let head_val = summary.head_history.epochs.last().and_then(|e| e.val_loss);
    let tuned_val = summary
        .finetune_history
        .epochs
        .last()
        .and_then(|e| e.val_loss);
    match (head_val, tuned_val) {
        (Some(head), Some(tuned)) => assert!(tuned < head, "val loss {head} -> {tuned}"),
        other => panic!("missing val losses {other:?}"),
    }
    // 11 classes: chance is about 9% pixel accuracy; road and sky alone are 50%.
    assert!(
        summary.pixel_accuracy > 0.6,
        "pixel accuracy {}",
        summary.pixel_accuracy
    );
    assert!(summary.mean_iou > 0.2, "mIoU {}", summary.mean_iou);
    Ok(())
}

#[test]
fn bad_settings_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = RunConfig {
        data_dir: Some(dir.path().to_path_buf()),
        out: dir.path().join("out"),
        progress: false,
        ..RunConfig::default()
    };
    let err = run(&cfg).unwrap_err().to_string();
    assert!(err.contains("is not a VOC-layout folder"), "{err}");
    let err = run(&RunConfig {
        input_size: (8, 64),
        ..cfg.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("too small"), "{err}");
    let data = dir.path().join("generated");
    write_generated_voc(&data, 0)?;
    let missing = RunConfig {
        data_dir: Some(data),
        weights: Some(dir.path().join("nope.safetensors")),
        ..cfg
    };
    let err = run(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.safetensors\" not found"), "{err}");
    assert_eq!(parse_size("180x240")?, (180, 240));
    let err = parse_size("180 by 240").unwrap_err().to_string();
    assert!(err.contains("HEIGHTxWIDTH"), "{err}");
    assert!(parse_size("0x5").is_err());
    Ok(())
}
