//! The training run's integrity and output, through the `train` binary on tiny runs: float
//! settings are validated, a diverging run never saves non-finite numbers and names the
//! cause, non-finite weight files are refused wherever they are loaded, config errors come
//! before anything about the run directory, and what people read (the loss chart, the
//! sample, the loss lines, the device line, `--help`) says what it is.

use std::path::Path;
use std::process::Output;

mod common;
use common::{assert_clean_error, metrics, prepare_sonnets, run_bin, train_run, TempDir};

/// The sonnets as a 300-token BPE data set.
const SONNETS_BPE: &[&str] = &["--min-chars", "20", "--vocab-size", "300"];

fn train(args: &[&str]) -> Output {
    run_bin(env!("CARGO_BIN_EXE_train"), args)
}

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "train failed: {stderr}");
    stderr
}

/// A tiny model's config, with `extra` lines (`key = value`) added to or replacing those of
/// its [train] section, written in `dir`.
fn tiny_config(dir: &TempDir, name: &str, extra: &str) -> String {
    let base = "batch_size = 2\nseq_len = 32\nmax_steps = 12\nwarmup_steps = 2\n\
                eval_every = 4\neval_batches = 1\nsample_tokens = 8\n";
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let replaced: Vec<String> = extra.lines().map(key).collect();
    let train: String = base
        .lines()
        .filter(|l| !replaced.contains(&key(l)))
        .chain(extra.lines())
        .map(|l| format!("{l}\n"))
        .collect();
    let text =
        format!("[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n[train]\n{train}");
    dir.write(name, text.as_bytes())
        .to_string_lossy()
        .into_owned()
}

fn step_dirs(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("step_"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Writes `tensors` back with one value of `poisoned` replaced by `value`.
fn write_with(path: &Path, poisoned: &str, value: f32) {
    let tensors = smelt::checkpoint::read_safetensors(path).unwrap();
    let mut named: Vec<smelt::model::gpt::NamedTensor> = tensors
        .into_iter()
        .map(|(name, (shape, data))| smelt::model::gpt::NamedTensor { name, shape, data })
        .collect();
    let t = named.iter_mut().find(|t| t.name == poisoned).unwrap();
    let middle = t.data.len() / 2;
    t.data[middle] = value;
    std::fs::write(path, smelt::checkpoint::safetensors_bytes(&named).unwrap()).unwrap();
}

#[test]
fn every_float_setting_rejects_nan_and_infinities() {
    let dir = TempDir::new("hard-floats");
    let out = dir.path("run");
    let keys = [
        ("train", "lr"),
        ("train", "min_lr"),
        ("train", "max_seconds"),
        ("data", "val_fraction"),
        ("data", "test_fraction"),
        ("optimizer", "beta1"),
        ("optimizer", "beta2"),
        ("optimizer", "eps"),
        ("optimizer", "weight_decay"),
        ("optimizer", "grad_clip"),
    ];
    for (section, key) in keys {
        for value in ["nan", "inf", "-inf"] {
            let cfg = dir.write(
                "bad.toml",
                format!("[{section}]\n{key} = {value}\n").as_bytes(),
            );
            let run = train(&[
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--no-progress",
            ]);
            assert_clean_error(&run, &format!("{section}.{key} is "));
        }
    }
    assert!(!out.exists(), "a refused config leaves no run directory");
}

#[test]
fn a_config_error_comes_before_the_run_directorys_checkpoints() {
    let dir = TempDir::new("hard-order");
    let out = dir.path("run");
    std::fs::create_dir_all(out.join("checkpoints/step_0000005")).unwrap();
    let cfg = dir.write("bad.toml", b"[optimizer]\neps = nan\n");
    assert_clean_error(
        &train(&[
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        "optimizer.eps is NaN",
    );
    assert_clean_error(
        &train(&[
            "--seq-len",
            "4096",
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ]),
        "longer than model.block_size",
    );
}

#[test]
fn an_overflowing_update_stops_the_run_before_any_save_and_names_lr() {
    let dir = TempDir::new("hard-lr");
    let data = prepare_sonnets(&dir, "data", SONNETS_BPE);
    let cfg = tiny_config(
        &dir,
        "huge.toml",
        "lr = 1e38\nwarmup_steps = 0\ncheckpoint_every = 1",
    );
    let run = dir.path("run");
    let out = train_run(&cfg, &data, &run, &[]);
    assert_clean_error(&out, "the AdamW update made the weights of");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at step 1") && stderr.contains("lower train.lr"),
        "{stderr}"
    );
    assert!(step_dirs(&run).is_empty(), "saved: {:?}", step_dirs(&run));
    assert!(!run.join("checkpoint").exists());
}

#[test]
fn a_diverging_resume_keeps_the_last_good_checkpoint_newest() {
    let dir = TempDir::new("hard-last-good");
    let data = prepare_sonnets(&dir, "data", SONNETS_BPE);
    let cfg = tiny_config(&dir, "run.toml", "checkpoint_every = 1");
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--stop-at-step", "2"]));
    // The run continues with a learning rate that overflows the next update.
    let good = run.join("checkpoints/step_0000002");
    let state_path = good.join("trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["config"]["train"]["lr"] = 1e38.into();
    state["config"]["train"]["min_lr"] = 1e37.into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    let out = train(&["--resume", run.to_str().unwrap(), "--no-progress"]);
    assert_clean_error(&out, "step_0000002");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("diverged at step 3") && stderr.contains("learning rate"),
        "{stderr}"
    );
    assert_eq!(step_dirs(&run), ["step_0000001", "step_0000002"]);
    assert_eq!(
        std::fs::read_to_string(run.join("checkpoints/latest"))
            .unwrap()
            .trim(),
        "step_0000002"
    );
    for f in ["model.safetensors", "optimizer.safetensors"] {
        smelt::checkpoint::read_safetensors(&good.join(f)).expect("the good checkpoint is finite");
    }
}

#[test]
fn non_finite_weight_files_are_refused_where_they_are_loaded() {
    let dir = TempDir::new("hard-nan-files");
    let data = prepare_sonnets(&dir, "data", SONNETS_BPE);
    let cfg = tiny_config(&dir, "run.toml", "");
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--stop-at-step", "4"]));
    let step = run.join("checkpoints/step_0000004");

    // --resume: moments and weights of the step checkpoint.
    let optimizer = step.join("optimizer.safetensors");
    let pristine = std::fs::read(&optimizer).unwrap();
    write_with(&optimizer, "exp_avg_sq.transformer.wpe.weight", f32::NAN);
    let out = train(&["--resume", run.to_str().unwrap(), "--no-progress"]);
    assert_clean_error(
        &out,
        "optimizer.safetensors: tensor 'exp_avg_sq.transformer.wpe.weight'",
    );
    std::fs::write(&optimizer, pristine).unwrap();
    let model = step.join("model.safetensors");
    write_with(&model, "transformer.h.0.mlp.c_fc.weight", f32::INFINITY);
    let out = train(&["--resume", step.to_str().unwrap(), "--no-progress"]);
    assert_clean_error(
        &out,
        "model.safetensors: tensor 'transformer.h.0.mlp.c_fc.weight'",
    );

    // The export: what generate, evaluate, serve and --init-from load.
    let export = run.join("checkpoint");
    write_with(
        &export.join("model.safetensors"),
        "transformer.wte.weight",
        f32::NAN,
    );
    let out = run_bin(
        env!("CARGO_BIN_EXE_generate"),
        &["--model", export.to_str().unwrap(), "--prompt", "When"],
    );
    assert_clean_error(
        &out,
        "tensor 'transformer.wte.weight' holds NaN or infinite values",
    );
    let out = train_run(
        &cfg,
        &data,
        &dir.path("fine-tune"),
        &["--init-from", export.to_str().unwrap()],
    );
    assert_clean_error(
        &out,
        "tensor 'transformer.wte.weight' holds NaN or infinite values",
    );
}

#[test]
fn the_record_names_what_each_number_is() {
    let dir = TempDir::new("hard-record");
    let data = prepare_sonnets(&dir, "data", SONNETS_BPE);
    let cfg = tiny_config(&dir, "run.toml", "");
    let run = dir.path("run");
    let out = train_run(&cfg, &data, &run, &["--max-steps", "20"]);
    let stderr = assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();

    // The sample: its prompt marked, apart from what the model generated.
    let prompt = summary["sample_prompt"].as_str().unwrap();
    let sample = summary["sample"].as_str().unwrap();
    assert!(!prompt.trim().is_empty());
    assert!(
        stdout.contains(&format!(
            "--- prompt ---\n{prompt}--- sample ---\n{sample}\n"
        )),
        "{stdout}"
    );

    // Three training losses, each named: the step's, the mean since the last evaluation,
    // the mean of the last 10% of the run.
    let losses: Vec<f64> = metrics(&run)
        .iter()
        .filter_map(|m| m["train_loss"].as_f64())
        .collect();
    assert_eq!(summary["last_train_loss"].as_f64(), losses.last().copied());
    let tail = summary["train_loss_steps"].as_u64().unwrap() as usize;
    assert_eq!(tail, (losses.len() / 10).max(1));
    assert!(
        stdout.contains(&format!("(mean of the last {tail} steps)")),
        "{stdout}"
    );
    assert!(
        stderr.contains("train loss") && stderr.contains("(mean of steps 5-8)"),
        "{stderr}"
    );

    // loss.svg: axes with numbers, axis labels and a legend; no unlabelled PNG.
    assert!(!run.join("loss.png").exists());
    let svg = std::fs::read_to_string(run.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for text in [
        ">step</text>",
        ">loss (nats per token)</text>",
        ">training loss, each step</text>",
        ">validation loss</text>",
    ] {
        assert!(svg.contains(text), "loss.svg lacks {text}");
    }
    let ticks = |axis: &str| -> Vec<f64> {
        svg.lines()
            .filter(|l| l.contains(&format!("class=\"tick {axis}\"")))
            .map(|l| {
                let text = &l[l.find('>').unwrap() + 1..l.rfind("</text>").unwrap()];
                text.parse().unwrap()
            })
            .collect()
    };
    let (xs, ys) = (ticks("x"), ticks("y"));
    assert!(xs.len() >= 3 && ys.len() >= 3, "{xs:?} {ys:?}");
    assert!(xs.iter().all(|&x| (0.0..=losses.len() as f64).contains(&x)));
    let all: Vec<f64> = metrics(&run)
        .iter()
        .filter_map(|m| m["train_loss"].as_f64().or(m["val_loss"].as_f64()))
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let pad = ((hi - lo) * 0.05).max(0.05);
    assert!(
        ys.iter().all(|&y| y >= lo - pad && y <= hi + pad),
        "y ticks {ys:?} outside the losses {lo}..{hi}"
    );
}

#[test]
fn the_learning_rate_floor_follows_lr() {
    let dir = TempDir::new("hard-min-lr");
    let data = prepare_sonnets(&dir, "data", SONNETS_BPE);
    let cfg = tiny_config(&dir, "run.toml", "");
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--lr", "1e-4"]));
    let lrs: Vec<f64> = metrics(&run)
        .iter()
        .filter_map(|m| m["lr"].as_f64())
        .collect();
    // Warmup to 1e-4, then a decay towards 1e-5: not a flat line at 1e-4.
    let peak = lrs.iter().cloned().fold(0.0, f64::max);
    assert!((peak - 1e-4).abs() < 1e-9, "{lrs:?}");
    assert!(
        *lrs.last().unwrap() < 0.5 * peak,
        "the schedule is flat: {lrs:?}"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join("checkpoints/step_0000012/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let min_lr = state["config"]["train"]["min_lr"].as_f64().unwrap();
    assert!((min_lr - 1e-5).abs() < 1e-12, "{min_lr}");
}

#[test]
fn an_unused_vocab_size_is_reported() {
    let dir = TempDir::new("hard-vocab");
    let data = prepare_sonnets(&dir, "data", SONNETS_BPE);
    let cfg = dir.write(
        "run.toml",
        b"[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\nvocab_size = 999\n\
          [train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 1\neval_batches = 1\nsample_tokens = 1\n",
    );
    let stderr = assert_ok(&train_run(
        cfg.to_str().unwrap(),
        &data,
        &dir.path("run"),
        &[],
    ));
    assert!(
        stderr.contains("model.vocab_size (999) is not used") && stderr.contains("300 tokens"),
        "{stderr}"
    );
}

#[test]
fn the_cpu_fallback_is_one_plain_line() {
    let dir = TempDir::new("hard-device");
    let out = train(&[
        "--device",
        "auto",
        "--data",
        dir.path("no-such-data").to_str().unwrap(),
        "--out",
        dir.path("run").to_str().unwrap(),
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("device auto:"))
        .unwrap_or_else(|| panic!("no device line: {stderr}"));
    let mut depth = 0i32;
    for c in line.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        assert!(depth <= 1, "nested parentheses: {line}");
    }
    assert!(!line.contains("tools/") && !line.contains(".sh"), "{line}");
}

#[test]
fn help_lists_every_config_key() {
    let out = train(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let config = serde_json::to_value(smelt::train::RunConfig::default()).unwrap();
    for (section, keys) in config.as_object().unwrap() {
        assert!(
            help.contains(&format!("[{section}]")),
            "no [{section}] in {help}"
        );
        for (key, default) in keys.as_object().unwrap() {
            let listed = help.lines().find_map(|l| {
                l.trim_start()
                    .strip_prefix(key.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with(' '))
            });
            let Some(rest) = listed else {
                panic!("train --help does not list {section}.{key}:\n{help}");
            };
            // A default it shows (`key = value`) is the real one.
            if let Some(shown) = rest.trim_start().strip_prefix("= ") {
                let shown = shown.split_whitespace().next().unwrap();
                let same = match default {
                    serde_json::Value::String(s) => shown == format!("\"{s}\""),
                    serde_json::Value::Number(n) => {
                        let (want, got) = (n.as_f64().unwrap(), shown.parse::<f64>().unwrap());
                        (want - got).abs() <= 1e-6 * want.abs()
                    }
                    other => panic!("{section}.{key}: default {other} shown as {shown}"),
                };
                assert!(
                    same,
                    "{section}.{key}: --help shows {shown}, the default is {default}"
                );
            }
        }
    }
}
