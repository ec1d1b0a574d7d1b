//! The incremental text stream (`smelt::text_stream`) that `generate` prints and `serve`
//! streams: its text is exactly `Tokenizer::decode` of all the tokens (GPT-2's tokenizer and
//! the hf_tiny fixture's), on random token sequences full of multi-byte characters split
//! over tokens, invalid bytes and real U+FFFD characters; it shows text no later than
//! decoding everything would; stop strings cut it where a search of the whole text would;
//! and its work per token is bounded, whatever the length (counted, not timed).

use std::path::Path;

use smelt::data::Tokenizer;
use smelt::rng::Rng;
use smelt::text_stream::{StreamWork, TextStream, STALL_TOKENS};

fn hf_tiny() -> Tokenizer {
    Tokenizer::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny/tokenizer.json"),
    )
    .unwrap()
}

fn tokenizers() -> Vec<(&'static str, Tokenizer)> {
    vec![("gpt2", Tokenizer::gpt2().unwrap()), ("hf_tiny", hf_tiny())]
}

/// The id of the byte-level token of one byte (GPT-2's bytes-to-unicode spelling).
fn byte_token(tok: &Tokenizer, b: u8) -> u32 {
    let b = b as u32;
    let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let c = if printable {
        b
    } else {
        // The unprintable bytes take 256, 257, ... in byte order.
        256 + (0..b)
            .filter(|&x| !((0x21..=0x7e).contains(&x) || (0xa1..=0xac).contains(&x) || x >= 0xae))
            .count() as u32
    };
    let s = char::from_u32(c).unwrap().to_string();
    tok.token_to_id(&s)
        .unwrap_or_else(|| panic!("no byte token for {b:#x}"))
}

/// Texts whose characters byte-level BPE splits over several tokens, and real U+FFFDs.
const TEXTS: [&str; 8] = [
    "héllo wörld",
    "日本語のテキスト",
    "emoji 😀🎉👍🏽 mixed",
    "€ 100, £ 5, ¥ 9",
    "\u{FFFD}\u{FFFD} replacement \u{FFFD}",
    "Ελληνικά и кириллица",
    "a\nb\n\nc\td",
    "<|endoftext|>after the end",
];

/// A random sequence of `n` tokens: runs of random ids, of encoded multi-byte text, and of
/// single bytes that make split, invalid and replacement characters.
fn random_tokens(tok: &Tokenizer, rng: &mut Rng, n: usize) -> Vec<u32> {
    let vocab = tok.vocab_size() as u64;
    let mut out = Vec::new();
    while out.len() < n {
        match rng.below(5) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    out.push(rng.below(vocab) as u32);
                }
            }
            1 | 2 => {
                let text = TEXTS[rng.below(TEXTS.len() as u64) as usize];
                out.extend(tok.encode(text).unwrap());
            }
            3 => {
                // The bytes of a multi-byte character one token each, sometimes cut short.
                let c = ['é', '€', '😀', '語', '\u{FFFD}'][rng.below(5) as usize];
                let mut buf = [0u8; 4];
                let bytes = c.encode_utf8(&mut buf).as_bytes().to_vec();
                let keep = if rng.below(3) == 0 {
                    1 + rng.below(bytes.len() as u64) as usize
                } else {
                    bytes.len()
                };
                for &b in &bytes[..keep] {
                    out.push(byte_token(tok, b));
                }
            }
            _ => {
                // Bytes that are never valid UTF-8 or that are lone continuations.
                for _ in 0..1 + rng.below(4) {
                    let b = [0x80, 0xbf, 0xc0, 0xff, 0xe2, 0xf0][rng.below(6) as usize];
                    out.push(byte_token(tok, b));
                }
            }
        }
    }
    out.truncate(n);
    out
}

/// Pushes every token; returns the pieces handed out, joined, with `finish`'s.
fn stream_all(tok: &Tokenizer, ids: &[u32], stops: &[String]) -> (String, TextStream) {
    let mut s = TextStream::new(tok, stops.to_vec());
    let mut out = String::new();
    for &id in ids {
        out.push_str(&s.push(id).unwrap());
        if s.stopped() {
            break;
        }
    }
    out.push_str(&s.finish().unwrap());
    (out, s)
}

#[test]
fn text_is_exactly_decode_of_all_tokens() {
    for (name, tok) in tokenizers() {
        for seed in 0..40 {
            let mut rng = Rng::new(seed);
            let n = 1 + rng.below(300) as usize;
            let ids = random_tokens(&tok, &mut rng, n);
            let want = tok.decode(&ids).unwrap();
            let (got, s) = stream_all(&tok, &ids, &[]);
            assert_eq!(got, want, "{name}, seed {seed}, tokens {ids:?}");
            assert_eq!(s.text(), want, "{name}, seed {seed}");
            assert_eq!(s.tokens(), ids.len());
            assert!(!s.stopped());
        }
    }
}

#[test]
fn text_comes_out_no_later_than_decoding_everything_would_show_it() {
    for (name, tok) in tokenizers() {
        for seed in 100..110 {
            let mut rng = Rng::new(seed);
            let ids = random_tokens(&tok, &mut rng, 200);
            let mut s = TextStream::new(&tok, Vec::new());
            let mut out = String::new();
            for k in 0..ids.len() {
                out.push_str(&s.push(ids[k]).unwrap());
                // What decoding all tokens so far shows before its unfinished end.
                let whole = tok.decode(&ids[..=k]).unwrap();
                let shown = whole.trim_end_matches('\u{FFFD}');
                assert!(
                    out.len() >= shown.len() && out.starts_with(shown),
                    "{name}, seed {seed}, after {} tokens: {out:?} vs {whole:?}",
                    k + 1
                );
            }
        }
    }
}

#[test]
fn stop_strings_cut_where_a_search_of_the_whole_text_does() {
    for (name, tok) in tokenizers() {
        let mut cut = 0;
        for seed in 200..240 {
            let mut rng = Rng::new(seed);
            let ids = random_tokens(&tok, &mut rng, 120);
            let full = tok.decode(&ids).unwrap();
            // A stop string taken from the text (one to three characters, no U+FFFD), and
            // one that never occurs.
            let chars: Vec<(usize, char)> = full.char_indices().collect();
            let start = rng.below(chars.len() as u64) as usize;
            let stop: String = full[chars[start].0..]
                .chars()
                .take(1 + rng.below(3) as usize)
                .collect();
            if stop.contains('\u{FFFD}') {
                continue;
            }
            let stops = vec!["\u{1}never\u{2}".to_string(), stop.clone()];
            let (got, s) = stream_all(&tok, &ids, &stops);
            let at = full.find(&stop).unwrap();
            assert_eq!(got, full[..at], "{name}, seed {seed}, stop {stop:?}");
            assert_eq!(s.text(), &full[..at]);
            assert!(s.stopped());
            // Stopped at the first token whose text holds the stop string.
            let first = (1..=ids.len())
                .find(|&k| tok.decode(&ids[..k]).unwrap().contains(&stop))
                .unwrap();
            assert_eq!(s.tokens(), first, "{name}, seed {seed}, stop {stop:?}");
            cut += 1;
        }
        assert!(cut >= 20, "{name}: too few stop cases ({cut})");
    }
}

#[test]
fn a_possible_start_of_a_stop_string_is_held_back_until_decided() {
    let tok = hf_tiny();
    let ids = tok.encode("abcab").unwrap();
    let mut s = TextStream::new(&tok, vec!["abd".into()]);
    let mut out = String::new();
    for &id in &ids {
        out.push_str(&s.push(id).unwrap());
    }
    // "ab" may still become "abd": not handed out until the end.
    assert_eq!(out, "abc");
    assert_eq!(s.finish().unwrap(), "ab");
    assert_eq!(s.text(), "abcab");
}

fn work_for(tok: &Tokenizer, ids: &[u32], stops: &[String]) -> (StreamWork, String) {
    let (out, s) = stream_all(tok, ids, stops);
    assert!(!s.stopped());
    (s.work(), out)
}

#[test]
fn work_per_token_is_bounded_whatever_the_length() {
    let stops: Vec<String> = ["\u{1}stop one\u{2}", "\u{3}two", "\u{4}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let longest = stops.iter().map(String::len).max().unwrap();
    for (name, tok) in tokenizers() {
        let mut rng = Rng::new(7);
        let long = random_tokens(&tok, &mut rng, 8000);
        // Real U+FFFDs without end: the pending text never stops ending in one.
        let fffd: Vec<u32> = std::iter::repeat_n([0xef, 0xbf, 0xbd], 3000)
            .flatten()
            .map(|b| byte_token(&tok, b))
            .collect();
        for (what, ids) in [("random", &long), ("U+FFFD run", &fffd)] {
            let (short, _) = work_for(&tok, &ids[..ids.len() / 4], &stops);
            let (work, out) = work_for(&tok, ids, &stops);
            assert_eq!(out, tok.decode(ids).unwrap(), "{name} {what}");
            let n = ids.len() as u64;
            eprintln!("{name} {what}: {n} tokens, {work:?}");
            // The window stays a few tokens long: a stalled one is cut after STALL_TOKENS.
            assert!(
                work.max_window <= 3 * STALL_TOKENS,
                "{name} {what}: window {}",
                work.max_window
            );
            // So decoding costs a bounded number of tokens per token (a whole decode per
            // token would be n(n+1)/2 in all) ...
            assert!(
                work.decoded_tokens <= 8 * work.max_window as u64 * n,
                "{name} {what}: {work:?}"
            );
            // ... and four times the tokens cost about four times the work (not 16).
            assert!(
                work.decoded_tokens <= 6 * short.decoded_tokens,
                "{name} {what}: {work:?} against {short:?} for a quarter"
            );
            // Each byte of text is searched for stop strings about once per stop string,
            // plus the overlap with what precedes it.
            let stops_n = stops.len() as u64;
            assert!(
                work.scanned_bytes <= stops_n * (out.len() as u64 + n * longest as u64),
                "{name} {what}: {work:?}, {} bytes of text",
                out.len()
            );
        }
    }
}
