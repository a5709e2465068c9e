//! The full run, as the lecture goes: find the data, train the patch classifier,
//! make it fully convolutional, check the conversion, segment `flower.jpg`,
//! compare with the naive sliding window, and write everything into the run folder.

use common::device::{device_name, open_device};
use common::run_dir::RunDir;

use crate::config::{Config, SavedConfig, PROGRAM};
use crate::data::{load_data, locate_data};
use crate::evaluate::{measure, segment_options};
use crate::model::{output_size_rule, receptive_field};
use crate::predict::write_pictures;
use crate::report::Report;
use crate::training::train_classifier;

/// The full run; writes `config.json`, `history.csv/json`, `loss.png`,
/// `checkpoint.safetensors`, `metrics.json` and `predictions/*.png` into
/// `--out` (default `runs/assignment1-classify-to-segment/seed<seed>`).
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    let device = open_device(cfg.run.device)?;
    let run_dir = RunDir::create(cfg.run.out_dir(PROGRAM, cfg.seed), &SavedConfig::new(cfg))?;

    // 1. The data: 32x32 patches split per class, and the photo to segment.
    let located = locate_data(cfg.run.data_dir.as_deref())?;
    eprintln!("{}", located.banner);
    let data = load_data(&located, cfg)?;
    let (train_patches, spec) = (data.train.len(), cfg.arch.spec());
    eprintln!(
        "{train_patches} training and {} validation patches; device {}; arch {} {spec:?}",
        data.val.len(),
        device_name(&device),
        cfg.arch,
    );

    // 2. Train the patch classifier.
    let trained = train_classifier(cfg, &run_dir, data.train, &data.val, &device)?;

    // 3. Make it fully convolutional and measure: the classifier and the FCN on
    //    the validation patches, the FCN's map of the photo against its mask, and
    //    (unless --no-compare) the sliding windows and shift-and-stitch.
    eprintln!("{}", output_size_rule());
    let field = receptive_field(&spec)?;
    eprintln!(
        "receptive field, layer by layer:\n{}",
        field.to_text().trim_end()
    );
    let options = segment_options(cfg, cfg.run.progress());
    let evaluation = measure(
        &trained.classifier,
        &data.val,
        &data.scene,
        &options,
        &device,
    )?;

    // 4. Pictures and figures.
    write_pictures(&run_dir.predictions(), &data.scene, &evaluation.scene)?;
    let report = Report {
        data: located,
        train_patches,
        evaluation,
        output_size_rule: output_size_rule(),
        receptive_field: field,
        arch: spec,
        out: run_dir.path().to_path_buf(),
    };
    run_dir.write_metrics(&report)?;
    Ok(report)
}
