//! Progress display for long work: a live bar on a terminal, plain periodic lines elsewhere
//! (logs, CI), so output stays readable in both.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the position counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Steps,
    Bytes,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    unit: Unit,
    total: u64,
    label: String,
    started: Instant,
    /// Without a terminal: print a line each time the position crosses another 5%.
    next_line_at: u64,
}

impl Progress {
    /// `live` asks for the terminal bar; it is used only when stderr is a terminal.
    pub fn new(label: &str, total: u64, unit: Unit, live: bool) -> Self {
        let bar = (live && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = match unit {
                Unit::Steps => "{prefix} {pos}/{len} {bar:20.cyan/blue} {msg}",
                Unit::Bytes => {
                    "{prefix} {bar:20.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
                }
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            unit,
            total,
            label: label.to_string(),
            started: Instant::now(),
            next_line_at: 0,
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Moves to `pos` with a status message.
    pub fn set(&mut self, pos: u64, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
            bar.set_message(msg.to_string());
            return;
        }
        if pos < self.next_line_at && pos < self.total {
            return;
        }
        self.next_line_at = pos + (self.total / 20).max(1);
        let line = match self.unit {
            Unit::Steps => format!("{} {pos}/{} {msg}", self.label, self.total),
            Unit::Bytes => {
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                let rate = pos as f64 / secs;
                let eta = (self.total.saturating_sub(pos)) as f64 / rate.max(1e-9);
                format!(
                    "{} {}/{} {}/s ETA {} {msg}",
                    self.label,
                    HumanBytes(pos),
                    HumanBytes(self.total),
                    HumanBytes(rate as u64),
                    format_duration(eta)
                )
            }
        };
        eprintln!("{line}");
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// "1h02m", "4m05s", "12s".
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_naturally() {
        assert_eq!(super::format_duration(12.4), "12s");
        assert_eq!(super::format_duration(245.0), "4m05s");
        assert_eq!(super::format_duration(3720.0), "1h02m");
    }
}
