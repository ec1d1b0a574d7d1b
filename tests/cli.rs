//! The `train` and `prepare` binaries as a user meets them: bad input gives one clear line
//! and a non-zero exit (never a panic); prepare → train end to end writes shards, manifest,
//! checkpoint and summary; automatic preparation is cached.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("binary runs")
}

fn train(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_train"), args)
}

fn prepare(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_prepare"), args)
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
corpus = "data/shakespeare"
cache = "CACHE"

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

    // The second run finds the prepared corpus in the cache.
    let out = train(&[
        "--config",
        &cfg,
        "--out",
        out_dir.to_str().unwrap(),
        "--no-progress",
        "--max-steps",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("prepared earlier"), "{stderr}");
}

#[test]
fn prepare_then_train_on_the_data_set() {
    let dir = temp_dir("prepare");
    // A small JSONL corpus of many documents (so every split gets some), gzip'd half.
    let mut lines = String::new();
    for (i, line) in std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/shakespeare/sonnets.txt"
    ))
    .unwrap()
    .split("\n\n")
    .enumerate()
    {
        lines.push_str(&serde_json::json!({"id": i, "body": line}).to_string());
        lines.push('\n');
    }
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(&corpus, lines).unwrap();
    let data = dir.join("data");
    let out = prepare(&[
        corpus.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "300",
        "--text-field",
        "body",
        "--min-chars",
        "20",
        "--shard-tokens",
        "5000",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one object");
    assert_eq!(summary["vocab_size"], 300);
    let train_shards = summary["splits"]["train"]["shards"].as_u64().unwrap();
    assert!(
        train_shards >= 2,
        "shard size 5000 must roll over: {summary}"
    );
    for f in [
        "manifest.json",
        "tokenizer.json",
        "train_000000.bin",
        "train_000001.bin",
        "val_000000.bin",
    ] {
        assert!(data.join(f).is_file(), "{f} missing");
    }
    // The same corpus gives the same data set, byte for byte (split by content hash).
    let again = dir.join("again");
    let out = prepare(&[
        corpus.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--vocab-size",
        "300",
        "--text-field",
        "body",
        "--min-chars",
        "20",
        "--shard-tokens",
        "5000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shards = |d: &Path| -> serde_json::Value {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
        m["splits"].clone()
    };
    assert_eq!(shards(&data), shards(&again));
    // No staging leftovers.
    assert!(std::fs::read_dir(&data).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));

    let out_dir = dir.join("run");
    let cfg = config_file(
        &dir,
        "[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n[train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 5\neval_every = 5\neval_batches = 1\nsample_tokens = 5\n",
    );
    let out = train(&[
        "--config",
        &cfg,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["model"]["vocab_size"], 300);

    // Bad input to prepare: one line, exit 1.
    let missing = dir.join("nope.txt");
    assert_clean_error(
        &prepare(&[missing.to_str().unwrap(), "--out", data.to_str().unwrap()]),
        "nope.txt",
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("a.txt"), "too short").unwrap();
    assert_clean_error(
        &prepare(&[
            empty.to_str().unwrap(),
            "--out",
            dir.join("d2").to_str().unwrap(),
            "--no-progress",
        ]),
        "empty after cleaning",
    );
    assert_clean_error(
        &prepare(&[
            corpus.to_str().unwrap(),
            "--out",
            dir.join("d3").to_str().unwrap(),
            "--tokenizer",
            "no/such/tokenizer.json",
        ]),
        "no/such/tokenizer.json",
    );
    // A damaged shard is named, with what is wrong.
    let shard = data.join("train_000001.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    assert_clean_error(
        &train(&[
            "--config",
            &cfg,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "train_000001.bin",
    );
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 0xff;
    std::fs::write(&shard, &bad_magic).unwrap();
    assert_clean_error(
        &train(&[
            "--config",
            &cfg,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "magic",
    );
    // Invalid UTF-8: skipped and counted by default, an error naming file and line with --on-invalid fail.
    let mixed = dir.join("mixed.jsonl");
    let mut content = std::fs::read(&corpus).unwrap();
    content.extend_from_slice(
        b"{\"body\": \"bad \xff byte, long enough to pass the minimum length\"}\n",
    );
    std::fs::write(&mixed, content).unwrap();
    let d4 = dir.join("d4");
    let args = [
        mixed.to_str().unwrap(),
        "--out",
        d4.to_str().unwrap(),
        "--text-field",
        "body",
    ];
    let out = prepare(
        &[
            &args[..],
            &["--json", "--min-chars", "20", "--vocab-size", "300"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["skipped_invalid"], 1);
    assert_clean_error(
        &prepare(&[&args[..], &["--on-invalid", "fail"]].concat()),
        "invalid UTF-8",
    );
    // llm.c's shard folders (no manifest, GPT-2 tokens) train as they are.
    let gpt2 = dir.join("gpt2");
    let out = prepare(&[
        corpus.to_str().unwrap(),
        "--out",
        gpt2.to_str().unwrap(),
        "--tokenizer",
        "gpt2",
        "--text-field",
        "body",
        "--min-chars",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let llmc = dir.join("llmc");
    std::fs::create_dir_all(&llmc).unwrap();
    std::fs::copy(
        gpt2.join("train_000000.bin"),
        llmc.join("sonnets_train_000000.bin"),
    )
    .unwrap();
    std::fs::copy(
        gpt2.join("val_000000.bin"),
        llmc.join("sonnets_val_000000.bin"),
    )
    .unwrap();
    let out = train(&[
        "--config",
        &cfg,
        "--data",
        llmc.to_str().unwrap(),
        "--out",
        dir.join("run2").to_str().unwrap(),
        "--max-steps",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("llm.c's GPT-2 shards"), "{stderr}");

    // train --data on a folder that is not a data set.
    assert_clean_error(
        &train(&["--data", empty.to_str().unwrap(), "--no-progress"]),
        "manifest.json",
    );
    assert!(prepare(&["--help"]).status.success());
}
