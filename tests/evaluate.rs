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
    let data = dir.path("data");
    let corpus = sonnets_jsonl(dir);
    let out = run(
        env!("CARGO_BIN_EXE_prepare"),
        &[
            corpus.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
            "--text-field",
            "body",
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--val-fraction",
            "0.3",
            "--test-fraction",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
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
