//! Training curves and confusion matrices as PNG files, drawn with plotters into
//! an RGB buffer (embedded DejaVu Sans font, no system fonts needed) and saved
//! atomically with the `image` crate.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform};

use crate::metrics::ConfusionMatrix;
use crate::viz::{colormap, save_rgb};
use crate::Result;

/// One named series of `(x, y)` points, for example `("train", [(epoch, loss)])`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curve {
    /// The legend entry.
    pub name: String,
    /// The points in drawing order; non-finite points are skipped when drawn.
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// A curve named `name` through `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// Width and height of one curve panel in pixels.
const PANEL_SIZE: (u32, u32) = (640, 480);

/// Strong, distinguishable line colours (matplotlib's first five).
const LINE_COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Registers DejaVu Sans under plotters' three generic family names, once.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        ["sans-serif", "serif", "monospace"]
            .iter()
            .all(|name| register_font(name, FontStyle::Normal, dejavu::sans::regular()).is_ok())
    });
    if !ok {
        bail!("the embedded DejaVu Sans font could not be registered with plotters");
    }
    Ok(())
}

/// Draws into a fresh white `width x height` RGB buffer with `draw`, then saves
/// it to `path` atomically.
fn render_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    ensure_font()?;
    let mut buffer = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        draw(&root).with_context(|| format!("drawing {path:?}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing {path:?}: {e}"))?;
    }
    let picture = RgbImage::from_raw(width, height, buffer)
        .with_context(|| format!("{path:?}: plot buffer has the wrong size"))?;
    save_rgb(path, &picture)
}

/// Turns a plotters error (which borrows nothing we keep) into an `anyhow` error.
fn plotting<T, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| anyhow!("plotters: {e}"))
}

/// Writes a PNG of the loss curves (train, val, ...) in one panel and, when
/// given, a metric curve (for example val mIoU) in a second panel to its right,
/// each with axes and a legend, under `title`. 640x480 per panel.
///
/// Non-finite points are skipped; an empty curve draws nothing and a panel with
/// no finite point says "no data".
pub fn plot_loss_curves(
    path: &Path,
    title: &str,
    losses: &[Curve],
    metric: Option<&Curve>,
) -> Result<()> {
    let n_panels = if metric.is_some() { 2 } else { 1 };
    let size = (PANEL_SIZE.0 * n_panels, PANEL_SIZE.1);
    render_png(path, size, |root| {
        plotting(root.fill(&WHITE))?;
        let body = plotting(root.titled(title, ("sans-serif", 24)))?;
        let panels = body.split_evenly((1, n_panels as usize));
        // Losses fall and metrics rise, so their legends go where the lines are not.
        draw_curves(&panels[0], "loss", losses, SeriesLabelPosition::UpperRight)?;
        if let Some(metric) = metric {
            let metrics = std::slice::from_ref(metric);
            draw_curves(
                &panels[1],
                &metric.name,
                metrics,
                SeriesLabelPosition::LowerRight,
            )?;
        }
        Ok(())
    })
}

/// `(min, max)` of `values` widened so the range is never empty: 5 % padding, or
/// +-10 % (+-0.5 around 0) when all values are equal; `(0, 1)` when there are none.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if low > high {
        return (0.0, 1.0);
    }
    let span = high - low;
    let pad = if span > 0.0 {
        0.05 * span
    } else if low != 0.0 {
        0.1 * low.abs()
    } else {
        0.5
    };
    (low - pad, high + pad)
}

/// A tick label: whole numbers without decimals, others with up to 4 decimals
/// and no trailing zeros.
fn tick_label(value: &f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{:.0}", value.round())
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').to_string()
    }
}

/// One panel: the finite points of each curve as a line (with dots when there
/// are few), x axis "epoch", y axis `y_label`, legend at `legend`.
fn draw_curves(
    area: &DrawingArea<BitMapBackend, Shift>,
    y_label: &str,
    curves: &[Curve],
    legend: SeriesLabelPosition,
) -> Result<()> {
    let finite: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|curve| {
            curve
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = || finite.iter().flatten();
    let (x0, x1) = padded_range(all().map(|p| p.0));
    let (y0, y1) = padded_range(all().map(|p| p.1));

    let mut chart = plotting(
        ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(x0..x1, y0..y1),
    )?;
    plotting(
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw(),
    )?;

    for (index, (curve, points)) in curves.iter().zip(&finite).enumerate() {
        let colour = LINE_COLOURS[index % LINE_COLOURS.len()];
        let series = plotting(chart.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        )))?;
        series.label(curve.name.clone()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
        });
        if points.len() <= 50 {
            plotting(
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled()))),
            )?;
        }
    }
    if finite.iter().all(|points| points.is_empty()) {
        let style = TextStyle::from(("sans-serif", 20).into_font())
            .pos(Pos::new(HPos::Center, VPos::Center));
        plotting(chart.draw_series(std::iter::once(Text::new(
            "no data",
            ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
            style,
        ))))?;
    }
    if !curves.is_empty() {
        plotting(
            chart
                .configure_series_labels()
                .position(legend)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw(),
        )?;
    }
    Ok(())
}

/// Longest class name drawn on the confusion matrix axes.
const MAX_NAME_CHARS: usize = 14;

/// Writes a PNG heat map of the row-normalised confusion matrix (row = truth,
/// each row sums to 1; a class absent from the truth stays 0) in a viridis-like
/// map, class names on both axes, a colour bar, and the values in the cells when
/// `K <= 12`. `class_names` must hold `K` names.
pub fn plot_confusion_matrix(
    path: &Path,
    cm: &ConfusionMatrix,
    class_names: &[String],
) -> Result<()> {
    let k = cm.n_classes();
    if class_names.len() != k {
        bail!(
            "{path:?}: confusion matrix has {k} classes but {} class names were given",
            class_names.len()
        );
    }
    if k == 0 {
        bail!("{path:?}: confusion matrix has no class to draw");
    }
    let counts = cm.counts();
    let normalised = |t: usize, p: usize| -> f64 {
        let row: u64 = counts.row(t).sum();
        if row == 0 {
            0.0
        } else {
            counts[[t, p]] as f64 / row as f64
        }
    };
    let names: Vec<String> = class_names
        .iter()
        .map(|name| {
            if name.chars().count() > MAX_NAME_CHARS {
                let short: String = name.chars().take(MAX_NAME_CHARS - 1).collect();
                format!("{short}…")
            } else {
                name.clone()
            }
        })
        .collect();

    // Layout in pixels: names left and below, title above, colour bar right.
    let cell = (640 / k as i32).clamp(16, 64);
    let (left, top, bottom, right) = (150, 60, 150, 110);
    let side = cell * k as i32;
    let size = ((left + side + right) as u32, (top + side + bottom) as u32);
    let font_size = (cell as f64 * 0.45).clamp(10.0, 16.0);

    render_png(path, size, |root| {
        plotting(root.fill(&WHITE))?;
        let centred = |size: f64| {
            TextStyle::from(("sans-serif", size).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center))
        };
        let title = format!("confusion matrix (row-normalised, {} pixels)", cm.total());
        plotting(root.draw(&Text::new(title, (left + side / 2, top / 2), centred(20.0))))?;

        for t in 0..k {
            for p in 0..k {
                let value = normalised(t, p);
                let [r, g, b] = colormap(value as f32);
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                plotting(root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(r, g, b).filled(),
                )))?;
                if k <= 12 {
                    // Light text on the dark low end of the map, dark on the bright end.
                    let ink = if value < 0.6 { WHITE } else { BLACK };
                    let text = format!("{value:.2}");
                    plotting(root.draw(&Text::new(
                        text,
                        (x + cell / 2, y + cell / 2),
                        centred(font_size).color(&ink),
                    )))?;
                }
            }
        }
        plotting(root.draw(&Rectangle::new(
            [(left, top), (left + side, top + side)],
            BLACK.stroke_width(1),
        )))?;

        // Truth names left of the rows, prediction names rotated under the columns.
        let right_aligned = TextStyle::from(("sans-serif", font_size).into_font())
            .pos(Pos::new(HPos::Right, VPos::Center));
        let rotated = TextStyle::from(
            ("sans-serif", font_size)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .pos(Pos::new(HPos::Left, VPos::Center));
        for (index, name) in names.iter().enumerate() {
            let middle = index as i32 * cell + cell / 2;
            plotting(root.draw(&Text::new(
                name.as_str(),
                (left - 6, top + middle),
                right_aligned.clone(),
            )))?;
            plotting(root.draw(&Text::new(
                name.as_str(),
                (left + middle, top + side + 6),
                rotated.clone(),
            )))?;
        }
        plotting(root.draw(&Text::new(
            "prediction",
            (left + side / 2, top + side + bottom - 18),
            centred(16.0),
        )))?;
        let truth_label = TextStyle::from(
            ("sans-serif", 16)
                .into_font()
                .transform(FontTransform::Rotate270),
        )
        .pos(Pos::new(HPos::Center, VPos::Center));
        plotting(root.draw(&Text::new("truth", (16, top + side / 2), truth_label)))?;

        // Colour bar: 1 at the top, 0 at the bottom.
        let bar_left = left + side + 25;
        for row in 0..side {
            let value = 1.0 - row as f32 / (side - 1).max(1) as f32;
            let [r, g, b] = colormap(value);
            plotting(root.draw(&Rectangle::new(
                [(bar_left, top + row), (bar_left + 20, top + row + 1)],
                RGBColor(r, g, b).filled(),
            )))?;
        }
        let label_style =
            TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (value, label) in [(1.0, "1.0"), (0.5, "0.5"), (0.0, "0.0")] {
            let y = top + ((1.0 - value) * (side - 1) as f64) as i32;
            plotting(root.draw(&Text::new(label, (bar_left + 26, y), label_style.clone())))?;
        }
        Ok(())
    })
}
