//! One training run as the lecture tells it: find the data and hold some back,
//! build the U-Net, train it on augmented crops, evaluate it on the held-back
//! whole images, write their predictions and the report.

use std::time::Instant;

use common::device::{device_name, open_device};
use common::run_dir::RunDir;
use common::Result;

use crate::config::Config;
use crate::data::{locate_data, open_run_splits};
use crate::evaluate::{evaluate_model, save_predictions};
use crate::model::{build_unet, count_parameters};
use crate::report::Report;
use crate::training::{crop_size, train, TrainSetup};
use crate::weight_map::save_weight_map_png;

/// Trains, evaluates on the held-back images and writes the run folder
/// (`cfg.out_dir()`): `config.json`, `history.csv`/`.json`, `loss.png`,
/// `checkpoint.safetensors`, `metrics.json` (the [`Report`]), `predictions/*.png`.
pub fn run(cfg: &Config) -> Result<Report> {
    let started = Instant::now();
    cfg.check()?;
    let device = open_device(cfg.run.device)?;

    // The data: ISBI 2012 (or another set, or the generated one), some images held back.
    let data = locate_data(cfg.run.data_dir.as_deref())?;
    eprintln!("{}", data.banner);
    let splits = open_run_splits(data, cfg.n_val, cfg.seed, cfg.tune)?;

    // The net, with seeded initial weights.
    let model_config = cfg.unet(splits.train.class_names.len());
    let (model, varmap) = build_unet(model_config, cfg.seed, &device)?;
    let n_parameters = count_parameters(&varmap);
    let upsampling = if cfg.bilinear {
        "bilinear"
    } else {
        "transposed-conv"
    };
    eprintln!(
        "U-Net width {} {upsampling} ({n_parameters} parameters) on {}; {} training images, {} held back",
        cfg.width,
        device_name(&device),
        splits.train.samples.len(),
        splits.val.samples.len(),
    );

    // Training on random crops, with a checkpoint after every epoch.
    let run_dir = RunDir::create(cfg.out_dir(), cfg)?;
    let crop = crop_size(cfg.crop, &splits.train);
    if let (true, Some(first)) = (cfg.weight_map, splits.train.samples.first()) {
        let path = run_dir.file("weight_map.png");
        save_weight_map_png(&path, &first.mask, model_config.n_classes)?;
        eprintln!(
            "border weight map of training image {:?} in {path:?}",
            first.id
        );
    }
    train(&TrainSetup {
        cfg,
        model: &model,
        varmap: &varmap,
        splits: &splits,
        crop,
        run_dir: &run_dir,
        device: &device,
    })?;

    // Evaluation on the held-back whole images, and their pictures.
    let readout = cfg.readout();
    let evaluation = evaluate_model(&model, &splits.val, &readout, &device)?;
    save_predictions(
        &model,
        &splits.val,
        &run_dir.predictions(),
        &readout,
        &device,
    )?;
    let report = Report {
        data: splits.data.clone(),
        device: device_name(&device).to_string(),
        model: model_config,
        n_parameters,
        crop,
        held_back: splits.val.samples.iter().map(|s| s.id.clone()).collect(),
        evaluation,
        seconds: started.elapsed().as_secs_f64(),
    };
    run_dir.write_metrics(&report)?;
    Ok(report)
}
