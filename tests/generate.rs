//! Inference with a KV cache (`smelt::infer`), Hugging Face model directories
//! (`smelt::model::hf`) and the `generate` binary: the cached logits equal the training
//! graph's forward at every position, greedy generation equals greedy by full recomputation
//! and transformers' own `generate` on a committed fixture, and bad input is one clear line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use smelt::backend::cpu::CpuBackend;
use smelt::checkpoint;
use smelt::data::Tokenizer;
use smelt::generate::{self, SampleOptions};
use smelt::infer::KvModel;
use smelt::model::gpt::NamedTensor;
use smelt::model::hf::{self, Weights};
use smelt::model::{Gpt, GptConfig};
use smelt::rng::Rng;

mod common;
use common::TempDir;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny")
}

/// Odd sizes: 3 heads of 12, vocabulary 77 (padded to 128 in the graph), 23 positions.
fn odd_config() -> GptConfig {
    GptConfig {
        n_layer: 3,
        n_head: 3,
        n_embd: 36,
        block_size: 23,
        vocab_size: 77,
    }
}

/// Random weights large enough that attention is far from uniform and logits are decisive.
fn random_weights(cfg: &GptConfig, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let mut out = Weights::new();
    for (name, shape) in hf::expected_shapes(cfg) {
        let n: usize = shape.iter().product();
        let ln = name.contains(".ln_") || name.contains("ln_f");
        let data = (0..n)
            .map(|_| {
                let z = rng.normal() as f32;
                if ln && name.ends_with(".weight") {
                    1.0 + 0.1 * z
                } else if name.ends_with(".bias") {
                    0.05 * z
                } else {
                    0.15 * z
                }
            })
            .collect();
        out.insert(name, (shape, data));
    }
    out
}

/// The training graph's logits `(t, vocab)` (padding dropped) for `tokens`.
fn graph_logits(cfg: &GptConfig, weights: &Weights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let t = tokens.len();
    let mut gpt = Gpt::new(CpuBackend::new(), *cfg, 1, t, false).unwrap();
    gpt.load(weights).unwrap();
    gpt.set_batch(tokens, None).unwrap();
    gpt.forward().unwrap();
    let vp = cfg.padded_vocab();
    gpt.logits()
        .unwrap()
        .chunks_exact(vp)
        .map(|r| r[..cfg.vocab_size].to_vec())
        .collect()
}

/// Max |a - b| relative to the largest |b| of the row.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

#[test]
fn kv_cache_logits_equal_the_full_forward_at_every_position() {
    let cfg = odd_config();
    let weights = random_weights(&cfg, 11);
    let tokens = random_tokens(cfg.block_size, cfg.vocab_size, 12);
    let want = graph_logits(&cfg, &weights, &tokens);
    let mut kv = KvModel::new(cfg, &weights).unwrap();
    let mut worst = 0f32;
    // Prefill of every length (the last position), then steps to the end of the context.
    for start in [1, 2, 7, cfg.block_size] {
        let got = kv.prefill(&tokens[..start]).unwrap();
        assert_eq!(got.len(), cfg.vocab_size);
        worst = worst.max(rel_err(&got, &want[start - 1]));
        for (p, &tok) in tokens.iter().enumerate().skip(start) {
            let got = kv.step(tok).unwrap();
            let e = rel_err(&got, &want[p]);
            assert!(
                e < 1e-5,
                "prefill {start}, position {p}: relative error {e}"
            );
            worst = worst.max(e);
        }
        assert_eq!(kv.len(), cfg.block_size);
    }
    assert!(worst < 1e-5, "worst relative error {worst}");
    eprintln!("KV cache vs graph: worst relative error {worst:e}");
    // The logits are not trivially small: the test has teeth.
    let spread = want[5].iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(spread > 1.0, "logits too flat: {spread}");

    // A full cache refuses another step, clearly; a bad token is an error, not a panic.
    let err = kv.step(0).unwrap_err().to_string();
    assert!(err.contains("context is full"), "{err}");
    let err = kv.prefill(&[0, 77]).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let err = kv.prefill(&[]).unwrap_err().to_string();
    assert!(err.contains("at least one token"), "{err}");
    let too_long = vec![0u32; cfg.block_size + 1];
    assert!(kv.prefill(&too_long).is_err());
}

#[test]
fn kv_model_rejects_missing_and_misshapen_weights() {
    let cfg = odd_config();
    let mut weights = random_weights(&cfg, 3);
    weights.remove("transformer.h.1.mlp.c_fc.bias");
    let err = KvModel::new(cfg, &weights).err().unwrap().to_string();
    assert!(err.contains("transformer.h.1.mlp.c_fc.bias"), "{err}");
    let mut weights = random_weights(&cfg, 3);
    weights
        .get_mut("transformer.h.0.attn.c_attn.weight")
        .unwrap()
        .0 = vec![108, 36];
    let err = KvModel::new(cfg, &weights).err().unwrap().to_string();
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn greedy_kv_generation_equals_greedy_by_full_recomputation() {
    let cfg = odd_config();
    let weights = random_weights(&cfg, 21);
    let prompt = random_tokens(5, cfg.vocab_size, 22);
    let opts = SampleOptions {
        max_new_tokens: cfg.block_size - prompt.len(), // stays within the window
        temperature: 0.0,
        top_k: 0,
        seed: 1,
    };
    let mut gpt = Gpt::new(CpuBackend::new(), cfg, 1, cfg.block_size, false).unwrap();
    gpt.load(&weights).unwrap();
    let want = generate::sample(&mut gpt, &prompt, &opts, None, |_| {}).unwrap();

    let mut kv = KvModel::new(cfg, &weights).unwrap();
    let mut rng = Rng::new(1);
    let mut streamed = Vec::new();
    let got = kv
        .generate(
            &prompt,
            opts.max_new_tokens,
            |l| generate::pick_token(l, cfg.vocab_size, &opts, &mut rng),
            |id| {
                streamed.push(id);
                true
            },
        )
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(streamed, want);
    assert!(
        want.iter().collect::<std::collections::HashSet<_>>().len() > 2,
        "degenerate sequence"
    );

    // Past the context the window slides instead of failing.
    let long = kv
        .generate(&prompt, 3 * cfg.block_size, argmax, |_| true)
        .unwrap();
    assert_eq!(long.len(), 3 * cfg.block_size);
    assert_eq!(long[..want.len()], want[..]);
    // on_token returning false stops right there.
    let mut n = 0;
    let short = kv
        .generate(&prompt, 10, argmax, |_| {
            n += 1;
            n < 4
        })
        .unwrap();
    assert_eq!(short, want[..4]);
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

#[derive(serde::Deserialize)]
struct Greedy {
    max_new_tokens: usize,
    prompts: Vec<GreedyPrompt>,
}

#[derive(serde::Deserialize)]
struct GreedyPrompt {
    prompt: String,
    prompt_ids: Vec<u32>,
    new_ids: Vec<u32>,
}

fn fixture_greedy() -> Greedy {
    let text = std::fs::read_to_string(fixture_dir().join("greedy.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn hf_fixture_greedy_equals_transformers_generate() {
    let (cfg, weights, tok) = hf::load(&fixture_dir()).unwrap();
    assert_eq!(
        cfg,
        GptConfig {
            n_layer: 3,
            n_head: 3,
            n_embd: 48,
            block_size: 64,
            vocab_size: 384
        }
    );
    let greedy = fixture_greedy();
    assert_eq!(greedy.prompts.len(), 3);
    let mut kv = KvModel::new(cfg, &weights).unwrap();
    for p in &greedy.prompts {
        assert_eq!(tok.encode(&p.prompt).unwrap(), p.prompt_ids, "{}", p.prompt);
        let got = kv
            .generate(&p.prompt_ids, greedy.max_new_tokens, argmax, |_| true)
            .unwrap();
        assert_eq!(got, p.new_ids, "prompt {:?}", p.prompt);
    }
    // The training graph runs the same weights (loaded through hf.rs) to the same logits.
    let p = &greedy.prompts[2];
    let all: Vec<u32> = [p.prompt_ids.clone(), p.new_ids.clone()].concat();
    let want = graph_logits(&cfg, &weights, &all);
    let got = kv.prefill(&all).unwrap();
    assert!(rel_err(&got, want.last().unwrap()) < 1e-5);
}

/// Writes `tensors` as a safetensors file with the given dtype per value conversion.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>, safetensors::Dtype)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Copies the fixture's config.json and tokenizer.json into a fresh folder.
fn fixture_copy(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture_dir().join(f), dir.path(f)).unwrap();
    }
    dir
}

#[test]
fn hf_loader_takes_bare_names_half_dtypes_and_a_tied_head() {
    let (cfg, weights, _) = hf::load(&fixture_dir()).unwrap();
    let dir = fixture_copy("hf-variants");
    // bf16 values (f32 truncated), names without `transformer.`, lm_head stored (tied),
    // plus an old-style attn.bias buffer.
    let mut tensors = Vec::new();
    let mut want = HashMap::new();
    for (name, (shape, data)) in &weights {
        let bf: Vec<u16> = data.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
        let back: Vec<f32> = bf.iter().map(|&h| hf::bf16_to_f32(h)).collect();
        let bytes: Vec<u8> = bf.iter().flat_map(|h| h.to_le_bytes()).collect();
        let bare = name.strip_prefix("transformer.").unwrap().to_string();
        tensors.push((bare, shape.clone(), bytes.clone(), safetensors::Dtype::BF16));
        if name == "transformer.wte.weight" {
            tensors.push((
                "lm_head.weight".into(),
                shape.clone(),
                bytes,
                safetensors::Dtype::BF16,
            ));
        }
        want.insert(name.clone(), back);
    }
    let mask: Vec<u8> = vec![0; 64 * 64];
    tensors.push((
        "h.0.attn.bias".into(),
        vec![1, 1, 64, 64],
        mask,
        safetensors::Dtype::U8,
    ));
    write_safetensors(&dir.path("model.safetensors"), &tensors);
    let (cfg2, w2, _) = hf::load(&dir).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(w2.len(), weights.len());
    for (name, data) in &want {
        assert_eq!(&w2[name].1, data, "{name}");
    }

    // f16: values exactly representable (k / 1024 for small k).
    let mut tensors = Vec::new();
    for (name, (shape, data)) in &weights {
        let h: Vec<u8> = (0..data.len())
            .flat_map(|i| {
                // 0x3c00 = 1.0, 0x3800 = 0.5, 0x0000 = 0, 0xb800 = -0.5
                [0x3c00u16, 0x3800, 0x0000, 0xb800][i % 4].to_le_bytes()
            })
            .collect();
        tensors.push((name.clone(), shape.clone(), h, safetensors::Dtype::F16));
    }
    write_safetensors(&dir.path("model.safetensors"), &tensors);
    let (_, w3, _) = hf::load(&dir).unwrap();
    assert_eq!(
        w3["transformer.ln_f.bias"].1[..5],
        [1.0, 0.5, 0.0, -0.5, 1.0]
    );
}

/// Loading `dir` fails with one line mentioning every `needles` item.
fn assert_load_error(dir: &Path, needles: &[&str]) {
    let err = match hf::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains('\n'), "{err}");
    for n in needles {
        assert!(err.contains(n), "want `{n}` in: {err}");
    }
}

fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if value.is_null() && key != "n_inner" {
        cfg.as_object_mut().unwrap().remove(key);
    } else {
        cfg[key] = value;
    }
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
}

#[test]
fn hf_loader_bad_input_is_one_clear_error() {
    use serde_json::json;
    assert_load_error(
        Path::new("no/such/model"),
        &["no/such/model", "not a model directory"],
    );
    for missing in ["config.json", "model.safetensors", "tokenizer.json"] {
        let dir = fixture_copy("hf-missing");
        std::fs::remove_file(dir.path(missing)).unwrap();
        assert_load_error(&dir, &[missing]);
    }
    let dir = fixture_copy("hf-pickle");
    std::fs::remove_file(dir.path("model.safetensors")).unwrap();
    std::fs::write(dir.path("pytorch_model.bin"), b"not read").unwrap();
    assert_load_error(&dir, &["model.safetensors", "pickle"]);

    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        (
            "scale_attn_by_inverse_layer_idx",
            json!(true),
            vec!["unsupported", "scale_attn_by_inverse_layer_idx"],
        ),
        ("n_inner", json!(100), vec!["unsupported", "n_inner"]),
        (
            "activation_function",
            json!("relu"),
            vec!["activation_function"],
        ),
        (
            "layer_norm_epsilon",
            json!(1e-6),
            vec!["layer_norm_epsilon"],
        ),
        (
            "n_layer",
            json!(2),
            vec!["unexpected tensor", "transformer.h.2"],
        ),
        (
            "n_layer",
            json!(4),
            vec!["missing tensor", "transformer.h.3"],
        ),
        ("n_embd", json!(60), vec!["shape"]),
        ("n_positions", json!(32), vec!["wpe", "shape"]),
        ("vocab_size", json!(300), vec!["wte", "shape"]),
        ("n_head", json!(5), vec!["not divisible by n_head"]),
        ("n_embd", serde_json::Value::Null, vec!["missing `n_embd`"]),
        ("model_type", json!("llama"), vec!["model_type"]),
    ];
    for (key, value, needles) in cases {
        let dir = fixture_copy("hf-config");
        edit_config(&dir, key, value);
        let mut needles = needles.clone();
        needles.push(".json");
        assert_load_error(&dir, &needles);
    }
    let dir = fixture_copy("hf-json");
    std::fs::write(dir.path("config.json"), "{ not json").unwrap();
    assert_load_error(&dir, &["config.json", "not valid JSON"]);
    let dir = fixture_copy("hf-st");
    std::fs::write(dir.path("model.safetensors"), b"garbage").unwrap();
    assert_load_error(&dir, &["model.safetensors", "not a safetensors file"]);
    let dir = fixture_copy("hf-tok");
    std::fs::write(dir.path("tokenizer.json"), b"{}").unwrap();
    assert_load_error(&dir, &["tokenizer.json"]);
}

/// Our own checkpoint directory (checkpoint::save) loads through hf.rs to the same weights.
fn save_own_checkpoint(tag: &str) -> (TempDir, GptConfig, Weights) {
    let tok = Tokenizer::load(&fixture_dir().join("tokenizer.json")).unwrap();
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        block_size: 32,
        vocab_size: tok.vocab_size(),
    };
    let weights = random_weights(&cfg, 5);
    let named: Vec<NamedTensor> = weights
        .iter()
        .map(|(n, (s, d))| NamedTensor {
            name: n.clone(),
            shape: s.clone(),
            data: d.clone(),
        })
        .collect();
    let dir = TempDir::new(tag);
    let ckpt = dir.path("checkpoint");
    checkpoint::save(&ckpt, &cfg, &named, &tok).unwrap();
    (dir, cfg, weights)
}

#[test]
fn our_checkpoint_loads_through_hf() {
    let (dir, cfg, weights) = save_own_checkpoint("own-ckpt");
    let (cfg2, w2, _) = hf::load(&dir.path("checkpoint")).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(w2, weights);
}

// ---------------------------------------------------------------------------------------
// The `generate` binary.

fn generate_bin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_generate"));
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("binary runs");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Exit code 1 and exactly one stderr line `error: ...` mentioning `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    common::assert_clean_error(out, needle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
}

#[test]
fn cli_bad_input_is_one_clear_line() {
    let m = fixture_dir();
    let m = m.to_str().unwrap();
    assert_clean_error(
        &generate_bin(&["--model", "no/such/dir", "--prompt", "hi"], None),
        "no/such/dir",
    );
    assert_clean_error(
        &generate_bin(&["--model", m, "--prompt", ""], None),
        "prompt is empty",
    );
    assert_clean_error(&generate_bin(&["--model", m], Some("")), "prompt is empty");
    assert_clean_error(
        &generate_bin(
            &["--model", m, "--prompt", "a", "--temperature", "-1"],
            None,
        ),
        "--temperature",
    );
    assert_clean_error(
        &generate_bin(&["--model", m, "--prompt", "a", "--top-p", "0"], None),
        "--top-p",
    );
    assert_clean_error(
        &generate_bin(
            &["--model", m, "--prompt", "a", "--max-new-tokens", "many"],
            None,
        ),
        "many",
    );
    assert_clean_error(&generate_bin(&["--model", m, "--bogus"], None), "--bogus");
    assert_clean_error(&generate_bin(&["--prompt", "a"], None), "--model");
    let dir = fixture_copy("cli-bad-model");
    edit_config(&dir, "n_inner", serde_json::json!(7));
    assert_clean_error(
        &generate_bin(&["--model", dir.to_str().unwrap(), "--prompt", "a"], None),
        "n_inner",
    );
    let help = generate_bin(&["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--model",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--seed",
        "--stop",
        "--json",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JsonOut {
    text: String,
    tokens: Vec<u32>,
}

fn json_out(out: &Output) -> JsonOut {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim_end().lines().count(), 1, "{stdout}");
    serde_json::from_str(stdout.trim_end()).unwrap()
}

#[test]
fn cli_json_greedy_matches_the_fixture_and_streaming() {
    let greedy = fixture_greedy();
    let tok = Tokenizer::load(&fixture_dir().join("tokenizer.json")).unwrap();
    let m = fixture_dir();
    let m = m.to_str().unwrap();
    let p = &greedy.prompts[0];
    let args = [
        "--model",
        m,
        "--prompt",
        &p.prompt,
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
    ];
    let out = json_out(&generate_bin(&[&args[..], &["--json"]].concat(), None));
    assert_eq!(out.tokens, p.new_ids);
    assert_eq!(out.text, tok.decode(&p.new_ids).unwrap());
    // Streaming prints the same text (plus a final newline); stdin works as the prompt.
    let streamed = generate_bin(&args, None);
    assert_eq!(streamed.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout),
        format!("{}\n", out.text)
    );
    let stdin_args = [
        "--model",
        m,
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
        "--json",
    ];
    let from_stdin = json_out(&generate_bin(&stdin_args, Some(&p.prompt)));
    assert_eq!(from_stdin.tokens, p.new_ids);

    // --stop cuts the text before the stop string (which is not printed) and ends there.
    let full = &out.text;
    let cut = full.char_indices().nth(6).map(|(i, _)| i).unwrap();
    let stop: String = full[cut..].chars().take(2).collect();
    let first = full.find(&stop).unwrap();
    let stopped = json_out(&generate_bin(
        &[&args[..], &["--json", "--stop", &stop]].concat(),
        None,
    ));
    assert_eq!(stopped.text, full[..first]);
    assert!(stopped.tokens.len() < 20 && p.new_ids.starts_with(&stopped.tokens));
    let streamed = generate_bin(
        &[&args[..], &["--stop", &stop, "--stop", "zzzzzz"]].concat(),
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout),
        format!("{}\n", &full[..first])
    );

    // Sampling: reproducible by seed, top-k 1 is greedy.
    let s = |seed: &str, extra: &[&str]| {
        let a = [
            "--model",
            m,
            "--prompt",
            &p.prompt,
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.5",
            "--seed",
            seed,
            "--json",
            "--ignore-eot",
        ];
        json_out(&generate_bin(&[&a[..], extra].concat(), None)).tokens
    };
    assert_eq!(s("7", &["--top-p", "0.9"]), s("7", &["--top-p", "0.9"]));
    assert_eq!(s("7", &["--top-k", "1"]), p.new_ids[..12]);
    assert_ne!(s("7", &[]), s("8", &[]));
}

#[test]
fn cli_runs_our_own_checkpoint() {
    let (dir, _, _) = save_own_checkpoint("cli-own");
    let ckpt = dir.path("checkpoint");
    let out = json_out(&generate_bin(
        &[
            "--model",
            ckpt.to_str().unwrap(),
            "--prompt",
            "The fox",
            "--max-new-tokens",
            "5",
            "--json",
            "--ignore-eot",
        ],
        None,
    ));
    assert_eq!(out.tokens.len(), 5);
}
