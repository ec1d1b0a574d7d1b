//! Text-generation metrics equal to the reference Python packages, for the `evaluate` tool:
//!
//! - [`bleu`]: corpus and sentence BLEU as sacreBLEU 2.6.0 computes them by default (13a
//!   tokenization, `exp` smoothing, 4-grams, brevity penalty; 0..100);
//! - [`rouge`]: ROUGE-1/2/L F-measures as Google's `rouge-score` 0.1.2 with
//!   `use_stemmer=True` (0..1), through [`porter`], nltk's default Porter stemmer;
//! - [`squad`]: token F1 and exact match of the official SQuAD v1.1 evaluation script.
//!
//! `tests/fixtures/metrics.json` (made by `tools/make_metrics_fixture.sh` from the pinned
//! Python packages) holds the reference values `tests/metrics.rs` checks against.

pub mod bleu;
pub mod porter;
pub mod rouge;
pub mod squad;

pub use bleu::{corpus_bleu, corpus_bleu_multi, sentence_bleu, tokenize_13a};
pub use rouge::{rouge_l, rouge_n, rouge_pair, RougeScore};
pub use squad::{exact_match, f1, normalize_answer};

/// All corpus-level metrics of a set of (prediction, reference) pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Scores {
    /// sacreBLEU corpus BLEU, 0..100.
    pub bleu: f64,
    /// Mean per-pair ROUGE-1 F-measure, 0..1.
    pub rouge1: f64,
    /// Mean per-pair ROUGE-2 F-measure, 0..1.
    pub rouge2: f64,
    /// Mean per-pair ROUGE-L F-measure, 0..1.
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
    /// Mean SQuAD token F1, 0..100.
    pub f1: f64,
    /// Mean SQuAD exact match, 0..100.
    pub exact_match: f64,
}

impl Scores {
    /// Each score's range by its JSON name. Every metric keeps its reference package's
    /// convention: sacreBLEU and the SQuAD script report 0-100, rouge-score 0-1.
    pub const SCALES: [(&'static str, &'static str); 6] = [
        ("bleu", "0-100"),
        ("rouge1", "0-1"),
        ("rouge2", "0-1"),
        ("rougeL", "0-1"),
        ("f1", "0-100"),
        ("exact_match", "0-100"),
    ];

    /// The range of the score named `key` (a JSON name), if it is one.
    pub fn scale(key: &str) -> Option<&'static str> {
        Self::SCALES
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, scale)| scale)
    }
}

/// Scores `predictions[i]` against `references[i]` (one reference each). With no pairs every
/// score is 0.
///
/// # Panics
/// If the two slices differ in length.
pub fn score(predictions: &[String], references: &[String]) -> Scores {
    assert_eq!(
        predictions.len(),
        references.len(),
        "metrics::score: {} predictions but {} references",
        predictions.len(),
        references.len()
    );
    let bleu = corpus_bleu(predictions, references);
    let [rouge1, rouge2, rouge_l] = rouge::rouge_corpus(predictions, references);
    let (f1, exact_match) = squad::squad_corpus(predictions, references);
    Scores {
        bleu,
        rouge1,
        rouge2,
        rouge_l,
        f1,
        exact_match,
    }
}
