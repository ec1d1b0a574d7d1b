//! The tokenizer: GPT-2's known ids, agreement of our encoding path with `tokenizers` and
//! tiktoken, round trips through decode and through `tokenizer.json`, BPE training.

mod common;
use common::TempDir;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use smelt::data::{Tokenizer, END_OF_TEXT};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled corpus, one string per play (sorted by file name).
fn shakespeare() -> Vec<String> {
    let dir = root().join("data/shakespeare");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 40, "expected the plays in {}", dir.display());
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Texts that stress the pre-tokenizer and the byte-level mapping.
fn edge_cases() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "  ",
        "\n",
        "\n\n\n",
        "a",
        "Hello world",
        " Hello world",
        "Hello  world   again    ",
        "   leading spaces and trailing   ",
        "tabs\tand\t\tmore\t",
        "line\r\nwindows\r\n\r\nbreaks\r",
        "it's I'm we'll they've you're he'd don't 'S 'LL 'Re ''s ' s '",
        "'s",
        "x's",
        "!'s ?'ll",
        "numbers 12345 3.14159 1,000,000 007 ٣٤٥ ½ Ⅻ ²",
        "naïve café résumé façade Ångström",
        "combining: e\u{301}te\u{301} n\u{303}",
        "中文字符和标点。日本語のテキスト、カタカナ。한국어 텍스트",
        "Ελληνικά Русский текст עברית العربية हिन्दी ไทย",
        "emoji 😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ done",
        "nbsp\u{a0}here\u{a0}\u{a0}and\u{3000}ideographic\u{2028}sep\u{85}nel",
        "mixed\u{a0} \u{a0}a \u{2003}b",
        "punctuation!!! ... --- ??? (parens) [brackets] {braces} <angles> @#$%^&*_+=~`|\\/",
        "zero\u{200b}width\u{feff}bom",
        "control\u{0}\u{1}\u{7f}\u{1b}[0m chars",
        "\u{10ffff}\u{e000}\u{fffd}",
        "<|endoftext|>",
        "<|endoftext|> after",
        "before<|endoftext|>",
        "a<|endoftext|>b<|endoftext|><|endoftext|>c",
        "<|endoftext",
        "endoftext|>",
        "<|endof<|endoftext|>text|>",
        "A\u{2019}s curly apostrophe \u{201c}quoted\u{201d}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Pieces longer than the fast path's linear-scan limit.
    v.push("a".repeat(1000));
    v.push("ab".repeat(300));
    v.push("-".repeat(500) + " " + &"=".repeat(97));
    v.push(" ".repeat(300) + "x" + &"\n".repeat(200));
    v.push("9".repeat(257));
    v.push("é".repeat(150) + &"😀".repeat(40));
    v.push("supercalifragilisticexpialidocious".repeat(9));
    v
}

/// Deterministic random strings over characters that the GPT-2 regex treats differently.
fn random_texts(count: usize, seed: u64) -> Vec<String> {
    const POOL: &[&str] = &[
        " ",
        " ",
        " ",
        "\n",
        "\t",
        "\r",
        "\u{a0}",
        "\u{3000}",
        "\u{85}",
        "'",
        "'",
        "s",
        "t",
        "l",
        "e",
        "r",
        "v",
        "d",
        "m",
        "A",
        "z",
        "1",
        "0",
        "½",
        "٣",
        "é",
        "e\u{301}",
        "中",
        "😀",
        "!",
        ".",
        ",",
        "-",
        "<",
        "|",
        "<|endoftext|>",
        "the",
        " the",
        "ing",
        "\u{200b}",
        "ß",
        "Ⅻ",
    ];
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let len = (next() % 40) as usize;
            (0..len)
                .map(|_| POOL[(next() % POOL.len() as u64) as usize])
                .collect()
        })
        .collect()
}

fn varied_texts() -> Vec<String> {
    let mut texts = edge_cases();
    texts.extend(random_texts(3000, 0x5eed_1234_abcd_ef01));
    texts
}

fn assert_same(a: &[Vec<u32>], b: &[Vec<u32>], texts: &[String], what: &str) {
    assert_eq!(a.len(), b.len());
    for ((x, y), t) in a.iter().zip(b).zip(texts) {
        if x != y {
            let shown: String = t.chars().take(200).collect();
            panic!("{what}: ids differ for {shown:?}\n  left:  {x:?}\n  right: {y:?}");
        }
    }
}

#[test]
fn gpt2_known_ids() {
    let tok = Tokenizer::gpt2().unwrap();
    assert_eq!(tok.kind(), "gpt2");
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eot(), 50256);
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(50256));
    assert_eq!(tok.token_to_id("Ġthe"), Some(262));
    assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
    assert_eq!(tok.encode(" Hello world").unwrap(), vec![18435, 995]);
    assert_eq!(tok.encode(" the").unwrap(), vec![262]);
    assert_eq!(tok.encode("<|endoftext|>").unwrap(), vec![50256]);
    let ids = tok.encode("a<|endoftext|>b").unwrap();
    assert_eq!(ids, vec![64, 50256, 65]);
    // Only the whole special token is special.
    assert!(!tok.encode("<|endoftext").unwrap().contains(&50256));
    assert!(!tok.encode("<|endoftext |>").unwrap().contains(&50256));
    let docs = vec!["Hello world".to_string(), " the".to_string()];
    assert_eq!(
        tok.encode_batch(&docs).unwrap(),
        vec![vec![15496, 995], vec![262]]
    );
    // Cached: a second call is the same tokenizer.
    assert_eq!(
        Tokenizer::gpt2().unwrap().sha256().unwrap(),
        tok.sha256().unwrap()
    );
}

#[test]
fn gpt2_json_is_hugging_face_gpt2() {
    let tok = Tokenizer::gpt2().unwrap();
    let json = tok.to_json().unwrap();
    assert!(!json.contains('\n'), "compact json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["model"]["type"], "BPE");
    assert_eq!(v["model"]["vocab"].as_object().unwrap().len(), 50257);
    assert_eq!(v["model"]["merges"].as_array().unwrap().len(), 50000);
    assert_eq!(v["model"]["vocab"]["Ġthe"], 262);
    assert_eq!(v["model"]["vocab"]["<|endoftext|>"], 50256);
    assert_eq!(v["pre_tokenizer"]["type"], "ByteLevel");
    assert_eq!(v["pre_tokenizer"]["add_prefix_space"], false);
    assert_eq!(v["pre_tokenizer"]["use_regex"], true);
    assert_eq!(v["decoder"]["type"], "ByteLevel");
    assert!(v["normalizer"].is_null());
    let added = v["added_tokens"].as_array().unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["content"], END_OF_TEXT);
    assert_eq!(added[0]["id"], 50256);
    assert_eq!(added[0]["special"], true);
    let sha = tok.sha256().unwrap();
    assert_eq!(sha.len(), 64);
    assert!(sha
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

/// The merges recovered from the ranks are GPT-2's own `vocab.bpe`, when the copy that
/// tiktoken-rs ships can be found in the cargo registry.
#[test]
fn gpt2_merges_match_openai_vocab_bpe() {
    let Some(path) = tiktoken_asset("vocab.bpe") else {
        eprintln!("skipped: tiktoken-rs assets/vocab.bpe not found in the cargo registry");
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let expected: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    let v: serde_json::Value =
        serde_json::from_str(&Tokenizer::gpt2().unwrap().to_json().unwrap()).unwrap();
    let ours: Vec<(String, String)> = v["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(p) => (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            ),
            serde_json::Value::String(s) => {
                let (a, b) = s.split_once(' ').unwrap();
                (a.to_string(), b.to_string())
            }
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    assert_eq!(ours.len(), expected.len());
    let differ = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} merges differ from {}", path.display());
}

fn tiktoken_asset(name: &str) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let src = cargo_home.join("registry/src");
    for index in std::fs::read_dir(src).ok()?.flatten() {
        for krate in std::fs::read_dir(index.path()).ok()?.flatten() {
            let fname = krate.file_name();
            if fname.to_string_lossy().starts_with("tiktoken-rs-0.12") {
                let p = krate.path().join("assets").join(name);
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Our encoding path, `tokenizers`' own `encode_batch_fast`, and tiktoken give the same ids.
#[test]
fn gpt2_fast_path_equals_tokenizers_and_tiktoken() {
    let tok = Tokenizer::gpt2().unwrap();
    let core = tiktoken_rs::r50k_base().unwrap();
    let mut texts = shakespeare();
    texts.extend(varied_texts());
    let ours = tok.encode_batch(&texts).unwrap();
    let reference = tok.encode_batch_reference(&texts).unwrap();
    assert_same(&ours, &reference, &texts, "fast path vs tokenizers");
    let tiktoken: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| core.encode_with_special_tokens(t))
        .collect();
    assert_same(&ours, &tiktoken, &texts, "fast path vs tiktoken-rs");
    // Text without special tokens: encode_ordinary, tiktoken's (and nanoGPT's) usual call.
    for (t, ids) in texts.iter().zip(&ours) {
        if !t.contains(END_OF_TEXT) {
            assert_eq!(&core.encode_ordinary(t), ids, "encode_ordinary on {t:?}");
        }
    }
    let total: usize = ours.iter().map(|v| v.len()).sum();
    assert!(total > 1_000_000, "{total} tokens");
}

#[test]
fn gpt2_round_trip() {
    let tok = Tokenizer::gpt2().unwrap();
    let mut texts = varied_texts();
    texts.push(shakespeare()[0].chars().take(100_000).collect());
    for t in &texts {
        assert_eq!(&tok.decode(&tok.encode(t).unwrap()).unwrap(), t);
    }
}

#[test]
fn gpt2_json_loads_back_with_identical_ids() {
    let tok = Tokenizer::gpt2().unwrap();
    let dir = TempDir::new("tokenizer-gpt2_json");
    let path = dir.join("tokenizer.json");
    tok.save(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        tok.to_json().unwrap()
    );
    let loaded = Tokenizer::load(&path).unwrap();
    assert_eq!(loaded.kind(), "file");
    assert_eq!(loaded.vocab_size(), 50257);
    assert_eq!(loaded.eot(), 50256);
    assert_eq!(loaded.to_json().unwrap(), tok.to_json().unwrap());
    assert_eq!(loaded.sha256().unwrap(), tok.sha256().unwrap());
    let mut texts = varied_texts();
    texts.extend(shakespeare().into_iter().take(3));
    assert_same(
        &loaded.encode_batch(&texts).unwrap(),
        &tok.encode_batch(&texts).unwrap(),
        &texts,
        "loaded vs built",
    );
}

/// A tokenizer the fast path does not cover (here: a normalizer) is encoded by `tokenizers`.
#[test]
fn other_tokenizers_fall_back_to_tokenizers() {
    let tok = Tokenizer::gpt2().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&tok.to_json().unwrap()).unwrap();
    v["normalizer"] = serde_json::json!({"type": "Lowercase"});
    let dir = TempDir::new("tokenizer-fallback");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let lower = Tokenizer::load(&path).unwrap();
    assert_eq!(
        lower.encode("Hello World").unwrap(),
        tok.encode("hello world").unwrap()
    );
    let texts = varied_texts();
    assert_same(
        &lower.encode_batch(&texts).unwrap(),
        &lower.encode_batch_reference(&texts).unwrap(),
        &texts,
        "fallback",
    );
}

#[test]
fn load_reports_bad_files_in_one_line() {
    let dir = TempDir::new("tokenizer-bad");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, "{ not json").unwrap();
    let err = Tokenizer::load(&path).err().unwrap().to_string();
    assert!(err.starts_with("tokenizer: "), "{err}");
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let missing = Tokenizer::load(&dir.join("missing.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        missing.contains("missing.json") && !missing.contains('\n'),
        "{missing}"
    );
}

#[test]
fn bpe_training_fast_path_and_json_round_trip() {
    let plays = shakespeare();
    let train: Vec<String> = plays
        .iter()
        .take(6)
        .map(|p| p.chars().take(40_000).collect())
        .collect();
    let tok = Tokenizer::train(train.iter(), 512).unwrap();
    assert_eq!(tok.kind(), "bpe");
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(tok.eot()));
    assert!(Tokenizer::train(train.iter(), 100).is_err());

    let mut texts = varied_texts();
    texts.extend(plays.iter().skip(6).take(4).cloned());
    let ours = tok.encode_batch(&texts).unwrap();
    assert_same(
        &ours,
        &tok.encode_batch_reference(&texts).unwrap(),
        &texts,
        "bpe fast path vs tokenizers",
    );
    assert!(ours.iter().flatten().all(|&id| (id as usize) < 512));
    for t in texts.iter().take(200) {
        assert_eq!(&tok.decode(&tok.encode(t).unwrap()).unwrap(), t);
    }

    let dir = TempDir::new("tokenizer-bpe_json");
    let path = dir.join("tokenizer.json");
    tok.save(&path).unwrap();
    let loaded = Tokenizer::load(&path).unwrap();
    assert_eq!(loaded.to_json().unwrap(), tok.to_json().unwrap());
    assert_eq!(loaded.sha256().unwrap(), tok.sha256().unwrap());
    assert_eq!(loaded.eot(), tok.eot());
    assert_same(
        &loaded.encode_batch(&texts).unwrap(),
        &ours,
        &texts,
        "bpe loaded",
    );
}

#[test]
fn encode_batch_keeps_order_and_adds_nothing() {
    let tok = Tokenizer::gpt2().unwrap();
    let docs: Vec<String> = (0..500).map(|i| format!("document {i}")).collect();
    let batch = tok.encode_batch(&docs).unwrap();
    for (d, ids) in docs.iter().zip(&batch) {
        assert_eq!(ids, &tok.encode(d).unwrap());
    }
    assert!(tok.encode_batch(&[]).unwrap().is_empty());
    assert_eq!(
        tok.encode_batch(&[String::new()]).unwrap(),
        vec![Vec::<u32>::new()]
    );
    let ends: HashSet<u32> = batch.iter().filter_map(|v| v.last().copied()).collect();
    assert!(!ends.contains(&tok.eot()));
}

/// Writes GPT-2's tokenizer.json for tools/bench_tokenizers.sh: to $SMELT_GPT2_JSON, else
/// target/gpt2-tokenizer.json.
#[test]
#[ignore]
fn write_gpt2_json() {
    let path = out_path("SMELT_GPT2_JSON", "gpt2-tokenizer.json");
    Tokenizer::gpt2().unwrap().save(&path).unwrap();
    println!("wrote {}", path.display());
}

/// Writes the 2048-token BPE trained on data/shakespeare (as benches/tokenize.rs trains it)
/// for tools/bench_tokenizers.sh: to $SMELT_BPE_JSON, else target/bpe2048-tokenizer.json.
#[test]
#[ignore]
fn write_bpe_json() {
    let path = out_path("SMELT_BPE_JSON", "bpe2048-tokenizer.json");
    let docs = shakespeare();
    Tokenizer::train(docs.iter(), 2048)
        .unwrap()
        .save(&path)
        .unwrap();
    println!("wrote {}", path.display());
}

fn out_path(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target").join(name));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    path
}
