//! The training record in the run directory: `metrics.jsonl` (one JSON object per step and
//! per evaluation) and `loss.png` (the loss curves, re-rendered at each evaluation).

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::ValPoint;
use crate::error::{Error, Result};

/// A line of `metrics.jsonl` for an optimizer step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub train_loss: f32,
    pub lr: f32,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
}

/// A line of `metrics.jsonl` for an evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: usize,
    pub val_loss: f32,
}

/// `metrics.jsonl`, open for appending.
pub struct Metrics {
    path: PathBuf,
    file: fs::File,
}

#[derive(Deserialize)]
struct AnyLine {
    step: usize,
}

impl Metrics {
    /// Starts `run_dir/metrics.jsonl` afresh, or, resuming after `resume_step` steps, keeps
    /// the lines up to that step (dropping any a crashed or interrupted run wrote after its
    /// last checkpoint, which the resumed run writes again).
    pub fn open(run_dir: &Path, resume_step: Option<usize>) -> Result<Self> {
        fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
        let path = run_dir.join("metrics.jsonl");
        let mut kept = Vec::new();
        if let (Some(last), Ok(f)) = (resume_step, fs::File::open(&path)) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| Error::io(&path, e))?;
                match serde_json::from_str::<AnyLine>(&line) {
                    Ok(l) if l.step <= last => {
                        kept.extend_from_slice(line.as_bytes());
                        kept.push(b'\n');
                    }
                    _ => {}
                }
            }
        }
        let tmp = path.with_extension("jsonl.tmp");
        fs::write(&tmp, &kept).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Metrics { path, file })
    }

    fn write<T: Serialize>(&mut self, line: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec(line).expect("metrics serialize");
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    pub fn step(&mut self, m: &StepMetrics) -> Result<()> {
        self.write(m)
    }

    pub fn eval(&mut self, m: &EvalMetrics) -> Result<()> {
        self.write(m)
    }

    /// Flushes the lines so far to disk (with each checkpoint).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// Colours of the plot: training loss, its moving average, validation loss, grid.
const TRAIN: plotters::style::RGBColor = plotters::style::RGBColor(160, 190, 230);
const TRAIN_SMOOTH: plotters::style::RGBColor = plotters::style::RGBColor(30, 90, 200);
const VAL: plotters::style::RGBColor = plotters::style::RGBColor(220, 50, 40);
const GRID: plotters::style::RGBColor = plotters::style::RGBColor(225, 225, 225);

/// Renders the loss curves to `path` (PNG, 800×500): training loss per step (light blue),
/// its moving average (blue), validation loss (red, with dots), horizontal grid lines at
/// every whole nat (every 0.5 nat when the range is under 3 nats, every 0.1 under one),
/// vertical ones at every tenth of the steps. No text, so no font is needed. Written via a temporary file and a
/// rename.
pub fn plot_loss(path: &Path, train: &[f32], val: &[ValPoint]) -> Result<()> {
    use plotters::prelude::*;

    let finite = |x: &f32| x.is_finite();
    let values = train
        .iter()
        .copied()
        .filter(finite)
        .chain(val.iter().map(|v| v.val_loss).filter(finite));
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        return Ok(());
    }
    let pad = ((hi - lo) * 0.05).max(0.05);
    let (y0, y1) = ((lo - pad) as f64, (hi + pad) as f64);
    let steps = train
        .len()
        .max(val.iter().map(|v| v.step).max().unwrap_or(0))
        .max(1);
    let x1 = steps as f64;

    let tmp = path.with_file_name(".loss.tmp.png");
    let failed = |e: &dyn std::fmt::Display| Error::Data(format!("{}: {e}", path.display()));
    {
        let root = BitMapBackend::new(&tmp, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .build_cartesian_2d(0f64..x1, y0..y1)
            .map_err(|e| failed(&e))?;
        let grid_step = match y1 - y0 {
            r if r < 1.0 => 0.1,
            r if r < 3.0 => 0.5,
            _ => 1.0,
        };
        let mut y = (y0 / grid_step).ceil() * grid_step;
        let mut lines = Vec::new();
        while y < y1 {
            lines.push(vec![(0.0, y), (x1, y)]);
            y += grid_step;
        }
        for i in 0..=10 {
            let x = x1 * i as f64 / 10.0;
            lines.push(vec![(x, y0), (x, y1)]);
        }
        chart
            .draw_series(lines.into_iter().map(|l| PathElement::new(l, GRID)))
            .map_err(|e| failed(&e))?;
        let points = |xs: &[f32]| -> Vec<(f64, f64)> {
            xs.iter()
                .enumerate()
                .filter(|(_, y)| y.is_finite())
                .map(|(i, &y)| ((i + 1) as f64, y as f64))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(points(train), TRAIN))
            .map_err(|e| failed(&e))?;
        let window = (train.len() / 50).max(1);
        let smooth: Vec<f32> = (0..train.len())
            .map(|i| {
                let from = (i + 1).saturating_sub(window);
                train[from..=i].iter().sum::<f32>() / (i + 1 - from) as f32
            })
            .collect();
        chart
            .draw_series(LineSeries::new(
                points(&smooth),
                TRAIN_SMOOTH.stroke_width(2),
            ))
            .map_err(|e| failed(&e))?;
        let val_points: Vec<(f64, f64)> = val
            .iter()
            .filter(|v| v.val_loss.is_finite())
            .map(|v| (v.step as f64, v.val_loss as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(val_points.clone(), VAL.stroke_width(2)))
            .map_err(|e| failed(&e))?;
        chart
            .draw_series(
                val_points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, VAL.filled())),
            )
            .map_err(|e| failed(&e))?;
        chart
            .plotting_area()
            .draw(&Rectangle::new(
                [(0.0, y0), (x1, y1)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
