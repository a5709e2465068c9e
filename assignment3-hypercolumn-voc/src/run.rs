//! One whole run of the assignment: find data and weights, extract the VGG taps
//! of every image once (frozen backbone), sample hypercolumns, train the
//! fully connected head, convolutionalise and fine-tune it on whole images,
//! evaluate on val and write every output into the run folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle::{DType, Device, Var};
use candle_nn::VarMap;
use common::checkpoint::{save_checkpoint, CheckpointMeta};
use common::data::transforms::resize_mask;
use common::data::voc::{Split, VocDataset};
use common::data::Dataset;
use common::device::{device_name, open_device, DeviceChoice};
use common::plot::{plot_loss_curves, Curve};
use common::train::{write_atomic, History};
use common::weights::{resolve_weights, shared_weights_dir, WeightsOrigin};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

use crate::data::{locate_data, DataOrigin};
use crate::evaluate::{evaluate, predict, save_confusion, validation};
use crate::features::{hypercolumns_at, pick_pixels, SampledFeatures};
use crate::model::{head, prepare_taps, Arch, Backbone, FeatureNorm, HeadConfig, FEATURE_DIM};
use crate::training::{finetune, train_head, ClassWeighting, PhaseConfig, TapImage};

/// The shared VGG16 conv stack (HED, Caffe preprocessing) looked for by default.
pub const SHARED_VGG16_FILE: &str = "vgg16-hed-bsds500.safetensors";

/// The default run folder.
pub const DEFAULT_OUT: &str = "runs/assignment3-hypercolumn-voc/default";
/// The default cache folder (sampled features, generated data).
pub const DEFAULT_CACHE_DIR: &str = "runs/assignment3-hypercolumn-voc/cache";

/// Everything a run needs; `Default` holds the defaults of the command line.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// A VOC-layout root (or a folder holding `VOCdevkit/VOC2012`).
    pub data_dir: Option<PathBuf>,
    /// Download PASCAL VOC 2012 (about 2 GB) when no data is found.
    pub download: bool,
    /// A safetensors file of VGG conv weights with torchvision names.
    pub weights: Option<PathBuf>,
    /// The VGG configuration; `None` = the one the weights file holds.
    pub arch: Option<Arch>,
    /// The run folder.
    pub out: PathBuf,
    /// Where sampled features (and a generated data set) are cached between runs.
    pub cache_dir: PathBuf,
    /// Epochs of phase 1 (head on sampled features).
    pub head_epochs: usize,
    /// Epochs of phase 2 (1x1-conv head on whole images); 0 skips it.
    pub finetune_epochs: usize,
    pub seed: u64,
    #[serde(serialize_with = "display")]
    pub device: DeviceChoice,
    /// `(height, width)` the images are resized to before the VGG.
    pub input_size: (usize, usize),
    /// `(height, width)` of the hypercolumn map; `None` = half the input size.
    pub feature_size: Option<(usize, usize)>,
    /// Use at most this many images of each split.
    pub max_images: Option<usize>,
    /// Random pixels sampled per class present in a training image.
    pub samples_per_class: usize,
    /// Width of the head's hidden layers.
    pub hidden: usize,
    pub head_lr: f64,
    pub head_batch_size: usize,
    pub finetune_lr: f64,
    pub finetune_batch_size: usize,
    pub weight_decay: f64,
    /// Class weights in both losses.
    pub class_weights: ClassWeighting,
    /// Number of val images drawn as `image | truth | prediction` panels.
    pub n_panels: usize,
    /// Refuse to keep more than this many GiB of taps in memory.
    pub max_cache_gib: f64,
    /// Also keep every image's taps on disk under `cache_dir` (f16, about 6 MB
    /// an image at 180x240), so later runs with the same data, weights and sizes
    /// skip the backbone entirely.
    pub cache_taps: bool,
    /// Progress bars on stderr.
    pub progress: bool,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.to_string())
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            download: false,
            weights: None,
            arch: None,
            out: PathBuf::from(DEFAULT_OUT),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            head_epochs: 15,
            finetune_epochs: 3,
            seed: 0,
            device: DeviceChoice::Auto,
            input_size: (180, 240),
            feature_size: None,
            max_images: None,
            samples_per_class: 3,
            hidden: 128,
            head_lr: 1e-3,
            head_batch_size: 128,
            finetune_lr: 1e-3,
            finetune_batch_size: 4,
            weight_decay: 1e-4,
            class_weights: ClassWeighting::SqrtMedian,
            n_panels: 6,
            max_cache_gib: 8.0,
            cache_taps: false,
            progress: true,
        }
    }
}

/// What a run reports back (also in `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub out: PathBuf,
    pub data_origin: DataOrigin,
    pub arch: Arch,
    pub weights: String,
    pub class_names: Vec<String>,
    pub pixel_accuracy: f64,
    pub mean_accuracy: f64,
    pub mean_iou: f64,
    pub fw_iou: f64,
    pub per_class_iou: Vec<Option<f64>>,
    /// mIoU of the phase-1 head alone (before fine-tuning).
    pub head_only_mean_iou: f64,
    pub n_sampled_features: usize,
    pub head_history: History,
    pub finetune_history: History,
    pub seconds_total: f64,
}

/// Chooses and loads the backbone: `--weights FILE`; else the shared VGG16
/// (unless VGG11 was asked for); else the hub cache or a hub download of the
/// timm copy of torchvision's weights; else random weights, said loudly.
pub fn resolve_backbone(
    weights: Option<&Path>,
    arch: Option<Arch>,
    seed: u64,
    device: &Device,
) -> anyhow::Result<(Backbone, String)> {
    let load = |path: &Path, arch: Option<Arch>| -> anyhow::Result<Backbone> {
        let arch = match arch {
            Some(arch) => arch,
            None => Arch::detect(&common::weights::tensor_shapes(path)?).with_context(|| {
                format!(
                    "{path:?} holds neither a VGG11 nor a VGG16 conv stack with torchvision \
                     names (features.N.weight); pass --arch to see which tensors are missing"
                )
            })?,
        };
        Backbone::load(path, arch, device)
    };
    if let Some(path) = weights {
        let resolved = resolve_weights(Some(path), &Arch::Vgg11.hub_file())?;
        let backbone = load(&resolved.path, arch)?;
        return Ok((backbone, format!("{:?}", resolved.path)));
    }
    if arch != Some(Arch::Vgg11) {
        if let Some(path) = shared_weights_dir().map(|d| d.join(SHARED_VGG16_FILE)) {
            if path.is_file() {
                return Ok((load(&path, Some(Arch::Vgg16))?, format!("{path:?}")));
            }
        }
    }
    let arch = arch.unwrap_or(Arch::Vgg11);
    let hub = arch.hub_file();
    match resolve_weights(None, &hub) {
        Ok(resolved) => {
            let how = match resolved.origin {
                WeightsOrigin::HubDownload => "downloaded from the hub",
                _ => "from the hub cache",
            };
            let backbone = load(&resolved.path, Some(arch))?;
            Ok((backbone, format!("{:?} ({how})", resolved.path)))
        }
        Err(err) => {
            eprintln!(
                "\n!!! No pretrained {arch} weights: {err:#}.\n\
                 !!! Pass --weights FILE.safetensors (torchvision names), or put {} in the \
                 hub cache, or run once with network.\n\
                 !!! USING RANDOM {arch} WEIGHTS: the pipeline runs, but its features mean little.\n",
                hub.repo
            );
            Ok((Backbone::random(arch, seed, device)?, "random".to_owned()))
        }
    }
}

/// Parses `HxW` (e.g. `180x240`) into `(height, width)`.
pub fn parse_size(text: &str) -> anyhow::Result<(usize, usize)> {
    let parse = |s: &str| s.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match text.split_once(['x', 'X']) {
        Some((h, w)) => match (parse(h), parse(w)) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => bail!("size {text:?} must be two positive numbers, HEIGHTxWIDTH (e.g. 180x240)"),
        },
        None => bail!("size {text:?} must be HEIGHTxWIDTH (e.g. 180x240)"),
    }
}

/// FNV-1a, for a stable cache file name from the settings.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: a per-image seed from the run seed and the image index.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What [`extract`] gives back.
struct Extraction {
    images: Vec<TapImage>,
    samples: Option<SampledFeatures>,
    /// Images that went through the VGG (the others came from the disk cache).
    computed: usize,
    seconds: f64,
}

/// Where and whether taps are read from / written to disk between runs.
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
    fn load(&self, id: &str, device: &Device) -> anyhow::Result<Option<Vec<candle::Tensor>>> {
        let Some(file) = self.file(id).filter(|f| f.is_file()) else {
            return Ok(None);
        };
        let mut tensors = candle::safetensors::load(&file, device)
            .with_context(|| format!("cannot read cached taps {file:?}"))?;
        let taps = (0..crate::model::TAP_CHANNELS.len())
            .map(|level| {
                tensors
                    .remove(&format!("tap{level}"))
                    .with_context(|| format!("cached taps {file:?} lack tap{level}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(taps))
    }

    fn save(&self, id: &str, taps: &[candle::Tensor]) -> anyhow::Result<()> {
        let Some(file) = self.file(id) else {
            return Ok(());
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {parent:?}"))?;
        }
        let map: std::collections::HashMap<String, candle::Tensor> = taps
            .iter()
            .enumerate()
            .map(|(level, t)| (format!("tap{level}"), t.clone()))
            .collect();
        let temp = file.with_extension(format!("tmp-{}", std::process::id()));
        candle::safetensors::save(&map, &temp).with_context(|| format!("cannot write {temp:?}"))?;
        std::fs::rename(&temp, &file).with_context(|| format!("cannot rename {temp:?} to {file:?}"))
    }
}

/// Runs the frozen backbone once over the first `n` images of `ds` (or reads
/// their taps from the disk cache); keeps the prepared taps (`keep_taps`),
/// samples hypercolumns (`sampling = Some((per class, seed))`), and keeps the
/// original labels (`keep_masks`). Samples are taken from the prepared f16
/// taps, so they are the same whether the taps were computed or read.
#[allow(clippy::too_many_arguments)]
fn extract(
    backbone: &Backbone,
    ds: &dyn Dataset,
    n: usize,
    input_size: (usize, usize),
    feature_size: (usize, usize),
    keep_taps: bool,
    keep_masks: bool,
    sampling: Option<(usize, u64)>,
    cache: TapCache,
    device: &Device,
    progress: bool,
    what: &str,
) -> anyhow::Result<Extraction> {
    let started = Instant::now();
    let (fh, fw) = feature_size;
    let bar = progress_bar(progress, n, what);
    let mut images = Vec::new();
    let mut samples = sampling.map(|_| SampledFeatures::empty(FEATURE_DIM));
    let mut computed = 0;
    for index in 0..n {
        let sample = ds.get(index)?;
        let taps = match cache.load(&sample.id, device)? {
            Some(taps) => taps,
            None => {
                let xs = backbone.preprocess(&sample.image, input_size.0, input_size.1, device)?;
                let taps = backbone
                    .taps(&xs)
                    .with_context(|| format!("VGG forward of {:?}", sample.id))?;
                let prepared = prepare_taps(&taps, fh, fw, DType::F16)?;
                cache.save(&sample.id, &prepared)?;
                computed += 1;
                prepared
            }
        };
        let labels = resize_mask(&sample.mask, fh, fw);
        if let (Some((per_class, seed)), Some(samples)) = (sampling, samples.as_mut()) {
            let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(index as u64)));
            let picked = pick_pixels(&labels, per_class, &mut rng);
            let pixels: Vec<(usize, usize)> = picked.iter().map(|&(y, x, _)| (y, x)).collect();
            let label_values: Vec<u8> = picked.iter().map(|&(_, _, l)| l).collect();
            let features = hypercolumns_at(&taps, fh, fw, &pixels)?;
            samples.push_image(index, features.view(), &label_values)?;
        }
        if keep_taps {
            let label_tensor =
                common::data::image_io::mask_to_tensor(&labels, device)?.unsqueeze(0)?;
            images.push(TapImage {
                id: sample.id.clone(),
                taps,
                labels: label_tensor,
                mask: keep_masks.then(|| sample.mask.clone()),
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
fn tap_bytes(input_size: (usize, usize), feature_size: (usize, usize)) -> usize {
    let (mut h, mut w) = input_size;
    let mut total = 0;
    for (level, channels) in crate::model::TAP_CHANNELS.iter().enumerate() {
        if level > 0 {
            (h, w) = (h / 2, w / 2);
        }
        let pixels = (h * w).min(feature_size.0 * feature_size.1);
        total += channels * pixels * 2;
    }
    total
}

/// Runs everything and writes the outputs into `cfg.out`.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let device = open_device(cfg.device)?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create output folder {:?}", cfg.out))?;
    let (ih, iw) = cfg.input_size;
    if ih < 16 || iw < 16 {
        bail!("--input-size {ih}x{iw} is too small: the VGG needs at least 16x16");
    }
    let (fh, fw) = cfg.feature_size.unwrap_or((ih / 2, iw / 2));
    if fh == 0 || fw == 0 {
        bail!("--feature-size {fh}x{fw} must be at least 1x1");
    }
    if cfg.samples_per_class == 0 {
        bail!("--samples-per-class must be at least 1");
    }

    // Data.
    let data = locate_data(
        cfg.data_dir.as_deref(),
        cfg.download,
        &cfg.cache_dir.join("generated-voc"),
        cfg.seed,
    )?;
    let train_ds = VocDataset::open(&data.root, Split::Train)?;
    let val_ds = VocDataset::open(&data.root, Split::Val)?;
    let class_names = train_ds.class_names().to_vec();
    let cap = |n: usize| cfg.max_images.map_or(n, |m| m.min(n));
    let (n_train, n_val) = (cap(train_ds.len()), cap(val_ds.len()));
    if n_train == 0 || n_val == 0 {
        bail!("--max-images 0 leaves no image to train or evaluate on");
    }
    eprintln!(
        "data: {:?} ({:?}), {} classes, {n_train} train / {n_val} val images",
        data.root,
        data.origin,
        class_names.len()
    );

    // Backbone.
    let (backbone, weights) =
        resolve_backbone(cfg.weights.as_deref(), cfg.arch, cfg.seed, &device)?;
    let arch = backbone.arch();
    eprintln!(
        "backbone: {arch} from {weights}, {} preprocessing, input {ih}x{iw}, features {fh}x{fw}, device {}",
        backbone.normalization(),
        device_name(&device)
    );
    let keep_train_taps = cfg.finetune_epochs > 0;
    let cache_gib = tap_bytes((ih, iw), (fh, fw)) as f64
        * (n_val + if keep_train_taps { n_train } else { 0 }) as f64
        / (1u64 << 30) as f64;
    eprintln!("keeping {cache_gib:.2} GiB of f16 taps in memory");
    if cache_gib > cfg.max_cache_gib {
        bail!(
            "the taps would take {cache_gib:.1} GiB (more than --max-cache-gib {}): use a smaller \
             --input-size / --feature-size or --max-images",
            cfg.max_cache_gib
        );
    }
    let run_config = json!({
        "config": cfg,
        "data_root": data.root,
        "data_origin": data.origin,
        "arch": arch,
        "weights": weights,
        "normalization": backbone.normalization().to_string(),
        "feature_size": [fh, fw],
        "class_names": class_names,
        "device": device_name(&device),
    });
    write_atomic(
        &cfg.out.join("config.json"),
        &serde_json::to_vec_pretty(&run_config)?,
    )?;

    // Sampled features: from the cache when the settings match.
    let settings = json!({
        "data_root": data.root.canonicalize().unwrap_or(data.root.clone()),
        "n_train": n_train,
        "arch": arch,
        "weights": weights,
        "input_size": [ih, iw],
        "feature_size": [fh, fw],
        "samples_per_class": cfg.samples_per_class,
        "seed": cfg.seed,
        "version": 1,
    });
    let tap_settings = json!({
        "data_root": settings["data_root"],
        "arch": arch,
        "weights": weights,
        "input_size": [ih, iw],
        "feature_size": [fh, fw],
        "version": 1,
    });
    let tap_dir = cfg
        .cache_dir
        .join(format!("taps-{:016x}", fnv1a(&tap_settings.to_string())));
    if cfg.cache_taps {
        eprintln!("taps cached on disk in {tap_dir:?}");
    }
    let tap_cache = |split: &str| TapCache {
        dir: cfg.cache_taps.then(|| tap_dir.join(split)),
    };
    let cache_path = cfg.cache_dir.join(format!(
        "features-{:016x}.safetensors",
        fnv1a(&settings.to_string())
    ));
    let cached = SampledFeatures::load_if_matching(&cache_path, &settings)?;
    if cached.is_some() {
        eprintln!("sampled features: reusing {cache_path:?}");
    }
    let mut timings = serde_json::Map::new();
    let train_extraction = if cached.is_none() || keep_train_taps {
        let sampling = cached
            .is_none()
            .then_some((cfg.samples_per_class, cfg.seed));
        let extraction = extract(
            &backbone,
            &train_ds,
            n_train,
            (ih, iw),
            (fh, fw),
            keep_train_taps,
            false,
            sampling,
            tap_cache("train"),
            &device,
            cfg.progress,
            "VGG train",
        )?;
        eprintln!(
            "train taps: {n_train} images in {:.1}s ({} through the VGG, {:.2}s per image)",
            extraction.seconds,
            extraction.computed,
            extraction.seconds / n_train as f64
        );
        timings.insert("train_extraction_s".into(), json!(extraction.seconds));
        if extraction.computed == n_train {
            timings.insert(
                "vgg_forward_s_per_image".into(),
                json!(extraction.seconds / n_train as f64),
            );
        }
        Some(extraction)
    } else {
        None
    };
    let (samples, train_images) = match (cached, train_extraction) {
        (Some(samples), extraction) => (samples, extraction.map(|e| e.images).unwrap_or_default()),
        (None, Some(extraction)) => {
            let samples = extraction
                .samples
                .context("extraction ran without sampling")?;
            samples.save(&cache_path, &settings)?;
            (samples, extraction.images)
        }
        (None, None) => bail!("no sampled features and no extraction"),
    };
    let counts = samples.class_counts(class_names.len());
    eprintln!(
        "sampled {} hypercolumns of length {FEATURE_DIM} ({} per class present per image); per class: {}",
        samples.len(),
        cfg.samples_per_class,
        class_names
            .iter()
            .zip(&counts)
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let val = extract(
        &backbone,
        &val_ds,
        n_val,
        (ih, iw),
        (fh, fw),
        true,
        true,
        None,
        tap_cache("val"),
        &device,
        cfg.progress,
        "VGG val",
    )?;
    eprintln!(
        "val taps: {n_val} images in {:.1}s ({} through the VGG)",
        val.seconds, val.computed
    );
    timings.insert("val_extraction_s".into(), json!(val.seconds));
    let val_images = val.images;

    // Phase 1: the fully connected head on the sampled features.
    let norm = FeatureNorm::fit(&samples.features, &device)?;
    let varmap = VarMap::new();
    let vb = common::init::seeded_var_builder(&varmap, cfg.seed, DType::F32, &device);
    let head_cfg = HeadConfig {
        feature_dim: FEATURE_DIM,
        hidden: cfg.hidden,
        n_classes: class_names.len(),
    };
    let head = head(&head_cfg, norm.clone(), vb)?;
    let n_classes = class_names.len();
    let phase = |name: &str, epochs, batch_size, lr| PhaseConfig {
        epochs,
        batch_size,
        lr,
        weight_decay: cfg.weight_decay,
        class_weights: cfg.class_weights,
        seed: cfg.seed,
        out_dir: cfg.out.join(name),
        title: format!("{name}: {arch} hypercolumns"),
        run_config: run_config.clone(),
        progress: cfg.progress,
    };
    let phase_started = Instant::now();
    eprintln!(
        "phase 1: head {FEATURE_DIM} -> {0} -> {0} -> {n_classes} on sampled features",
        cfg.hidden
    );
    let head_epochs = cfg.head_epochs;
    let head_history = train_head(
        &varmap,
        &head,
        &samples,
        &class_names,
        &phase("head", head_epochs, cfg.head_batch_size, cfg.head_lr),
        &device,
        |epoch| {
            if epoch < head_epochs {
                return Ok(None);
            }
            let conv_head = head.convolutionalize()?;
            Ok(Some(validation(
                &conv_head,
                &val_images,
                (fh, fw),
                n_classes,
            )?))
        },
    )?;
    timings.insert(
        "head_training_s".into(),
        json!(phase_started.elapsed().as_secs_f64()),
    );
    let conv_head = head.convolutionalize()?;
    let head_only_mean_iou = match head_history.epochs.last().and_then(|e| e.metric) {
        Some(miou) => miou,
        None => validation(&conv_head, &val_images, (fh, fw), n_classes)?
            .metric
            .map_or(f64::NAN, |m| m.1),
    };
    eprintln!("head alone: val mIoU {:.2}%", 100.0 * head_only_mean_iou);

    // Phase 2: fine-tune the 1x1-conv head on whole training images.
    let phase_started = Instant::now();
    let finetune_history = if cfg.finetune_epochs > 0 {
        eprintln!("phase 2: fine-tuning the 1x1-conv head on {n_train} whole images");
        finetune(
            &varmap,
            &conv_head,
            &train_images,
            (fh, fw),
            &class_names,
            &phase(
                "finetune",
                cfg.finetune_epochs,
                cfg.finetune_batch_size,
                cfg.finetune_lr,
            ),
            &device,
            |_| {
                Ok(Some(validation(
                    &conv_head,
                    &val_images,
                    (fh, fw),
                    n_classes,
                )?))
            },
        )?
    } else {
        History::default()
    };
    timings.insert(
        "finetune_s".into(),
        json!(phase_started.elapsed().as_secs_f64()),
    );
    drop(train_images);

    // Evaluation and outputs.
    let eval_started = Instant::now();
    let (cm, val_loss) = evaluate(&conv_head, &val_images, (fh, fw), n_classes)?;
    timings.insert(
        "evaluation_s".into(),
        json!(eval_started.elapsed().as_secs_f64()),
    );
    save_confusion(&cfg.out.join("confusion.png"), &cm, &class_names)?;
    let detached = conv_head.detached()?;
    for (index, image) in val_images.iter().take(cfg.n_panels).enumerate() {
        let sample = val_ds.get(index)?;
        let taps = crate::training::stack_taps(&[image])?;
        let prediction = predict(&detached, &taps, (fh, fw), sample.mask.dim())?;
        common::viz::save_panel(
            &cfg.out
                .join("predictions")
                .join(format!("{}.png", sample.id)),
            &sample.image,
            Some(&sample.mask),
            &prediction,
        )?;
    }
    plot_phases(&cfg.out, &head_history, &finetune_history)?;
    save_final_checkpoint(
        &cfg.out,
        &varmap,
        &norm,
        cfg.seed,
        &run_config,
        head_epochs + cfg.finetune_epochs,
    )?;

    let seconds_total = started.elapsed().as_secs_f64();
    timings.insert("total_s".into(), json!(seconds_total));
    let iou = cm.iou_per_class();
    let mut metrics = cm.to_json(&class_names)?;
    let per_class_iou: serde_json::Map<String, serde_json::Value> = class_names
        .iter()
        .zip(&iou)
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    if let Some(map) = metrics.as_object_mut() {
        map.insert("per_class_iou".into(), json!(per_class_iou));
        map.insert("val_loss".into(), json!(val_loss));
        map.insert("head_only_mean_iou".into(), json!(head_only_mean_iou));
        map.insert("n_sampled_features".into(), json!(samples.len()));
        map.insert("sampled_per_class".into(), json!(counts));
        map.insert("feature_dim".into(), json!(FEATURE_DIM));
        map.insert("n_train_images".into(), json!(n_train));
        map.insert("n_val_images".into(), json!(n_val));
        map.insert("arch".into(), json!(arch));
        map.insert("weights".into(), json!(weights));
        map.insert("data_root".into(), json!(data.root));
        map.insert("data_origin".into(), json!(data.origin));
        map.insert("timings".into(), serde_json::Value::Object(timings));
    }
    write_atomic(
        &cfg.out.join("metrics.json"),
        &serde_json::to_vec_pretty(&metrics)?,
    )?;

    let summary = RunSummary {
        out: cfg.out.clone(),
        data_origin: data.origin,
        arch,
        weights,
        class_names,
        pixel_accuracy: cm.pixel_accuracy(),
        mean_accuracy: cm.mean_accuracy(),
        mean_iou: cm.mean_iou(),
        fw_iou: cm.fw_iou(),
        per_class_iou: iou,
        head_only_mean_iou,
        n_sampled_features: samples.len(),
        head_history,
        finetune_history,
        seconds_total,
    };
    Ok(summary)
}

/// `loss.png` with both phases on one epoch axis (fine-tuning continues after
/// the head's epochs), the val mIoU beside it, and `history.json`/`history.csv`.
fn plot_phases(out: &Path, head: &History, finetune: &History) -> anyhow::Result<()> {
    let offset = head.epochs.len() as f64;
    let points =
        |h: &History, shift: f64, f: &dyn Fn(&common::train::EpochRecord) -> Option<f64>| {
            h.epochs
                .iter()
                .filter_map(|e| f(e).map(|v| (e.epoch as f64 + shift, v)))
                .collect::<Vec<_>>()
        };
    let losses = vec![
        Curve::new(
            "head train loss (sampled pixels)",
            points(head, 0.0, &|e| Some(e.train_loss)),
        ),
        Curve::new(
            "fine-tune train loss (whole images)",
            points(finetune, offset, &|e| Some(e.train_loss)),
        ),
        Curve::new(
            "val loss",
            [
                points(head, 0.0, &|e| e.val_loss),
                points(finetune, offset, &|e| e.val_loss),
            ]
            .concat(),
        ),
    ];
    let miou = Curve::new(
        "val mIoU",
        [
            points(head, 0.0, &|e| e.metric),
            points(finetune, offset, &|e| e.metric),
        ]
        .concat(),
    );
    plot_loss_curves(
        &out.join("loss.png"),
        "hypercolumn head: phase 1 (sampled features), then phase 2 (fine-tuning)",
        &losses,
        Some(&miou),
    )?;
    let json = json!({ "head": head, "finetune": finetune });
    write_atomic(
        &out.join("history.json"),
        &serde_json::to_vec_pretty(&json)?,
    )?;
    let mut csv = String::from("phase,epoch,train_loss,val_loss,val_miou,lr,seconds\n");
    for (name, history) in [("head", head), ("finetune", finetune)] {
        for e in &history.epochs {
            let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            csv.push_str(&format!(
                "{name},{},{},{},{},{},{:.3}\n",
                e.epoch,
                e.train_loss,
                opt(e.val_loss),
                opt(e.metric),
                e.lr,
                e.seconds
            ));
        }
    }
    write_atomic(&out.join("history.csv"), csv.as_bytes())
}

/// `checkpoint.safetensors`: the head's layers and the normalisation statistics
/// (`norm.mean`, `norm.std`).
fn save_final_checkpoint(
    out: &Path,
    varmap: &VarMap,
    norm: &FeatureNorm,
    seed: u64,
    config: &serde_json::Value,
    epochs: usize,
) -> anyhow::Result<()> {
    let all = VarMap::new();
    {
        let source = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut target = all.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, var) in source.iter() {
            target.insert(name.clone(), var.clone());
        }
        target.insert("norm.mean".into(), Var::from_tensor(&norm.mean)?);
        target.insert("norm.std".into(), Var::from_tensor(&norm.std)?);
    }
    let meta = CheckpointMeta {
        epoch: epochs,
        step: 0,
        seed,
        config: config.clone(),
    };
    save_checkpoint(
        &out.join(common::train::CHECKPOINT_FILE),
        &all,
        &Default::default(),
        &meta,
    )
}
