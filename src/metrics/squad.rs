//! Token F1 and exact match as the official SQuAD v1.1 `evaluate-v1.1.py` computes them:
//! answers normalised by lowercasing, dropping ASCII punctuation (`string.punctuation`),
//! replacing the whole words `a`, `an`, `the` by a space and collapsing whitespace; F1 over
//! the multiset of tokens (0 when nothing is shared, also for two empty answers); the max
//! over references; corpus values are the mean times 100.

use std::collections::HashMap;

use super::bleu::{py_isspace, py_split};

/// Python's `re` `\w` on a `str` pattern (approximated by Unicode alphanumerics and `_`).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`.
fn remove_articles(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let boundary_before = i == 0 || !is_word(chars[i - 1]);
        let mut matched = 0;
        if boundary_before && is_word(chars[i]) {
            // Alternation order a | an | the: `a` is tried first, then `an`.
            for art in ["a", "an", "the"] {
                let n = art.len();
                if i + n <= chars.len()
                    && chars[i..i + n].iter().copied().eq(art.chars())
                    && (i + n == chars.len() || !is_word(chars[i + n]))
                {
                    matched = n;
                    break;
                }
            }
        }
        if matched > 0 {
            out.push(' ');
            i += matched;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// SQuAD's `normalize_answer`.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_art = remove_articles(&no_punc);
    py_split(&no_art).join(" ")
}

fn tokens(s: &str) -> Vec<String> {
    normalize_answer(s)
        .split(py_isspace)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// SQuAD v1.1 `f1_score(prediction, ground_truth)`, in 0..1.
pub fn f1(prediction: &str, reference: &str) -> f64 {
    let p = tokens(prediction);
    let r = tokens(reference);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &r {
        *counts.entry(t).or_insert(0) += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// SQuAD v1.1 `exact_match_score`: 1.0 or 0.0.
pub fn exact_match(prediction: &str, reference: &str) -> f64 {
    if normalize_answer(prediction) == normalize_answer(reference) {
        1.0
    } else {
        0.0
    }
}

/// SQuAD's `metric_max_over_ground_truths` for F1 (0 for no references).
pub fn f1_max<S: AsRef<str>>(prediction: &str, references: &[S]) -> f64 {
    references
        .iter()
        .map(|r| f1(prediction, r.as_ref()))
        .fold(0.0, f64::max)
}

/// SQuAD's `metric_max_over_ground_truths` for exact match (0 for no references).
pub fn exact_match_max<S: AsRef<str>>(prediction: &str, references: &[S]) -> f64 {
    references
        .iter()
        .map(|r| exact_match(prediction, r.as_ref()))
        .fold(0.0, f64::max)
}

/// Mean F1 and exact match over the pairs, times 100 as `evaluate-v1.1.py` reports them
/// (0 for no pairs).
///
/// # Panics
/// If the two slices differ in length.
pub fn squad_corpus<S: AsRef<str>>(predictions: &[S], references: &[S]) -> (f64, f64) {
    assert_eq!(
        predictions.len(),
        references.len(),
        "squad: length mismatch"
    );
    let (mut f, mut em) = (0.0, 0.0);
    for (p, r) in predictions.iter().zip(references) {
        f += f1(p.as_ref(), r.as_ref());
        em += exact_match(p.as_ref(), r.as_ref());
    }
    let n = predictions.len().max(1) as f64;
    (100.0 * f / n, 100.0 * em / n)
}
