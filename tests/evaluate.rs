//! The `evaluate` binary: loss and perplexity on a prepared split (CPU, and the emulated CUDA
//! kernels in f32 agreeing with it), generation scored with the metrics, scoring of given
//! outputs (equal to `smelt::metrics::score`), and bad input as one clear line.

mod common;
use common::{assert_clean_error, run_bin as run, sonnets_jsonl, TempDir};

use std::path::{Path, PathBuf};
use std::process::Output;

fn evaluate(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_evaluate"), args)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny")
}

/// The sonnets prepared with the fixture model's tokenizer.
fn prepared(dir: &TempDir, tokenizer: &Path) -> PathBuf {
    let tokenizer = tokenizer.to_str().unwrap();
    common::prepare_sonnets(
        dir,
        "data",
        &[
            "--tokenizer",
            tokenizer,
            "--val-fraction",
            "0.3",
            "--test-fraction",
            "0",
        ],
    )
}

#[test]
fn loss_and_perplexity_on_a_split() {
    let dir = TempDir::new("evaluate-loss");
    let model = model_dir();
    let data = prepared(&dir, &model.join("tokenizer.json"));
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let args = |device: &'static str| {
        vec![
            "--model",
            m,
            "--data",
            d,
            "--split",
            "train",
            "--seq-len",
            "37",
            "--batch-size",
            "3",
            "--max-batches",
            "4",
            "--device",
            device,
            "--precision",
            "f32",
            "--json",
        ]
    };
    let cpu = json(&evaluate(&args("cpu")));
    let loss = cpu["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{cpu}");
    let ppl = cpu["perplexity"].as_f64().unwrap();
    assert!((ppl - loss.exp()).abs() < 1e-9 * ppl, "{cpu}");
    assert_eq!(cpu["tokens"], 4 * 3 * 37);
    // The same windows through the CUDA kernels (emulated), f32: the same loss.
    let emu = json(&evaluate(&args("emu")));
    let rel = (emu["loss"].as_f64().unwrap() - loss).abs() / loss;
    assert!(rel < 1e-5, "emu {emu} vs cpu {cpu}");

    // A data set made with another tokenizer is refused.
    let other = TempDir::new("evaluate-other");
    let gpt2_data = {
        let data = other.path("data");
        let corpus = sonnets_jsonl(&other);
        let out = run(
            env!("CARGO_BIN_EXE_prepare"),
            &[
                corpus.to_str().unwrap(),
                "--out",
                data.to_str().unwrap(),
                "--text-field",
                "body",
                "--tokenizer",
                "bpe",
                "--vocab-size",
                "300",
            ],
        );
        assert!(out.status.success());
        data
    };
    assert_clean_error(
        &evaluate(&["--model", m, "--data", gpt2_data.to_str().unwrap()]),
        "another tokenizer",
    );
    assert_clean_error(
        &evaluate(&["--model", m, "--data", d, "--split", "test"]),
        "no 'test' data",
    );
    assert_clean_error(&evaluate(&["--model", m]), "--data DIR is required");
}

#[test]
fn scoring_given_outputs_equals_the_metrics_library() {
    let dir = TempDir::new("evaluate-score");
    let records = [
        ("the cat sat on the mat", "the cat is on the mat"),
        ("Hello, world!", "hello world"),
        ("running quickly", "he runs quick"),
        ("", "nothing predicted"),
    ];
    let path = dir.path("scores.jsonl");
    let text: String = records
        .iter()
        .map(|(p, r)| format!("{}\n", serde_json::json!({"prediction": p, "reference": r})))
        .collect();
    std::fs::write(&path, text).unwrap();
    let got = json(&evaluate(&["--input", path.to_str().unwrap(), "--json"]));
    let (preds, refs): (Vec<String>, Vec<String>) = records
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .unzip();
    let want = serde_json::to_value(smelt::metrics::score(&preds, &refs)).unwrap();
    for key in ["bleu", "rouge1", "rouge2", "rougeL", "f1", "exact_match"] {
        assert_eq!(got[key], want[key], "{key}");
    }
    // The table form names every metric.
    let table = evaluate(&["--input", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&table.stdout);
    for name in ["BLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L", "F1", "exact match"] {
        assert!(stdout.contains(name), "{stdout}");
    }

    let bad = dir.path("bad.jsonl");
    std::fs::write(&bad, "{\"prediction\": \"x\"}\n").unwrap();
    assert_clean_error(
        &evaluate(&["--input", bad.to_str().unwrap()]),
        "bad.jsonl:1: needs a string field \"reference\"",
    );
    std::fs::write(&bad, "not json\n").unwrap();
    assert_clean_error(&evaluate(&["--input", bad.to_str().unwrap()]), "not JSON");
    std::fs::write(&bad, "\n").unwrap();
    assert_clean_error(&evaluate(&["--input", bad.to_str().unwrap()]), "no records");
    assert_clean_error(&evaluate(&["--bogus"]), "unexpected argument '--bogus'");
}

#[test]
fn generation_task_scores_greedy_outputs() {
    let dir = TempDir::new("evaluate-generate");
    let path = dir.path("prompts.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"The quick brown fox\", \"reference\": \"jumps over the lazy dog\"}\n\
         {\"prompt\": \"Once upon a time\", \"reference\": \"there was a king\"}\n",
    )
    .unwrap();
    let m = model_dir();
    let args = [
        "--model",
        m.to_str().unwrap(),
        "--input",
        path.to_str().unwrap(),
        "--max-new-tokens",
        "8",
        "--json",
    ];
    let first = json(&evaluate(&args));
    for key in ["bleu", "rouge1", "rouge2", "rougeL", "f1", "exact_match"] {
        let v = first[key].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=100.0).contains(&v), "{key}: {first}");
    }
    // Greedy: the same scores every time.
    assert_eq!(first, json(&evaluate(&args)));
    assert_clean_error(
        &evaluate(&["--task", "generate", "--input", path.to_str().unwrap()]),
        "--model DIR is required",
    );
}

/// The shards of `split` in `data`, in order (`prepare` names them `{split}_NNNNNN.bin`).
fn split_shards(data: &Path, split: &str) -> Vec<smelt::data::shard::Shard> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{split}_")) && name.ends_with(".bin")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no {split} shards in {}", data.display());
    paths
        .iter()
        .map(|p| smelt::data::shard::Shard::open(p, None).unwrap())
        .collect()
}

/// Mean cross-entropy per token over every token of the split but each shard's first, and
/// the number of tokens: window by window (`seq_len` tokens, the last of a shard shorter),
/// each through an inference graph of batch 1 and the window's own length, in f64. An
/// independent way to the figure `evaluate` must print.
fn reference_loss(model: &Path, data: &Path, split: &str, seq_len: usize) -> (f64, u64) {
    use smelt::backend::cpu::CpuBackend;
    use smelt::model::Gpt;
    let m = smelt::model::hf::load_model(model).unwrap();
    let (v, vp) = (m.config.vocab_size, m.config.padded_vocab());
    let mut graphs = std::collections::HashMap::new();
    let (mut nats, mut count) = (0.0f64, 0u64);
    for shard in split_shards(data, split) {
        let mut tokens = Vec::new();
        shard.read_into(0, shard.len(), &mut tokens).unwrap();
        for start in (0..tokens.len() - 1).step_by(seq_len) {
            let len = seq_len.min(tokens.len() - 1 - start);
            let gpt = graphs.entry(len).or_insert_with(|| {
                let mut g = Gpt::new(CpuBackend::new(), m.config, 1, len, false).unwrap();
                g.load(&m.weights).unwrap();
                g
            });
            gpt.set_batch(&tokens[start..start + len], None).unwrap();
            gpt.forward().unwrap();
            let logits = gpt.logits().unwrap();
            for p in 0..len {
                let row = &logits[p * vp..p * vp + v];
                let max = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
                let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                nats += max + sum.ln() - row[tokens[start + p + 1] as usize] as f64;
                count += 1;
            }
        }
    }
    (nats / count as f64, count)
}

#[test]
fn loss_covers_every_token_of_the_split() {
    let dir = TempDir::new("evaluate-every-token");
    let model = model_dir();
    let data = prepared(&dir, &model.join("tokenizer.json"));
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    // A sequence length that leaves a shorter last window.
    let predicted: usize = split_shards(&data, "val").iter().map(|s| s.len() - 1).sum();
    let seq_len = (37..64).find(|t| !predicted.is_multiple_of(*t)).unwrap();
    let (want, tokens) = reference_loss(&model, &data, "val", seq_len);
    assert_eq!(tokens as usize, predicted);
    let t = seq_len.to_string();
    // Batches that leave a partial last batch, and one larger than the split.
    for batch in ["3", "5", "1000000000"] {
        let got = json(&evaluate(&[
            "--model",
            m,
            "--data",
            d,
            "--split",
            "val",
            "--seq-len",
            &t,
            "--batch-size",
            batch,
            "--device",
            "cpu",
            "--json",
        ]));
        assert_eq!(got["tokens"], tokens, "batch {batch}: {got}");
        let loss = got["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() < 1e-5 * want,
            "batch {batch}: loss {loss}, every token one by one {want}"
        );
        let ppl = got["perplexity"].as_f64().unwrap();
        assert!((ppl - loss.exp()).abs() < 1e-9 * ppl, "{got}");
    }
    // The table says what the loss is.
    let out = evaluate(&["--model", m, "--data", d, "--seq-len", &t]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("loss (nats/token)"), "{table}");
    assert!(
        table.contains(&format!("tokens             {tokens}")),
        "{table}"
    );
}

#[test]
fn the_emulated_device_scores_partial_batches_alike() {
    let dir = TempDir::new("evaluate-emu-partial");
    let model = model_dir();
    // A few sonnets, half of them held out: a small validation split (the emulation is slow).
    let corpus = sonnets_jsonl(&dir);
    let few: String = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .skip(1)
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    let few = dir.write("few.jsonl", few.as_bytes());
    let data = dir.path("data");
    let out = run(
        env!("CARGO_BIN_EXE_prepare"),
        &[
            few.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
            "--text-field",
            "body",
            "--tokenizer",
            model.join("tokenizer.json").to_str().unwrap(),
            "--val-fraction",
            "0.5",
            "--test-fraction",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    // Windows of 16 tokens, 5 to a batch: a partial last batch and a shorter last window.
    let predicted: usize = split_shards(&data, "val").iter().map(|s| s.len() - 1).sum();
    let windows = predicted.div_ceil(16);
    assert!(
        !predicted.is_multiple_of(16) && !windows.is_multiple_of(5) && windows > 5,
        "{predicted} tokens"
    );
    let args = |device: &'static str, precision: &'static str| {
        vec![
            "--model",
            m,
            "--data",
            d,
            "--split",
            "val",
            "--seq-len",
            "16",
            "--batch-size",
            "5",
            "--device",
            device,
            "--precision",
            precision,
            "--json",
        ]
    };
    let cpu = json(&evaluate(&args("cpu", "f32")));
    assert_eq!(cpu["tokens"], predicted);
    for (precision, tol) in [("f32", 1e-5), ("bf16", 2e-2)] {
        let emu = json(&evaluate(&args("emu", precision)));
        assert_eq!(emu["tokens"], cpu["tokens"]);
        let (a, b) = (emu["loss"].as_f64().unwrap(), cpu["loss"].as_f64().unwrap());
        assert!(
            (a - b).abs() < tol * b,
            "{precision}: emu {emu} vs cpu {cpu}"
        );
    }
}

/// The fixture model with `ln_f.bias` at 1e38 and every `wte` entry 1: finite weights whose
/// logits (48 · 1e38) overflow f32.
fn overflowing_model(dir: &TempDir) -> PathBuf {
    use safetensors::tensor::{Dtype, TensorView};
    let out = dir.path("overflowing");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let mut data = view.data().to_vec();
        let fill = match name.as_str() {
            "transformer.ln_f.bias" => Some(1e38f32),
            "transformer.wte.weight" => Some(1.0f32),
            _ => None,
        };
        if let Some(x) = fill {
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&x.to_le_bytes());
            }
        }
        tensors.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn a_loss_that_is_not_finite_is_an_error() {
    let dir = TempDir::new("evaluate-nan");
    let model = overflowing_model(&dir);
    let data = prepared(&dir, &model_dir().join("tokenizer.json"));
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let predicted: usize = split_shards(&data, "val").iter().map(|s| s.len() - 1).sum();
    let seq_len = (16..64)
        .find(|t| !predicted.is_multiple_of(*t))
        .unwrap()
        .to_string();
    // A full batch (the graph's loss), and one batch of every window, the last shorter
    // (scored from the logits).
    for (batch, max_batches) in [("4", "1"), ("1000000000", "0")] {
        let out = evaluate(&[
            "--model",
            m,
            "--data",
            d,
            "--seq-len",
            &seq_len,
            "--batch-size",
            batch,
            "--max-batches",
            max_batches,
            "--device",
            "cpu",
        ]);
        assert_clean_error(&out, "loss is not finite");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn score_tables_and_json_name_each_scale() {
    let dir = TempDir::new("evaluate-scales");
    let path = dir.path("scores.jsonl");
    std::fs::write(
        &path,
        "{\"prediction\": \"the cat sat\", \"reference\": \"the cat sat down\"}\n",
    )
    .unwrap();
    let got = json(&evaluate(&["--input", path.to_str().unwrap(), "--json"]));
    assert_eq!(got["examples"], 1);
    for (key, scale) in [
        ("bleu", "0-100"),
        ("rouge1", "0-1"),
        ("rouge2", "0-1"),
        ("rougeL", "0-1"),
        ("f1", "0-100"),
        ("exact_match", "0-100"),
    ] {
        assert_eq!(got["scales"][key], scale, "{got}");
        let v = got[key].as_f64().unwrap();
        let top = if scale == "0-1" { 1.0 } else { 100.0 };
        assert!((0.0..=top).contains(&v), "{key} {v} outside {scale}");
    }
    let out = evaluate(&["--input", path.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    for label in [
        "BLEU (0-100)",
        "ROUGE-1 F (0-1)",
        "ROUGE-2 F (0-1)",
        "ROUGE-L F (0-1)",
        "token F1 (0-100)",
        "exact match (0-100)",
    ] {
        assert!(table.contains(label), "{label} in {table}");
    }
}
