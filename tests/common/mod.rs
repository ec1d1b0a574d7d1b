//! Helpers shared by the integration tests (each test crate uses a part of them).
#![allow(dead_code)]

pub mod pytorch;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh, empty folder under the system temp dir, removed on drop. Derefs to its path.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "smelt-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file (creating parent folders) and returns its path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `bytes` gzip-compressed.
    pub fn write_gz(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        self.write(rel, &enc.finish().unwrap())
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fresh random kernel inputs from a clock seed (reported in every failure message), and the
/// comparison of a kernel's output with its reference.
pub struct Inputs {
    pub rng: smelt::rng::Rng,
    pub seed: u64,
    /// The largest relative error `check` has seen (for per-kernel reports).
    pub max_err: f64,
}

impl Inputs {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Inputs {
            rng: smelt::rng::Rng::new(seed),
            seed,
            max_err: 0.0,
        }
    }

    /// `len` normals times `scale`, plus `shift`.
    pub fn normal(&mut self, len: usize, scale: f64, shift: f64) -> Vec<f32> {
        (0..len)
            .map(|_| (self.rng.normal() * scale + shift) as f32)
            .collect()
    }

    /// `len` ids uniform in `0..below`.
    pub fn ids(&mut self, len: usize, below: usize) -> Vec<u32> {
        (0..len)
            .map(|_| self.rng.below(below as u64) as u32)
            .collect()
    }

    /// ‖got − want‖ / ‖want‖ (‖got − want‖ when want is zero), asserted below `tol`; prints
    /// it (visible with --nocapture), keeps the largest in `max_err`, and returns it.
    pub fn check(&mut self, what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        let diff: f64 = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
        let err = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        };
        eprintln!("{what}: relative error {err:.3e}");
        assert!(
            err < tol,
            "{what}: relative error {err:e} >= {tol:e} (seed {})",
            self.seed
        );
        self.max_err = self.max_err.max(err);
        err
    }

    /// Asserts two runs gave the same bits.
    pub fn same_bits(&self, what: &str, a: &[f32], b: &[f32]) {
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(a) == bits(b),
            "{what}: two runs differ (seed {})",
            self.seed
        );
    }
}

/// An output buffer poisoned with NaN, so a kernel that leaves any element unwritten fails.
pub fn nan(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// A command for a binary of this crate (`env!("CARGO_BIN_EXE_<name>")`) whose working
/// directory is `cwd`. Tests run binaries in a fresh empty folder, never in the repository:
/// what a user's own runs left there (`runs/default`, `runs/data`) must change nothing, and a
/// test must not write into it. Paths given to the binary are absolute.
pub fn bin_command(bin: &str, cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.current_dir(cwd);
    cmd
}

/// Runs a binary of this crate to completion in a fresh empty working directory (see
/// [`bin_command`]), removed afterwards.
pub fn run_bin(bin: &str, args: &[&str]) -> std::process::Output {
    let cwd = TempDir::new("cwd");
    bin_command(bin, &cwd)
        .args(args)
        .output()
        .expect("binary runs")
}

/// The bundled corpus (`data/shakespeare` of the repository), as an absolute path.
pub fn bundled_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare")
}

/// Asserts a clean failure: exit code 1, the last stderr line is `error: ...` mentioning
/// `needle`, no panic.
pub fn assert_clean_error(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "want `{needle}` in: {stderr}"
    );
}

/// A small JSONL corpus in `dir` (the sonnets, one per record, text in field `body`): enough
/// documents that every split gets some.
pub fn sonnets_jsonl(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/shakespeare/sonnets.txt"
    ))
    .unwrap();
    let lines: String = text
        .split("\n\n")
        .enumerate()
        .map(|(i, body)| format!("{}\n", serde_json::json!({"id": i, "body": body})))
        .collect();
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(&corpus, lines).unwrap();
    corpus
}

/// The sonnets (see [`sonnets_jsonl`], written into `dir` once) prepared by the `prepare`
/// binary into `dir/name`, with `--text-field body --no-progress` and then `extra` (the
/// tokenizer, fractions, ...). Asserts success; returns the data set's folder.
pub fn prepare_sonnets(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let corpus = dir.join("corpus.jsonl");
    if !corpus.exists() {
        sonnets_jsonl(dir);
    }
    let data = dir.join(name);
    let mut args = vec![
        corpus.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
        "--text-field",
        "body",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let out = run_bin(env!("CARGO_BIN_EXE_prepare"), &args);
    assert!(
        out.status.success(),
        "prepare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// `train --config CFG --data DATA --out OUT --no-progress EXTRA...` (as [`run_bin`] runs it).
pub fn train_run(cfg: &str, data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--config",
        cfg,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    run_bin(env!("CARGO_BIN_EXE_train"), &args)
}

/// The lines of a run's `metrics.jsonl`, each one JSON object.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}
