//! Finding input files and streaming their documents (as pieces; see also
//! tests/prepare_pieces.rs).

use std::fs;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use smelt::data::pieces::DEFAULT_PIECE_BYTES;
use smelt::data::source::{
    discover, read_pieces, OnInvalid, Piece, SourceFile, SourceKind, SourceOptions, SourceStats,
};

mod common;
use common::TempDir;

fn source(path: &Path) -> SourceFile {
    let found = discover(&[path.to_path_buf()]).unwrap();
    assert_eq!(found.len(), 1);
    found.into_iter().next().unwrap()
}

struct Read {
    docs: Vec<String>,
    stats: SourceStats,
    progress: Vec<u64>,
}

fn read_with(path: &Path, opts: &SourceOptions) -> smelt::Result<Read> {
    let file = source(path);
    let mut stats = SourceStats::default();
    let mut progress = Vec::new();
    let mut pieces = Vec::new();
    read_pieces(
        &file,
        opts,
        &mut stats,
        &mut |n| progress.push(n),
        &mut |p| {
            pieces.push(p);
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok(Read {
        docs: documents(&pieces),
        stats,
        progress,
    })
}

/// The documents that pieces make up, checking that they come whole and in order.
fn documents(pieces: &[Piece]) -> Vec<String> {
    let mut docs: Vec<String> = Vec::new();
    let mut open = false;
    for p in pieces {
        if p.index == 0 {
            assert!(!open, "a document started before the last one ended");
            docs.push(String::new());
        } else {
            assert!(open, "piece {} of no document", p.index);
        }
        docs.last_mut().unwrap().push_str(&p.text);
        open = !p.last;
    }
    assert!(!open, "the last document has no last piece");
    docs
}

fn read(path: &Path) -> Read {
    read_with(path, &SourceOptions::default()).unwrap()
}

fn fail() -> SourceOptions {
    SourceOptions {
        on_invalid: OnInvalid::Fail,
        ..SourceOptions::default()
    }
}

fn err(path: &Path, opts: &SourceOptions) -> String {
    match read_with(path, opts) {
        Ok(r) => panic!("expected an error, read {:?}", r.docs),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            msg
        }
    }
}

#[test]
fn options_defaults() {
    let o = SourceOptions::default();
    assert_eq!(o.text_field, "text");
    assert_eq!(o.on_invalid, OnInvalid::Skip);
    assert_eq!(o.max_document_bytes, 256 << 20);
    let parsed: SourceOptions =
        serde_json::from_str(r#"{"on_invalid": "fail", "text_field": "content"}"#).unwrap();
    assert_eq!(parsed.on_invalid, OnInvalid::Fail);
    assert_eq!(parsed.text_field, "content");
    assert_eq!(parsed.max_document_bytes, 256 << 20);
    // Options recorded before pieces existed read with the default budget.
    assert_eq!(parsed.piece_bytes, DEFAULT_PIECE_BYTES);
    assert_eq!(
        serde_json::to_string(&SourceKind::Jsonl).unwrap(),
        "\"jsonl\""
    );
}

#[test]
fn discover_walks_sorts_and_filters() {
    let t = TempDir::new("discover");
    t.write("b.txt", b"b");
    t.write("a/z.jsonl", b"{}");
    t.write("a/deep/er/c.txt.gz", b"");
    t.write("a/y.jsonl.gz", b"");
    t.write("a/README.md", b"ignored");
    t.write("a/data.json", b"ignored");
    t.write("a/x.gz", b"ignored");
    t.write("a/txt", b"ignored");
    t.write("UPPER.TXT", b"upper");
    fs::create_dir_all(t.0.join("empty")).unwrap();
    let found = discover(std::slice::from_ref(&t.0)).unwrap();
    let rel: Vec<String> = found
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(&t.0)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    assert_eq!(
        rel,
        [
            "UPPER.TXT",
            "a/deep/er/c.txt.gz",
            "a/y.jsonl.gz",
            "a/z.jsonl",
            "b.txt"
        ]
    );
    let kinds: Vec<(SourceKind, bool, u64)> =
        found.iter().map(|f| (f.kind, f.gzip, f.size)).collect();
    assert_eq!(
        kinds,
        [
            (SourceKind::Txt, false, 5),
            (SourceKind::Txt, true, 0),
            (SourceKind::Jsonl, true, 0),
            (SourceKind::Jsonl, false, 2),
            (SourceKind::Txt, false, 1),
        ]
    );

    // Inputs keep their order; a file reached twice is listed once.
    let b = t.0.join("b.txt");
    let again = discover(&[b.clone(), t.0.join("a"), b.clone()]).unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(again[0].path, b);
    assert_eq!(again[1].path, t.0.join("a/deep/er/c.txt.gz"));
}

#[test]
fn discover_errors() {
    let t = TempDir::new("discover-err");
    let md = t.write("notes.md", b"x");
    let e = discover(std::slice::from_ref(&md)).unwrap_err().to_string();
    assert!(e.contains("notes.md") && e.contains(".jsonl"), "{e}");

    let missing = t.0.join("nope/missing.txt");
    let e = discover(std::slice::from_ref(&missing))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");

    let empty = t.0.join("empty");
    fs::create_dir_all(empty.join("sub")).unwrap();
    t.write("empty/sub/ignored.csv", b"x");
    let e = discover(std::slice::from_ref(&empty))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no ") && e.contains(&empty.display().to_string()),
        "{e}"
    );

    assert!(discover(&[]).is_err());
}

#[cfg(unix)]
#[test]
fn discover_survives_symlink_loops() {
    let t = TempDir::new("symlink");
    t.write("d/a.txt", b"a");
    std::os::unix::fs::symlink(&t.0, t.0.join("d/loop")).unwrap();
    std::os::unix::fs::symlink(t.0.join("d/a.txt"), t.0.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(t.0.join("gone"), t.0.join("dangling.md")).unwrap();
    let found = discover(std::slice::from_ref(&t.0)).unwrap();
    // d/a.txt and link.txt are the same file: listed once, where first reached.
    let paths: Vec<PathBuf> = found.into_iter().map(|f| f.path).collect();
    assert_eq!(paths, [t.0.join("d/a.txt")]);
}

#[test]
fn jsonl_line_length_boundary() {
    let t = TempDir::new("boundary");
    // Each line is exactly 12 bytes (newline not counted); the last has no newline.
    let p = t.write(
        "x.jsonl",
        b"{\"text\":\"a\"}\n{\"text\":\"bb\"}\n{\"text\":\"c\"}",
    );
    let opts = SourceOptions {
        max_document_bytes: 12,
        ..SourceOptions::default()
    };
    let r = read_with(&p, &opts).unwrap();
    assert_eq!(r.docs, ["a", "c"]);
    assert_eq!(r.stats.skipped_too_large, 1);
    let zero = SourceOptions {
        max_document_bytes: 0,
        ..SourceOptions::default()
    };
    assert_eq!(read_with(&p, &zero).unwrap().stats.skipped_too_large, 3);
}

#[test]
fn reads_txt() {
    let t = TempDir::new("txt");
    let text = "First line.\nSecond line, é.\n";
    let p = t.write("doc.txt", text.as_bytes());
    let r = read(&p);
    assert_eq!(r.docs, [text]);
    assert_eq!(r.stats.files, 1);
    assert_eq!(r.stats.documents, 1);
    assert_eq!(r.stats.bytes, text.len() as u64);
    assert_eq!(r.progress.iter().sum::<u64>(), text.len() as u64);

    // A whitespace-only file holds no document.
    let blank = t.write("blank.txt", b" \n\n");
    assert!(read(&blank).docs.is_empty());
}

#[test]
fn reads_txt_gz() {
    let t = TempDir::new("txtgz");
    let text = "gzipped text\n".repeat(1000);
    let p = t.write_gz("doc.txt.gz", text.as_bytes());
    let r = read(&p);
    assert_eq!(r.docs, [text.as_str()]);
    assert_eq!(r.stats.bytes, text.len() as u64);
    assert_eq!(
        r.progress.iter().sum::<u64>(),
        fs::metadata(&p).unwrap().len()
    );
}

#[test]
fn reads_jsonl_and_jsonl_gz() {
    let t = TempDir::new("jsonl");
    let body = concat!(
        "\u{feff}{\"text\": \"one\", \"id\": 1}\n",
        "\n",
        "   \n",
        "{\"id\": [1, {\"text\": 5}], \"text\": \"two\\nlines \\u00e9 \\ud83c\\udf0d\"}\r\n",
        "{\"text\": \"three\"}"
    );
    let want = ["one", "two\nlines é 🌍", "three"];
    for p in [
        t.write("a.jsonl", body.as_bytes()),
        t.write_gz("a.jsonl.gz", body.as_bytes()),
    ] {
        let r = read(&p);
        assert_eq!(r.docs, want, "{}", p.display());
        assert_eq!(r.stats.documents, 3);
        assert_eq!(r.stats.bytes, body.len() as u64);
        assert_eq!(r.stats.skipped_bad_json + r.stats.skipped_missing_field, 0);
        assert_eq!(
            r.progress.iter().sum::<u64>(),
            fs::metadata(&p).unwrap().len()
        );
    }
}

#[test]
fn custom_text_field() {
    let t = TempDir::new("field");
    let p = t.write(
        "a.jsonl",
        b"{\"text\": \"no\", \"content\": \"yes\"}\n{\"content\": \"also\"}\n",
    );
    let opts = SourceOptions {
        text_field: "content".into(),
        ..SourceOptions::default()
    };
    assert_eq!(read_with(&p, &opts).unwrap().docs, ["yes", "also"]);
}

#[test]
fn invalid_utf8_txt() {
    let t = TempDir::new("utf8txt");
    let p = t.write("bad.txt", b"fine\xff\xfe then");
    let r = read(&p);
    assert!(r.docs.is_empty());
    assert_eq!(r.stats.skipped_invalid_utf8, 1);
    assert_eq!(r.stats.documents, 0);
    let e = err(&p, &fail());
    assert!(e.contains("invalid UTF-8"), "{e}");
}

#[test]
fn invalid_utf8_jsonl_line() {
    let t = TempDir::new("utf8jsonl");
    let mut body = b"{\"text\": \"ok\"}\n".to_vec();
    body.extend_from_slice(b"{\"text\": \"bad \xc3\x28\"}\n");
    body.extend_from_slice(b"{\"text\": \"after\"}\n");
    for p in [t.write("x.jsonl", &body), t.write_gz("x.jsonl.gz", &body)] {
        let r = read(&p);
        assert_eq!(r.docs, ["ok", "after"]);
        assert_eq!(r.stats.skipped_invalid_utf8, 1);
        let e = err(&p, &fail());
        assert!(
            e.starts_with(&format!("{}: line 2: invalid UTF-8", p.display())),
            "{e}"
        );
    }
}

#[test]
fn malformed_json_lines() {
    let t = TempDir::new("badjson");
    let p = t.write(
        "x.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n[\"not\", \"an object\"]\n\"str\"\n{\"text\": \"a\"} trailing\n{\"text\": \"end\"}\n",
    );
    let r = read(&p);
    assert_eq!(r.docs, ["ok", "end"]);
    assert_eq!(r.stats.skipped_bad_json, 4);
    let e = err(&p, &fail());
    assert!(e.contains("line 2:") && e.contains("JSON"), "{e}");

    let arr = t.write("arr.jsonl", b"[1, 2]\n");
    let e = err(&arr, &fail());
    assert!(e.contains("line 1:") && e.contains("object"), "{e}");
}

#[test]
fn missing_or_non_string_field() {
    let t = TempDir::new("missing");
    let p = t.write(
        "x.jsonl",
        b"{\"body\": \"no text\"}\n{\"text\": null}\n{\"text\": 3}\n{\"text\": \"ok\"}\n",
    );
    let r = read(&p);
    assert_eq!(r.docs, ["ok"]);
    assert_eq!(r.stats.skipped_missing_field, 3);
    let e = err(&p, &fail());
    assert!(e.contains("line 1:") && e.contains("\"text\""), "{e}");
    let p2 = t.write("y.jsonl", b"{\"text\": [\"a\"]}\n");
    let e = err(&p2, &fail());
    assert!(
        e.contains("line 1:") && e.contains("\"text\"") && e.contains("array"),
        "{e}"
    );
}

#[test]
fn progress_sums_to_size_on_disk() {
    let t = TempDir::new("progress");
    // Incompressible-ish text so the .gz is several progress steps long.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut body = String::new();
    while body.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push_str(&format!("{{\"text\": \"doc {x:x} {}\"}}\n", x % 977));
    }
    for p in [
        t.write("big.jsonl", body.as_bytes()),
        t.write_gz("big.jsonl.gz", body.as_bytes()),
        t.write("big.txt", body.as_bytes()),
        t.write_gz("big.txt.gz", body.as_bytes()),
    ] {
        let r = read(&p);
        let size = fs::metadata(&p).unwrap().len();
        assert_eq!(r.progress.iter().sum::<u64>(), size, "{}", p.display());
        assert!(
            r.progress.len() as u64 >= size / (128 << 10),
            "{}: {} calls for {size} bytes",
            p.display(),
            r.progress.len()
        );
        assert_eq!(r.stats.bytes, body.len() as u64);
    }
}

#[test]
fn document_over_max_bytes() {
    let t = TempDir::new("toolarge");
    let opts_max = |max_document_bytes, on_invalid| SourceOptions {
        max_document_bytes,
        on_invalid,
        ..SourceOptions::default()
    };
    // A .txt file streams in pieces: the bound is not for it, whatever its size.
    let opts = |on_invalid| opts_max(10, on_invalid);
    let text = "0123456789 ".repeat(10_000);
    for p in [
        t.write("big.txt", text.as_bytes()),
        t.write_gz("big.txt.gz", text.as_bytes()),
    ] {
        for on_invalid in [OnInvalid::Skip, OnInvalid::Fail] {
            let r = read_with(&p, &opts(on_invalid)).unwrap();
            assert_eq!(r.docs, [text.as_str()]);
            assert_eq!(r.stats.skipped_too_large, 0);
            assert!(r.stats.pieces > 1, "{:?}", r.stats);
            assert_eq!(
                r.progress.iter().sum::<u64>(),
                fs::metadata(&p).unwrap().len()
            );
        }
    }

    // JSONL: the line is the unit; a long line is skipped without stopping the file.
    let opts = |on_invalid| opts_max(16, on_invalid);
    let body = "{\"text\":\"a\"}\n{\"text\":\"far too long\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}";
    for p in [
        t.write("x.jsonl", body.as_bytes()),
        t.write_gz("x.jsonl.gz", body.as_bytes()),
    ] {
        let r = read_with(&p, &opts(OnInvalid::Skip)).unwrap();
        assert_eq!(r.docs, ["a", "b", "c"]);
        assert_eq!(r.stats.skipped_too_large, 1);
        assert_eq!(r.stats.bytes, body.len() as u64);
        let e = err(&p, &opts(OnInvalid::Fail));
        assert!(
            e.contains("line 2:") && e.contains("max_document_bytes"),
            "{e}"
        );
    }
}

#[test]
fn sink_error_stops_reading() {
    let t = TempDir::new("sink");
    let p = t.write(
        "x.jsonl",
        b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}\n",
    );
    let file = source(&p);
    let mut seen = Vec::new();
    let mut stats = SourceStats::default();
    let e = read_pieces(
        &file,
        &SourceOptions::default(),
        &mut stats,
        &mut |_| {},
        &mut |p| {
            seen.push(p.text);
            if seen.len() == 2 {
                Err(smelt::Error::Data("stop here".into()))
            } else {
                Ok(ControlFlow::Continue(()))
            }
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "stop here");
    assert_eq!(seen, ["a", "b"]);

    // Break stops quietly.
    seen.clear();
    read_pieces(
        &file,
        &SourceOptions::default(),
        &mut stats,
        &mut |_| {},
        &mut |p| {
            seen.push(p.text);
            Ok(ControlFlow::Break(()))
        },
    )
    .unwrap();
    assert_eq!(seen, ["a"]);
}

#[test]
fn corrupt_gzip_is_an_error() {
    let t = TempDir::new("corrupt");
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all("some text ".repeat(100).as_bytes()).unwrap();
    let mut gz = enc.finish().unwrap();
    let n = gz.len();
    gz[n / 2] ^= 0xff;
    gz.truncate(n - 3);
    for opts in [SourceOptions::default(), fail()] {
        let p = t.write("bad.txt.gz", &gz);
        err(&p, &opts);
    }
}

/// JSONL reading throughput (run with
/// `cargo test --release --test data_source -- --ignored --nocapture`).
#[test]
#[ignore]
fn jsonl_throughput() {
    let t = TempDir::new("speed");
    let doc = "Some text of a typical length, with \\\"escapes\\\" and é. ".repeat(40);
    let line =
        format!("{{\"id\": 12345, \"url\": \"https://example.com/x\", \"text\": \"{doc}\"}}\n");
    let body = line.repeat((64 << 20) / line.len());
    let plain = t.write("speed.jsonl", body.as_bytes());
    let gz = t.write_gz("speed.jsonl.gz", body.as_bytes());
    for p in [plain, gz] {
        let start = std::time::Instant::now();
        let r = read(&p);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(r.stats.documents as usize, body.len() / line.len());
        println!(
            "{}: {:.0} MB/s of uncompressed JSONL",
            p.display(),
            body.len() as f64 / 1e6 / secs
        );
    }
}
