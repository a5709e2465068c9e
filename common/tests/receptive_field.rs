//! Tests of `common::nn::receptive_field_table`: tables by hand, the dilated
//! context module's growth (Yu & Koltun 2016, Table 1), the upsampling rules, bad
//! layers, and the JSON form.

use anyhow::Result;
use common::nn::{receptive_field_table, Layer, LayerKind};

/// `(receptive field, jump)` after each layer.
fn fields(layers: &[Layer]) -> Result<Vec<(usize, usize)>> {
    let table = receptive_field_table(layers)?;
    Ok(table
        .layers
        .iter()
        .map(|l| (l.receptive_field, l.jump))
        .collect())
}

#[test]
fn hand_computed_table() -> Result<()> {
    // r_out = r_in + (k-1) d j_in, j_out = j_in s, from r = 1, j = 1:
    // conv 3x3:         r = 1 + 2*1*1 = 3,   j = 1
    // pool 2:           r = 3 + 1*1*1 = 4,   j = 1*2 = 2
    // conv 3x3 dil. 2:  r = 4 + 2*2*2 = 12,  j = 2
    // pool 2:           r = 12 + 1*1*2 = 14, j = 4
    // conv 5x5 stride 2: r = 14 + 4*1*4 = 30, j = 8
    let layers = [
        Layer::conv("conv1", 3, 1, 1, 1),
        Layer::pool("pool1", 2),
        Layer::conv("conv2", 3, 1, 2, 2),
        Layer::pool("pool2", 2),
        Layer::conv("conv3", 5, 2, 1, 0),
    ];
    assert_eq!(
        fields(&layers)?,
        vec![(3, 1), (4, 2), (12, 2), (14, 4), (30, 8)]
    );
    let table = receptive_field_table(&layers)?;
    assert_eq!((table.receptive_field, table.jump), (30, 8));
    assert_eq!(table.coarsest_jump, 8);
    let text = table.to_text();
    assert!(
        text.contains("pool2") && text.lines().count() == 6,
        "{text}"
    );
    Ok(())
}

#[test]
fn dilated_module_grows_as_the_paper() -> Result<()> {
    // Yu & Koltun 2016, Table 1 (the basic context module): 3x3 convolutions with
    // dilation 1, 1, 2, 4, 8 have receptive fields 3, 5, 9, 17, 33 at full
    // resolution: each adds 2 d, so the field grows exponentially with depth.
    let layers: Vec<_> = [1, 1, 2, 4, 8]
        .iter()
        .enumerate()
        .map(|(i, &d)| Layer::conv(&format!("ctx{}", i + 1), 3, 1, d, d))
        .collect();
    let table = receptive_field_table(&layers)?;
    let got: Vec<_> = table.layers.iter().map(|l| l.receptive_field).collect();
    assert_eq!(got, vec![3, 5, 9, 17, 33]);
    assert_eq!(table.jump, 1);
    // The same module after one 2x2 pool works at jump 2: every step doubles.
    let mut pooled = vec![Layer::pool("pool", 2)];
    pooled.extend(layers);
    let got: Vec<_> = fields(&pooled)?.into_iter().map(|(r, _)| r).collect();
    assert_eq!(got, vec![2, 6, 10, 18, 34, 66]);
    Ok(())
}

#[test]
fn upsampling_divides_the_jump() -> Result<()> {
    // Two 2x2 pools: r = 1 + 1*1 = 2, j = 2; then r = 2 + 1*2 = 4, j = 4.
    let two_pools = [Layer::pool("pool1", 2), Layer::pool("pool2", 2)];
    // Transposed 7x7 stride 4: j = 4/4 = 1, r = 4 + 6*1 = 10.
    let mut transposed = two_pools.to_vec();
    transposed.push(Layer::transposed_conv("up", 7, 4, 2));
    assert_eq!(fields(&transposed)?.last(), Some(&(10, 1)));
    assert_eq!(receptive_field_table(&transposed)?.coarsest_jump, 4);
    // Unpool by 2 twice: j = 2 then 1, r stays 4.
    let mut unpooled = two_pools.to_vec();
    unpooled.extend([Layer::unpool("unpool2", 2), Layer::unpool("unpool1", 2)]);
    assert_eq!(fields(&unpooled)?[2..], [(4, 2), (4, 1)]);
    // Bilinear by 4: reads two cells 4 pixels apart, r = 4 + 4 = 8, j = 1.
    let mut bilinear = two_pools.to_vec();
    bilinear.push(Layer::bilinear("resize", 4));
    assert_eq!(fields(&bilinear)?.last(), Some(&(8, 1)));
    let text = receptive_field_table(&bilinear)?.to_text();
    assert!(text.contains("1/4"), "{text}");
    Ok(())
}

#[test]
fn bad_layers_are_errors() {
    let err = receptive_field_table(&[Layer::conv("c", 3, 0, 1, 1)]).unwrap_err();
    assert!(err.to_string().contains("\"c\""), "{err}");
    // Refining a jump of 2 by 4 has no integer jump.
    let err = receptive_field_table(&[Layer::pool("p", 2), Layer::bilinear("b", 4)]).unwrap_err();
    assert!(err.to_string().contains("jump before it is 2"), "{err}");
}

#[test]
fn the_table_serialises_flat() -> Result<()> {
    let table = receptive_field_table(&[Layer::conv("conv1", 3, 1, 2, 2)])?;
    let json = serde_json::to_value(&table)?;
    let row = &json["layers"][0];
    assert_eq!(row["name"], "conv1");
    assert_eq!(row["kind"], "conv");
    assert_eq!(row["dilation"], 2);
    assert_eq!(row["receptive_field"], 5);
    assert_eq!(json["jump"], 1);
    assert_eq!(Layer::unpool("u", 2).kind, LayerKind::Unpool);
    Ok(())
}
