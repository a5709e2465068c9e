//! A tiny data set in the layout the program reads (`TrainingImages/`,
//! `TrainingLabels/`, `flower.jpg`, `flower_mask.png`), written from the
//! generated stand-in with `common::data::image_io`.

use std::path::Path;

use anyhow::Result;
use assignment2_transposed_conv::data::{
    synthetic_flower_data, FlowerData, SCORE_IMAGE, SCORE_MASK, TRAIN_IMAGES, TRAIN_LABELS,
};
use common::data::image_io::{save_image, save_palette_mask};
use ndarray::{Array2, Array3, Axis};

/// Writes the first `n_patches` training pairs and the scoring scene of the
/// generated set of `seed` under `root`; gives the data written.
pub fn write_flower_layout(root: &Path, seed: u64, n_patches: usize) -> Result<FlowerData> {
    let data = synthetic_flower_data(seed);
    for index in 0..n_patches.min(data.train.len()) {
        let sample = data.train.get(index)?;
        save_image(
            &root.join(TRAIN_IMAGES).join(format!("{}.png", sample.id)),
            &sample.image,
        )?;
        // The lecture's labels are grey pictures, white = flower.
        save_image(
            &root.join(TRAIN_LABELS).join(format!("{}.png", sample.id)),
            &white_on_black(&sample.mask)?,
        )?;
    }
    save_image(&root.join(SCORE_IMAGE), &data.image)?;
    save_palette_mask(&root.join(SCORE_MASK), &data.mask)?;
    Ok(data)
}

/// `(H, W)` labels -> `(3, H, W)` picture: 0 black, anything else white.
fn white_on_black(mask: &Array2<u8>) -> Result<Array3<f32>> {
    let grey = mask.mapv(|v| if v == 0 { 0.0 } else { 1.0 });
    Ok(ndarray::stack(
        Axis(0),
        &[grey.view(), grey.view(), grey.view()],
    )?)
}
