//! `smelt::metrics` against the reference Python packages (sacreBLEU, rouge-score with
//! nltk's Porter stemmer, the SQuAD v1.1 script) through `tests/fixtures/metrics.json`
//! (made by `tools/make_metrics_fixture.sh`), plus hand-checkable cases.

use serde_json::Value;
use smelt::metrics::{self, bleu, porter, rouge, squad};

const BLEU_TOL: f64 = 0.01;
const ROUGE_TOL: f64 = 1e-4;
const SQUAD_TOL: f64 = 1e-9;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics.json");
    let text = std::fs::read_to_string(path)
        .expect("tests/fixtures/metrics.json (run tools/make_metrics_fixture.sh)");
    serde_json::from_str(&text).expect("valid JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| s(x).to_string())
        .collect()
}

/// Collects mismatches instead of stopping at the first, and tracks the worst difference.
#[derive(Default)]
struct Check {
    failures: Vec<String>,
    worst: std::collections::BTreeMap<&'static str, f64>,
}

impl Check {
    fn close(&mut self, what: &'static str, case: &str, ours: f64, want: f64, tol: f64) {
        let d = (ours - want).abs();
        let w = self.worst.entry(what).or_insert(0.0);
        *w = w.max(d);
        if d > tol || !ours.is_finite() {
            self.failures.push(format!(
                "{case}: {what} ours {ours} reference {want} (|d| = {d:e})"
            ));
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, case: &str, ours: T, want: T) {
        if ours != want {
            self.failures
                .push(format!("{case}: {what} ours {ours:?} reference {want:?}"));
        }
    }

    fn finish(self, label: &str) {
        eprintln!("{label}: worst differences {:?}", self.worst);
        assert!(
            self.failures.is_empty(),
            "{label}: {} mismatches:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

#[test]
fn fixture_versions_are_pinned() {
    let fx = fixture();
    let v = &fx["versions"];
    assert_eq!(s(&v["sacrebleu"]), "2.6.0");
    assert_eq!(s(&v["rouge-score"]), "0.1.2");
    assert_eq!(s(&v["nltk"]), "3.10.4");
    assert!(fx["pairs"].as_array().unwrap().len() >= 40);
}

#[test]
fn porter_stems_match_nltk() {
    let fx = fixture();
    let mut c = Check::default();
    let stems = fx["stems"].as_object().unwrap();
    assert!(stems.len() > 300);
    for (word, want) in stems {
        c.eq("stem", word, porter::stem(word), s(want).to_string());
    }
    c.finish("porter");
}

#[test]
fn tokenizers_match_reference() {
    let fx = fixture();
    let mut c = Check::default();
    for p in fx["pairs"].as_array().unwrap() {
        let name = s(&p["name"]);
        for side in ["prediction", "reference"] {
            let text = s(&p[side]);
            c.eq(
                "13a tokens",
                name,
                bleu::tokenize_13a(text),
                strings(&p["tokens_13a"][side]),
            );
            c.eq(
                "rouge tokens",
                name,
                rouge::tokenize(text),
                strings(&p["tokens_rouge"][side]),
            );
            c.eq(
                "squad normalisation",
                name,
                squad::normalize_answer(text),
                s(&p["squad_normalized"][side]).to_string(),
            );
        }
    }
    c.finish("tokenizers");
}

#[test]
fn pairs_match_reference() {
    let fx = fixture();
    let mut c = Check::default();
    for p in fx["pairs"].as_array().unwrap() {
        let name = s(&p["name"]);
        let (pred, refr) = (s(&p["prediction"]), s(&p["reference"]));
        c.close(
            "sentence_bleu",
            name,
            metrics::sentence_bleu(pred, refr),
            f(&p["sentence_bleu"]),
            BLEU_TOL,
        );
        c.close(
            "corpus_bleu_single",
            name,
            metrics::corpus_bleu(&[pred], &[refr]),
            f(&p["corpus_bleu_single"]),
            BLEU_TOL,
        );
        let ours = metrics::rouge_pair(pred, refr);
        for (k, key) in [(0, "rouge1"), (1, "rouge2"), (2, "rougeL")] {
            let want = &p["rouge"][key];
            c.close(
                "rouge precision",
                name,
                ours[k].precision,
                f(&want["precision"]),
                ROUGE_TOL,
            );
            c.close(
                "rouge recall",
                name,
                ours[k].recall,
                f(&want["recall"]),
                ROUGE_TOL,
            );
            c.close(
                "rouge fmeasure",
                name,
                ours[k].fmeasure,
                f(&want["fmeasure"]),
                ROUGE_TOL,
            );
        }
        c.close("f1", name, metrics::f1(pred, refr), f(&p["f1"]), SQUAD_TOL);
        c.close(
            "exact_match",
            name,
            metrics::exact_match(pred, refr),
            f(&p["exact_match"]),
            SQUAD_TOL,
        );
    }
    c.finish("pairs");
}

#[test]
fn corpora_match_reference() {
    let fx = fixture();
    let mut c = Check::default();
    for corpus in fx["corpora"].as_array().unwrap() {
        let name = s(&corpus["name"]);
        let preds = strings(&corpus["predictions"]);
        let refs = strings(&corpus["references"]);
        let sc = metrics::score(&preds, &refs);
        c.close("bleu", name, sc.bleu, f(&corpus["bleu"]), BLEU_TOL);
        c.close("rouge1", name, sc.rouge1, f(&corpus["rouge1"]), ROUGE_TOL);
        c.close("rouge2", name, sc.rouge2, f(&corpus["rouge2"]), ROUGE_TOL);
        c.close("rougeL", name, sc.rouge_l, f(&corpus["rougeL"]), ROUGE_TOL);
        c.close("f1", name, sc.f1, f(&corpus["f1"]), 1e-7);
        c.close(
            "exact_match",
            name,
            sc.exact_match,
            f(&corpus["exact_match"]),
            1e-7,
        );

        // The sufficient statistics themselves, summed over the segments.
        let mut counts = [0usize; 4];
        let mut totals = [0usize; 4];
        let (mut sys, mut rl) = (0, 0);
        for (p, r) in preds.iter().zip(&refs) {
            let st = bleu::segment_stats(p, &[r]);
            sys += st.hyp_len;
            rl += st.ref_len;
            for n in 0..4 {
                counts[n] += st.correct[n];
                totals[n] += st.total[n];
            }
        }
        let want_counts: Vec<usize> = corpus["bleu_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let want_totals: Vec<usize> = corpus["bleu_totals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        c.eq("bleu counts", name, counts.to_vec(), want_counts);
        c.eq("bleu totals", name, totals.to_vec(), want_totals);
        c.eq(
            "bleu sys_len",
            name,
            sys as u64,
            corpus["bleu_sys_len"].as_u64().unwrap(),
        );
        c.eq(
            "bleu ref_len",
            name,
            rl as u64,
            corpus["bleu_ref_len"].as_u64().unwrap(),
        );

        // Multi-reference entry point with one reference each agrees with the single one.
        let multi: Vec<Vec<String>> = refs.iter().map(|r| vec![r.clone()]).collect();
        c.close(
            "bleu multi",
            name,
            metrics::corpus_bleu_multi(&preds, &multi),
            f(&corpus["bleu"]),
            BLEU_TOL,
        );
    }
    c.finish("corpora");
}

#[test]
fn scores_serialize_with_expected_keys() {
    let sc = metrics::score(&["a b c d".to_string()], &["a b c d".to_string()]);
    let v = serde_json::to_value(sc).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["bleu", "exact_match", "f1", "rouge1", "rouge2", "rougeL"]
    );
    assert!((sc.bleu - 100.0).abs() < 1e-9);
    assert_eq!(
        (sc.rouge1, sc.rouge2, sc.rouge_l, sc.f1, sc.exact_match),
        (1.0, 1.0, 1.0, 100.0, 100.0)
    );
}

#[test]
fn hand_checked_cases() {
    // Empty corpus: everything 0.
    assert_eq!(metrics::score(&[], &[]), metrics::Scores::default());

    // BLEU: "a b c d e" vs "a b c d f": p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, BP = 1:
    // geometric mean (4/5 * 3/4 * 2/3 * 1/2)^(1/4) = 0.2^(1/4).
    let b = metrics::corpus_bleu(&["a b c d e"], &["a b c d f"]);
    assert!((b - 100.0 * 0.2f64.powf(0.25)).abs() < 1e-9, "{b}");
    // Brevity penalty: hypothesis "a b c d" against "a b c d e f": exp(1 - 6/4).
    let b = metrics::corpus_bleu(&["a b c d"], &["a b c d e f"]);
    assert!((b - 100.0 * (1.0f64 - 1.5).exp()).abs() < 1e-9, "{b}");
    // Fewer than 4 hypothesis tokens: no 4-grams, corpus BLEU 0; sentence BLEU uses the
    // effective order: "a b c" vs "a b c" = 100.
    assert_eq!(metrics::corpus_bleu(&["a b c"], &["a b c"]), 0.0);
    assert!((metrics::sentence_bleu("a b c", "a b c") - 100.0).abs() < 1e-9);
    // exp smoothing: p1 = 3/5, p2 = 1/4, no 3- or 4-gram match among totals 3 and 2:
    // p3 = 1/(2*3), p4 = 1/(4*2).
    let b = metrics::corpus_bleu(&["a b x c y"], &["a b z c w"]);
    let want = 100.0 * ((3.0 / 5.0) * (1.0 / 4.0) * (1.0 / 6.0) * (1.0 / 8.0f64)).powf(0.25);
    assert!((b - want).abs() < 1e-9, "{b} vs {want}");
    // 13a tokenization splits punctuation but keeps decimals and thousands separators.
    assert_eq!(
        metrics::tokenize_13a("Hello, world! 1,234.5 is (big)."),
        ["Hello", ",", "world", "!", "1,234.5", "is", "(", "big", ")", "."]
    );

    // ROUGE: stemming conflates "running"/"runs"/"run"; tokens of <= 3 chars are not stemmed.
    assert_eq!(
        rouge::tokenize("Running RUNS run, ran!"),
        ["run", "run", "run", "ran"]
    );
    assert_eq!(porter::stem("generously"), "gener");
    assert_eq!(porter::stem("hopefully"), "hope");
    assert_eq!(porter::stem("flies"), "fli");
    assert_eq!(porter::stem("dies"), "die"); // NLTK extension (original: "di")
    assert_eq!(porter::stem("enjoy"), "enjoy"); // NLTK extension (original: "enjoi")
                                                // "the cat sat" vs "the cat ate": R1 = 2/3, R2 = 1/2, RL = 2/3.
    let r = metrics::rouge_pair("the cat ate", "the cat sat");
    assert!((r[0].fmeasure - 2.0 / 3.0).abs() < 1e-12);
    assert!((r[1].fmeasure - 0.5).abs() < 1e-12);
    assert!((r[2].fmeasure - 2.0 / 3.0).abs() < 1e-12);
    // LCS: "a b c d" vs "a c b d" has LCS 3 -> P = R = F = 3/4.
    assert!((metrics::rouge_l("a c b d", "a b c d").fmeasure - 0.75).abs() < 1e-12);
    assert_eq!(metrics::rouge_n("", "a b", 1).fmeasure, 0.0);

    // SQuAD: normalisation and F1.
    assert_eq!(
        squad::normalize_answer("The  Eiffel-Tower, a landmark!"),
        "eiffeltower landmark"
    );
    assert_eq!(
        metrics::exact_match("the Eiffel Tower", "Eiffel tower."),
        1.0
    );
    // "denver broncos won" vs "denver broncos": P = 2/3, R = 1, F1 = 0.8.
    assert!((metrics::f1("Denver Broncos won", "the Denver Broncos") - 0.8).abs() < 1e-12);
    assert_eq!(metrics::f1("", ""), 0.0); // v1.1: no shared token -> 0
    assert_eq!(metrics::exact_match("", ""), 1.0);
    assert_eq!(squad::f1_max("Broncos", &["Denver", "Broncos"]), 1.0);
    assert_eq!(squad::exact_match_max("x", &["a", "b"]), 0.0);
    // Means times 100.
    let sc = metrics::score(
        &["Denver Broncos won".to_string(), "Paris".to_string()],
        &["the Denver Broncos".to_string(), "Paris".to_string()],
    );
    assert!((sc.f1 - 90.0).abs() < 1e-9 && (sc.exact_match - 50.0).abs() < 1e-9);
}

#[test]
#[should_panic(expected = "predictions but")]
fn mismatched_lengths_panic() {
    metrics::score(&["a".to_string()], &[]);
}

/// The LCS by the textbook dynamic-programming table, as rouge-score computes it.
fn lcs_table(a: &[u32], b: &[u32]) -> usize {
    let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t[a.len()][b.len()]
}

#[test]
fn bit_parallel_lcs_equals_the_table_on_random_sequences() {
    let mut rng = smelt::rng::Rng::new(20240520);
    // Lengths around the 64-bit word boundaries, and random ones.
    let edges = [0usize, 1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193];
    let mut cases = 0;
    for round in 0..3000 {
        let len = |rng: &mut smelt::rng::Rng, k: usize| {
            if round % 3 == 0 {
                edges[(rng.below(edges.len() as u64)) as usize]
            } else {
                rng.below(k as u64) as usize
            }
        };
        let (n, m) = (len(&mut rng, 260), len(&mut rng, 260));
        // Small alphabets make long common subsequences; large ones, sparse matches.
        let alphabet = 1 + rng.below([2, 4, 12, 100][round % 4]);
        let a: Vec<u32> = (0..n).map(|_| rng.below(alphabet) as u32).collect();
        let b: Vec<u32> = (0..m).map(|_| rng.below(alphabet) as u32).collect();
        let want = lcs_table(&a, &b);
        assert_eq!(rouge::lcs_len(&a, &b), want, "a {a:?} b {b:?}");
        assert_eq!(rouge::lcs_len(&b, &a), want, "a {b:?} b {a:?}");
        cases += 1;
    }
    assert_eq!(cases, 3000);
}

#[test]
fn rouge_l_of_a_forty_thousand_word_record_is_exact() {
    // A 40k-word reference from the sonnets' words, and a prediction that replaces every
    // tenth word by a number the reference never holds: their LCS is exactly the words kept.
    let sonnets = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/shakespeare/sonnets.txt"
    ))
    .unwrap();
    let words: Vec<&str> = sonnets
        .split_whitespace()
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    let n = 40_000;
    let reference: Vec<String> = words
        .iter()
        .cycle()
        .take(n)
        .map(|w| w.to_string())
        .collect();
    let prediction: Vec<String> = reference
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i % 10 == 9 {
                format!("{}", 1_000_000 + i)
            } else {
                w.clone()
            }
        })
        .collect();
    let (reference, prediction) = (reference.join(" "), prediction.join(" "));
    let (t, p) = (rouge::tokenize(&reference), rouge::tokenize(&prediction));
    assert_eq!((t.len(), p.len()), (n, n));
    let kept = n - n / 10;
    assert_eq!(rouge::lcs_len(&t, &p), kept);
    let (precision, recall) = (kept as f64 / n as f64, kept as f64 / n as f64);
    let s = metrics::rouge_l(&prediction, &reference);
    assert_eq!((s.precision, s.recall), (precision, recall));
    // The whole score of such a record (BLEU, ROUGE-1/2/L, F1, EM) completes too.
    let scores = metrics::score(&[prediction], &[reference]);
    assert!((scores.rouge_l - s.fmeasure).abs() < 1e-12, "{scores:?}");
}
