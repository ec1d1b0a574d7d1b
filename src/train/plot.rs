//! The loss chart in the run directory, `loss.svg`: training loss per step, its moving
//! average, and validation loss, against the step, with axes, tick numbers, axis labels
//! and a legend. SVG leaves drawing the text to the viewer (any browser), so no font file
//! is needed here. Re-rendered at each evaluation, through a temporary file and a rename.

use std::fmt::Write as _;
use std::path::Path;

use super::state::ValPoint;
use crate::error::{Error, Result};

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 500.0;
/// Margins around the plot area: room for the tick numbers and the axis labels.
const LEFT: f64 = 76.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;

const TRAIN: &str = "#a0bee6";
const TRAIN_MEAN: &str = "#1e5ac8";
const VAL: &str = "#dc3228";
const GRID: &str = "#e1e1e1";

/// Writes the chart of `train` (loss of step i + 1 at index i) and `val` to `path`. Nothing
/// is written while there is no finite loss to show.
pub fn write_loss_chart(path: &Path, train: &[f32], val: &[ValPoint]) -> Result<()> {
    let Some(svg) = loss_chart(train, val) else {
        return Ok(());
    };
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, svg).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A range of data values mapped onto a range of pixels.
#[derive(Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Axis {
    fn px(&self, v: f64) -> f64 {
        self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }
}

/// The chart as SVG text, or None when no loss is finite.
pub fn loss_chart(train: &[f32], val: &[ValPoint]) -> Option<String> {
    let finite = |x: &f32| x.is_finite();
    let values = train
        .iter()
        .copied()
        .filter(finite)
        .chain(val.iter().map(|v| v.val_loss).filter(finite));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x as f64), hi.max(x as f64))
    });
    if !lo.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    let steps = train
        .len()
        .max(val.iter().map(|v| v.step).max().unwrap_or(0))
        .max(1);
    let x = Axis {
        lo: 0.0,
        hi: steps as f64,
        from: LEFT,
        to: WIDTH - RIGHT,
    };
    let y = Axis {
        lo: lo - pad,
        hi: hi + pad,
        from: HEIGHT - BOTTOM,
        to: TOP,
    };

    let mut svg = String::new();
    let w = &mut svg;
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(w, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        w,
        r#"<text x="{LEFT}" y="24" font-size="15">Training and validation loss</text>"#
    );

    // Grid lines, tick marks and tick numbers.
    let (bottom, left) = (y.from, x.from);
    let x_ticks = nice_ticks(x.lo, x.hi, 10);
    for &t in &x_ticks.values {
        let px = x.px(t);
        let _ = writeln!(
            w,
            r#"<line class="grid" x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{bottom:.1}" stroke="{GRID}"/>"#,
            y.to
        );
        let _ = writeln!(
            w,
            r#"<line x1="{px:.1}" y1="{bottom:.1}" x2="{px:.1}" y2="{:.1}" stroke="black"/>"#,
            bottom + 5.0
        );
        let _ = writeln!(
            w,
            r#"<text class="tick x" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 19.0,
            x_ticks.label(t)
        );
    }
    let y_ticks = nice_ticks(y.lo, y.hi, 8);
    for &t in &y_ticks.values {
        let py = y.px(t);
        let _ = writeln!(
            w,
            r#"<line class="grid" x1="{left:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="{GRID}"/>"#,
            x.to
        );
        let _ = writeln!(
            w,
            r#"<line x1="{:.1}" y1="{py:.1}" x2="{left:.1}" y2="{py:.1}" stroke="black"/>"#,
            left - 5.0
        );
        let _ = writeln!(
            w,
            r#"<text class="tick y" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            py + 4.0,
            y_ticks.label(t)
        );
    }
    // The plot area's frame and the axis labels.
    let _ = writeln!(
        w,
        r#"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        y.to,
        x.to - x.from,
        y.from - y.to
    );
    let _ = writeln!(
        w,
        r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        (x.from + x.to) / 2.0,
        HEIGHT - 14.0
    );
    let mid = (y.from + y.to) / 2.0;
    let _ = writeln!(
        w,
        r#"<text class="label" x="18" y="{mid:.1}" text-anchor="middle" transform="rotate(-90 18 {mid:.1})">loss (nats per token)</text>"#
    );

    // The series, then the legend naming them.
    let mut legend: Vec<(String, &str, f64)> = Vec::new();
    let per_step: Vec<(f64, f64)> = train
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| ((i + 1) as f64, l as f64))
        .collect();
    polyline(
        w,
        &thin_out(&per_step, (x.to - x.from) as usize),
        x,
        y,
        TRAIN,
        1.0,
    );
    legend.push(("training loss, each step".into(), TRAIN, 1.0));
    let window = train.len() / 50;
    if window >= 2 {
        let mean: Vec<(f64, f64)> = moving_mean(train, window)
            .into_iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| ((i + 1) as f64, l))
            .collect();
        polyline(
            w,
            &thin_out(&mean, (x.to - x.from) as usize),
            x,
            y,
            TRAIN_MEAN,
            2.0,
        );
        legend.push((
            format!("training loss, mean of the last {window} steps"),
            TRAIN_MEAN,
            2.0,
        ));
    }
    let val_points: Vec<(f64, f64)> = val
        .iter()
        .filter(|v| v.val_loss.is_finite())
        .map(|v| (v.step as f64, v.val_loss as f64))
        .collect();
    if !val_points.is_empty() {
        polyline(w, &val_points, x, y, VAL, 2.0);
        for &(s, l) in &val_points {
            let _ = writeln!(
                w,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{VAL}"/>"#,
                x.px(s),
                y.px(l)
            );
        }
        legend.push(("validation loss".into(), VAL, 2.0));
    }
    let (lx, ly) = (x.to - 280.0, y.to + 10.0);
    let _ = writeln!(
        w,
        r#"<rect x="{lx:.1}" y="{ly:.1}" width="270" height="{:.1}" fill="white" fill-opacity="0.85" stroke="{GRID}"/>"#,
        10.0 + 18.0 * legend.len() as f64
    );
    for (i, (name, colour, width)) in legend.iter().enumerate() {
        let row = ly + 17.0 + 18.0 * i as f64;
        let _ = writeln!(
            w,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="{width}"/>"#,
            lx + 8.0,
            row - 4.0,
            lx + 32.0,
            row - 4.0
        );
        let _ = writeln!(
            w,
            r#"<text class="legend" x="{:.1}" y="{row:.1}">{name}</text>"#,
            lx + 40.0
        );
    }
    let _ = writeln!(w, "</svg>");
    Some(svg)
}

fn polyline(w: &mut String, points: &[(f64, f64)], x: Axis, y: Axis, colour: &str, width: f64) {
    let coords: Vec<String> = points
        .iter()
        .map(|&(s, l)| format!("{:.1},{:.1}", x.px(s), y.px(l)))
        .collect();
    let _ = writeln!(
        w,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}"/>"#,
        coords.join(" ")
    );
}

/// At most about `2 * pixels` points with the same look: each run of consecutive points
/// that shares a pixel column keeps its lowest and highest, in step order.
fn thin_out(points: &[(f64, f64)], pixels: usize) -> Vec<(f64, f64)> {
    let per_column = points.len().div_ceil(pixels.max(1));
    if per_column <= 2 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(2 * pixels);
    for chunk in points.chunks(per_column) {
        let by_loss = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
        let low = *chunk.iter().min_by(by_loss).expect("chunks are not empty");
        let high = *chunk.iter().max_by(by_loss).expect("chunks are not empty");
        if low.0 <= high.0 {
            out.extend([low, high]);
        } else {
            out.extend([high, low]);
        }
    }
    out
}

/// The mean of each value and the `window - 1` before it (fewer at the start).
fn moving_mean(values: &[f32], window: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            let part = &values[from..=i];
            part.iter().map(|&v| v as f64).sum::<f64>() / part.len() as f64
        })
        .collect()
}

/// Tick positions at a round spacing (1, 2 or 5 times a power of ten).
struct Ticks {
    values: Vec<f64>,
    spacing: f64,
}

impl Ticks {
    /// A tick's number with as many decimals as the spacing needs.
    fn label(&self, v: f64) -> String {
        let decimals = (-self.spacing.log10().floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// At most about `max_ticks` round ticks inside `lo..=hi`.
fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Ticks {
    let raw = (hi - lo) / max_ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let spacing = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let (first, last) = ((lo / spacing).ceil() as i64, (hi / spacing).floor() as i64);
    Ticks {
        values: (first..=last).map(|k| k as f64 * spacing).collect(),
        spacing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let t = nice_ticks(2.83, 5.61, 8);
        assert_eq!(t.spacing, 0.5);
        assert_eq!(t.values, [3.0, 3.5, 4.0, 4.5, 5.0, 5.5]);
        assert_eq!(t.label(3.5), "3.5");
        let t = nice_ticks(0.0, 1500.0, 10);
        assert_eq!(t.spacing, 200.0);
        assert_eq!(t.label(1400.0), "1400");
        assert_eq!(t.values.first(), Some(&0.0));
        let t = nice_ticks(3.98, 4.02, 8);
        assert_eq!(t.label(4.0), "4.000");
    }

    #[test]
    fn chart_has_axes_labels_and_a_legend_for_each_series() {
        let train: Vec<f32> = (0..200).map(|i| 5.0 - i as f32 / 100.0).collect();
        let val = [
            ValPoint {
                step: 0,
                val_loss: 5.1,
            },
            ValPoint {
                step: 200,
                val_loss: 3.2,
            },
        ];
        let svg = loss_chart(&train, &val).unwrap();
        for text in [
            ">step</text>",
            ">loss (nats per token)</text>",
            ">training loss, each step</text>",
            ">training loss, mean of the last 4 steps</text>",
            ">validation loss</text>",
        ] {
            assert!(svg.contains(text), "no {text} in {svg}");
        }
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(loss_chart(&[f32::NAN], &[]).is_none());
    }

    #[test]
    fn thinning_keeps_each_columns_extremes() {
        let points: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, (i % 7) as f64)).collect();
        let thin = thin_out(&points, 100);
        assert!(thin.len() <= 200);
        assert!(thin.iter().any(|p| p.1 == 6.0) && thin.iter().any(|p| p.1 == 0.0));
        assert!(thin.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
