//! Cleaning rules: normalisation, length and duplicate filters, stable hashes.

use proptest::prelude::*;
use smelt::data::clean::{document_hash, normalize, CleanOptions, CleanStats, Cleaner};
use unicode_normalization::char::{canonical_combining_class, decompose_canonical};
use unicode_normalization::{is_nfc, is_nfc_quick, IsNormalized, UnicodeNormalization};

fn cleaner(min_chars: usize, dedup: bool) -> Cleaner {
    Cleaner::new(CleanOptions { min_chars, dedup })
}

#[test]
fn defaults() {
    let o = CleanOptions::default();
    assert_eq!(o.min_chars, 64);
    assert!(o.dedup);
    let parsed: CleanOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, o);
    assert!(serde_json::from_str::<CleanOptions>(r#"{"min_char": 3}"#).is_err());
}

#[test]
fn crlf_and_lone_cr_become_lf() {
    assert_eq!(
        normalize("a\r\nb\rc\n\r\n\r"),
        ("a\nb\nc\n\n\n".to_string(), 0)
    );
    assert_eq!(normalize("\r\r\n").0, "\n\n");
    assert_eq!(normalize("é\r\nü").0, "é\nü");
}

#[test]
fn control_chars_removed_but_newline_and_tab_kept() {
    let (out, removed) = normalize("a\u{0}b\u{7}c\td\ne\u{1b}[0m\u{7f}f\u{85}g\u{9f}");
    assert_eq!(out, "abc\td\ne[0mfg");
    assert_eq!(removed, 6);
    // Neighbours of the C1 range and of U+FEFF are kept.
    let keep = "\u{a0}\u{a9}\u{c2}\u{fefe}\u{ff0c}\u{feff}x";
    assert_eq!(
        normalize(keep),
        ("\u{a0}\u{a9}\u{c2}\u{fefe}\u{ff0c}x".to_string(), 1)
    );
}

#[test]
fn bom_dropped() {
    assert_eq!(normalize("\u{feff}hello"), ("hello".to_string(), 1));
    assert_eq!(normalize("a\u{feff}b\u{feff}"), ("ab".to_string(), 2));
}

#[test]
fn nfc_composes() {
    assert_eq!(normalize("e\u{301}").0, "é");
    assert_eq!(normalize("Cafe\u{301} e\u{301}te\u{301}").0, "Café été");
    // Hangul jamo compose to a syllable.
    assert_eq!(normalize("\u{1100}\u{1161}").0, "\u{ac00}");
    // A control character between base and mark is removed first, then NFC composes.
    assert_eq!(normalize("e\u{0}\u{301}"), ("é".to_string(), 1));
}

#[test]
fn already_normal_text_untouched() {
    for t in [
        "",
        "plain ASCII text.\n\tindented",
        "Grüße, café, naïve — «quotes» © 2024",
        "Привет, мир. 你好，世界。 こんにちは 🌍",
        "ﬁ ligature and Å (U+212B is not NFC, U+00C5 is): \u{c5}",
    ] {
        assert_eq!(normalize(t), (t.to_string(), 0), "{t:?}");
    }
    // U+212B ANGSTROM SIGN is replaced by its NFC form U+00C5.
    assert_eq!(normalize("\u{212b}").0, "\u{c5}");
}

#[test]
fn chars_below_u0300_are_nfc_quick_yes() {
    // normalize() skips the NFC pass for text made only of these; this pins that assumption.
    for c in (0u32..0x300).filter_map(char::from_u32) {
        let s = c.to_string();
        assert_eq!(
            is_nfc_quick(s.chars()),
            IsNormalized::Yes,
            "U+{:04X}",
            c as u32
        );
    }
}

#[test]
fn short_documents_dropped_and_counted() {
    let mut c = cleaner(5, true);
    assert_eq!(c.clean("   abcd  \n\n"), None); // 4 characters once trimmed
    assert_eq!(c.clean("\u{feff}\u{0}ab\u{1}c"), None); // 3 after removing controls
    assert_eq!(c.clean("ééééé").as_deref(), Some("ééééé")); // characters, not bytes
    assert_eq!(c.clean("  abcde ").as_deref(), Some("  abcde ")); // kept as is, untrimmed
    assert_eq!(
        c.stats(),
        &CleanStats {
            kept: 2,
            dropped_short: 2,
            dropped_duplicate: 0,
            control_chars_removed: 3,
        }
    );
    let mut z = cleaner(0, true);
    assert_eq!(z.clean("").as_deref(), Some(""));
}

#[test]
fn duplicates_dropped_near_duplicates_kept() {
    let doc = "The quick brown fox jumps over the lazy dog, again and again.";
    let mut c = cleaner(10, true);
    assert!(c.clean(doc).is_some());
    assert_eq!(c.clean(doc), None);
    // Duplicate after normalisation: CRLF vs LF, decomposed vs composed.
    assert!(c.clean("line one é\nline two").is_some());
    assert_eq!(c.clean("line one e\u{301}\r\nline two"), None);
    // One character differs: kept.
    assert!(c
        .clean("The quick brown fox jumps over the lazy dog, again and agaim.")
        .is_some());
    assert_eq!(c.stats().kept, 3);
    assert_eq!(c.stats().dropped_duplicate, 2);
    assert_eq!(c.distinct(), 3);

    let mut no_dedup = cleaner(10, false);
    assert!(no_dedup.clean(doc).is_some());
    assert!(no_dedup.clean(doc).is_some());
    assert_eq!(no_dedup.stats().dropped_duplicate, 0);
    assert_eq!(no_dedup.distinct(), 0);
}

#[test]
fn hash_is_stable() {
    // python3 -c 'import hashlib; print(int.from_bytes(hashlib.sha256(b"hello").digest()[:8], "little"))'
    assert_eq!(document_hash("hello"), 1054880662928880172);
    assert_eq!(document_hash("hello"), 0x0ea3_b05f_ba4d_f22c);
    assert_ne!(document_hash("hello"), document_hash("hellp"));
    let mut c = cleaner(0, true);
    let (text, h) = c.clean_hashed("he\u{0}llo").unwrap();
    assert_eq!((text.as_str(), h), ("hello", document_hash("hello")));
}

#[test]
fn stable_code_points_decompose_to_stable_starters() {
    // normalize() puts text in NFC piece by piece, cutting before characters with combining
    // class 0 and NFC_QC=Yes. That is sound if the first character of such a character's
    // canonical decomposition is again one of them (so cannot combine backwards).
    let stable = |c: char| {
        canonical_combining_class(c) == 0 && is_nfc_quick(std::iter::once(c)) == IsNormalized::Yes
    };
    for c in (0u32..=0x10FFFF)
        .filter_map(char::from_u32)
        .filter(|&c| stable(c))
    {
        let mut first = None;
        decompose_canonical(c, |d| {
            first.get_or_insert(d);
        });
        let d = first.unwrap();
        assert!(
            stable(d),
            "U+{:04X} starts with U+{:04X}",
            c as u32,
            d as u32
        );
    }
}

#[test]
fn piecewise_nfc_matches_whole_nfc() {
    for t in [
        "e\u{301}",
        "\u{301}e",
        "a\u{323}\u{301}b\u{301}\u{323}",
        "\u{1100}\u{1161}\u{11a8}x\u{ac00}\u{11a8}",
        "\u{0b47}\u{0b3e} \u{09c7}\u{09be}",
        "\u{212b}\u{f900}\u{2126}",
        "ﬁ é ü \u{0344}\u{0340}\u{0958}",
        "x\u{1d15e}\u{1d165}",
    ] {
        let want: String = t.nfc().collect();
        assert_eq!(normalize(t).0, want, "{t:?}");
    }
}

fn check_clean_output(out: &str) {
    assert!(!out.contains('\r'));
    assert!(!out.contains('\u{feff}'));
    assert!(!out
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t'));
    assert!(is_nfc(out));
}

/// The rules written the slow, obvious way: for comparison with `normalize`.
fn reference(text: &str) -> String {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let kept: String = unified
        .chars()
        .filter(|&c| !(c.is_control() && c != '\n' && c != '\t') && c != '\u{feff}')
        .collect();
    kept.nfc().collect()
}

proptest! {
    #[test]
    fn normalize_idempotent_and_clean(s in "\\PC*", noise in proptest::collection::vec(
        prop_oneof![
            Just("\r"), Just("\r\n"), Just("\n"), Just("\t"), Just("\u{0}"), Just("\u{85}"),
            Just("\u{feff}"), Just("e\u{301}"), Just("\u{301}"), Just("\u{1100}\u{1161}"),
            Just("\u{212b}"), Just("a"), Just("é"), Just("\u{323}"), Just("\u{11a8}"),
            Just("\u{0b47}"), Just("\u{0b3e}"), Just("\u{0344}"), Just("\u{ac00}"),
        ],
        0..12,
    )) {
        // Interleave arbitrary text with the characters the rules are about.
        let mut text = String::new();
        let mut rest = s.chars();
        for n in &noise {
            text.extend(rest.by_ref().take(3));
            text.push_str(n);
        }
        text.extend(rest);
        let (once, _) = normalize(&text);
        check_clean_output(&once);
        prop_assert_eq!(&once, &reference(&text));
        let (twice, removed) = normalize(&once);
        prop_assert_eq!(&twice, &once);
        prop_assert_eq!(removed, 0);
    }

    #[test]
    fn normalize_any_chars(s in proptest::collection::vec(any::<char>(), 0..64)) {
        let text: String = s.into_iter().collect();
        let (once, _) = normalize(&text);
        check_clean_output(&once);
        prop_assert_eq!(&once, &reference(&text));
        prop_assert_eq!(normalize(&once).0, once);
    }
}

/// Cleaning throughput, single-threaded (run with
/// `cargo test --release --test data_clean -- --ignored --nocapture`).
#[test]
#[ignore]
fn cleaning_throughput() {
    use std::time::Instant;
    // Documents of ~4 KiB; every one distinct (a counter in it) so all are hashed and kept.
    let ascii_para = "The quick brown fox jumps over the lazy dog; it was the best of times, \
        it was the worst of times, it was the age of wisdom.\n\tAnd so on, 1234567890.\n";
    let mixed = "Grüße aus Köln: café, naïve, über — «ça va?» Привет, как дела? \
        你好，世界。こんにちは。🌍 Ελληνικά.";
    let mixed_para = format!("{mixed}\n");
    let mixed_crlf = format!("{mixed}\r\n");
    let mixed_nfd = format!("{mixed} e\u{301}\r\n");
    for (name, para) in [
        ("ascii", ascii_para),
        ("non-ascii, NFC, LF", mixed_para.as_str()),
        ("non-ascii, NFC, CRLF", mixed_crlf.as_str()),
        ("non-ascii, not NFC, CRLF", mixed_nfd.as_str()),
    ] {
        let docs: Vec<String> = (0..4096)
            .map(|i| format!("{i}\n{}", para.repeat(4096 / para.len() + 1)))
            .collect();
        let bytes: usize = docs.iter().map(|d| d.len()).sum();
        let mut best_norm = f64::MAX;
        let mut best_clean = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let mut n = 0;
            for d in &docs {
                n += normalize(d).0.len();
            }
            std::hint::black_box(n);
            best_norm = best_norm.min(t.elapsed().as_secs_f64());
            let mut c = cleaner(64, true);
            let t = Instant::now();
            for d in &docs {
                std::hint::black_box(c.clean(d));
            }
            best_clean = best_clean.min(t.elapsed().as_secs_f64());
            assert_eq!(c.stats().kept, docs.len() as u64);
        }
        let mb = bytes as f64 / 1e6;
        println!(
            "{name}: {mb:.1} MB; normalize {:.0} MB/s; Cleaner::clean (normalize + sha256 + dedup) {:.0} MB/s",
            mb / best_norm,
            mb / best_clean
        );
    }
}
