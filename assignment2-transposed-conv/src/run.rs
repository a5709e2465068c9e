//! One run of the assignment, as the lecture's steps: find the data, then for each
//! variant train a net on the augmented patches, segment the full-resolution photo
//! and score it; then compare the variants.
//!
//! The run folder (`runs/assignment2-transposed-conv/seed<seed>` by default) holds
//! `config.json`, `metrics.json` (the variants compared, each with its
//! receptive-field table), `loss.png` (every variant's training loss), `masks.png`
//! (reference mask, then each variant's, side by side), `probabilities.png` (each
//! variant's flower probability map, side by side), and per variant `<variant>/`: `checkpoint.safetensors`,
//! `history.csv`, `history.json`, `loss.png` and `predictions/flower_*.png`.

use std::collections::BTreeMap;

use common::device::{device_name, open_device};
use common::plot::plot_loss_curves;
use common::run_dir::RunDir;
use common::Result;

use crate::config::Config;
use crate::data::find_flower_data;
use crate::evaluate::{
    save_masks_side_by_side, save_probabilities_side_by_side, score_and_draw, setting,
};
use crate::model::{parameter_count, receptive_field};
use crate::report::Report;
use crate::training::{train_variant, TrainSettings};

/// Runs the whole assignment as `cfg` says; see the module documentation for
/// what it writes.
pub fn run(cfg: &Config) -> Result<Report> {
    cfg.validate()?;
    let device = open_device(cfg.run.device)?;
    let (data, located) = find_flower_data(cfg.run.data_dir.as_deref(), cfg.seed)?;
    eprintln!("{}", located.banner);
    let (_, height, width) = data.image.dim();
    eprintln!(
        "{} training pairs, scoring on a {height}x{width} image; device {}",
        data.train.len(),
        device_name(&device)
    );
    let run_dir = RunDir::create(cfg.out_dir(), cfg)?;
    let settings = TrainSettings::from(cfg);
    let (mut variants, mut masks, mut curves) = (BTreeMap::new(), vec![data.mask.clone()], vec![]);
    let mut probabilities = vec![];
    for variant in cfg.model.variants() {
        let n_parameters = parameter_count(variant, data.train.n_classes());
        let field = receptive_field(variant)?;
        eprintln!(
            "--- {variant} ({n_parameters} parameters, receptive field {} px, coarsest grid 1/{})\n{}",
            field.receptive_field,
            field.coarsest_jump,
            field.to_text().trim_end()
        );
        let dir = run_dir.child(variant.name())?;
        let trained = train_variant(variant, &data.train, &settings, &dir, &device)?;
        let (scores, seg) = score_and_draw(&trained.model, &data, &dir, &device)?;
        eprintln!(
            "{variant}: flower IoU {:.2}%  pixel accuracy {:.2}%  train pixel accuracy {:.2}%  ({:.1}s)",
            100.0 * scores.flower_iou,
            100.0 * scores.flower_pixel_accuracy,
            100.0 * scores.train_pixel_accuracy,
            trained.seconds
        );
        curves.push(trained.loss_curve());
        masks.push(seg.mask);
        probabilities.push(seg.probability);
        variants.insert(variant.name().to_owned(), trained.report(scores));
    }
    let mask_refs: Vec<_> = masks.iter().collect();
    save_masks_side_by_side(&run_dir.file("masks.png"), &mask_refs)?;
    let probability_refs: Vec<_> = probabilities.iter().collect();
    save_probabilities_side_by_side(&run_dir.file("probabilities.png"), &probability_refs)?;
    plot_loss_curves(
        &run_dir.loss_png(),
        "training loss per variant",
        &curves,
        None,
    )?;
    let report = Report::new(setting(located, &device, &data), variants);
    run_dir.write_metrics(&report)?;
    Ok(report)
}
