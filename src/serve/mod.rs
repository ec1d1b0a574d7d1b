//! The serve subsystem: the generation engine (continuous batching over one CPU model,
//! [`engine`]), its HTTP front end ([`http`]) and the connections under it
//! ([`connections`]: limits, timeouts, graceful shutdown).

pub mod connections;
pub mod engine;
pub mod http;

use std::path::Path;

/// The name a model directory is served under: its own name, except for the directories a
/// train run writes, which are named after the run: `RUN/checkpoint` is "RUN" and
/// `RUN/checkpoints/step_N` is "RUN/step_N" (of the absolute path, so `.` works too).
pub fn model_name(dir: &Path) -> String {
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
    };
    let own = name(Some(&abs)).unwrap_or_else(|| "model".to_string());
    let parent = abs.parent();
    let grandparent = parent.and_then(Path::parent);
    if own == "checkpoint" {
        if let Some(run) = name(parent) {
            return run;
        }
    }
    if name(parent).as_deref() == Some("checkpoints") {
        if let Some(run) = name(grandparent) {
            return format!("{run}/{own}");
        }
    }
    own
}
