//! Checkpoints and resuming, through the `train` binary on the CPU: a run stopped and
//! resumed gives bit for bit the losses and weights of a straight run; the checkpoint layout,
//! the training record (metrics.jsonl, loss.svg), pruning, lines of checkpoints, what
//! interrupted saves leave behind, Ctrl-C, and one-line errors for checkpoints that cannot be
//! resumed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{assert_clean_error, metrics, train_run, TempDir};

fn train(args: &[&str]) -> Output {
    common::run_bin(env!("CARGO_BIN_EXE_train"), args)
}

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "train failed: {stderr}");
    stderr
}

/// A prepared data set (the sonnets, a 300-token BPE) and a tiny model config, in `dir`.
fn setup(dir: &TempDir) -> (PathBuf, String) {
    let data = common::prepare_sonnets(dir, "data", &["--min-chars", "20", "--vocab-size", "300"]);
    let cfg = dir.write(
        "run.toml",
        b"[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n\
          [train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 20\nwarmup_steps = 3\n\
          eval_every = 5\ncheckpoint_every = 5\neval_batches = 1\nsample_tokens = 5\n",
    );
    (data, cfg.to_string_lossy().into_owned())
}

/// The per-step training losses in metrics.jsonl, as f32 bits, with their steps.
fn step_losses(run: &Path) -> Vec<(u64, u32)> {
    metrics(run)
        .iter()
        .filter(|m| m.get("train_loss").is_some())
        .map(|m| {
            (
                m["step"].as_u64().unwrap(),
                (m["train_loss"].as_f64().unwrap() as f32).to_bits(),
            )
        })
        .collect()
}

/// The entries of `run/checkpoints` but the `latest` file.
fn step_dirs(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    names.sort();
    names
}

#[test]
fn stopped_and_resumed_run_is_bit_identical_to_a_straight_run() {
    let dir = TempDir::new("resume-exact");
    let (data, cfg) = setup(&dir);

    let straight = dir.path("straight");
    assert_ok(&train_run(&cfg, &data, &straight, &[]));

    // The same 20-step schedule, stopped after 10 steps, then resumed from the run dir.
    let split = dir.path("split");
    let stderr = assert_ok(&train_run(&cfg, &data, &split, &["--stop-at-step", "10"]));
    assert!(stderr.contains("--resume"), "{stderr}");
    assert_eq!(
        step_dirs(&split),
        ["step_0000005", "step_0000010"],
        "a checkpoint every 5 steps"
    );
    // metrics.jsonl lines written after the checkpoint (as by a crash) are dropped on resume.
    let mut extra = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    extra.push_str(
        "{\"step\":11,\"train_loss\":1.0,\"lr\":0.1,\"grad_norm\":1.0,\"tokens_per_second\":1.0}\n",
    );
    std::fs::write(split.join("metrics.jsonl"), extra).unwrap();
    let stderr = assert_ok(&train(&[
        "--resume",
        split.to_str().unwrap(),
        "--no-progress",
    ]));
    assert!(stderr.contains("resumed from"), "{stderr}");

    let (a, b) = (step_losses(&straight), step_losses(&split));
    assert_eq!(a.len(), 20, "one metrics line per step");
    assert_eq!(
        a.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        a, b,
        "per-step losses (f32 bits) of straight vs stopped+resumed"
    );
    for f in [
        "checkpoint/model.safetensors",
        "checkpoints/step_0000020/optimizer.safetensors",
    ] {
        let read = |run: &Path| smelt::checkpoint::read_safetensors(&run.join(f)).unwrap();
        let (a, b) = (read(&straight), read(&split));
        assert_eq!(a.len(), b.len());
        for (name, (shape, values)) in &a {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                b[name].0 == *shape && bits(&b[name].1) == bits(values),
                "{f}: tensor {name} differs"
            );
        }
    }

    // Layout: the last 3 checkpoints kept, each complete; the record; the export.
    assert_eq!(
        step_dirs(&split),
        ["step_0000010", "step_0000015", "step_0000020"]
    );
    let last = split.join("checkpoints/step_0000020");
    for f in [
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(last.join(f).is_file(), "checkpoint lacks {f}");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 20);
    assert_eq!(state["train_losses"].as_array().unwrap().len(), 20);
    assert!(state["loader"]["epoch"].is_u64() && state["loader"]["window"].is_u64());
    assert_eq!(state["batch_order"]["Shuffled"]["seed"], 1337);
    assert_eq!(state["config"]["model"]["vocab_size"], 300);
    let gen: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(gen["max_length"], 32);
    assert_eq!(gen["do_sample"], true);
    assert_eq!(gen["bos_token_id"], gen["eos_token_id"]);
    let opt = smelt::checkpoint::read_safetensors(&last.join("optimizer.safetensors")).unwrap();
    let model = smelt::checkpoint::read_safetensors(&last.join("model.safetensors")).unwrap();
    assert_eq!(opt.len(), 2 * model.len());
    for (name, (shape, _)) in &model {
        assert_eq!(&opt[&format!("exp_avg.{name}")].0, shape);
        assert_eq!(&opt[&format!("exp_avg_sq.{name}")].0, shape);
    }
    assert!(split.join("checkpoint/generation_config.json").is_file());
    let evals: Vec<u64> = metrics(&split)
        .iter()
        .filter(|m| m.get("val_loss").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, [0, 5, 10, 15, 20]);
    for m in metrics(&split)
        .iter()
        .filter(|m| m.get("train_loss").is_some())
    {
        for key in ["lr", "grad_norm", "tokens_per_second"] {
            assert!(m[key].is_number(), "{key} missing in {m}");
        }
    }
    let svg = std::fs::read_to_string(split.join("loss.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "loss.svg is not an SVG"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(split.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 20);

    // A further resume may extend the run with --max-steps.
    assert_ok(&train(&[
        "--resume",
        split.to_str().unwrap(),
        "--max-steps",
        "22",
        "--no-progress",
    ]));
    assert_eq!(step_losses(&split).len(), 22);
}

#[test]
fn a_leftover_tmp_dir_is_ignored_and_cleaned() {
    let dir = TempDir::new("resume-tmp");
    let (data, cfg) = setup(&dir);
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--stop-at-step", "5"]));
    // A save killed half-way: a newer step's .tmp directory with some of its files.
    let tmp = run.join("checkpoints/step_0000009.tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"half").unwrap();
    std::fs::write(tmp.join("trainer_state.json"), b"{").unwrap();
    assert_clean_error(
        &train(&["--resume", tmp.to_str().unwrap()]),
        "unfinished checkpoint",
    );
    let stderr = assert_ok(&train(&[
        "--resume",
        run.to_str().unwrap(),
        "--stop-at-step",
        "7",
        "--no-progress",
    ]));
    assert!(stderr.contains("step_0000005 at step 5"), "{stderr}");
    assert!(!tmp.exists(), "the next save removes leftovers");
    assert_eq!(step_dirs(&run), ["step_0000005", "step_0000007"]);
}

#[test]
fn unusable_checkpoints_and_changed_settings_are_one_clear_line() {
    let dir = TempDir::new("resume-errors");
    let (data, cfg) = setup(&dir);
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--stop-at-step", "5"]));
    let ckpt = run.join("checkpoints/step_0000005");
    let resume = |extra: &[&str]| {
        let mut args = vec!["--resume", ckpt.to_str().unwrap(), "--no-progress"];
        args.extend_from_slice(extra);
        train(&args)
    };
    assert_clean_error(&resume(&["--seq-len", "16"]), "train.seq_len");
    assert_clean_error(&resume(&["--seed", "7"]), "train.seed");
    assert_clean_error(&resume(&["--max-steps", "5"]), "--max-steps above 5");
    assert_clean_error(
        &resume(&["--config", &cfg]),
        "cannot be combined with --resume",
    );
    assert_clean_error(
        &train(&["--resume", dir.path("missing").to_str().unwrap()]),
        "no such directory",
    );
    assert_clean_error(
        &train(&["--resume", data.to_str().unwrap()]),
        "neither a checkpoint",
    );
    let empty = dir.path("empty");
    std::fs::create_dir_all(empty.join("checkpoints")).unwrap();
    assert_clean_error(
        &train(&["--resume", empty.to_str().unwrap()]),
        "no whole checkpoint",
    );
    // A partial checkpoint (a file deleted by hand).
    std::fs::remove_file(ckpt.join("optimizer.safetensors")).unwrap();
    assert_clean_error(&resume(&[]), "lacks optimizer.safetensors");
    assert_clean_error(
        &train(&["--resume", run.to_str().unwrap()]),
        "lacks optimizer.safetensors",
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("resume-sigint");
    let (data, cfg) = setup(&dir);
    let run = dir.path("run");
    let child = common::bin_command(env!("CARGO_BIN_EXE_train"), &dir)
        .args([
            "--config",
            &cfg,
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--no-progress",
            "--max-steps",
            "1000000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it trains, then interrupt.
    let start = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|m| m.lines().count() < 3)
        .unwrap_or(true)
    {
        assert!(start.elapsed() < Duration::from_secs(60), "no training");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("checkpoint saved to") && last.contains("--resume"),
        "{stderr}"
    );
    let latest = step_dirs(&run).pop().unwrap();
    assert!(last.contains(&latest), "{stderr}");
    let step: usize = latest["step_".len()..].parse().unwrap();
    assert_eq!(step_losses(&run).len(), step, "{stderr}");
    let more = (step + 2).to_string();
    assert_ok(&train(&[
        "--resume",
        run.to_str().unwrap(),
        "--max-steps",
        &more,
        "--no-progress",
    ]));
    assert_eq!(step_losses(&run).len(), step + 2);
}

/// `RUN/checkpoints/latest`'s content.
fn latest(run: &Path) -> String {
    std::fs::read_to_string(run.join("checkpoints/latest"))
        .unwrap()
        .trim()
        .to_string()
}

fn trainer_state(step_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(step_dir.join("trainer_state.json")).unwrap()).unwrap()
}

#[test]
fn resuming_an_earlier_checkpoint_starts_a_line_that_the_run_then_follows() {
    let dir = TempDir::new("resume-lines");
    let (data, cfg) = setup(&dir);
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &[]));
    assert_eq!(
        step_dirs(&run),
        ["step_0000010", "step_0000015", "step_0000020"]
    );
    assert_eq!(latest(&run), "step_0000020");

    // Back to step 10 with a longer schedule, stopped at 13: a second line.
    let base = run.join("checkpoints/step_0000010");
    let stderr = assert_ok(&train(&[
        "--resume",
        base.to_str().unwrap(),
        "--max-steps",
        "60",
        "--stop-at-step",
        "13",
        "--no-progress",
    ]));
    assert!(
        stderr.contains("starts a new line from step 10"),
        "{stderr}"
    );
    assert_eq!(latest(&run), "step_0000013");
    // Pruning stays within the new line: its base (and the other line) are kept.
    assert_eq!(
        step_dirs(&run),
        [
            "step_0000010",
            "step_0000013",
            "step_0000015",
            "step_0000020"
        ]
    );

    // The run's latest is the new line's newest save: resuming the run continues it.
    let stderr = assert_ok(&train(&[
        "--resume",
        run.to_str().unwrap(),
        "--stop-at-step",
        "16",
        "--no-progress",
    ]));
    assert!(stderr.contains("step_0000013 at step 13"), "{stderr}");
    assert!(!stderr.contains("new line"), "{stderr}");
    let newest = run.join("checkpoints/step_0000016");
    let state = trainer_state(&newest);
    assert_eq!(state["parent"], 10);
    assert_eq!(
        state["line"],
        trainer_state(&run.join("checkpoints/step_0000013"))["line"]
    );
    assert_ne!(state["line"], trainer_state(&base)["line"]);
    assert!(base.is_dir(), "the line's base is never pruned");

    // metrics.jsonl is exactly this line's history: one line per step, the losses of its
    // trainer state, never the other line's steps 11..20.
    let recorded: Vec<(u64, u32)> = state["train_losses"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, (l.as_f64().unwrap() as f32).to_bits()))
        .collect();
    assert_eq!(step_losses(&run), recorded);
    assert_eq!(recorded.len(), 16);
    // Each checkpoint carries its own history: resuming the other line gives back its own.
    let other = run.join("checkpoints/step_0000020");
    let stderr = assert_ok(&train(&[
        "--resume",
        other.to_str().unwrap(),
        "--max-steps",
        "21",
        "--no-progress",
    ]));
    assert!(
        stderr.contains("starts a new line from step 20"),
        "{stderr}"
    );
    let recorded: Vec<(u64, u32)> = trainer_state(&run.join("checkpoints/step_0000021"))
        ["train_losses"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, (l.as_f64().unwrap() as f32).to_bits()))
        .collect();
    assert_eq!(step_losses(&run), recorded);
}

#[test]
fn a_run_saved_before_lines_still_resumes_its_highest_step() {
    let dir = TempDir::new("resume-legacy");
    let (data, cfg) = setup(&dir);
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--stop-at-step", "10"]));
    // What an earlier version wrote: no `latest`, no metrics copies, no line in the state.
    std::fs::remove_file(run.join("checkpoints/latest")).unwrap();
    for step in ["step_0000005", "step_0000010"] {
        let ckpt = run.join("checkpoints").join(step);
        std::fs::remove_file(ckpt.join("metrics.jsonl")).unwrap();
        let mut state = trainer_state(&ckpt);
        let fields = state.as_object_mut().unwrap();
        fields.remove("line");
        fields.remove("parent");
        std::fs::write(
            ckpt.join("trainer_state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
    }
    let stderr = assert_ok(&train(&[
        "--resume",
        run.to_str().unwrap(),
        "--stop-at-step",
        "15",
        "--no-progress",
    ]));
    assert!(stderr.contains("step_0000010 at step 10"), "{stderr}");
    assert!(!stderr.contains("new line"), "{stderr}");
    assert_eq!(
        step_losses(&run).iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=15).collect::<Vec<_>>()
    );
    assert_eq!(latest(&run), "step_0000015");
    assert_eq!(
        step_dirs(&run),
        ["step_0000005", "step_0000010", "step_0000015"]
    );
}

#[test]
fn leftovers_of_interrupted_saves_are_repaired_at_start() {
    let dir = TempDir::new("resume-leftovers");
    let (data, cfg) = setup(&dir);
    let run = dir.path("run");
    assert_ok(&train_run(&cfg, &data, &run, &["--stop-at-step", "10"]));
    let checkpoints = run.join("checkpoints");
    // Killed during the final export, between its two renames: the previous export moved
    // aside and the new one's unfinished copy.
    std::fs::rename(run.join("checkpoint"), run.join(".checkpoint.old-4242")).unwrap();
    std::fs::create_dir_all(run.join(".checkpoint.tmp-4243")).unwrap();
    std::fs::write(run.join(".checkpoint.tmp-4243/model.safetensors"), b"half").unwrap();
    // Killed while replacing step 10, between its two renames.
    std::fs::rename(
        checkpoints.join("step_0000010"),
        checkpoints.join("step_0000010.old.tmp"),
    )
    .unwrap();
    std::fs::create_dir_all(checkpoints.join("step_0000010.tmp")).unwrap();
    // Killed while an earlier version pruned step 5: some of its files gone.
    for f in ["optimizer.safetensors", "config.json"] {
        std::fs::remove_file(checkpoints.join("step_0000005").join(f)).unwrap();
    }
    // A save that a full disk stopped, and a temporary file.
    std::fs::create_dir_all(checkpoints.join("step_0000015.tmp")).unwrap();
    std::fs::write(checkpoints.join("step_0000015.tmp/model.safetensors"), b"x").unwrap();
    std::fs::write(run.join("metrics.jsonl.tmp"), b"{").unwrap();

    let stderr = assert_ok(&train(&[
        "--resume",
        run.to_str().unwrap(),
        "--stop-at-step",
        "12",
        "--no-progress",
    ]));
    for what in [
        "restored {run}/checkpoint from",
        "restored {run}/checkpoints/step_0000010 from",
        "removed {run}/.checkpoint.tmp-4243",
        "removed {run}/checkpoints/step_0000010.tmp",
        "removed {run}/checkpoints/step_0000015.tmp",
        "removed {run}/metrics.jsonl.tmp",
        "removed {run}/checkpoints/step_0000005: an incomplete checkpoint",
    ] {
        let what = what.replace("{run}", run.to_str().unwrap());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("cleanup: ") && l.contains(&what)),
            "no `{what}` in {stderr}"
        );
    }
    assert!(stderr.contains("step_0000010 at step 10"), "{stderr}");
    assert_eq!(step_dirs(&run), ["step_0000010", "step_0000012"]);
    let mut left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "checkpoint",
            "checkpoints",
            "loss.svg",
            "metrics.jsonl",
            "summary.json"
        ]
    );
}
