//! Sizes beyond what the machine can give end in one `error:` line naming what was asked,
//! never in an allocation abort or a panic: a model's config.json (evaluate / generate),
//! a training config, a batch, a BPE vocabulary, and CPU threads under a process limit.

mod common;
use common::{assert_clean_error, run_bin as run, sonnets_jsonl, TempDir};

use std::path::{Path, PathBuf};
use std::process::Output;

use smelt::backend::cpu::CpuBackend;
use smelt::model::{Gpt, GptConfig};

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny")
}

/// A config.json key and its new value.
type Edit = (&'static str, serde_json::Value);

/// A copy of the fixture model whose config.json has `edits` applied.
fn model_with(dir: &TempDir, name: &str, edits: &[Edit]) -> PathBuf {
    let model = dir.path(name);
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixture_model()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (key, value) in edits {
        config[*key] = value.clone();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    model
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_json_sizes_beyond_memory_are_one_line_errors() {
    let dir = TempDir::new("limits-config-json");
    let prompts = dir.write(
        "prompts.jsonl",
        b"{\"prompt\": \"hello\", \"reference\": \"world\"}\n",
    );
    let cases: [(&str, &[Edit], &str); 5] = [
        // 2^30 wide: 12·n_embd² per layer overflows 64 bits.
        (
            "wide",
            &[("n_embd", 1_073_741_824u64.into()), ("n_head", 1.into())],
            "parameters, more than a 64-bit machine can address",
        ),
        (
            "long",
            &[("n_positions", 1_000_000_000_000u64.into())],
            "available",
        ),
        ("deep", &[("n_layer", 1_000_000_000u64.into())], "available"),
        // JSON numbers written as floats are not sizes.
        (
            "deep_float",
            &[("n_layer", serde_json::json!(1e9))],
            "`n_layer` must be a positive integer",
        ),
        (
            "long_float",
            &[("n_positions", serde_json::json!(1e12))],
            "`n_positions` must be a positive integer",
        ),
    ];
    for (name, edits, needle) in cases {
        let model = model_with(&dir, name, edits);
        let m = model.to_str().unwrap();
        let out = run(
            env!("CARGO_BIN_EXE_evaluate"),
            &["--model", m, "--input", prompts.to_str().unwrap()],
        );
        assert_clean_error(&out, needle);
        assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
        let out = run(
            env!("CARGO_BIN_EXE_generate"),
            &["--model", m, "--prompt", "hello"],
        );
        assert_clean_error(&out, needle);
    }
    // The memory error says how much was asked and how much there is.
    let model = model_with(&dir, "deep_bytes", &[("n_layer", 1_000_000_000u64.into())]);
    // Fine-tuning reads the same config.json first.
    let out = run(
        env!("CARGO_BIN_EXE_train"),
        &[
            "--init-from",
            model.to_str().unwrap(),
            "--data",
            dir.path("no-data").to_str().unwrap(),
            "--out",
            dir.path("run").to_str().unwrap(),
            "--no-progress",
        ],
    );
    assert_clean_error(&out, "1000000000 layers");
    let out = run(
        env!("CARGO_BIN_EXE_evaluate"),
        &[
            "--model",
            model.to_str().unwrap(),
            "--input",
            prompts.to_str().unwrap(),
        ],
    );
    let text = stderr(&out);
    assert!(
        text.contains("1000000000 layers") && text.contains(" bytes) but this machine has "),
        "{text}"
    );
}

/// The sonnets prepared with a 300-token BPE, for training runs.
fn prepared(dir: &TempDir) -> PathBuf {
    common::prepare_sonnets(dir, "data", &["--vocab-size", "300"])
}

fn train_with(dir: &TempDir, data: &Path, toml: &str) -> Output {
    let cfg = dir.write("run.toml", toml.as_bytes());
    common::train_run(
        cfg.to_str().unwrap(),
        data,
        &dir.path("run"),
        &["--device", "cpu"],
    )
}

#[test]
fn training_config_sizes_beyond_memory_are_one_line_errors() {
    let dir = TempDir::new("limits-toml");
    let data = prepared(&dir);
    let small = "[train]\nbatch_size = 2\nseq_len = 16\nmax_steps = 1\nsample_tokens = 1\n";
    let cases = [
        (
            "[model]\nn_embd = 1073741824\n",
            "parameters, more than a 64-bit machine can address",
        ),
        // A float is not an integer in TOML.
        (
            "[model]\nblock_size = 1e12\n",
            "invalid type: floating point",
        ),
        ("[model]\nn_layer = 1e9\n", "invalid type: floating point"),
        // The arena (wpe alone is 1e12 × 32 floats) is checked before it is allocated.
        (
            "[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 1000000000000\n",
            "but this machine has",
        ),
        // The graph's bookkeeping alone outgrows the machine before the graph is built.
        (
            "[model]\nn_layer = 1000000000\nn_head = 2\nn_embd = 32\nblock_size = 32\n",
            "the graph of a 1000000000-layer model needs",
        ),
    ];
    for (model, needle) in cases {
        let out = train_with(&dir, &data, &format!("{model}{small}"));
        assert_clean_error(&out, needle);
    }
}

#[test]
fn a_batch_beyond_memory_is_an_error_naming_its_size() {
    let (config, _) = smelt::model::hf::load_config(&fixture_model().join("config.json")).unwrap();
    // 1e9 sequences of 64 tokens: the logits alone are 1e9·64·384 floats (98 TB).
    let e = Gpt::new(CpuBackend::new(), config, 1_000_000_000, 64, true)
        .err()
        .expect("a batch of 1e9 sequences cannot be allocated")
        .to_string();
    assert!(e.contains(" bytes) but this machine has "), "{e}");
    assert!(!e.contains('\n'));
    // Sizes whose product overflows 64 bits never reach the graph builder.
    let e = Gpt::new(CpuBackend::new(), config, usize::MAX / 2, 64, false)
        .err()
        .expect("an overflowing batch")
        .to_string();
    assert!(e.contains("more than 2^64 bytes"), "{e}");
}

#[test]
fn evaluate_batch_size_is_checked_as_a_number() {
    // `1e9` is not an integer: clap's one line.
    let out = run(
        env!("CARGO_BIN_EXE_evaluate"),
        &[
            "--model",
            fixture_model().to_str().unwrap(),
            "--data",
            "/nonexistent",
            "--batch-size",
            "1e9",
        ],
    );
    assert_clean_error(&out, "invalid value '1e9' for '--batch-size");
}

#[test]
fn config_validation_refuses_overflowing_models() {
    let cfg = GptConfig {
        n_layer: 4,
        n_head: 4,
        n_embd: 1 << 30,
        block_size: 128,
        vocab_size: 2048,
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("more than a 64-bit machine can address"), "{e}");
    assert_eq!(cfg.weight_bytes(), None);
    let near_max = GptConfig {
        vocab_size: usize::MAX - 1,
        ..GptConfig::default()
    };
    assert!(near_max.validate().is_err());
    // A real model's figures are exact: GPT-2 124M has 124,439,808 parameters.
    let gpt2 = GptConfig {
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        block_size: 1024,
        vocab_size: 50257,
    };
    assert!(gpt2.validate().is_ok());
    assert_eq!(gpt2.num_params(), 124_439_808);
}

#[test]
fn bpe_vocabulary_beyond_ids_or_memory_is_one_line() {
    let dir = TempDir::new("limits-vocab");
    let corpus = sonnets_jsonl(&dir);
    let prepare = |vocab: &str| {
        run(
            env!("CARGO_BIN_EXE_prepare"),
            &[
                corpus.to_str().unwrap(),
                "--out",
                dir.path("data").to_str().unwrap(),
                "--text-field",
                "body",
                "--vocab-size",
                vocab,
            ],
        )
    };
    assert_clean_error(&prepare("1e12"), "invalid value '1e12' for '--vocab-size");
    assert_clean_error(&prepare("1000000000000"), "token ids are 32-bit");
    // A vocabulary ids can number but this machine cannot hold: twice what is available, at
    // the 56 bytes per token the trainer reserves at least.
    if let Some((free, _)) = smelt::memory::available() {
        let vocab = free / 28 + 1;
        if vocab <= u32::MAX as u64 {
            let out = prepare(&vocab.to_string());
            assert_clean_error(&out, "training a BPE vocabulary of");
            assert!(stderr(&out).contains("available"), "{}", stderr(&out));
        }
    }
    assert!(!dir.path("data").join("manifest.json").exists());
}

/// `train` as a child whose user may not start one more thread (RLIMIT_NPROC = 1; as root,
/// which the limit does not bind, the child first becomes `nobody`).
#[test]
fn threads_refused_by_a_process_limit_are_one_line() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let dir = TempDir::new("limits-threads");
    let data = prepared(&dir);
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = dir.write(
        "run.toml",
        b"[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n\
          [train]\nbatch_size = 2\nseq_len = 16\nmax_steps = 1\nsample_tokens = 1\nthreads = 1000\n",
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_train"));
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path("run").to_str().unwrap(),
        "--device",
        "cpu",
        "--no-progress",
    ])
    .current_dir(&*dir)
    .env_remove("RAYON_NUM_THREADS");
    // SAFETY: geteuid is always safe to call.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let one = libc::rlimit {
                rlim_cur: 1,
                rlim_max: 1,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &one) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("train starts");
    let text = stderr(&out);
    assert_clean_error(&out, "CPU threads");
    assert!(
        text.contains("train.threads") && text.contains("ulimit -u"),
        "{text}"
    );
    // More threads than the machine has were capped, with a warning.
    if smelt::threads::machine_threads() < 1000 {
        assert!(
            text.contains("warning: train.threads = 1000 is more than"),
            "{text}"
        );
    }
}
