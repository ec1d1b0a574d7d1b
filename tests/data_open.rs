//! Opening data sets: one rule for every binary. A folder with a manifest is a `prepare` data
//! set and its manifest must parse and agree with the shards; a folder without one may be
//! llm.c shards (for `train` and `evaluate` alike); `prepare --verify` checks every sha256; a
//! shard truncated under a live loader is an error, not a bus error; tokenizers are compared
//! by what they do, not by their bytes; the default corpus is found from any directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{assert_clean_error, run_bin, TempDir};

fn prepare(args: &[&str]) -> Output {
    run_bin(env!("CARGO_BIN_EXE_prepare"), args)
}

fn evaluate(args: &[&str]) -> Output {
    run_bin(env!("CARGO_BIN_EXE_evaluate"), args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// The sonnets prepared into `dir/name` with `tokenizer` (`bpe` means BPE-320), 20% val.
fn prepared(dir: &TempDir, name: &str, tokenizer: &str) -> PathBuf {
    common::prepare_sonnets(
        dir,
        name,
        &[
            "--min-chars",
            "20",
            "--tokenizer",
            tokenizer,
            "--vocab-size",
            "320",
            "--val-fraction",
            "0.2",
        ],
    )
}

/// A copy of a prepared GPT-2 data set's train and val shards named as llm.c names them, and
/// nothing else (no manifest, no tokenizer.json).
fn llm_c_folder(dir: &TempDir, gpt2_data: &Path) -> PathBuf {
    let llmc = dir.path("llmc");
    std::fs::create_dir_all(&llmc).unwrap();
    for split in ["train", "val"] {
        std::fs::copy(
            gpt2_data.join(format!("{split}_000000.bin")),
            llmc.join(format!("sonnets_{split}_000000.bin")),
        )
        .unwrap();
    }
    llmc
}

/// A one-step tiny run's config.
fn tiny_config(dir: &TempDir) -> String {
    dir.write(
        "tiny.toml",
        b"[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n\
          [train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 1\neval_every = 1\neval_batches = 1\nsample_tokens = 2\n",
    )
    .to_string_lossy()
    .into_owned()
}

fn train_on(dir: &TempDir, data: &Path, extra: &[&str]) -> Output {
    let cfg = tiny_config(dir);
    let out = dir.path(&format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    common::train_run(&cfg, data, &out, extra)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------
// Item 3: the manifest decides, and is checked.

#[test]
fn a_garbage_or_empty_manifest_is_an_error_not_llm_c_shards() {
    let dir = TempDir::new("open-garbage-manifest");
    let data = prepared(&dir, "bpe", "bpe");
    for text in ["", "garbage", "{}", "{\"format\": \"smelt-shards-v1\"}"] {
        std::fs::write(data.join("manifest.json"), text).unwrap();
        // Today: a 50,257-token GPT-2 model trained on BPE-320 ids, exit 0.
        assert_clean_error(&train_on(&dir, &data, &[]), "manifest.json");
        assert_clean_error(
            &evaluate(&[
                "--model",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf_tiny"),
                "--data",
                data.to_str().unwrap(),
            ]),
            "manifest.json",
        );
    }
}

#[test]
fn shards_must_hold_what_the_manifest_records() {
    let dir = TempDir::new("open-counts");
    let data = prepared(&dir, "bpe", "bpe");
    let manifest = read_json(&data.join("manifest.json"));

    // A count the manifest records that the shard does not hold.
    let mut edited = manifest.clone();
    let recorded = edited["splits"]["train"]["shards"][0]["num_tokens"]
        .as_u64()
        .unwrap();
    edited["splits"]["train"]["shards"][0]["num_tokens"] = (recorded + 7).into();
    edited["splits"]["train"]["tokens"] =
        (edited["splits"]["train"]["tokens"].as_u64().unwrap() + 7).into();
    write_json(&data.join("manifest.json"), &edited);
    let out = train_on(&dir, &data, &[]);
    assert_clean_error(&out, "train_000000.bin");
    assert!(
        stderr(&out).contains(&(recorded + 7).to_string()),
        "{}",
        stderr(&out)
    );

    // A whole, valid shard that is not the one the manifest records (the val shard copied
    // over the train shard).
    write_json(&data.join("manifest.json"), &manifest);
    assert_success(&train_on(&dir, &data, &[]));
    std::fs::copy(data.join("val_000000.bin"), data.join("train_000000.bin")).unwrap();
    let out = train_on(&dir, &data, &[]);
    assert_clean_error(&out, "train_000000.bin");
    assert!(stderr(&out).contains("manifest"), "{}", stderr(&out));

    // A manifest that contradicts itself (a split's total against its shards).
    let mut edited = manifest.clone();
    edited["splits"]["val"]["tokens"] = 1.into();
    write_json(&data.join("manifest.json"), &edited);
    assert_clean_error(&train_on(&dir, &data, &[]), "manifest.json");
}

#[test]
fn prepare_verify_checks_every_shard_against_its_sha256() {
    let dir = TempDir::new("open-verify");
    let data = prepared(&dir, "bpe", "bpe");
    let d = data.to_str().unwrap();
    let ok = prepare(&["--verify", d]);
    assert_success(&ok);
    let report = String::from_utf8_lossy(&ok.stdout);
    assert!(report.contains("train_000000.bin"), "{report}");
    let json = prepare(&["--verify", d, "--json"]);
    assert_success(&json);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let manifest = read_json(&data.join("manifest.json"));
    let shards: usize = ["train", "val", "test"]
        .iter()
        .map(|s| {
            manifest["splits"][s]["shards"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(v["shards"], shards);

    // One token changed in place: same size, same header, so opening the set cannot tell;
    // the sha256 can.
    let shard = data.join("val_000000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last - 1] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let out = prepare(&["--verify", d]);
    assert_clean_error(&out, "val_000000.bin");
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));

    // A tokenizer.json that is not the one prepared with.
    bytes[last - 1] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    assert_success(&prepare(&["--verify", d]));
    let tok = std::fs::read_to_string(data.join("tokenizer.json")).unwrap();
    std::fs::write(data.join("tokenizer.json"), format!("{tok} ")).unwrap();
    assert_clean_error(&prepare(&["--verify", d]), "tokenizer.json");

    // Not a data set.
    assert_clean_error(
        &prepare(&["--verify", dir.path("nope").to_str().unwrap()]),
        "nope",
    );
}

// ---------------------------------------------------------------------------------------
// Item 4: tokenizers compared by behaviour; item 5: evaluate reads llm.c folders.

/// GPT-2's tokenizer.json (ours) rewritten the way `transformers` writes GPT-2's: keys in
/// another order, pretty-printed, merges as "a b" strings, `continuing_subword_prefix` and
/// `end_of_word_suffix` "", defaults left out, `<|endoftext|>` normalized, and the
/// post-processor and decoder with `add_prefix_space` true. Nothing a tokenizer does changes.
fn transformers_style_gpt2() -> String {
    let ours = smelt::data::Tokenizer::gpt2().unwrap().to_json().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&ours).unwrap();
    v["added_tokens"][0]["normalized"] = true.into();
    v["post_processor"]["add_prefix_space"] = true.into();
    v["decoder"]["add_prefix_space"] = true.into();
    let pre = v["pre_tokenizer"].as_object_mut().unwrap();
    pre.remove("use_regex");
    let model = v["model"].as_object_mut().unwrap();
    model.insert("continuing_subword_prefix".into(), "".into());
    model.insert("end_of_word_suffix".into(), "".into());
    model.remove("ignore_merges");
    model.remove("byte_fallback");
    let merges: Vec<serde_json::Value> = model["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()).into())
        .collect();
    model.insert("merges".into(), merges.into());
    // serde_json's map is sorted: another key order than tokenizers writes.
    serde_json::to_string_pretty(&v).unwrap()
}

/// A tiny GPT-2-vocabulary model (random weights) saved with `tokenizer_json` beside it.
fn gpt2_model(dir: &TempDir, tokenizer_json: &str) -> PathBuf {
    use smelt::model::gpt::NamedTensor;
    use smelt::model::{hf, GptConfig};
    let tok = smelt::data::Tokenizer::gpt2().unwrap();
    let cfg = GptConfig {
        n_layer: 1,
        n_head: 2,
        n_embd: 32,
        block_size: 32,
        vocab_size: tok.vocab_size(),
    };
    let mut rng = smelt::rng::Rng::new(3);
    let named: Vec<NamedTensor> = hf::expected_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let ln_gain = name.contains("ln_") && name.ends_with(".weight");
            let data = (0..n)
                .map(|_| {
                    let z = 0.02 * rng.normal() as f32;
                    if ln_gain {
                        1.0 + z
                    } else {
                        z
                    }
                })
                .collect();
            NamedTensor { name, shape, data }
        })
        .collect();
    let model = dir.path("gpt2-model");
    smelt::checkpoint::save(&model, &cfg, &named, &tok).unwrap();
    std::fs::write(model.join("tokenizer.json"), tokenizer_json).unwrap();
    model
}

#[test]
fn fine_tuning_a_transformers_gpt2_on_llm_c_shards() {
    let dir = TempDir::new("open-init-from");
    let gpt2_data = prepared(&dir, "gpt2", "gpt2");
    let llmc = llm_c_folder(&dir, &gpt2_data);
    let model = gpt2_model(&dir, &transformers_style_gpt2());
    let m = model.to_str().unwrap();
    // Today refused: the tokenizer.json's bytes differ from ours.
    let out = train_on(&dir, &llmc, &["--init-from", m]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("llm.c's GPT-2 shards"),
        "{}",
        stderr(&out)
    );
    // The same rule in evaluate, on a prepared set with a manifest.
    assert_success(&evaluate(&[
        "--model",
        m,
        "--data",
        gpt2_data.to_str().unwrap(),
        "--max-batches",
        "1",
    ]));
    // A tokenizer that does differ is refused, saying what differs.
    let bpe = prepared(&dir, "bpe", "bpe");
    let out = train_on(&dir, &bpe, &["--init-from", m]);
    assert_clean_error(&out, "vocabular");
    let out = evaluate(&["--model", m, "--data", bpe.to_str().unwrap()]);
    assert_clean_error(&out, "vocabular");
    assert!(
        stderr(&out).contains("another tokenizer"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn evaluate_reads_an_llm_c_folder_as_train_does() {
    let dir = TempDir::new("open-evaluate-llmc");
    let gpt2_data = prepared(&dir, "gpt2", "gpt2");
    let llmc = llm_c_folder(&dir, &gpt2_data);
    let model = gpt2_model(
        &dir,
        &smelt::data::Tokenizer::gpt2().unwrap().to_json().unwrap(),
    );
    let (m, l) = (model.to_str().unwrap(), llmc.to_str().unwrap());
    let few = ["--batch-size", "2", "--max-batches", "3", "--json"];
    let out = evaluate(&[&["--model", m, "--data", l, "--split", "val"], &few[..]].concat());
    assert_success(&out);
    assert!(
        stderr(&out).contains("llm.c's GPT-2 shards"),
        "{}",
        stderr(&out)
    );
    let on_llmc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same shards read through the manifest give the same loss.
    let g = gpt2_data.to_str().unwrap();
    let out = evaluate(&[&["--model", m, "--data", g, "--split", "val"], &few[..]].concat());
    assert_success(&out);
    let on_manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(on_llmc, on_manifest);
    assert!(on_llmc["tokens"].as_u64().unwrap() > 0);
    // A split the folder has no shards for.
    assert_clean_error(
        &evaluate(&["--model", m, "--data", l, "--split", "test"]),
        "no 'test' data",
    );
}

// ---------------------------------------------------------------------------------------
// Item 13: an empty split says what helps.

/// The prepared set's manifest rewritten so that all its text is `documents` training
/// documents and the other splits are empty.
fn only_train(data: &Path, documents: u64) {
    let mut m = read_json(&data.join("manifest.json"));
    m["splits"]["train"]["documents"] = documents.into();
    for split in ["val", "test"] {
        m["splits"][split] = serde_json::json!({"documents": 0, "tokens": 0, "shards": []});
    }
    write_json(&data.join("manifest.json"), &m);
}

#[test]
fn an_empty_split_says_what_helps() {
    let dir = TempDir::new("open-empty-split");
    let data = prepared(&dir, "bpe", "bpe");
    // One document: a larger --val-fraction cannot help; more text can.
    only_train(&data, 1);
    let out = train_on(&dir, &data, &[]);
    assert_clean_error(&out, "no 'val' data");
    let msg = stderr(&out);
    let last = msg.lines().last().unwrap();
    assert!(!last.contains("fraction"), "{last}");
    assert!(last.contains("1 document"), "{last}");
    assert!(
        last.contains("more text") || last.contains("longer"),
        "{last}"
    );
    // Many documents: the fraction is what to raise.
    only_train(&data, 120);
    let out = train_on(&dir, &data, &[]);
    assert_clean_error(&out, "--val-fraction");
}

// ---------------------------------------------------------------------------------------
// Item 15: the default corpus from any directory.

#[test]
fn the_default_corpus_is_found_outside_the_repository() {
    let dir = TempDir::new("open-default-corpus");
    let cwd = dir.path("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    // Everything default but the size (tiny), the tokenizer (GPT-2: nothing to train) and
    // the cache, which stays relative: it goes under the working directory, as the log says.
    let cfg = dir.write(
        "default.toml",
        b"[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n\
          [data]\ntokenizer = \"gpt2\"\ncache = \"cache\"\n\
          [train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 1\neval_every = 1\neval_batches = 1\nsample_tokens = 2\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_train"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            dir.path("run").to_str().unwrap(),
            "--no-progress",
        ])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_success(&out);
    let log = stderr(&out);
    assert!(log.contains("bundled"), "{log}");
    assert!(
        log.contains(cwd.join("cache").to_str().unwrap()),
        "the log must say where the cache is: {log}"
    );
    assert!(cwd.join("cache").is_dir());
    // A corpus the user names that does not exist stays an error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_train"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--corpus",
            "no/such/texts",
            "--out",
            dir.path("run2").to_str().unwrap(),
            "--no-progress",
        ])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_clean_error(&out, "no/such/texts");
}

// ---------------------------------------------------------------------------------------
// Item 3: a shard truncated while a loader reads it.

#[test]
fn a_shard_truncated_under_a_live_loader_is_an_error_naming_it() {
    use smelt::data::loader::{sequential_batches, Loader, Order, ShardSet};
    use smelt::data::shard::{ShardWriter, TokenWidth, HEADER_BYTES};
    let dir = TempDir::new("open-truncated-live");
    let paths: Vec<PathBuf> = (0..2)
        .map(|s| {
            let path = dir.path(&format!("train_{s:06}.bin"));
            let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
            let tokens: Vec<u32> = (0..20_000u32).map(|i| (i * 7 + s) % 300).collect();
            w.write_tokens(&tokens).unwrap();
            w.finish().unwrap();
            path
        })
        .collect();
    let mut loader = Loader::new(
        ShardSet::open(&paths, Some(300)).unwrap(),
        4,
        32,
        Order::Shuffled { seed: 5 },
    )
    .unwrap();
    loader.next_batch().unwrap();
    let val = ShardSet::open(&paths[1..], Some(300)).unwrap();
    // Truncated in place (as `truncate -s` or a rewrite would): with a memory map, the next
    // read of a page past the end killed the process with SIGBUS.
    for path in &paths {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(HEADER_BYTES as u64 + 100)
            .unwrap();
    }
    let mut failure = None;
    for _ in 0..loader.num_windows() {
        let at = loader.position();
        if let Err(e) = loader.next_batch() {
            // A failed batch leaves the position where it was (nothing half-consumed).
            assert_eq!(loader.position(), at);
            failure = Some(e.to_string());
            break;
        }
    }
    let err = failure.expect("reading a truncated shard must fail");
    assert!(err.contains("train_00000"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let err = sequential_batches(&val, 4, 32, 100)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train_000001.bin"), "{err}");
    let err = val.unigram_entropy().unwrap_err().to_string();
    assert!(err.contains("train_000001.bin"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Item 4: one behavioural comparison of tokenizers.

#[test]
fn tokenizers_are_compared_by_what_they_do_not_by_their_bytes() {
    use smelt::data::Tokenizer;
    let dir = TempDir::new("open-tokenizer-behaviour");
    let ours = Tokenizer::gpt2().unwrap();
    let load = |name: &str, json: &str| Tokenizer::load(&dir.write(name, json.as_bytes())).unwrap();
    let theirs = load("transformers.json", &transformers_style_gpt2());
    assert_ne!(ours.sha256().unwrap(), theirs.sha256().unwrap());
    assert_eq!(ours.difference(&theirs).unwrap(), None);
    assert_eq!(theirs.difference(&ours).unwrap(), None);
    // The same ids and text, as the comparison promises.
    let text = "Hello world, <|endoftext|> naïve café 12345   spaces\n\nend";
    let ids = ours.encode(text).unwrap();
    assert_eq!(theirs.encode(text).unwrap(), ids);
    assert_eq!(theirs.decode(&ids).unwrap(), ours.decode(&ids).unwrap());

    // Real differences, each named, on a small transformers-written tokenizer (fast to load).
    let tiny_json = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny/tokenizer.json"),
    )
    .unwrap();
    let tiny = load("tiny.json", &tiny_json);
    let base: serde_json::Value = serde_json::from_str(&tiny_json).unwrap();
    let variant = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        edit(&mut v);
        let t = load(name, &serde_json::to_string_pretty(&v).unwrap());
        tiny.difference(&t).unwrap().expect("a real difference")
    };
    // Reformatted only: the same.
    let same = load("pretty.json", &serde_json::to_string_pretty(&base).unwrap());
    assert_eq!(tiny.difference(&same).unwrap(), None);
    // Two tokens' ids swapped.
    let d = variant("swapped.json", &|v| {
        let vocab = &mut v["model"]["vocab"];
        let (a, b) = (vocab["a"].clone(), vocab["b"].clone());
        vocab["a"] = b;
        vocab["b"] = a;
    });
    assert_eq!(d.part, "vocabulary");
    let line = d.describe("the data set's", "the model's");
    assert!(line.contains("the vocabulary differs"), "{line}");
    assert!(line.contains("\"a\"") || line.contains("\"b\""), "{line}");
    // Two merges in another order (another rank).
    let d = variant("merges.json", &|v| {
        v["model"]["merges"].as_array_mut().unwrap().swap(0, 1)
    });
    assert_eq!(d.part, "merges");
    assert!(d.this.contains("rank 0"), "{d:?}");
    // A prefix space changes every first word.
    let d = variant("prefix.json", &|v| {
        v["pre_tokenizer"]["add_prefix_space"] = true.into()
    });
    assert_eq!(d.part, "pre-tokenizer");
    // A normalizer.
    let d = variant("normalizer.json", &|v| {
        v["normalizer"] = serde_json::json!({"type": "Lowercase"})
    });
    assert_eq!(d.part, "normalizer");
    // An added token that strips the space before it.
    let d = variant("lstrip.json", &|v| {
        v["added_tokens"][0]["lstrip"] = true.into()
    });
    assert_eq!(d.part, "added tokens");
    // Another vocabulary altogether.
    let d = ours.difference(&tiny).unwrap().unwrap();
    assert_eq!(d.part, "vocabulary");
    assert!(
        d.this.contains("50257 tokens") && d.other.contains("384 tokens"),
        "{d:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 5: one opener.

#[test]
fn one_opener_for_manifests_and_llm_c_folders() {
    use smelt::data::Dataset;
    let dir = TempDir::new("open-dataset");
    let gpt2_data = prepared(&dir, "gpt2", "gpt2");
    let llmc = llm_c_folder(&dir, &gpt2_data);
    let a = Dataset::open(&gpt2_data).unwrap();
    let b = Dataset::open(&llmc).unwrap();
    assert!(a.manifest().is_some() && b.manifest().is_none());
    assert_eq!(a.tokenizer().difference(b.tokenizer()).unwrap(), None);
    assert_eq!(b.splits_with_data(), ["train", "val"]);
    for split in ["train", "val"] {
        assert_eq!(
            a.split(split).unwrap().num_tokens(),
            b.split(split).unwrap().num_tokens()
        );
    }
    // llm.c folders verify without sha256 (none is recorded).
    let v = b.verify(|_| {}).unwrap();
    assert_eq!((v.shards, v.sha256_checked), (2, false));
    // Not a data set: one line naming the folder and what was looked for.
    let empty = dir.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = Dataset::open(&empty).err().unwrap().to_string();
    assert!(
        err.contains("manifest.json") && err.contains("llm.c"),
        "{err}"
    );
    // A manifest that is there but empty is an error, even beside llm.c-named shards.
    std::fs::write(llmc.join("manifest.json"), "").unwrap();
    let err = Dataset::open(&llmc).err().unwrap().to_string();
    assert!(
        err.contains("manifest.json") && err.contains("not a valid manifest"),
        "{err}"
    );
}
