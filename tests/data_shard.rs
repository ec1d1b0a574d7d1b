//! Token shards: round trips at both widths, the exact llm.c byte layout, one distinct
//! clear error per kind of bad input, atomic writing, checksums, and a fuzzed header parser.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use smelt::data::shard::{
    encode_header, parse_header, sha256_file, Shard, ShardHeader, ShardWriter, TokenWidth,
    HEADER_BYTES, SHARD_MAGIC,
};
use smelt::rng::Rng;
use smelt::Error;

mod common;
use common::TempDir;

fn tmp_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The bytes llm.c's `write_datafile` produces for GPT-2: an `np.zeros(256, dtype=np.int32)`
/// header with [0] = 20240520, [1] = 1, [2] = len(tokens), then `np.uint16` tokens.
fn llm_c_bytes(tokens: &[u16]) -> Vec<u8> {
    let mut header = [0i32; 256];
    header[0] = 20240520;
    header[1] = 1;
    header[2] = tokens.len() as i32;
    let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
    bytes
}

/// A header with the given ints (the rest zero), as bytes.
fn header_bytes(ints: &[i32]) -> Vec<u8> {
    let mut all = [0i32; 256];
    all[..ints.len()].copy_from_slice(ints);
    all.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Opens a shard expecting an error; returns its message (checked to be one line naming
/// the file).
fn open_err(path: &Path, vocab: Option<usize>) -> String {
    let err = match Shard::open(path, vocab) {
        Ok(_) => panic!("{} opened but should not have", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn round_trip_both_widths_many_writes() {
    let dir = TempDir::new("roundtrip");
    let mut rng = Rng::new(11);
    for (width, bound, count) in [
        (TokenWidth::U16, 1u64 << 16, 10_007usize),
        (TokenWidth::U32, 1u64 << 32, 9_999usize),
        (TokenWidth::U16, 50257, 1),
        (TokenWidth::U32, 7, 0),
    ] {
        let tokens: Vec<u32> = (0..count).map(|_| rng.below(bound) as u32).collect();
        let path = dir.path(&format!("shard_{}_{count}.bin", width.version()));
        let mut w = ShardWriter::create(&path, width).unwrap();
        let mut at = 0;
        while at < tokens.len() {
            // chunks of 0..=700 tokens, empty writes included
            let n = (rng.below(701) as usize).min(tokens.len() - at);
            w.write_tokens(&tokens[at..at + n]).unwrap();
            at += n;
            assert_eq!(w.num_tokens(), at as u64);
        }
        w.write_tokens(&[]).unwrap();
        let info = w.finish().unwrap();
        assert_eq!(info.file, path.file_name().unwrap().to_str().unwrap());
        assert_eq!(info.num_tokens, count as u64);
        assert_eq!(info.sha256, sha256_file(&path).unwrap());
        assert_eq!(info.sha256.len(), 64);
        assert!(info
            .sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert!(!tmp_of(&path).exists(), "temp file left behind");
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, (HEADER_BYTES + count * width.bytes()) as u64);

        let shard = Shard::open(&path, Some(bound as usize)).unwrap();
        assert_eq!(shard.path(), path.as_path());
        assert_eq!(shard.width(), width);
        assert_eq!(shard.len(), count);
        assert_eq!(shard.is_empty(), count == 0);
        let mut all = Vec::new();
        shard.read_into(0, count, &mut all).unwrap();
        assert_eq!(all, tokens);
        for _ in 0..50.min(count) {
            let i = rng.below(count as u64) as usize;
            assert_eq!(shard.token(i).unwrap(), tokens[i]);
            let len = rng.below((count - i) as u64 + 1) as usize;
            let mut part = vec![42];
            shard.read_into(i, len, &mut part).unwrap();
            assert_eq!(part[0], 42, "read_into must append");
            assert_eq!(&part[1..], &tokens[i..i + len]);
        }
    }
}

#[test]
fn header_layout_matches_llm_c() {
    let dir = TempDir::new("layout");
    let tokens: Vec<u16> = vec![50256, 15496, 11, 995, 0, 65535, 13];
    let expected = llm_c_bytes(&tokens);
    assert_eq!(&expected[..4], &20240520i32.to_le_bytes());
    assert_eq!(&expected[4..8], &[1, 0, 0, 0]);
    assert_eq!(&expected[8..12], &[7, 0, 0, 0]);
    assert_eq!(&expected[1024..1026], &50256u16.to_le_bytes());

    // A file made by hand exactly as llm.c writes it opens here.
    let hand = dir.path("llmc_train_000000.bin");
    std::fs::write(&hand, &expected).unwrap();
    let shard = Shard::open(&hand, Some(65536)).unwrap();
    assert_eq!(shard.width(), TokenWidth::U16);
    let mut got = Vec::new();
    shard.read_into(0, shard.len(), &mut got).unwrap();
    assert_eq!(got, tokens.iter().map(|&t| t as u32).collect::<Vec<_>>());

    // And our writer produces those bytes exactly.
    let ours = dir.path("ours.bin");
    let mut w = ShardWriter::create(&ours, TokenWidth::U16).unwrap();
    let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
    w.write_tokens(&ids[..3]).unwrap();
    w.write_tokens(&ids[3..]).unwrap();
    w.finish().unwrap();
    assert_eq!(std::fs::read(&ours).unwrap(), expected);

    // encode_header agrees, and the version 2 count is split low/high.
    let h = ShardHeader {
        width: TokenWidth::U16,
        num_tokens: 7,
    };
    assert_eq!(&encode_header(&h)[..], &expected[..HEADER_BYTES]);
    assert_eq!(parse_header(&expected), Ok(h));
    let big = ShardHeader {
        width: TokenWidth::U32,
        num_tokens: 0x0000_0005_8000_0001,
    };
    let bytes = encode_header(&big);
    assert_eq!(&bytes[4..8], &2i32.to_le_bytes());
    assert_eq!(&bytes[8..12], &0x8000_0001u32.to_le_bytes());
    assert_eq!(&bytes[12..16], &5u32.to_le_bytes());
    assert!(bytes[16..].iter().all(|&b| b == 0));
    assert_eq!(parse_header(&bytes), Ok(big));
}

#[test]
fn token_width_rules() {
    assert_eq!(TokenWidth::for_vocab(50257), TokenWidth::U16);
    assert_eq!(TokenWidth::for_vocab(65536), TokenWidth::U16);
    assert_eq!(TokenWidth::for_vocab(65537), TokenWidth::U32);
    assert_eq!(TokenWidth::for_vocab(128256), TokenWidth::U32);
    assert_eq!((TokenWidth::U16.bytes(), TokenWidth::U32.bytes()), (2, 4));
    assert_eq!(
        (TokenWidth::U16.version(), TokenWidth::U32.version()),
        (1, 2)
    );
    assert_eq!(serde_json::to_string(&TokenWidth::U32).unwrap(), "\"u32\"");
    assert_eq!(
        serde_json::from_str::<TokenWidth>("\"u16\"").unwrap(),
        TokenWidth::U16
    );
}

#[test]
fn every_bad_input_is_a_distinct_clear_error() {
    let dir = TempDir::new("errors");
    let mut messages = Vec::new();

    // wrong magic
    let p = dir.path("magic.bin");
    let mut bytes = header_bytes(&[12345, 1, 0]);
    std::fs::write(&p, &bytes).unwrap();
    let m = open_err(&p, None);
    assert!(
        m.contains("wrong magic 12345 (expected 20240520): not a token shard"),
        "{m}"
    );
    messages.push(m);

    // wrong version
    let p = dir.path("version.bin");
    std::fs::write(&p, header_bytes(&[SHARD_MAGIC, 3, 0])).unwrap();
    let m = open_err(&p, None);
    assert!(m.contains("unsupported shard version 3"), "{m}");
    messages.push(m);

    // nonzero reserved field
    let p = dir.path("reserved.bin");
    bytes = header_bytes(&[SHARD_MAGIC, 1, 0]);
    bytes[4 * 100] = 9;
    std::fs::write(&p, &bytes).unwrap();
    let m = open_err(&p, None);
    assert!(
        m.contains("header int 100 is 9 but must be 0 (reserved)"),
        "{m}"
    );
    messages.push(m);

    // negative version 1 count
    let p = dir.path("negative.bin");
    std::fs::write(&p, header_bytes(&[SHARD_MAGIC, 1, -5])).unwrap();
    let m = open_err(&p, None);
    assert!(m.contains("negative token count -5"), "{m}");
    messages.push(m);

    // truncated: 1000 uint16 tokens promised, 1500 bytes present
    let p = dir.path("truncated.bin");
    bytes = header_bytes(&[SHARD_MAGIC, 1, 1000]);
    bytes.extend(std::iter::repeat_n(0u8, 1500));
    std::fs::write(&p, &bytes).unwrap();
    let m = open_err(&p, None);
    assert!(
        m.ends_with(&format!(
            "{}: truncated: header says 1000 tokens (2000 bytes) but the file has 1500 bytes of tokens",
            p.display()
        )),
        "{m}"
    );
    messages.push(m);

    // count disagreeing with the size: extra bytes
    let p = dir.path("extra.bin");
    bytes = header_bytes(&[SHARD_MAGIC, 2, 10]);
    bytes.extend(std::iter::repeat_n(0u8, 44));
    std::fs::write(&p, &bytes).unwrap();
    let m = open_err(&p, None);
    assert!(
        m.contains("size disagrees with the header: header says 10 tokens (40 bytes) but the file has 44 bytes of tokens (4 bytes too many)"),
        "{m}"
    );
    messages.push(m);

    // a version 2 count no file can hold is "truncated", not an overflow
    let p = dir.path("huge.bin");
    std::fs::write(&p, header_bytes(&[SHARD_MAGIC, 2, -1, -1])).unwrap();
    let m = open_err(&p, None);
    assert!(
        m.contains("truncated: header says 18446744073709551615 tokens"),
        "{m}"
    );

    // token id >= vocabulary size: first bad id and its position
    let p = dir.path("vocab.bin");
    let mut tokens: Vec<u32> = (0..100_000).map(|i| i % 50257).collect();
    tokens[17] = 70000;
    tokens[90_000] = 80000;
    let mut w = ShardWriter::create(&p, TokenWidth::U32).unwrap();
    w.write_tokens(&tokens).unwrap();
    w.finish().unwrap();
    let m = open_err(&p, Some(50257));
    assert!(
        m.ends_with(&format!(
            "{}: token id 70000 at position 17 is >= the vocabulary size 50257",
            p.display()
        )),
        "{m}"
    );
    messages.push(m);
    assert!(Shard::open(&p, Some(80001)).is_ok());
    let m = open_err(&p, Some(80000));
    assert!(m.contains("token id 80000 at position 90000"), "{m}");
    // the same check on a uint16 shard, past the first scan block
    let p16 = dir.path("vocab16.bin");
    let mut tokens16: Vec<u32> = vec![5; 200_000];
    tokens16[150_001] = 300;
    let mut w = ShardWriter::create(&p16, TokenWidth::U16).unwrap();
    w.write_tokens(&tokens16).unwrap();
    w.finish().unwrap();
    let m = open_err(&p16, Some(256));
    assert!(m.contains("token id 300 at position 150001 is >= the vocabulary size 256"));
    assert!(Shard::open(&p16, Some(301)).is_ok());

    // file shorter than the header
    let p = dir.path("short.bin");
    std::fs::write(&p, &header_bytes(&[SHARD_MAGIC, 1, 0])[..100]).unwrap();
    let m = open_err(&p, None);
    assert!(
        m.contains("the file has 100 bytes, fewer than the 1024-byte shard header"),
        "{m}"
    );
    messages.push(m);
    let p = dir.path("empty.bin");
    std::fs::write(&p, b"").unwrap();
    assert!(open_err(&p, None).contains("the file has 0 bytes"));

    // missing file: an I/O error naming the path
    let p = dir.path("missing.bin");
    let m = open_err(&p, None);
    assert!(matches!(Shard::open(&p, None), Err(Error::Io { .. })));
    messages.push(m);

    // a directory
    let m = open_err(&dir.0, None);
    assert!(m.contains("is a directory"), "{m}");
    messages.push(m);

    // all distinct
    for (i, a) in messages.iter().enumerate() {
        for b in &messages[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn writer_rejects_what_does_not_fit_and_stays_usable() {
    let dir = TempDir::new("writer");
    let p = dir.path("w.bin");
    let mut w = ShardWriter::create(&p, TokenWidth::U16).unwrap();
    w.write_tokens(&[1, 2, 3]).unwrap();
    let err = w.write_tokens(&[4, 65536, 5]).unwrap_err().to_string();
    assert!(!err.contains('\n'));
    assert!(err.contains(&p.display().to_string()), "{err}");
    assert!(
        err.contains("token id 65536 at position 4 does not fit a uint16 shard"),
        "{err}"
    );
    assert_eq!(w.num_tokens(), 3, "a rejected write writes nothing");
    w.write_tokens(&[65535]).unwrap();
    let info = w.finish().unwrap();
    assert_eq!(info.num_tokens, 4);
    let s = Shard::open(&p, None).unwrap();
    let mut got = Vec::new();
    s.read_into(0, 4, &mut got).unwrap();
    assert_eq!(got, vec![1, 2, 3, 65535]);

    // u32 takes anything
    let p = dir.path("w32.bin");
    let mut w = ShardWriter::create(&p, TokenWidth::U32).unwrap();
    w.write_tokens(&[u32::MAX, 0]).unwrap();
    w.finish().unwrap();
    assert_eq!(Shard::open(&p, None).unwrap().token(0).unwrap(), u32::MAX);

    // creating in a missing directory is an I/O error naming the temp file
    let p = dir.path("nope/x.bin");
    let err = ShardWriter::create(&p, TokenWidth::U16)
        .err()
        .expect("should fail")
        .to_string();
    assert!(err.contains("x.bin.tmp"), "{err}");
}

#[test]
fn dropped_unfinished_writer_leaves_nothing() {
    let dir = TempDir::new("drop");
    let p = dir.path("train_000000.bin");
    {
        let mut w = ShardWriter::create(&p, TokenWidth::U16).unwrap();
        w.write_tokens(&vec![7; 100_000]).unwrap();
        assert!(tmp_of(&p).exists(), "writes go to <path>.tmp");
        assert!(!p.exists(), "the final name appears only at finish");
    }
    assert!(!p.exists());
    assert!(!tmp_of(&p).exists());
    {
        let mut w = ShardWriter::create(&p, TokenWidth::U32).unwrap();
        let _ = w.write_tokens(&[1, 2]);
    }
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn sha256_of_known_content() {
    let dir = TempDir::new("sha");
    let p = dir.path("abc.txt");
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(
        sha256_file(&p).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let p = dir.path("none.txt");
    assert!(matches!(sha256_file(&p), Err(Error::Io { .. })));
}

/// What a valid header is, written independently of the parser.
fn reference_parse(bytes: &[u8]) -> Option<ShardHeader> {
    if bytes.len() < 1024 {
        return None;
    }
    let ints: Vec<i32> = bytes[..1024]
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if ints[0] != 20240520 || ints[4..].iter().any(|&v| v != 0) {
        return None;
    }
    match ints[1] {
        1 if ints[2] >= 0 && ints[3] == 0 => Some(ShardHeader {
            width: TokenWidth::U16,
            num_tokens: ints[2] as u64,
        }),
        2 => Some(ShardHeader {
            width: TokenWidth::U32,
            num_tokens: ints[2] as u32 as u64 + ((ints[3] as u32 as u64) << 32),
        }),
        _ => None,
    }
}

fn valid_header() -> impl Strategy<Value = ShardHeader> {
    prop_oneof![
        (0..=i32::MAX as u64).prop_map(|n| ShardHeader {
            width: TokenWidth::U16,
            num_tokens: n
        }),
        any::<u64>().prop_map(|n| ShardHeader {
            width: TokenWidth::U32,
            num_tokens: n
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_header_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let got = parse_header(&bytes);
        prop_assert_eq!(got.clone().ok(), reference_parse(&bytes));
        if let Err(e) = got {
            prop_assert!(!e.is_empty() && !e.contains('\n'));
        }
    }

    #[test]
    fn parse_header_accepts_exactly_the_valid_ones(
        h in valid_header(),
        mutations in proptest::collection::vec((0usize..HEADER_BYTES, any::<u8>()), 0..4),
        // mostly whole headers; sometimes cut short or followed by token bytes
        cut in prop_oneof![8 => Just(None), 1 => (0usize..HEADER_BYTES).prop_map(Some)],
        extra in proptest::collection::vec(any::<u8>(), 0..64),
        // mutations concentrated on the meaningful first 16 bytes
        early in proptest::collection::vec((0usize..16, any::<u8>()), 0..3),
    ) {
        let clean = encode_header(&h);
        prop_assert_eq!(parse_header(&clean), Ok(h));
        let mut bytes = clean.to_vec();
        for (i, v) in mutations.into_iter().chain(early) {
            bytes[i] = v;
        }
        bytes.extend(extra);
        if let Some(n) = cut {
            bytes.truncate(n);
        }
        let got = parse_header(&bytes);
        prop_assert_eq!(got.clone().ok(), reference_parse(&bytes));
        if bytes.len() >= HEADER_BYTES && bytes[..HEADER_BYTES] == clean[..] {
            prop_assert_eq!(got, Ok(h));
        }
    }
}

/// The backstop for a shard truncated between the length check and the read: a bus error in a
/// mapped shard ends the process with one line naming the shard and status 1, not a silent
/// crash. Run in a child process (the fault ends it).
#[test]
#[cfg(unix)]
fn a_bus_error_in_a_mapped_shard_is_one_error_line() {
    use smelt::data::mapped::MappedFile;
    const CHILD: &str = "SMELT_SIGBUS_CHILD";
    if let Some(path) = std::env::var_os(CHILD) {
        let path = std::path::PathBuf::from(path);
        let map = MappedFile::new(&path, std::fs::File::open(&path).unwrap()).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(
            map.read(0, 1).is_err(),
            "the checked read sees the truncation"
        );
        // The unchecked read faults: the guard must end the process here.
        let byte = std::hint::black_box(map.bytes())[map.len() - 1];
        println!("read {byte} past the end of a truncated file");
        return;
    }
    let dir = TempDir::new("sigbus");
    let path = dir.write("train_000000.bin", &vec![7u8; 64 << 10]);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_bus_error_in_a_mapped_shard_is_one_error_line",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains("train_000000.bin") && line.contains("truncated while in use"),
        "{line}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
