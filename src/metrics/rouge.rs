//! ROUGE-1, ROUGE-2 and ROUGE-L as Google's `rouge-score` package (0.1.2) computes them with
//! `RougeScorer([...], use_stemmer=True)`: its default tokenizer (lowercase, every run of
//! characters outside `[a-z0-9]` becomes a separator, tokens longer than 3 characters
//! Porter-stemmed by nltk's default `PorterStemmer`), clipped n-gram overlap, and the LCS
//! for ROUGE-L. Scores are in 0..1.

use std::collections::HashMap;

use super::porter;

/// Precision, recall and F-measure of one comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// rouge-score's `tokenize.tokenize(text, PorterStemmer())`.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if t.len() > 3 {
                porter::stem(t)
            } else {
                t.to_string()
            }
        })
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if n > 0 {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// rouge-score's `_score_ngrams` on token lists.
pub fn rouge_n_tokens(target: &[String], prediction: &[String], n: usize) -> RougeScore {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t
        .iter()
        .map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0)))
        .sum();
    let t_total: usize = t.values().sum();
    let p_total: usize = p.values().sum();
    RougeScore::new(
        overlap as f64 / p_total.max(1) as f64,
        overlap as f64 / t_total.max(1) as f64,
    )
}

/// Length of the longest common subsequence, exactly as rouge-score's dynamic-programming
/// table gives it, in O(|a|·|b| / 64) word operations and O(|a| + |b|) memory: the
/// bit-parallel algorithm of Allison and Dix (1986) in Hyyrö's (2004) form.
///
/// `v` holds one bit per token of `a` (1 = not yet matched); for each token `y` of `b`,
/// with `m` the set of positions where `a` holds `y`, `v ← (v + (v & m)) | (v & !m)`, the
/// addition carrying from lower to higher positions across 64-bit words. The LCS is the
/// number of zero bits at the end. Only the words where `m` has bits, or a carry arrives,
/// change, so each token of `b` visits `a`'s words from its first match onwards.
pub fn lcs_len<T: Eq + std::hash::Hash>(a: &[T], b: &[T]) -> usize {
    // Bits go along the shorter sequence; the LCS is symmetric.
    let (a, b) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if a.is_empty() {
        return 0;
    }
    // Each distinct token of `a` → its match mask as (word index, bits), words ascending.
    let mut masks: HashMap<&T, Vec<(usize, u64)>> = HashMap::new();
    for (i, x) in a.iter().enumerate() {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let mask = masks.entry(x).or_default();
        match mask.last_mut() {
            Some((w, bits)) if *w == word => *bits |= bit,
            _ => mask.push((word, bit)),
        }
    }
    let words = a.len().div_ceil(64);
    let mut v = vec![u64::MAX; words];
    for y in b {
        let Some(mask) = masks.get(y) else {
            continue; // no match: v stays as it is
        };
        let mut carry = 0u64;
        let mut next = 0; // index into `mask`
        let mut w = mask[0].0;
        while w < words {
            let m = match mask.get(next) {
                Some(&(mw, bits)) if mw == w => {
                    next += 1;
                    bits
                }
                _ => 0,
            };
            if m == 0 && carry == 0 {
                // Nothing changes until the next word with a match.
                match mask.get(next) {
                    Some(&(mw, _)) => {
                        w = mw;
                        continue;
                    }
                    None => break,
                }
            }
            let x = v[w];
            let u = x & m;
            let (sum, c1) = x.overflowing_add(u);
            let (sum, c2) = sum.overflowing_add(carry);
            carry = (c1 | c2) as u64;
            v[w] = sum | (x & !m);
            w += 1;
        }
    }
    // Bits past a.len() in the last word are never matched; carries into them do not
    // reach back. Count the zeros among the first a.len() bits.
    let tail = a.len() % 64;
    let ones: usize = v
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let x = if i + 1 == words && tail != 0 {
                x & ((1u64 << tail) - 1)
            } else {
                x
            };
            x.count_ones() as usize
        })
        .sum();
    a.len() - ones
}

/// rouge-score's `_score_lcs` on token lists.
pub fn rouge_l_tokens(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_len(target, prediction) as f64;
    RougeScore::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// ROUGE-N of one prediction against one reference (`scorer.score(reference, prediction)`).
pub fn rouge_n(prediction: &str, reference: &str, n: usize) -> RougeScore {
    rouge_n_tokens(&tokenize(reference), &tokenize(prediction), n)
}

/// ROUGE-L of one prediction against one reference.
pub fn rouge_l(prediction: &str, reference: &str) -> RougeScore {
    rouge_l_tokens(&tokenize(reference), &tokenize(prediction))
}

/// ROUGE-1, ROUGE-2, ROUGE-L of one pair, tokenizing each text once.
pub fn rouge_pair(prediction: &str, reference: &str) -> [RougeScore; 3] {
    let t = tokenize(reference);
    let p = tokenize(prediction);
    [
        rouge_n_tokens(&t, &p, 1),
        rouge_n_tokens(&t, &p, 2),
        rouge_l_tokens(&t, &p),
    ]
}

/// Mean ROUGE-1, ROUGE-2, ROUGE-L F-measures over the pairs (0 for no pairs).
///
/// # Panics
/// If the two slices differ in length.
pub fn rouge_corpus<S: AsRef<str>>(predictions: &[S], references: &[S]) -> [f64; 3] {
    assert_eq!(
        predictions.len(),
        references.len(),
        "rouge: length mismatch"
    );
    let mut sum = [0.0f64; 3];
    for (p, r) in predictions.iter().zip(references) {
        let s = rouge_pair(p.as_ref(), r.as_ref());
        for k in 0..3 {
            sum[k] += s[k].fmeasure;
        }
    }
    let n = predictions.len().max(1) as f64;
    sum.map(|s| s / n)
}
