//! The PASCAL VOC colour palette: label -> RGB, as the VOC devkit's `labelcolormap`.

/// The colour of `label` in the VOC palette (bits of the label spread over R, G, B;
/// 255, the ignore label, is the devkit's cream `(224, 224, 192)`).
pub fn voc_color(label: u8) -> [u8; 3] {
    let mut rgb = [0u8; 3];
    let mut id = label;
    for bit in 0..8 {
        for (channel, value) in rgb.iter_mut().enumerate() {
            *value |= ((id >> channel) & 1) << (7 - bit);
        }
        id >>= 3;
    }
    rgb
}

/// The whole 256-entry palette as `[r0, g0, b0, r1, ...]`, the layout of a PNG `PLTE` chunk.
pub fn voc_palette() -> Vec<u8> {
    (0..=255u8).flat_map(voc_color).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_colours() {
        // From the VOC devkit: background, aeroplane, bicycle, person, ignore.
        assert_eq!(voc_color(0), [0, 0, 0]);
        assert_eq!(voc_color(1), [128, 0, 0]);
        assert_eq!(voc_color(2), [0, 128, 0]);
        assert_eq!(voc_color(15), [192, 128, 128]);
        assert_eq!(voc_color(255), [224, 224, 192]);
        assert_eq!(voc_palette().len(), 768);
    }
}
