//! The FCN's receptive-field table: field 32 at stride 4 (the lecture's numbers)
//! for both presets, layer by layer by the recurrence, and checked on the net
//! itself: a pixel changes exactly the output cells whose 32x32 window holds it.

use assignment1_classify_to_segment::model::{
    receptive_field, Arch, Classifier, RECEPTIVE_FIELD, STRIDE,
};
use candle::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarMap;
use common::init::seeded_var_builder;

type Result<T> = anyhow::Result<T>;

#[test]
fn the_classifier_sees_32_pixels_at_stride_4() -> Result<()> {
    for arch in [Arch::Lecture, Arch::Default] {
        let table = receptive_field(&arch.spec())?;
        assert_eq!((table.receptive_field, table.jump), (32, 4), "{arch}");
        assert_eq!(
            (table.receptive_field, table.jump),
            (RECEPTIVE_FIELD, STRIDE)
        );
        // r_out = r_in + (k-1) j_in, j_out = j_in s:
        // conv 5: 1 + 4 = 5 (j 1); pool 2: 5 + 1 = 6 (j 2); conv 5: 6 + 4*2 = 14 (j 2);
        // pool 2: 14 + 1*2 = 16 (j 4); fc1 as a 5x5 conv: 16 + 4*4 = 32 (j 4);
        // the later dense layers are 1x1 convolutions: 32.
        let fields: Vec<_> = table
            .layers
            .iter()
            .map(|l| (l.layer.name.as_str(), l.receptive_field, l.jump))
            .collect();
        let mut want = vec![
            ("conv1", 5, 1),
            ("pool1", 6, 2),
            ("conv2", 14, 2),
            ("pool2", 16, 4),
            ("fc1", 32, 4),
        ];
        if arch == Arch::Default {
            want.push(("fc2", 32, 4));
        }
        assert_eq!(fields, want, "{arch}");
    }
    Ok(())
}

#[test]
fn a_pixel_reaches_exactly_the_cells_whose_window_holds_it() -> Result<()> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 4, DType::F32, &Device::Cpu);
    let fcn = Classifier::new(&Arch::Default.spec(), vb)?.to_fcn()?;
    // 40x40 -> 3x3 cells; cell (i, j) sees rows 4i..4i+32 and columns 4j..4j+32.
    let image = Tensor::rand(0f32, 1f32, (1, 3, 40, 40), &Device::Cpu)?;
    let base = fcn.forward(&image)?;
    assert_eq!(base.dims(), &[1, 2, 3, 3]);
    for (row, col) in [(0, 0), (31, 31), (32, 3), (35, 39), (4, 20)] {
        // Change one pixel (all three channels) by 10: big enough to move some pooled maximum.
        let mut bump = vec![0f32; 3 * 40 * 40];
        for c in 0..3 {
            bump[(c * 40 + row) * 40 + col] = 10.0;
        }
        let bumped = (&image + Tensor::from_vec(bump, (1, 3, 40, 40), &Device::Cpu)?)?;
        let diff = (fcn.forward(&bumped)? - &base)?.abs()?.max_keepdim(1)?;
        for i in 0..3 {
            for j in 0..3 {
                let inside =
                    (4 * i..4 * i + 32).contains(&row) && (4 * j..4 * j + 32).contains(&col);
                let changed = diff.i((0, 0, i, j))?.to_scalar::<f32>()? > 0.0;
                assert_eq!(changed, inside, "pixel ({row}, {col}), cell ({i}, {j})");
            }
        }
    }
    Ok(())
}
