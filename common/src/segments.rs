//! Segments: the connected components (4-neighbourhood) of one class of a
//! label mask, numbered 1.. in raster order, 0 for every other pixel. Assignment
//! 4's Rand score and border weight map see a membrane image's cells this way; the
//! flower mask rule fills holes and drops specks with them.

use ndarray::Array2;

/// The components of the pixels of `mask` equal to `class`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// `(H, W)`: 0 outside `class`, else the component's number 1..=count.
    pub labels: Array2<u32>,
    /// Number of components.
    pub count: usize,
}

/// Labels the 4-connected components of `mask == class` (an explicit stack, no recursion).
pub fn connected_components(mask: &Array2<u8>, class: u8) -> Segments {
    let (h, w) = mask.dim();
    let mut labels = Array2::<u32>::zeros((h, w));
    let mut count = 0u32;
    let mut stack = Vec::new();
    for start in 0..h * w {
        let (y, x) = (start / w, start % w);
        if mask[[y, x]] != class || labels[[y, x]] != 0 {
            continue;
        }
        count += 1;
        labels[[y, x]] = count;
        stack.push((y, x));
        while let Some((y, x)) = stack.pop() {
            for (ny, nx) in neighbours(y, x, h, w) {
                if mask[[ny, nx]] == class && labels[[ny, nx]] == 0 {
                    labels[[ny, nx]] = count;
                    stack.push((ny, nx));
                }
            }
        }
    }
    Segments {
        labels,
        count: count as usize,
    }
}

/// The up to four neighbours of `(y, x)` inside an `h x w` grid.
fn neighbours(y: usize, x: usize, h: usize, w: usize) -> impl Iterator<Item = (usize, usize)> {
    let up = (y > 0).then(|| (y - 1, x));
    let down = (y + 1 < h).then_some((y + 1, x));
    let left = (x > 0).then(|| (y, x - 1));
    let right = (x + 1 < w).then_some((y, x + 1));
    [up, down, left, right].into_iter().flatten()
}
