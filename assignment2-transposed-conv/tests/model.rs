//! The five nets: output size equals input size for odd and even sizes, the
//! parameter counts, padding and cropping, bad inputs; and the dihedral
//! augmentation (flips and quarter turns).

use anyhow::Result;
use assignment2_transposed_conv::data::{
    dihedral, dihedral_image, dihedral_mask, dihedral_transform,
};
use assignment2_transposed_conv::model::{padding_to_multiple, parameter_count, SegNet, Variant};
use candle::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use common::data::Sample;
use common::init::seeded_var_builder;
use ndarray::{array, Array2, Array3};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn net(variant: Variant, n_classes: usize) -> Result<(SegNet, VarMap)> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    Ok((SegNet::new(variant, n_classes, vb)?, varmap))
}

#[test]
fn every_variant_keeps_the_input_size_for_odd_and_even_sizes() -> Result<()> {
    // Sizes that are multiples of 4, even but not, odd, tiny, and the photo's 427.
    let sizes = [
        (32, 32),
        (30, 46),
        (31, 33),
        (17, 8),
        (1, 1),
        (2, 3),
        (427, 6),
    ];
    for variant in Variant::ALL {
        let (model, _) = net(variant, 2)?;
        for (h, w) in sizes {
            let xs = Tensor::rand(0f32, 1f32, (2, 3, h, w), &Device::Cpu)?;
            let ys = model.forward(&xs)?;
            assert_eq!(ys.dims(), &[2, 2, h, w], "{variant} on {h}x{w}");
        }
    }
    Ok(())
}

#[test]
fn parameter_counts_match_the_layer_shapes() -> Result<()> {
    // Encoder: conv 3->16 3x3 (432 + 16) + conv 16->32 3x3 (4608 + 32) = 5088.
    // transposed: 32 -> 2, 7x7: 3136 + 2 = 3138            -> 8226
    // skip: 32 -> 16, 4x4: 8192 + 16; 16 -> 2, 4x4: 512 + 2 -> 13810
    // bilinear: 1x1 score 32 -> 2: 64 + 2 = 66             -> 5154
    // unpool: 3x3 32 -> 16: 4608 + 16; 3x3 16 -> 16: 2304 + 16; 1x1 16 -> 2: 32 + 2
    //         = 6978                                        -> 12066
    // dilated: five 3x3 32 -> 32: 5 * (9216 + 32) = 46240; 1x1 32 -> 2: 66
    //         = 46306                                       -> 51394
    let expected = [
        (Variant::Transposed, 8226),
        (Variant::Skip, 13810),
        (Variant::Bilinear, 5154),
        (Variant::Unpool, 12066),
        (Variant::Dilated, 51394),
    ];
    for (variant, count) in expected {
        let (_, varmap) = net(variant, 2)?;
        let in_varmap: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(in_varmap, count, "{variant}");
        assert_eq!(parameter_count(variant, 2), count, "{variant}");
    }
    Ok(())
}

#[test]
fn an_unaligned_input_scores_like_its_edge_padded_copy_cropped() -> Result<()> {
    // 30x29 pads to 32x32 by repeating the last row/column; the net must give the
    // same scores as on that padded image, cropped back.
    assert_eq!(
        (
            padding_to_multiple(30),
            padding_to_multiple(29),
            padding_to_multiple(32)
        ),
        (2, 3, 0)
    );
    let xs = Tensor::rand(0f32, 1f32, (1, 3, 30, 29), &Device::Cpu)?;
    let padded = xs.pad_with_same(2, 0, 2)?.pad_with_same(3, 0, 3)?;
    for variant in Variant::ALL {
        let (model, _) = net(variant, 2)?;
        let direct = model.forward(&xs)?;
        let via_padding = model.forward(&padded)?.narrow(2, 0, 30)?.narrow(3, 0, 29)?;
        let diff = (direct - via_padding)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{variant}: {diff}");
    }
    Ok(())
}

#[test]
fn bad_inputs_give_clear_errors() -> Result<()> {
    let (model, _) = net(Variant::Skip, 2)?;
    let grey = Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu)?;
    let err = model.forward(&grey).unwrap_err().to_string();
    assert!(
        err.contains("expects (N, 3, H, W)") && err.contains("[1, 1, 8, 8]"),
        "{err}"
    );
    let empty = Tensor::zeros((1, 3, 0, 8), DType::F32, &Device::Cpu)?;
    let err = model.forward(&empty).unwrap_err().to_string();
    assert!(err.contains("empty input"), "{err}");
    let err = net(Variant::Bilinear, 1)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 2 classes"), "{err}");
    let err = "deconv".parse::<Variant>().unwrap_err().to_string();
    assert!(
        err.contains("\"deconv\"") && err.contains("transposed, skip, bilinear, unpool or dilated"),
        "{err}"
    );
    assert_eq!("Skip".parse::<Variant>()?, Variant::Skip);
    Ok(())
}

#[test]
fn dihedral_elements_turn_and_flip_by_hand() {
    // 2x3 mask; a counter-clockwise quarter turn makes it 3x2 with the top-right
    // corner at the top-left.
    let m: Array2<u8> = array![[1, 2, 3], [4, 5, 6]];
    assert_eq!(dihedral_mask(&m, 0), m);
    assert_eq!(dihedral_mask(&m, 1), array![[3, 6], [2, 5], [1, 4]]);
    assert_eq!(dihedral_mask(&m, 2), array![[6, 5, 4], [3, 2, 1]]);
    assert_eq!(dihedral_mask(&m, 3), array![[4, 1], [5, 2], [6, 3]]);
    assert_eq!(dihedral_mask(&m, 4), array![[3, 2, 1], [6, 5, 4]]);
    // Four quarter turns are the identity; all 8 elements differ on this mask.
    let mut turned = m.clone();
    for _ in 0..4 {
        turned = dihedral_mask(&turned, 1);
    }
    assert_eq!(turned, m);
    let all: Vec<Array2<u8>> = (0..8).map(|k| dihedral_mask(&m, k)).collect();
    for a in 0..8 {
        for b in a + 1..8 {
            assert_ne!(all[a], all[b], "elements {a} and {b}");
        }
    }
}

#[test]
fn images_and_masks_move_together() -> Result<()> {
    // Channel 0 of the image equals the mask, so it must after every element too.
    let mask: Array2<u8> = Array2::from_shape_fn((4, 4), |(y, x)| (3 * y + x) as u8);
    let image = Array3::from_shape_fn((3, 4, 4), |(c, y, x)| {
        (c * 100) as f32 + mask[[y, x]] as f32
    });
    for k in 0..8 {
        let sample = dihedral(
            Sample {
                id: "s".into(),
                image: image.clone(),
                mask: mask.clone(),
            },
            k,
        );
        assert!(sample.image.is_standard_layout() && sample.mask.is_standard_layout());
        for ((c, y, x), &v) in sample.image.indexed_iter() {
            assert_eq!(v, (c * 100) as f32 + sample.mask[[y, x]] as f32, "k {k}");
        }
        assert_eq!(
            dihedral_image(&image, k).index_axis(ndarray::Axis(0), 1),
            sample.image.index_axis(ndarray::Axis(0), 1)
        );
    }
    // The transform refuses non-square samples (they would not batch after a turn).
    let transform = dihedral_transform();
    let wide = Sample {
        id: "wide".into(),
        image: Array3::zeros((3, 4, 6)),
        mask: Array2::zeros((4, 6)),
    };
    let err = transform(wide, &mut StdRng::seed_from_u64(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"wide\" is 4x6"), "{err}");
    Ok(())
}
