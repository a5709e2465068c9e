//! Backbone and head: VGG indices, tap shapes and Z for both VGGs on random
//! weights, loading errors, preprocessing from the file's metadata, and the
//! head's three equal forms (fully connected, 1x1 convolutions, folded per tap).

use std::collections::HashMap;

use anyhow::Result;
use assignment3_hypercolumn_voc::features::hypercolumns_at;
use assignment3_hypercolumn_voc::model::{
    head, hypercolumns, prepare_taps, Arch, Backbone, FeatureNorm, HeadConfig, FEATURE_DIM,
    TAP_CHANNELS,
};
use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::data::transforms::Normalization;
use ndarray::Array2;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn torchvision_conv_indices() {
    let indices = |arch: Arch| arch.convs().iter().map(|s| s.index).collect::<Vec<_>>();
    assert_eq!(indices(Arch::Vgg11), [0, 3, 6, 8, 11, 13, 16, 18]);
    assert_eq!(
        indices(Arch::Vgg16),
        [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    );
    // 64 + 128 + 256 + 512 + 512 = 1472
    assert_eq!(TAP_CHANNELS.iter().sum::<usize>(), FEATURE_DIM);
    assert_eq!(FEATURE_DIM, 1472);
}

#[test]
fn tap_shapes_on_random_weights_both_vggs() -> Result<()> {
    let device = Device::Cpu;
    for arch in [Arch::Vgg11, Arch::Vgg16] {
        let backbone = Backbone::random(arch, 1, &device)?;
        // 36x50 input: pools floor 36 -> 18 -> 9 -> 4 -> 2 and 50 -> 25 -> 12 -> 6 -> 3.
        let xs = Tensor::randn(0f32, 1.0, (2, 3, 36, 50), &device)?;
        let taps = backbone.taps(&xs)?;
        let shapes: Vec<Vec<usize>> = taps.iter().map(|t| t.dims().to_vec()).collect();
        assert_eq!(
            shapes,
            [
                vec![2, 64, 36, 50],
                vec![2, 128, 18, 25],
                vec![2, 256, 9, 12],
                vec![2, 512, 4, 6],
                vec![2, 512, 2, 3]
            ],
            "{arch}"
        );
        let z: usize = taps.iter().map(|t| t.dim(1).unwrap_or(0)).sum();
        assert_eq!(z, 1472);
        // Taps are ReLU outputs: non-negative, and the random net is not dead.
        for tap in &taps {
            assert!(tap.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.0);
            assert!(tap.flatten_all()?.max(0)?.to_scalar::<f32>()? > 0.0);
        }
        // The hypercolumn map at half the input size: (2, 1472, 18, 25).
        assert_eq!(hypercolumns(&taps, 18, 25)?.dims(), [2, 1472, 18, 25]);
    }
    Ok(())
}

#[test]
fn too_small_input_is_an_error() -> Result<()> {
    let backbone = Backbone::random(Arch::Vgg11, 0, &Device::Cpu)?;
    let xs = Tensor::zeros((1, 3, 8, 40), DType::F32, &Device::Cpu)?;
    let err = backbone.taps(&xs).unwrap_err().to_string();
    assert!(err.contains("H, W >= 16"), "{err}");
    Ok(())
}

/// Random conv tensors for `arch` under torchvision names, as a safetensors file.
fn write_weights(
    path: &std::path::Path,
    arch: Arch,
    edit: impl Fn(&mut HashMap<String, Tensor>),
    metadata: Option<(&str, &str)>,
) -> Result<()> {
    let mut tensors = HashMap::new();
    for (name, shape) in arch.weight_shapes() {
        tensors.insert(name, Tensor::randn(0f32, 0.05, shape, &Device::Cpu)?);
    }
    edit(&mut tensors);
    let views: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| -> Result<_> {
            let bytes = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            Ok((k.clone(), bytes, t.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(String, safetensors::tensor::TensorView)> = views
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("consistent view"),
            )
        })
        .collect();
    let metadata = metadata.map(|(k, v)| HashMap::from([(k.to_owned(), v.to_owned())]));
    safetensors::serialize_to_file(views, metadata, path)?;
    Ok(())
}

#[test]
fn loads_weights_and_follows_the_metadata() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vgg11.safetensors");
    write_weights(&path, Arch::Vgg11, |_| {}, Some(("input", "caffe")))?;
    let shapes = common::weights::tensor_shapes(&path)?;
    assert_eq!(Arch::detect(&shapes), Some(Arch::Vgg11));
    let backbone = Backbone::load(&path, Arch::Vgg11, &Device::Cpu)?;
    assert_eq!(backbone.normalization(), Normalization::Caffe);

    let plain = dir.path().join("plain.safetensors");
    write_weights(&plain, Arch::Vgg11, |_| {}, None)?;
    let backbone = Backbone::load(&plain, Arch::Vgg11, &Device::Cpu)?;
    assert_eq!(backbone.normalization(), Normalization::Imagenet);

    // Extra tensors (a classifier) are allowed and not read.
    let extra = dir.path().join("extra.safetensors");
    write_weights(
        &extra,
        Arch::Vgg16,
        |t| {
            t.insert(
                "pre_logits.fc1.weight".into(),
                Tensor::zeros((4, 2), DType::F32, &Device::Cpu).expect("zeros"),
            );
        },
        None,
    )?;
    assert_eq!(
        Arch::detect(&common::weights::tensor_shapes(&extra)?),
        Some(Arch::Vgg16)
    );
    Backbone::load(&extra, Arch::Vgg16, &Device::Cpu)?;
    Ok(())
}

#[test]
fn missing_and_misshaped_tensors_are_listed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broken.safetensors");
    write_weights(
        &path,
        Arch::Vgg11,
        |t| {
            t.remove("features.3.weight");
            t.remove("features.18.bias");
            t.insert(
                "features.6.weight".into(),
                Tensor::zeros((256, 128, 1, 1), DType::F32, &Device::Cpu).expect("zeros"),
            );
        },
        None,
    )?;
    let err = Backbone::load(&path, Arch::Vgg11, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.safetensors"), "{err}");
    assert!(
        err.contains("missing features.3.weight, features.18.bias"),
        "{err}"
    );
    assert!(
        err.contains("features.6.weight is [256, 128, 1, 1], expected [256, 128, 3, 3]"),
        "{err}"
    );
    // A VGG11 file asked to be a VGG16: every VGG16-only key is missing.
    let vgg11 = dir.path().join("vgg11.safetensors");
    write_weights(&vgg11, Arch::Vgg11, |_| {}, None)?;
    let err = Backbone::load(&vgg11, Arch::Vgg16, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("features.2.weight"), "{err}");
    // Not a safetensors file at all.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not weights")?;
    let err = Backbone::load(&junk, Arch::Vgg11, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a safetensors file"), "{err}");
    // Unknown preprocessing in the metadata.
    let odd = dir.path().join("odd.safetensors");
    write_weights(&odd, Arch::Vgg11, |_| {}, Some(("input", "yuv")))?;
    let err = format!(
        "{:#}",
        Backbone::load(&odd, Arch::Vgg11, &Device::Cpu).unwrap_err()
    );
    assert!(
        err.contains("\"yuv\" is not caffe, imagenet or none"),
        "{err}"
    );
    Ok(())
}

#[test]
fn shared_vgg16_weights_load_with_caffe_preprocessing() -> Result<()> {
    let Some(dir) = common::weights::shared_weights_dir() else {
        eprintln!("skipped: shared weights folder not found");
        return Ok(());
    };
    let path = dir.join("vgg16-hed-bsds500.safetensors");
    if !path.is_file() {
        eprintln!("skipped: {path:?} not found");
        return Ok(());
    }
    assert_eq!(
        Arch::detect(&common::weights::tensor_shapes(&path)?),
        Some(Arch::Vgg16)
    );
    let backbone = Backbone::load(&path, Arch::Vgg16, &Device::Cpu)?;
    assert_eq!(backbone.normalization(), Normalization::Caffe);
    Ok(())
}

/// A head with random weights and a normalisation fitted on random features.
fn random_head(
    z: usize,
    hidden: usize,
    k: usize,
    device: &Device,
) -> Result<(VarMap, assignment3_hypercolumn_voc::model::Head)> {
    let mut features = Array2::<f32>::zeros((64, z));
    for ((r, c), v) in features.indexed_iter_mut() {
        *v = ((r * 7 + c * 13) % 17) as f32 * (1.0 + c as f32 / z as f32);
    }
    // One dead dimension: its std is floored, not 0.
    features.column_mut(0).fill(0.0);
    let norm = FeatureNorm::fit(&features, device)?;
    assert!(norm.std.flatten_all()?.min(0)?.to_scalar::<f32>()? > 0.0);
    let varmap = VarMap::new();
    let vb = common::init::seeded_var_builder(&varmap, 3, DType::F32, device);
    let cfg = HeadConfig {
        feature_dim: z,
        hidden,
        n_classes: k,
    };
    Ok((varmap, head(&cfg, norm, vb)?))
}

#[test]
fn fully_connected_and_1x1_conv_heads_agree() -> Result<()> {
    let device = Device::Cpu;
    let (z, hidden, k) = (40, 16, 5);
    let (_varmap, fc_head) = random_head(z, hidden, k, &device)?;
    let conv_head = fc_head.convolutionalize()?;
    // (N, Z, H, W) = (2, 40, 3, 4) -> rows (N*H*W, Z) in (n, y, x) order.
    let maps = (Tensor::randn(0f32, 5.0, (2, z, 3, 4), &device)? + 8.0)?;
    let rows = maps.permute((0, 2, 3, 1))?.reshape((24, z))?;
    let fc = fc_head.forward(&rows)?; // (24, K)
    let conv = conv_head.forward_hypercolumns(&maps)?; // (2, K, 3, 4)
    let conv_rows = conv.permute((0, 2, 3, 1))?.reshape((24, k))?;
    let diff = max_abs_diff(&fc, &conv_rows)?;
    assert!(diff < 1e-5, "FC and 1x1 conv differ by {diff}");
    Ok(())
}

#[test]
fn folded_taps_equal_the_hypercolumn_path() -> Result<()> {
    let device = Device::Cpu;
    // Taps like a 24x32 input: one larger than the 12x16 map, one equal, three smaller.
    let sizes = [(8, 24, 32), (6, 12, 16), (5, 6, 8), (4, 3, 4), (3, 1, 2)];
    let z: usize = sizes.iter().map(|s| s.0).sum();
    let taps: Vec<Tensor> = sizes
        .iter()
        .map(|&(c, h, w)| common::nn::relu(&Tensor::randn(0f32, 3.0, (2, c, h, w), &device)?))
        .collect::<candle::Result<_>>()?;
    let (_varmap, fc_head) = random_head(z, 12, 4, &device)?;
    let conv_head = fc_head.convolutionalize()?;
    let reference = conv_head.forward_hypercolumns(&hypercolumns(&taps, 12, 16)?)?;
    let folded = conv_head.forward_taps(&taps, 12, 16)?;
    assert_eq!(folded.dims(), [2, 4, 12, 16]);
    let diff = max_abs_diff(&reference, &folded)?;
    assert!(diff < 1e-4, "folded path differs by {diff}");
    // Taps prepared (resized where larger) give the same logits.
    let prepared = prepare_taps(&taps, 12, 16, DType::F32)?;
    assert_eq!(prepared[0].dims(), [2, 8, 12, 16]);
    assert_eq!(prepared[2].dims(), [2, 5, 6, 8]);
    let diff = max_abs_diff(&reference, &conv_head.forward_taps(&prepared, 12, 16)?)?;
    assert!(diff < 1e-4, "prepared taps differ by {diff}");
    // Only smaller taps: the folded bias then rides on a part that is upsampled after its
    // convolution, still exact since bilinear weights sum to 1.
    let small = &taps[2..];
    let z_small: usize = sizes[2..].iter().map(|s| s.0).sum();
    let (_small_varmap, small_head) = random_head(z_small, 12, 4, &device)?;
    let small_head = small_head.convolutionalize()?;
    let diff = max_abs_diff(
        &small_head.forward_hypercolumns(&hypercolumns(small, 12, 16)?)?,
        &small_head.forward_taps(small, 12, 16)?,
    )?;
    assert!(
        diff < 1e-4,
        "smaller taps only: folded path differs by {diff}"
    );
    // The detached copy computes the same.
    let diff = max_abs_diff(&folded, &conv_head.detached()?.forward_taps(&taps, 12, 16)?)?;
    assert!(diff < 1e-6, "detached head differs by {diff}");
    // Wrong channel total is an error, not a panic.
    let err = conv_head
        .forward_taps(&taps[1..], 12, 16)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{} channels in all, the head takes {z}", z - 8)),
        "{err}"
    );
    Ok(())
}

#[test]
fn folded_path_trains_the_first_layer() -> Result<()> {
    let device = Device::Cpu;
    let taps = vec![
        Tensor::randn(0f32, 1.0, (1, 3, 8, 8), &device)?,
        Tensor::randn(0f32, 1.0, (1, 2, 4, 4), &device)?,
    ];
    let (varmap, fc_head) = random_head(5, 6, 3, &device)?;
    let conv_head = fc_head.convolutionalize()?;
    let loss = conv_head.forward_taps(&taps, 4, 4)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let data = varmap.data().lock().expect("varmap lock");
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc3.bias"] {
        let grad = grads.get(data[name].as_tensor()).expect("a gradient");
        let norm = grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0, "{name} got a zero gradient");
    }
    Ok(())
}

#[test]
fn point_hypercolumns_equal_the_map() -> Result<()> {
    let device = Device::Cpu;
    let taps = vec![
        Tensor::randn(0f32, 1.0, (1, 3, 20, 30), &device)?,
        Tensor::randn(0f32, 1.0, (1, 4, 10, 15), &device)?,
        Tensor::randn(0f32, 1.0, (1, 2, 5, 7), &device)?,
    ];
    let map = hypercolumns(&taps, 10, 15)?.squeeze(0)?; // (9, 10, 15)
    let pixels = [(0, 0), (9, 14), (4, 7), (7, 2)];
    let points = hypercolumns_at(&taps, 10, 15, &pixels)?;
    assert_eq!(points.dim(), (4, 9));
    for (p, &(y, x)) in pixels.iter().enumerate() {
        let column = map
            .narrow(1, y, 1)?
            .narrow(2, x, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (c, &value) in column.iter().enumerate() {
            assert!(
                (points[[p, c]] - value).abs() < 1e-5,
                "pixel ({y}, {x}) channel {c}: {} vs {value}",
                points[[p, c]]
            );
        }
    }
    let err = hypercolumns_at(&taps, 10, 15, &[(10, 0)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the 10x15 feature map"), "{err}");
    Ok(())
}

#[test]
fn flip_of_the_taps_alone_changes_nothing_in_the_1x1_head() -> Result<()> {
    use assignment3_hypercolumn_voc::evaluate::{flip_width, image_logits};
    use assignment3_hypercolumn_voc::taps::TapImage;
    let device = Device::Cpu;
    // (1, 1, 1, 3) [0 1 2] -> [2 1 0]
    let row = Tensor::new(&[[[[0f32, 1.0, 2.0]]]], &device)?;
    assert_eq!(
        flip_width(&row)?.flatten_all()?.to_vec1::<f32>()?,
        [2.0, 1.0, 0.0]
    );
    // A 1x1-conv head commutes with mirroring (bilinear resizing is symmetric too), so
    // the test-time flip of mirrored taps gives the plain logits: only a VGG that sees
    // the mirrored image can change them.
    let sizes = [(6, 12, 16), (5, 6, 8), (3, 3, 4)];
    let z: usize = sizes.iter().map(|s| s.0).sum();
    let taps: Vec<Tensor> = sizes
        .iter()
        .map(|&(c, h, w)| Tensor::randn(0f32, 3.0, (1, c, h, w), &device))
        .collect::<candle::Result<_>>()?;
    let (_varmap, fc_head) = random_head(z, 8, 4, &device)?;
    let conv_head = fc_head.convolutionalize()?;
    let mut image = TapImage {
        id: "mirror".to_owned(),
        taps: taps.clone(),
        labels: Tensor::zeros((1, 12, 16), DType::U32, &device)?,
        mask: None,
        flipped: None,
    };
    let plain = image_logits(&conv_head, &image)?;
    assert_eq!(plain.dims(), [1, 4, 12, 16]);
    image.flipped = Some(taps.iter().map(flip_width).collect::<candle::Result<_>>()?);
    let diff = max_abs_diff(&plain, &image_logits(&conv_head, &image)?)?;
    assert!(diff < 1e-4, "flipped taps change the logits by {diff}");
    Ok(())
}
