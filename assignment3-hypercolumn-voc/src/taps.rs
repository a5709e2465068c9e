//! The frozen VGG over a split, once per run: every image resized to the input size,
//! its five taps (the ReLU outputs before each max-pool) prepared for the head at the
//! feature size and kept in memory as f16 ([`TapImage`]), hypercolumns sampled from them
//! on the way (`features::sample_image`), and optionally a disk copy of the taps
//! ([`TapCache`]) so later runs skip the VGG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle::{DType, Device, Tensor};
use common::data::transforms::resize_mask;
use common::data::Dataset;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array3};
use serde::Serialize;

use crate::features::{sample_image, SampledFeatures, Sampling};
use crate::model::{prepare_taps, Backbone, FEATURE_DIM, TAP_CHANNELS};
use crate::weights::WeightsInfo;

/// The taps of one image kept in memory for fine-tuning and evaluation.
#[derive(Debug, Clone)]
pub struct TapImage {
    /// The sample id.
    pub id: String,
    /// The taps prepared for the head (`model::prepare_taps`), `(1, C_i, h_i, w_i)`.
    pub taps: Vec<Tensor>,
    /// `(1, fh, fw)` u32 labels at the feature resolution (nearest).
    pub labels: Tensor,
    /// The original `(H, W)` labels (kept for evaluation only).
    pub mask: Option<Array2<u8>>,
    /// The taps of the mirrored image (left-right), for the test-time flip; `None` without.
    pub flipped: Option<Vec<Tensor>>,
}

impl TapImage {
    /// `(fh, fw)`, the feature resolution the labels (and the head's output) have.
    pub fn feature_size(&self) -> candle::Result<(usize, usize)> {
        let (_, fh, fw) = self.labels.dims3()?;
        Ok((fh, fw))
    }
}

/// The per-level concatenation of the taps of `images`, as f32.
///
/// # Shapes
/// `images[j].taps[i] (1, C_i, h_i, w_i)` -> `[(B, C_i, h_i, w_i)]`
pub fn stack_taps(images: &[&TapImage]) -> candle::Result<Vec<Tensor>> {
    let levels = images.first().map_or(0, |image| image.taps.len());
    (0..levels)
        .map(|level| {
            let parts: Vec<&Tensor> = images.iter().map(|image| &image.taps[level]).collect();
            Tensor::cat(&parts, 0)?.to_dtype(DType::F32)
        })
        .collect()
}

/// What decides the taps of an image: a disk cache made with other settings is not used.
#[derive(Debug, Clone, Serialize)]
pub struct TapSettings {
    /// The data root, canonical.
    pub data_root: PathBuf,
    pub arch: crate::model::Arch,
    pub weights: Option<PathBuf>,
    pub input_size: (usize, usize),
    pub feature_size: (usize, usize),
    pub version: u32,
}

impl TapSettings {
    /// The settings of `weights` on the data at `data_root`.
    pub fn new(
        data_root: &Path,
        weights: &WeightsInfo,
        input_size: (usize, usize),
        feature_size: (usize, usize),
    ) -> Self {
        Self {
            data_root: data_root
                .canonicalize()
                .unwrap_or_else(|_| data_root.to_path_buf()),
            arch: weights.arch,
            weights: weights.path.clone(),
            input_size,
            feature_size,
            version: 2,
        }
    }
}

/// The VGG over images at one input and feature size.
#[derive(Debug)]
pub struct Extractor<'a> {
    pub backbone: &'a Backbone,
    pub input_size: (usize, usize),
    pub feature_size: (usize, usize),
    pub device: &'a Device,
    /// The disk cache folder of the taps (`--cache-taps`), split folders inside.
    pub tap_dir: Option<PathBuf>,
    /// Where the sampled hypercolumns are cached (`features-<hash>.safetensors`).
    pub cache_dir: PathBuf,
    pub progress: bool,
}

/// What [`Extractor::split`] keeps besides the taps it computes.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Keep every image's taps in memory.
    pub keep_taps: bool,
    /// Keep the original labels (for evaluation).
    pub keep_masks: bool,
    /// Sample hypercolumns on the way.
    pub sampling: Option<Sampling>,
    /// Also keep the taps of every image mirrored left-right (the test-time flip).
    pub flip: bool,
}

/// What [`Extractor::split`] gives back.
#[derive(Debug)]
pub struct Extraction {
    pub images: Vec<TapImage>,
    pub samples: Option<SampledFeatures>,
    /// Images that went through the VGG (the others came from the disk cache).
    pub computed: usize,
    pub seconds: f64,
}

impl Extractor<'_> {
    /// The taps of one RGB 0..1 image as the head takes them (f16).
    ///
    /// # Shapes
    /// `(3, H, W)` host -> `[(1, C_i, h_i, w_i)]`, `C = 64, 128, 256, 512, 512`
    pub fn image_taps(&self, image: &Array3<f32>, id: &str) -> anyhow::Result<Vec<Tensor>> {
        let (ih, iw) = self.input_size;
        let xs = self.backbone.preprocess(image, ih, iw, self.device)?;
        let taps = self
            .backbone
            .taps(&xs)
            .with_context(|| format!("VGG forward of {id:?}"))?;
        let (fh, fw) = self.feature_size;
        Ok(prepare_taps(&taps, fh, fw, DType::F16)?)
    }

    /// Runs the VGG once over the first `n` images of `ds` (or reads their taps from
    /// the disk cache of `split`). Samples are taken from the prepared f16 taps, so
    /// they are the same whether the taps were computed or read.
    pub fn split(
        &self,
        ds: &dyn Dataset,
        n: usize,
        split: &str,
        opts: ExtractOptions,
    ) -> anyhow::Result<Extraction> {
        let started = Instant::now();
        let (fh, fw) = self.feature_size;
        let cache = TapCache {
            dir: self.tap_dir.as_ref().map(|d| d.join(split)),
        };
        let flip_cache = TapCache {
            dir: self
                .tap_dir
                .as_ref()
                .map(|d| d.join(format!("{split}-flip"))),
        };
        let bar = progress_bar(self.progress, n, &format!("VGG {split}"));
        let mut images = Vec::new();
        let mut samples = opts.sampling.map(|_| SampledFeatures::empty(FEATURE_DIM));
        let mut computed = 0;
        for index in 0..n {
            let sample = ds.get(index)?;
            let taps = match cache.load(&sample.id, self.device)? {
                Some(taps) => taps,
                None => {
                    let taps = self.image_taps(&sample.image, &sample.id)?;
                    cache.save(&sample.id, &taps)?;
                    computed += 1;
                    taps
                }
            };
            let flipped = match (opts.flip, flip_cache.load(&sample.id, self.device)?) {
                (false, _) => None,
                (true, Some(taps)) => Some(taps),
                (true, None) => {
                    // (3, H, W) -> the same, columns in reverse order.
                    let mirrored = sample.image.slice(ndarray::s![.., .., ..;-1]).to_owned();
                    let taps = self.image_taps(&mirrored, &sample.id)?;
                    flip_cache.save(&sample.id, &taps)?;
                    Some(taps)
                }
            };
            let labels = resize_mask(&sample.mask, fh, fw);
            if let (Some(sampling), Some(samples)) = (opts.sampling, samples.as_mut()) {
                let (features, picked) = sample_image(&taps, &labels, sampling, index)?;
                samples.push_image(index, features.view(), &picked)?;
            }
            if opts.keep_taps {
                let labels =
                    common::data::image_io::mask_to_tensor(&labels, self.device)?.unsqueeze(0)?;
                images.push(TapImage {
                    id: sample.id.clone(),
                    taps,
                    labels,
                    mask: opts.keep_masks.then(|| sample.mask.clone()),
                    flipped,
                });
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Extraction {
            images,
            samples,
            computed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The disk cache folder of the taps made with `settings` under `cache_dir`.
pub fn tap_dir(cache_dir: &Path, settings: &TapSettings) -> anyhow::Result<PathBuf> {
    let text = serde_json::to_string(settings)?;
    Ok(cache_dir.join(format!("taps-{:016x}", fnv1a(&text))))
}

/// FNV-1a, for a stable cache file name from the settings.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where taps are read from / written to disk between runs (`None`: nowhere).
#[derive(Debug, Clone)]
struct TapCache {
    dir: Option<PathBuf>,
}

impl TapCache {
    fn file(&self, id: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{id}.safetensors")))
    }

    /// The prepared taps of `id` from disk, if cached.
    fn load(&self, id: &str, device: &Device) -> anyhow::Result<Option<Vec<Tensor>>> {
        let Some(file) = self.file(id).filter(|f| f.is_file()) else {
            return Ok(None);
        };
        let mut tensors = candle::safetensors::load(&file, device)
            .with_context(|| format!("cannot read cached taps {file:?}"))?;
        let taps = (0..TAP_CHANNELS.len())
            .map(|level| {
                tensors
                    .remove(&format!("tap{level}"))
                    .with_context(|| format!("cached taps {file:?} lack tap{level}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(taps))
    }

    fn save(&self, id: &str, taps: &[Tensor]) -> anyhow::Result<()> {
        let Some(file) = self.file(id) else {
            return Ok(());
        };
        let map: HashMap<String, &Tensor> = taps
            .iter()
            .enumerate()
            .map(|(level, t)| (format!("tap{level}"), t))
            .collect();
        let bytes = safetensors::serialize(map, None)
            .map_err(|e| anyhow::anyhow!("cannot serialise the taps for {file:?}: {e}"))?;
        common::run_dir::write_file(&file, &bytes)
    }
}

fn progress_bar(show: bool, n: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30.cyan/blue}] {pos}/{len} images  {elapsed} elapsed, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Bytes of the f16 taps of one image prepared for a `fh x fw` map from a
/// `ih x iw` input (taps larger than the map are stored at its size).
pub fn tap_bytes(input_size: (usize, usize), feature_size: (usize, usize)) -> usize {
    let (mut h, mut w) = input_size;
    let mut total = 0;
    for (level, channels) in TAP_CHANNELS.iter().enumerate() {
        if level > 0 {
            (h, w) = (h / 2, w / 2);
        }
        let pixels = (h * w).min(feature_size.0 * feature_size.1);
        total += channels * pixels * 2;
    }
    total
}

/// Says how much memory the taps of `n_images` take; an error above `max_gib`.
pub fn check_memory(
    input_size: (usize, usize),
    feature_size: (usize, usize),
    n_images: usize,
    max_gib: f64,
) -> anyhow::Result<()> {
    let gib = tap_bytes(input_size, feature_size) as f64 * n_images as f64 / (1u64 << 30) as f64;
    eprintln!("keeping {gib:.2} GiB of f16 taps in memory");
    if gib > max_gib {
        bail!(
            "the taps would take {gib:.1} GiB (more than --max-cache-gib {max_gib}): use a smaller \
             --input-size / --feature-size or --max-images"
        );
    }
    Ok(())
}

/// What decides the sampled hypercolumns: a sample cache made with other settings is
/// not used.
#[derive(Debug, Clone, Serialize)]
pub struct SampleSettings {
    #[serde(flatten)]
    pub taps: TapSettings,
    pub n_train: usize,
    pub samples_per_class: usize,
    pub seed: u64,
}

/// The training split as the two phases need it.
#[derive(Debug)]
pub struct TrainTaps {
    /// The sparse sample (phase 1).
    pub samples: SampledFeatures,
    /// Every image's taps (phase 2); empty when it is skipped.
    pub images: Vec<TapImage>,
    /// Seconds of the pass over the split, when there was one.
    pub seconds: Option<f64>,
    /// Seconds of the VGG per image, when every image went through it.
    pub vgg_s_per_image: Option<f64>,
}

/// The training split: its sampled hypercolumns from `<cache dir>/features-<hash>` when
/// the settings match (else sampled now and saved there), and every image's taps when
/// `keep_taps` (fine-tuning) asks for them.
pub fn extract_train(
    ex: &Extractor,
    ds: &dyn Dataset,
    settings: &SampleSettings,
    keep_taps: bool,
) -> anyhow::Result<TrainTaps> {
    let settings_json = serde_json::to_value(settings)?;
    let cache_path = ex.cache_dir.join(format!(
        "features-{:016x}.safetensors",
        fnv1a(&settings_json.to_string())
    ));
    let cached = SampledFeatures::load_if_matching(&cache_path, &settings_json)?;
    let n = settings.n_train;
    let sampling = Sampling {
        per_class: settings.samples_per_class,
        seed: settings.seed,
    };
    if cached.is_some() {
        eprintln!("sampled features: reusing {cache_path:?}");
    }
    if let (Some(samples), false) = (&cached, keep_taps) {
        return Ok(TrainTaps {
            samples: samples.clone(),
            images: Vec::new(),
            seconds: None,
            vgg_s_per_image: None,
        });
    }
    let opts = ExtractOptions {
        keep_taps,
        keep_masks: false,
        sampling: cached.is_none().then_some(sampling),
        flip: false,
    };
    let extraction = ex.split(ds, n, "train", opts)?;
    let per_image = extraction.seconds / n as f64;
    eprintln!(
        "train taps: {n} images in {:.1}s ({} through the VGG, {per_image:.2}s per image)",
        extraction.seconds, extraction.computed
    );
    let samples = match (cached, extraction.samples) {
        (Some(samples), _) => samples,
        (None, Some(samples)) => {
            samples.save(&cache_path, &settings_json)?;
            samples
        }
        (None, None) => bail!("the training split was read without sampling"),
    };
    Ok(TrainTaps {
        samples,
        images: extraction.images,
        seconds: Some(extraction.seconds),
        vgg_s_per_image: (extraction.computed == n).then_some(per_image),
    })
}

/// The taps and original labels of the first `n` images of a split, for evaluation,
/// with the taps of the mirrored images when `flip` (the test-time flip).
pub fn extract_eval(
    ex: &Extractor,
    ds: &dyn Dataset,
    n: usize,
    split: &str,
    flip: bool,
) -> anyhow::Result<Extraction> {
    let opts = ExtractOptions {
        keep_taps: true,
        keep_masks: true,
        sampling: None,
        flip,
    };
    let extraction = ex.split(ds, n, split, opts)?;
    eprintln!(
        "{split} taps: {n} images in {:.1}s ({} through the VGG)",
        extraction.seconds, extraction.computed
    );
    Ok(extraction)
}
