//! Documents in pieces: a corpus of one file fills every split and trains; memory stays flat
//! in the size of a document; pieces clean and encode as the whole document does; empty or
//! tiny splits are warned about; `min_chars` and dedup keep their meaning.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Output;

use proptest::prelude::*;
use smelt::data::clean::{normalize, CleanOptions, Cleaner};
use smelt::data::pieces::{self, first_piece_len};
use smelt::data::shard::Shard;
use smelt::data::source::{discover, read_pieces, OnInvalid, Piece, SourceOptions, SourceStats};
use smelt::data::Tokenizer;
use unicode_normalization::char::canonical_combining_class;

mod common;
use common::{assert_clean_error, run_bin, TempDir};

fn prepare(args: &[&str]) -> Output {
    run_bin(env!("CARGO_BIN_EXE_prepare"), args)
}

/// `prepare ARGS --json`, asserting success; the summary and stderr.
fn prepared(args: &[&str]) -> (serde_json::Value, String) {
    let out = prepare(&[args, &["--json"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn shakespeare(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// The bundled plays concatenated until `bytes`: the classic one-file corpus.
fn plays(bytes: usize) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut text = String::new();
    for name in names {
        if text.len() >= bytes {
            break;
        }
        text.push_str(&std::fs::read_to_string(name).unwrap());
    }
    text
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// All tokens of a split's shards.
fn split_tokens(data: &Path, split: &str) -> Vec<u32> {
    let m = smelt::data::prepare::Manifest::load(data).unwrap();
    let mut tokens = Vec::new();
    for path in m.shard_paths(data, split) {
        let shard = Shard::open(&path, None).unwrap();
        shard.read_into(0, shard.len(), &mut tokens).unwrap();
    }
    tokens
}

#[test]
fn a_one_file_corpus_fills_every_split_and_trains() {
    let dir = TempDir::new("pieces-one-file");
    let text = plays(1 << 20);
    let input = dir.write("input.txt", text.as_bytes());
    let data = dir.path("data");
    let (summary, stderr) = prepared(&[
        arg(&input),
        "--out",
        arg(&data),
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "300",
    ]);
    for split in ["train", "val", "test"] {
        let s = &summary["splits"][split];
        assert!(s["tokens"].as_u64().unwrap() > 0, "{split}: {summary}");
        assert_eq!(s["documents"], 1, "{split}: {summary}");
        assert!(s["pieces"].as_u64().unwrap() > 0, "{split}: {summary}");
    }
    assert_eq!(summary["documents_read"], 1, "{summary}");
    assert!(summary["pieces_read"].as_u64().unwrap() > 30, "{summary}");
    // Train and validation are far above the warning threshold; nothing to say about them.
    assert!(
        !stderr.contains("the train split") && !stderr.contains("the val split"),
        "{stderr}"
    );

    let cfg = dir.write(
        "run.toml",
        b"[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\n\
          [train]\nbatch_size = 2\nseq_len = 32\nmax_steps = 2\neval_every = 2\neval_batches = 1\nsample_tokens = 5\n",
    );
    let out = run_bin(
        env!("CARGO_BIN_EXE_train"),
        &[
            "--config",
            arg(&cfg),
            "--data",
            arg(&data),
            "--out",
            arg(&dir.path("run")),
            "--device",
            "cpu",
            "--no-progress",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path("run/summary.json").is_file());
}

#[test]
fn a_document_is_cut_and_split_the_same_way_however_it_is_stored() {
    let dir = TempDir::new("pieces-determinism");
    let text = plays(300_000);
    let plain = dir.write("plain/input.txt", text.as_bytes());
    let gz = dir.write_gz("gz/input.txt.gz", text.as_bytes());
    let record = serde_json::json!({ "text": text }).to_string() + "\n";
    let jsonl = dir.write("jsonl/input.jsonl", record.as_bytes());
    let splits = |input: &Path, out: &str| {
        let out = dir.path(out);
        prepared(&[arg(input), "--out", arg(&out), "--tokenizer", "gpt2"]);
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        m["splits"].clone()
    };
    let first = splits(&plain, "a");
    assert!(first["val"]["pieces"].as_u64().unwrap() > 0, "{first}");
    // Same pieces in the same splits, the same shards byte for byte (their sha256).
    assert_eq!(splits(&gz, "b"), first);
    assert_eq!(splits(&jsonl, "c"), first);
}

#[test]
fn pieces_read_as_the_whole_document_and_eot_marks_each_break() {
    let dir = TempDir::new("pieces-eot");
    let gpt2 = Tokenizer::gpt2().unwrap();
    // LF and CRLF text, each several pieces long.
    for (name, text) in [
        ("lf", shakespeare("hamlet.txt")),
        ("crlf", shakespeare("macbeth.txt").replace('\n', "\r\n")),
    ] {
        let input = dir.write(&format!("{name}/input.txt"), text.as_bytes());
        let whole = normalize(&text).0;
        let eot = gpt2.eot();
        let mut want = vec![eot];
        want.extend(gpt2.encode(&whole).unwrap());

        // Everything in train: one <|endoftext|>, then exactly the tokens of the whole text.
        let all = dir.path(&format!("{name}-all"));
        let (summary, _) = prepared(&[
            arg(&input),
            "--out",
            arg(&all),
            "--tokenizer",
            "gpt2",
            "--val-fraction",
            "0",
            "--test-fraction",
            "0",
            "--piece-kb",
            "4",
        ]);
        assert!(summary["splits"]["train"]["pieces"].as_u64().unwrap() > 10);
        assert!(split_tokens(&all, "train") == want, "{name}: tokens differ");

        // Spread over three splits: each break in the text starts with <|endoftext|>, and
        // what is between them is a run of the document's text.
        let spread = dir.path(&format!("{name}-spread"));
        let (summary, _) = prepared(&[
            arg(&input),
            "--out",
            arg(&spread),
            "--tokenizer",
            "gpt2",
            "--val-fraction",
            "0.3",
            "--test-fraction",
            "0.2",
            "--piece-kb",
            "4",
        ]);
        let mut text_len = 0;
        let mut runs = 0;
        for split in ["train", "val", "test"] {
            let tokens = split_tokens(&spread, split);
            assert_eq!(tokens.first(), Some(&eot), "{name} {split}");
            for run in tokens[1..].split(|&t| t == eot) {
                let run = gpt2.decode(run).unwrap();
                assert!(
                    whole.contains(&run),
                    "{name} {split}: not a run of the text"
                );
                text_len += run.len();
                runs += 1;
            }
        }
        assert_eq!(text_len, whole.len(), "{name}: the runs are the text");
        let pieces: u64 = ["train", "val", "test"]
            .iter()
            .map(|s| summary["splits"][s]["pieces"].as_u64().unwrap())
            .sum();
        assert!(
            runs > 3 && (runs as u64) < pieces,
            "{runs} runs of {pieces} pieces"
        );
    }
}

/// Text made of `fragments` chosen by `picks`.
fn assemble(picks: &[usize], fragments: &[&str]) -> String {
    picks
        .iter()
        .map(|&i| fragments[i % fragments.len()])
        .collect()
}

const FRAGMENTS: &[&str] = &[
    "word",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    "\t",
    "e\u{301}",
    "a\u{323}\u{301}",
    "\u{301}",
    "\u{1100}\u{1161}",
    "\u{ac00}\u{11a8}",
    "\u{0}",
    "\u{feff}",
    "\u{85}",
    "\u{b}",
    "\u{212b}",
    "日本語",
    "\u{a0}",
    "\u{3000}",
    "x",
    "Z9",
    ".,;",
];

proptest! {
    #[test]
    fn pieces_clean_to_the_cleaned_whole(
        picks in proptest::collection::vec(0usize..1000, 0..800),
        // Windows of 48+ bytes: some place in them is safe to cut (16 fragments in a row
        // that all start with a mark or a control character do not happen).
        budget in 96usize..300,
    ) {
        let text = assemble(&picks, FRAGMENTS);
        let parts: Vec<&str> = pieces::pieces(&text, budget).collect();
        prop_assert_eq!(parts.concat(), text.clone());
        for (i, part) in parts.iter().enumerate() {
            prop_assert!(part.len() <= budget);
            if i + 1 < parts.len() {
                prop_assert!(part.len() >= budget / 2);
                let next = parts[i + 1].chars().next().unwrap();
                // Never inside a \r\n, never before a combining mark.
                prop_assert!(!(part.ends_with('\r') && next == '\n'));
                prop_assert_eq!(canonical_combining_class(next), 0);
            }
        }
        let cleaned: String = parts.iter().map(|p| normalize(p).0).collect();
        prop_assert_eq!(cleaned, normalize(&text).0);
    }
}

#[test]
fn a_cut_never_falls_inside_a_crlf_or_a_combining_sequence() {
    // Text whose budget falls right inside a \r\n, and inside a letter + marks sequence.
    for (text, budget) in [
        (format!("{}\r\n{}", "a".repeat(63), "b".repeat(100)), 64),
        (
            format!("{}e\u{301}\u{323}{}", "a".repeat(62), "b".repeat(100)),
            64,
        ),
    ] {
        for shift in 0..6 {
            let n = first_piece_len(&text, budget + shift);
            let (a, b) = text.split_at(n);
            assert!(!(a.ends_with('\r') && b.starts_with('\n')), "{n}");
            assert_eq!(
                canonical_combining_class(b.chars().next().unwrap()),
                0,
                "{n}"
            );
            assert_eq!(normalize(a).0 + &normalize(b).0, normalize(&text).0);
        }
    }
}

fn read_all(path: &Path, opts: &SourceOptions) -> smelt::Result<(Vec<Piece>, SourceStats)> {
    let file = discover(&[path.to_path_buf()])?.remove(0);
    let mut stats = SourceStats::default();
    let mut pieces = Vec::new();
    read_pieces(&file, opts, &mut stats, &mut |_| {}, &mut |p| {
        pieces.push(p);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok((pieces, stats))
}

fn with_budget(piece_bytes: usize, on_invalid: OnInvalid) -> SourceOptions {
    SourceOptions {
        piece_bytes,
        on_invalid,
        ..SourceOptions::default()
    }
}

#[test]
fn a_large_txt_streams_in_pieces_and_a_bad_one_is_skipped_whole() {
    let dir = TempDir::new("pieces-source");
    let text = plays(200_000);
    let opts = with_budget(4096, OnInvalid::Skip);
    let want: Vec<&str> = pieces::pieces(&text, 4096).collect();
    for path in [
        dir.write("a.txt", text.as_bytes()),
        dir.write_gz("a.txt.gz", text.as_bytes()),
    ] {
        let (got, stats) = read_all(&path, &opts).unwrap();
        let texts: Vec<&str> = got.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, want);
        assert!(got.iter().enumerate().all(|(i, p)| p.index == i as u64));
        assert_eq!(got.iter().filter(|p| p.last).count(), 1);
        assert!(got.last().unwrap().last);
        assert_eq!((stats.documents, stats.pieces), (1, want.len() as u64));
        assert_eq!(stats.bytes, text.len() as u64);
    }

    // Invalid UTF-8 near the end of a large file: nothing of it is passed on (skip), or the
    // error names the byte (fail).
    let mut bad = text.clone().into_bytes();
    let at = bad.len() - 10;
    bad[at] = 0xff;
    for path in [dir.write("bad.txt", &bad), dir.write_gz("bad.txt.gz", &bad)] {
        let (got, stats) = read_all(&path, &opts).unwrap();
        assert!(got.is_empty());
        assert_eq!((stats.skipped_invalid_utf8, stats.documents), (1, 0));
        let e = read_all(&path, &with_budget(4096, OnInvalid::Fail))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("invalid UTF-8 at byte {at}")), "{e}");
    }
    // A character cut by the end of the file is invalid too.
    let cut = dir.write(
        "cut.txt",
        &[text.as_bytes(), "é".as_bytes()].concat()[..text.len() + 1],
    );
    assert_eq!(read_all(&cut, &opts).unwrap().1.skipped_invalid_utf8, 1);

    // A large file of whitespace only holds no document.
    let blank = dir.write("blank.txt", " \n\t".repeat(10_000).as_bytes());
    let (got, stats) = read_all(&blank, &opts).unwrap();
    assert!(got.is_empty() && stats.documents == 0);
}

#[test]
fn a_long_jsonl_record_is_passed_in_pieces() {
    let dir = TempDir::new("pieces-jsonl");
    let long = plays(100_000);
    let body = format!(
        "{}\n{}\n",
        serde_json::json!({"text": "short one"}),
        serde_json::json!({"text": long})
    );
    let path = dir.write("a.jsonl", body.as_bytes());
    let (got, stats) = read_all(&path, &with_budget(4096, OnInvalid::Skip)).unwrap();
    assert_eq!(got[0].text, "short one");
    assert!(got[0].last && got[0].index == 0);
    let rest: String = got[1..].iter().map(|p| p.text.as_str()).collect();
    assert_eq!(rest, long);
    assert!(got.len() > 20 && got.last().unwrap().last);
    assert_eq!(stats.documents, 2);
}

#[test]
fn min_chars_drops_short_documents_not_short_pieces() {
    let mut c = Cleaner::new(CleanOptions {
        min_chars: 10,
        dedup: true,
    });
    // A long document whose last piece is short: all kept.
    let kept = [
        c.push("first piece, long enough", 0, false),
        c.push("second piece", 1, false),
        c.push("end", 2, true),
    ];
    assert_eq!(kept.iter().map(Vec::len).sum::<usize>(), 3);
    // A document that reaches min_chars only with its second piece: held, then released.
    assert!(c.push("  four", 0, false).is_empty());
    let released = c.push(" more six", 1, true);
    let texts: Vec<&str> = released.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(texts, ["  four", " more six"]);
    assert_eq!(released.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1]);
    // A document of short pieces, 9 characters once trimmed at both ends: dropped whole.
    assert!(c.push("   abc", 0, false).is_empty());
    assert!(c.push(" def ", 1, false).is_empty());
    assert!(c.push("g   ", 2, true).is_empty());
    assert_eq!(c.stats().dropped_short, 1);
    assert_eq!(c.stats().kept, 5);
}

#[test]
fn duplicates_are_dropped_by_piece() {
    let mut c = Cleaner::new(CleanOptions::default());
    let doc = plays(100_000);
    let parts: Vec<&str> = pieces::pieces(&doc, 8192).collect();
    let feed = |c: &mut Cleaner, parts: &[&str]| -> Vec<u64> {
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            out.extend(
                c.push(p, i as u64, i + 1 == parts.len())
                    .iter()
                    .map(|p| p.index),
            );
        }
        out
    };
    assert_eq!(feed(&mut c, &parts).len(), parts.len());
    // The same document again: every piece is a duplicate.
    assert!(feed(&mut c, &parts).is_empty());
    assert_eq!(c.stats().dropped_duplicate, parts.len() as u64);
    // A document sharing only its middle with the first: the shared pieces go, the rest keep
    // their places (so the writer knows where the text breaks).
    let mut mixed: Vec<&str> = vec!["a new opening, long enough to count as a document\n"];
    mixed.extend_from_slice(&parts[2..4]);
    mixed.push("and a new ending, long enough too\n");
    assert_eq!(feed(&mut c, &mixed), [0, 3]);
}

#[test]
fn an_empty_or_tiny_split_is_warned_about() {
    let dir = TempDir::new("pieces-warn");
    // Twenty sonnets: one or two pieces, a few thousand tokens.
    let sonnets: String = shakespeare("sonnets.txt")
        .split("\n\n")
        .take(20)
        .collect::<Vec<_>>()
        .join("\n\n");
    let input = dir.write("input.txt", sonnets.as_bytes());
    let data = dir.path("data");
    let (summary, stderr) = prepared(&[arg(&input), "--out", arg(&data), "--tokenizer", "gpt2"]);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .collect();
    // Train is tiny; val and test are empty or tiny.
    for split in ["train", "val", "test"] {
        let line = warnings
            .iter()
            .find(|w| w.starts_with(&format!("the {split} split is ")))
            .unwrap_or_else(|| panic!("no warning about {split}: {stderr}"));
        let tokens = summary["splits"][split]["tokens"].as_u64().unwrap();
        assert!(
            line.contains(if tokens == 0 { "is empty" } else { "is tiny" }),
            "{line}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("manifest.json")).unwrap()).unwrap();
    let recorded: Vec<&str> = manifest["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(recorded, warnings);
    assert_eq!(summary["warnings"], manifest["warnings"]);

    // A split given no share is not warned about.
    let (_, stderr) = prepared(&[
        arg(&input),
        "--out",
        arg(&dir.path("no-test")),
        "--tokenizer",
        "gpt2",
        "--test-fraction",
        "0",
    ]);
    assert!(!stderr.contains("the test split"), "{stderr}");
}

#[test]
fn piece_size_must_be_positive() {
    let dir = TempDir::new("pieces-flag");
    let input = dir.write("a.txt", plays(1000).as_bytes());
    assert_clean_error(
        &prepare(&[arg(&input), "--out", arg(&dir.path("d")), "--piece-kb", "0"]),
        "--piece-kb",
    );
}

/// Text from a fixed word list, in lines and paragraphs, from a seeded generator: no two
/// pieces alike, and no more distinct words however long it is.
fn generated_text(bytes: usize, seed: u64) -> String {
    let source = shakespeare("hamlet.txt");
    let mut words: Vec<&str> = source.split_whitespace().collect();
    words.sort_unstable();
    words.dedup();
    let mut rng = smelt::rng::Rng::new(seed);
    let mut text = String::with_capacity(bytes + 200);
    while text.len() < bytes {
        for _ in 0..1 + rng.below(6) {
            for i in 0..4 + rng.below(9) {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(words[rng.below(words.len() as u64) as usize]);
            }
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

/// Runs `prepare` and returns its peak resident memory in KiB (from wait4's rusage).
#[cfg(target_os = "linux")]
fn peak_rss_kib(args: &[&str], log: &Path) -> u64 {
    let stderr = std::fs::File::create(log).unwrap();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
    let child = common::bin_command(env!("CARGO_BIN_EXE_prepare"), log.parent().unwrap())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it and `status` for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "prepare failed: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    usage.ru_maxrss as u64
}

#[cfg(target_os = "linux")]
#[test]
fn memory_stays_flat_in_the_document_size() {
    let dir = TempDir::new("pieces-memory");
    const MB: usize = 1 << 20;
    // The small document already fills prepare's 8 MB encoding batch, so both runs hold the
    // same batches: what is left to differ is what would grow with the document.
    let small = dir.write("small/input.txt", generated_text(9 * MB, 1).as_bytes());
    let large = dir.write("large/input.txt", generated_text(36 * MB, 2).as_bytes());
    // BPE trains on the first 1 MB of training text at both sizes (what it holds is its word
    // counts, which a fixed word list bounds); the whole document is encoded with it.
    let bpe = ["bpe", "--vocab-size", "512", "--bpe-sample-mb", "1"];
    for tokenizer in [&["gpt2"][..], &bpe] {
        let peak = |input: &Path, out: &str| {
            let out = dir.path(out);
            let args = [
                &[arg(input), "--out", arg(&out), "--json", "--tokenizer"][..],
                tokenizer,
            ]
            .concat();
            peak_rss_kib(&args, &dir.path("stderr.log"))
        };
        let (p_small, p_large) = (peak(&small, "s"), peak(&large, "l"));
        eprintln!(
            "--tokenizer {tokenizer:?}: peak RSS {p_small} KiB for 9 MB, {p_large} KiB for 36 MB"
        );
        // 27 MB more text may cost allocator slack, not the text (holding the document, as
        // before pieces, costs several times its size: 190 MB at 36 MB with GPT-2).
        let allowance = 24 * 1024 + p_small / 10;
        assert!(
            p_large <= p_small + allowance,
            "--tokenizer {tokenizer:?}: {p_large} KiB for 36 MB vs {p_small} KiB for 9 MB"
        );
    }
}
