//! The `train` and `prepare` binaries as a user meets them: bad input gives one clear line
//! and a non-zero exit (never a panic); prepare → train end to end writes shards, manifest,
//! checkpoint and summary; automatic preparation is cached.

use std::path::Path;
use std::process::Output;

mod common;
use common::{assert_clean_error, run_bin as run, sonnets_jsonl, TempDir};

fn train(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_train"), args)
}

fn prepare(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_prepare"), args)
}

fn config_file(dir: &Path, text: &str) -> String {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = TempDir::new("cli-bad");
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
        "device cuda: ",
    );
    assert_clean_error(
        &train(&["--device", "tpu", "--no-progress"]),
        "not one of auto, cpu, cuda",
    );
    // An unknown flag is one line too (not clap's usage block).
    assert_clean_error(
        &train(&["--no-such-flag"]),
        "unexpected argument '--no-such-flag' found (see train --help)",
    );
    assert_eq!(
        String::from_utf8_lossy(&train(&["--no-such-flag"]).stderr)
            .lines()
            .count(),
        1
    );
    assert!(train(&["--help"]).status.success());
}

/// What the README's first command leaves in the working directory (a run with step
/// checkpoints in runs/default, the prepared corpus in runs/data) changes no other error: a
/// bad setting is reported as such, not as "runs/default holds checkpoints".
#[test]
fn an_earlier_default_run_in_the_working_directory_changes_no_error() {
    let cwd = TempDir::new("cli-earlier-run");
    for step in ["step_0000100", "step_0000200", "step_0000300"] {
        cwd.write(
            &format!("runs/default/checkpoints/{step}/trainer_state.json"),
            b"{}",
        );
    }
    cwd.write("runs/data/shakespeare-bpe-00000000/manifest.json", b"{}");
    let run = |args: &[&str]| {
        common::bin_command(env!("CARGO_BIN_EXE_train"), &cwd)
            .args(args)
            .output()
            .unwrap()
    };
    assert_clean_error(
        &run(&["--seq-len", "4096", "--no-progress"]),
        "longer than model.block_size",
    );
    assert_clean_error(
        &run(&["--device", "tpu", "--no-progress"]),
        "not one of auto, cpu, cuda",
    );
    let cfg = config_file(&cwd, "[model]\nn_embd = 100\nn_head = 3\n");
    assert_clean_error(
        &run(&["--config", &cfg, "--no-progress"]),
        "not divisible by n_head",
    );
}

#[test]
fn tiny_run_end_to_end() {
    let dir = TempDir::new("cli-run");
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
corpus = "CORPUS"
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
    // The automatic preparation goes into this test's own folder, not the repository.
    let cache = dir.join("cache");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("CACHE", cache.to_str().unwrap())
        .replace("CORPUS", common::bundled_corpus().to_str().unwrap());
    std::fs::write(&cfg, text).unwrap();
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
    for f in [
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
    ] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    // Resumable checkpoints at each evaluation (30, 60) and the training record.
    for step in ["step_0000030", "step_0000060"] {
        let dir = out_dir.join("checkpoints").join(step);
        for f in ["optimizer.safetensors", "trainer_state.json"] {
            assert!(dir.join(f).is_file(), "{step} lacks {f}");
        }
    }
    assert!(out_dir.join("metrics.jsonl").is_file());
    assert!(out_dir.join("loss.svg").is_file());
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

    // A fresh run into the same directory would lose its checkpoints: refused, in one line.
    let again = train(&[
        "--config",
        &cfg,
        "--out",
        out_dir.to_str().unwrap(),
        "--no-progress",
        "--max-steps",
        "2",
    ]);
    assert_clean_error(&again, "checkpoints of an earlier run");
    assert!(out_dir.join("checkpoints/step_0000060").is_dir());

    // The second run finds the prepared corpus in the cache.
    let out = train(&[
        "--config",
        &cfg,
        "--out",
        dir.join("out2").to_str().unwrap(),
        "--no-progress",
        "--max-steps",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("prepared earlier"), "{stderr}");
}

/// `prepare` on the sonnets corpus into `out` with a 300-token BPE, plus `extra` flags.
fn prepare_sonnets(corpus: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![corpus.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(&[
        "--text-field",
        "body",
        "--min-chars",
        "20",
        "--vocab-size",
        "300",
    ]);
    args.extend_from_slice(extra);
    prepare(&args)
}

/// The same, asserting success; returns the `--json` summary.
fn prepared_sonnets(corpus: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let out = prepare_sonnets(corpus, out, &[extra, &["--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one object")
}

/// A tiny model config for training on prepared sets.
fn tiny_config(dir: &Path) -> String {
    config_file(
        dir,
        "[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n\
         [train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 5\neval_every = 5\neval_batches = 1\nsample_tokens = 5\n",
    )
}

fn train_on(dir: &TempDir, data: &Path) -> Output {
    let cfg = tiny_config(dir);
    let out_dir = dir.path("run");
    train(&[
        "--config",
        &cfg,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--no-progress",
    ])
}

#[test]
fn prepare_then_train_on_the_data_set() {
    let dir = TempDir::new("cli-prepare");
    let corpus = sonnets_jsonl(&dir);
    let data = dir.path("data");
    let summary = prepared_sonnets(&corpus, &data, &["--shard-tokens", "5000"]);
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
    // No staging leftovers.
    assert!(std::fs::read_dir(&data).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));

    let out = train_on(&dir, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path("run/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["model"]["vocab_size"], 300);
}

#[test]
fn the_same_corpus_gives_the_same_data_set() {
    let dir = TempDir::new("cli-determinism");
    let corpus = sonnets_jsonl(&dir);
    let manifest_splits = |d: &Path| -> serde_json::Value {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
        m["splits"].clone()
    };
    prepared_sonnets(&corpus, &dir.path("a"), &["--shard-tokens", "5000"]);
    prepared_sonnets(&corpus, &dir.path("b"), &["--shard-tokens", "5000"]);
    // Same documents per split, same shards byte for byte (their sha256).
    assert_eq!(
        manifest_splits(&dir.path("a")),
        manifest_splits(&dir.path("b"))
    );
}

#[test]
fn damaged_shards_are_named_with_what_is_wrong() {
    let dir = TempDir::new("cli-damaged");
    let data = dir.path("data");
    prepared_sonnets(&sonnets_jsonl(&dir), &data, &["--shard-tokens", "5000"]);
    let shard = data.join("train_000001.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    assert_clean_error(&train_on(&dir, &data), "train_000001.bin");
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 0xff;
    std::fs::write(&shard, &bad_magic).unwrap();
    assert_clean_error(&train_on(&dir, &data), "magic");
}

#[test]
fn invalid_utf8_is_skipped_and_counted_or_fails_by_option() {
    let dir = TempDir::new("cli-utf8");
    let mut content = std::fs::read(sonnets_jsonl(&dir)).unwrap();
    content.extend_from_slice(
        b"{\"body\": \"bad \xff byte, long enough to pass the minimum length\"}\n",
    );
    let mixed = dir.write("mixed.jsonl", &content);
    let summary = prepared_sonnets(&mixed, &dir.path("d"), &[]);
    assert_eq!(summary["skipped_invalid"], 1);
    assert_clean_error(
        &prepare_sonnets(&mixed, &dir.path("e"), &["--on-invalid", "fail"]),
        "invalid UTF-8",
    );
}

#[test]
fn llm_c_shard_folders_train_as_they_are() {
    let dir = TempDir::new("cli-llmc");
    let gpt2 = dir.path("gpt2");
    prepared_sonnets(&sonnets_jsonl(&dir), &gpt2, &["--tokenizer", "gpt2"]);
    // llm.c names its shards <name>_train_NNNNNN.bin / <name>_val_NNNNNN.bin, no manifest.
    let llmc = dir.path("llmc");
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
    let out = train_on(&dir, &llmc);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("llm.c's GPT-2 shards"), "{stderr}");
}

#[test]
fn prepare_bad_input_is_one_clear_line() {
    let dir = TempDir::new("cli-prepare-bad");
    let corpus = sonnets_jsonl(&dir);
    assert_clean_error(
        &prepare(&[
            dir.path("nope.txt").to_str().unwrap(),
            "--out",
            dir.path("d1").to_str().unwrap(),
        ]),
        "nope.txt",
    );
    let short = dir.write("short/a.txt", b"too short");
    assert_clean_error(
        &prepare(&[
            short.parent().unwrap().to_str().unwrap(),
            "--out",
            dir.path("d2").to_str().unwrap(),
            "--no-progress",
        ]),
        "empty after cleaning",
    );
    assert_clean_error(
        &prepare_sonnets(
            &corpus,
            &dir.path("d3"),
            &["--tokenizer", "no/such/tokenizer.json"],
        ),
        "no/such/tokenizer.json",
    );
    assert_clean_error(
        &prepare_sonnets(
            &corpus,
            &dir.path("d4"),
            &["--val-fraction", "0.7", "--test-fraction", "0.5"],
        ),
        "sum to less than 1",
    );
    // train --data on a folder that is not a data set.
    assert_clean_error(
        &train(&[
            "--data",
            short.parent().unwrap().to_str().unwrap(),
            "--no-progress",
        ]),
        "manifest.json",
    );
    assert!(prepare(&["--help"]).status.success());
}

#[test]
fn the_emulated_device_trains_like_the_cpu() {
    let dir = TempDir::new("cli-emu");
    let corpus = sonnets_jsonl(&dir);
    let data = dir.path("data");
    prepared_sonnets(&corpus, &data, &[]);
    let cfg = tiny_config(&dir);
    let mut val_losses = Vec::new();
    for device in ["cpu", "emu"] {
        let out_dir = dir.path(device);
        let out = train(&[
            "--config",
            &cfg,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--device",
            device,
            "--precision",
            "f32",
            "--no-progress",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--device {device}: {stderr}");
        assert!(stderr.contains(&format!("device: {device}")), "{stderr}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
        val_losses.push(summary["val_loss"].as_f64().unwrap());
    }
    let (cpu, emu) = (val_losses[0], val_losses[1]);
    assert!(
        ((emu - cpu) / cpu).abs() < 1e-4,
        "val loss after 5 steps: emu {emu} vs cpu {cpu}"
    );
}

#[test]
fn fine_tuning_starts_from_an_imported_model() {
    let dir = TempDir::new("cli-init-from");
    let corpus = sonnets_jsonl(&dir);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny");
    // The data set, tokenized with the imported model's tokenizer.
    let data = dir.path("data");
    let out = run(
        env!("CARGO_BIN_EXE_prepare"),
        &[
            corpus.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
            "--text-field",
            "body",
            "--tokenizer",
            model.join("tokenizer.json").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = config_file(
        &dir,
        "[train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 4\neval_every = 4\neval_batches = 2\nsample_tokens = 5\nlr = 1e-4\nmin_lr = 1e-5\n",
    );
    let run_dir = dir.path("run");
    let out = train(&[
        "--config",
        &cfg,
        "--init-from",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("initialised from"), "{stderr}");
    // The model is the imported one: its config, and at step 0 its own validation loss (the
    // same batches `evaluate` reads).
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("checkpoint/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (config["n_layer"].clone(), config["n_embd"].clone()),
        (3.into(), 48.into())
    );
    let step0: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("step 0: val loss "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no step 0 val loss in {stderr}"));
    let eval = run(
        env!("CARGO_BIN_EXE_evaluate"),
        &[
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--seq-len",
            "32",
            "--batch-size",
            "2",
            "--max-batches",
            "2",
            "--device",
            "cpu",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&eval.stderr)));
    let loss = report["loss"].as_f64().unwrap();
    assert!(
        (loss - step0).abs() < 1e-4,
        "step 0 val loss {step0} vs evaluate {loss}"
    );

    // Data tokenized otherwise is refused in one line.
    let other = dir.path("other");
    let out = prepare_sonnets(&corpus, &other, &[]);
    assert!(out.status.success());
    assert_clean_error(
        &train(&[
            "--init-from",
            model.to_str().unwrap(),
            "--data",
            other.to_str().unwrap(),
            "--out",
            dir.path("run2").to_str().unwrap(),
            "--seq-len",
            "32",
            "--no-progress",
        ]),
        "another tokenizer",
    );
}
