//! Tests of `common::nn::receptive_field_table`: a table by hand, and the dilated
//! context module's growth (Yu & Koltun 2016).

use common::nn::{receptive_field_table, Layer};

#[test]
fn hand_computed_table() {
    // conv3 (r 3, j 1), pool2 (r 4, j 2), conv3 (r 4 + 2*2 = 8, j 2), pool2 (r 10, j 4)
    let t = receptive_field_table(&[
        Layer::conv("conv1", 3, 1, 1, 1),
        Layer::pool("pool1", 2),
        Layer::conv("conv2", 3, 1, 1, 1),
        Layer::pool("pool2", 2),
    ]);
    let fields: Vec<_> = t
        .layers
        .iter()
        .map(|l| (l.receptive_field, l.jump))
        .collect();
    assert_eq!(fields, vec![(3, 1), (4, 2), (8, 2), (10, 4)]);
    assert_eq!((t.receptive_field, t.jump), (10, 4));
    assert!(t.to_text().contains("pool2"));
}

#[test]
fn dilated_module_grows_as_the_paper() {
    let layers: Vec<_> = [1, 1, 2, 4, 8]
        .iter()
        .enumerate()
        .map(|(i, &d)| Layer::conv(&format!("ctx{i}"), 3, 1, d, d))
        .collect();
    let t = receptive_field_table(&layers);
    let fields: Vec<_> = t.layers.iter().map(|l| l.receptive_field).collect();
    assert_eq!(fields, vec![3, 5, 9, 17, 33]);
    assert_eq!(t.jump, 1);
}
