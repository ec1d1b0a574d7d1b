//! The `train` binary as a user meets it: bad input gives one clear line and a non-zero
//! exit (never a panic), and a tiny run end to end writes its checkpoint and summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("train runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts a clean failure: exit code 1, the last stderr line is `error: ...` mentioning
/// `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "want `{needle}` in: {stderr}"
    );
}

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = temp_dir("bad");
    let cases = [
        ("[train\nlr = 1", "line 1"),
        (
            "[train]\nlearning_rate = 0.1\n",
            "unknown field `learning_rate`",
        ),
        (
            "[model]\nn_embd = 100\nn_head = 3\n",
            "not divisible by n_head",
        ),
        ("[data]\ncorpus = \"no/such/corpus\"\n", "no/such/corpus"),
        ("[train]\nbatch_size = \"many\"\n", "invalid type"),
    ];
    for (text, needle) in cases {
        let cfg = config_file(&dir, text);
        assert_clean_error(&train(&["--config", &cfg, "--no-progress"]), needle);
    }
    assert_clean_error(
        &train(&["--config", "no/such/config.toml"]),
        "no/such/config.toml",
    );
    assert_clean_error(
        &train(&["--seq-len", "4096", "--no-progress"]),
        "longer than model.block_size",
    );
    assert_clean_error(
        &train(&["--device", "cuda", "--no-progress"]),
        "no CUDA backend",
    );
    assert_clean_error(
        &train(&["--device", "tpu", "--no-progress"]),
        "not one of auto, cpu, cuda",
    );
    // clap's own errors (unknown flag) exit 2 with usage, also without a panic.
    let out = train(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(train(&["--help"]).status.success());
}

#[test]
fn tiny_run_end_to_end() {
    let dir = temp_dir("run");
    let cfg = config_file(
        &dir,
        r#"
[model]
n_layer = 1
n_head = 2
n_embd = 32
block_size = 32
vocab_size = 320

[data]
corpus = "data/shakespeare/sonnets.txt"

[train]
batch_size = 4
seq_len = 32
max_steps = 60
eval_every = 30
eval_batches = 2
warmup_steps = 5
lr = 1e-2
min_lr = 1e-3
sample_tokens = 20
"#,
    );
    let out_dir = dir.join("out");
    let out = train(&[
        "--config",
        &cfg,
        "--out",
        out_dir.to_str().unwrap(),
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "train failed: {stderr}");
    assert!(stderr.contains("memory plan:"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    for key in [
        "train_loss",
        "val_loss",
        "unigram_entropy",
        "steps",
        "seconds",
        "tokens_per_second",
    ] {
        assert!(summary[key].is_number(), "summary lacks {key}: {summary}");
    }
    assert_eq!(summary["steps"], 60);
    // 60 steps of a tiny model on the sonnets must learn something: below the uniform loss.
    assert!(summary["val_loss"].as_f64().unwrap() < (320f64).ln());
    let ckpt = out_dir.join("checkpoint");
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    let weights = smelt::checkpoint::read_safetensors(&ckpt.join("model.safetensors")).unwrap();
    assert_eq!(weights["transformer.wte.weight"].0, vec![320, 32]);
    assert_eq!(
        weights["transformer.h.0.attn.c_attn.weight"].0,
        vec![32, 96]
    );
    assert!(!weights.contains_key("lm_head.weight"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["n_positions"], 32);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--- sample ---"));
}
