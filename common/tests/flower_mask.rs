//! The flower mask's colour rule on the real photo: it agrees with the shared
//! `flower_mask.png` (made by the same rule, with hand-chosen clean-up) to at least
//! 98% IoU; and `ensure_flower_mask` writes a mask only where none is. Needs the
//! shared flower set for the first test (CI always has it); says so and skips otherwise.

use common::data::flower_mask::{
    ensure_flower_mask, flower_mask_by_colour, FLOWER_IMAGE, FLOWER_MASK,
};
use common::data::image_io::{load_image, load_palette_mask, save_image};
use common::Result;
use ndarray::Array3;

#[test]
fn the_colour_rule_matches_the_shared_mask_of_the_real_photo() -> Result<()> {
    let Some(shared) = common::data::shared_data_set("cmput328-flower") else {
        return Ok(());
    };
    let image = load_image(&shared.join(FLOWER_IMAGE))?;
    let reference = load_palette_mask(&shared.join(FLOWER_MASK))?;
    let derived = flower_mask_by_colour(&image);
    assert_eq!(derived.dim(), reference.dim());
    let both = derived
        .iter()
        .zip(reference.iter())
        .filter(|(&a, &b)| a == 1 && b == 1)
        .count();
    let either = derived
        .iter()
        .zip(reference.iter())
        .filter(|(&a, &b)| a == 1 || b == 1)
        .count();
    let iou = both as f64 / either as f64;
    eprintln!("IoU of the colour rule with the shared mask: {iou:.4}");
    assert!(iou >= 0.98, "IoU with the shared mask {iou:.4}");
    Ok(())
}

#[test]
fn a_mask_is_made_only_where_none_is() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let image = Array3::from_shape_fn((3, 30, 30), |(c, y, x)| {
        let inside = (5..25).contains(&y) && (5..25).contains(&x);
        match (c, inside) {
            (0, true) => 0.9,
            (0, false) => 0.1,
            _ => 0.2,
        }
    });
    save_image(&dir.path().join(FLOWER_IMAGE), &image)?;
    assert!(ensure_flower_mask(dir.path())?);
    let mask = load_palette_mask(&dir.path().join(FLOWER_MASK))?;
    // A 20x20 red square, give or take the JPEG's blur at its edge.
    let flower = mask.iter().filter(|&&v| v == 1).count();
    assert!((360..=440).contains(&flower), "{flower} flower pixels");
    assert_eq!((mask[[15, 15]], mask[[0, 0]]), (1, 0));
    assert!(!ensure_flower_mask(dir.path())?, "an existing mask is kept");
    Ok(())
}

#[test]
fn a_missing_photo_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = ensure_flower_mask(dir.path()).expect_err("no photo");
    assert!(format!("{err:#}").contains(FLOWER_IMAGE), "{err:#}");
}
