//! BLEU as sacreBLEU computes it by default (`sacrebleu.corpus_bleu(hyps, [refs])`,
//! sacrebleu 2.6.0): mteval-v13a tokenization, case-sensitive, n-grams up to 4, clipped
//! counts against the (max over references) reference n-gram counts, the closest
//! reference length for the brevity penalty, `exp` smoothing (NIST: the k-th order with no
//! match gets precision 1 / (2^k * total)), score in 0..100.

use std::collections::HashMap;

/// The largest n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// Python's `str.isspace()`: Unicode `White_Space` plus the information separators
/// U+001C..U+001F (which `str.split()` also splits on).
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no argument.
pub(crate) fn py_split(s: &str) -> Vec<&str> {
    s.split(py_isspace).filter(|t| !t.is_empty()).collect()
}

/// The first regex of sacreBLEU's `TokenizerRegexp`:
/// `[\{-\~\[-\` -\&\(-\+\:-\@\/]` (ASCII symbols except `'`, `,`, `-`, `.`).
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Applies a two-character pattern `(A)(B)` → `f(a, b)` left to right without overlaps,
/// as `re.sub` does.
fn sub_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    repl: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && first(chars[i]) && second(chars[i + 1]) {
            repl(chars[i], chars[i + 1], &mut out);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// sacreBLEU's `13a` tokenizer (`Tokenizer13a`, mteval-v13a), applied after the
/// `rstrip()` that `BLEU._preprocess_segment` does; returns the tokens.
pub fn tokenize_13a(line: &str) -> Vec<String> {
    let line = line.trim_end_matches(py_isspace);
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let padded = format!(" {line} ");
    let mut chars: Vec<char> = Vec::with_capacity(padded.len() * 2);
    for c in padded.chars() {
        if is_13a_symbol(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    let is_digit = |c: char| c.is_ascii_digit();
    let is_dot_comma = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> \1 \2 '
    let chars = sub_pairs(
        &chars,
        |c| !is_digit(c),
        is_dot_comma,
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    // ([\.,])([^0-9]) -> ' \1 \2'
    let chars = sub_pairs(
        &chars,
        is_dot_comma,
        |c| !is_digit(c),
        |a, b, o| o.extend([' ', a, ' ', b]),
    );
    // ([0-9])(-) -> '\1 \2 '
    let chars = sub_pairs(
        &chars,
        is_digit,
        |c| c == '-',
        |a, b, o| o.extend([a, ' ', b, ' ']),
    );
    let s: String = chars.into_iter().collect();
    py_split(&s).into_iter().map(str::to_string).collect()
}

/// Sufficient statistics of one segment: hypothesis length, reference length, and matched /
/// total n-gram counts for orders 1..=4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BleuStats {
    pub hyp_len: usize,
    pub ref_len: usize,
    pub correct: [usize; MAX_NGRAM_ORDER],
    pub total: [usize; MAX_NGRAM_ORDER],
}

impl BleuStats {
    fn add(&mut self, other: &BleuStats) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }
}

fn ngram_counts(tokens: &[String]) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// sacreBLEU's `_get_closest_ref_len`: the closest length, the shorter one on ties.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            None => Some((diff, len)),
            Some((d, l)) if diff < d || (diff == d && len < l) => Some((diff, len)),
            keep => keep,
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// Statistics of one hypothesis against one or more references (all 13a-tokenized here).
pub fn segment_stats<S: AsRef<str>>(hypothesis: &str, references: &[S]) -> BleuStats {
    let refs: Vec<Vec<String>> = references
        .iter()
        .map(|r| tokenize_13a(r.as_ref()))
        .collect();
    let mut ref_ngrams: HashMap<&[String], usize> = HashMap::new();
    for r in &refs {
        for (gram, count) in ngram_counts(r) {
            let e = ref_ngrams.entry(gram).or_insert(0);
            *e = (*e).max(count);
        }
    }
    let ref_lens: Vec<usize> = refs.iter().map(Vec::len).collect();
    let hyp = tokenize_13a(hypothesis);
    let mut stats = BleuStats {
        hyp_len: hyp.len(),
        ref_len: closest_ref_len(hyp.len(), &ref_lens),
        ..Default::default()
    };
    for (gram, count) in ngram_counts(&hyp) {
        let n = gram.len() - 1;
        stats.total[n] += count;
        if let Some(&r) = ref_ngrams.get(gram) {
            stats.correct[n] += count.min(r);
        }
    }
    stats
}

/// sacreBLEU's `my_log`: log with 0 floored to -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// sacreBLEU's `BLEU.compute_bleu` with `smooth_method='exp'`, in 0..100.
pub fn bleu_from_stats(stats: &BleuStats, effective_order: bool) -> f64 {
    let (sys_len, ref_len) = (stats.hyp_len, stats.ref_len);
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    if stats.correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; MAX_NGRAM_ORDER];
    let mut smooth = 1.0f64;
    let mut eff_order = MAX_NGRAM_ORDER;
    for n in 1..=MAX_NGRAM_ORDER {
        let (correct, total) = (stats.correct[n - 1], stats.total[n - 1]);
        if total == 0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        precisions[n - 1] = if correct == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total as f64)
        } else {
            100.0 * correct as f64 / total as f64
        };
    }
    let log_sum: f64 = precisions[..eff_order].iter().map(|&p| my_log(p)).sum();
    bp * (log_sum / eff_order as f64).exp()
}

/// Corpus BLEU with one reference per hypothesis, equal to
/// `sacrebleu.corpus_bleu(predictions, [references]).score`.
///
/// # Panics
/// If the two slices differ in length.
pub fn corpus_bleu<S: AsRef<str>>(predictions: &[S], references: &[S]) -> f64 {
    assert_eq!(
        predictions.len(),
        references.len(),
        "corpus_bleu: {} predictions but {} references",
        predictions.len(),
        references.len()
    );
    let mut total = BleuStats::default();
    for (p, r) in predictions.iter().zip(references) {
        total.add(&segment_stats(p.as_ref(), std::slice::from_ref(r)));
    }
    bleu_from_stats(&total, false)
}

/// Corpus BLEU with any number of references per hypothesis (`references[i]` are the
/// references of `predictions[i]`), equal to sacreBLEU's corpus BLEU over reference streams.
///
/// # Panics
/// If the two slices differ in length.
pub fn corpus_bleu_multi<S: AsRef<str>, R: AsRef<str>>(
    predictions: &[S],
    references: &[Vec<R>],
) -> f64 {
    assert_eq!(
        predictions.len(),
        references.len(),
        "corpus_bleu_multi: length mismatch"
    );
    let mut total = BleuStats::default();
    for (p, r) in predictions.iter().zip(references) {
        total.add(&segment_stats(p.as_ref(), r));
    }
    bleu_from_stats(&total, false)
}

/// Sentence BLEU, equal to `sacrebleu.sentence_bleu(prediction, [reference]).score`
/// (`exp` smoothing, effective order).
pub fn sentence_bleu(prediction: &str, reference: &str) -> f64 {
    bleu_from_stats(&segment_stats(prediction, &[reference]), true)
}
