//! The Porter stemmer exactly as nltk's `PorterStemmer()` runs it by default, i.e. in
//! `NLTK_EXTENSIONS` mode (not `ORIGINAL_ALGORITHM`): the irregular-forms table, the
//! `ies`/`ied` length-4 rules, the `(*c and not c) Y -> I` step 1c, `alli` first in step 2,
//! the `bli`, `fulli` and `logi` rules, and the two-letter `*o` case. This is the stemmer
//! rouge-score's `DefaultTokenizer(use_stemmer=True)` uses; a line-by-line port of
//! `nltk/stem/porter.py` (nltk 3.10.4), checked word by word against it in
//! `tests/metrics.rs`.

type Word = Vec<char>;

/// A suffix-removal condition on the remaining stem.
type Cond<'a> = &'a dyn Fn(&[char]) -> bool;

/// Irregular forms (nltk's `pool`): checked on the lowercased word before any step.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// nltk's `_is_consonant`: a `y` is a consonant iff the letter before it is not one (or it
/// starts the word).
fn is_consonant(w: &[char], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] == 'y' {
        let mut negate = false;
        while i > 0 && w[i] == 'y' {
            negate = !negate;
            i -= 1;
        }
        return is_vowel(w[i]) == negate;
    }
    true
}

/// The measure m of `[C](VC){m}[V]`: the number of vowel-to-consonant transitions.
fn measure(stem: &[char]) -> usize {
    let mut m = 0;
    let mut prev_vowel = false;
    for i in 0..stem.len() {
        let cons = is_consonant(stem, i);
        if cons && prev_vowel {
            m += 1;
        }
        prev_vowel = !cons;
    }
    m
}

fn positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn measure_gt_1(stem: &[char]) -> bool {
    measure(stem) > 1
}

fn always(_: &[char]) -> bool {
    true
}

fn contains_vowel(stem: &[char]) -> bool {
    (0..stem.len()).any(|i| !is_consonant(stem, i))
}

/// Condition `*d`.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// Condition `*o` (with nltk's two-letter vowel-consonant extension).
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    w.len() >= n && w[w.len() - n..].iter().copied().eq(suffix.chars())
}

fn cut(w: &[char], suffix: &str) -> Word {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn join(stem: &[char], tail: &str) -> Word {
    let mut out = stem.to_vec();
    out.extend(tail.chars());
    out
}

/// nltk's `_apply_rule_list`: the first rule whose suffix matches decides (applied when its
/// condition holds, otherwise the word is returned unchanged); `"*d"` stands for a double
/// consonant ending.
fn apply_rules(word: &[char], rules: &[(&str, &str, Cond)]) -> Word {
    for &(suffix, replacement, cond) in rules {
        if suffix == "*d" && ends_double_consonant(word) {
            let stem = &word[..word.len() - 2];
            return if cond(stem) {
                join(stem, replacement)
            } else {
                word.to_vec()
            };
        }
        if ends_with(word, suffix) {
            let stem = cut(word, suffix);
            return if cond(&stem) {
                join(&stem, replacement)
            } else {
                word.to_vec()
            };
        }
    }
    word.to_vec()
}

fn step1a(w: &[char]) -> Word {
    if ends_with(w, "ies") && w.len() == 4 {
        return join(&cut(w, "ies"), "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", &always),
            ("ies", "i", &always),
            ("ss", "ss", &always),
            ("s", "", &always),
        ],
    )
}

fn step1b(w: &[char]) -> Word {
    if ends_with(w, "ied") {
        let tail = if w.len() == 4 { "ie" } else { "i" };
        return join(&cut(w, "ied"), tail);
    }
    if ends_with(w, "eed") {
        let stem = cut(w, "eed");
        return if measure(&stem) > 0 {
            join(&stem, "ee")
        } else {
            w.to_vec()
        };
    }
    let mut intermediate = None;
    for suffix in ["ed", "ing"] {
        if ends_with(w, suffix) {
            let stem = cut(w, suffix);
            if contains_vowel(&stem) {
                intermediate = Some(stem);
                break;
            }
        }
    }
    let Some(stem) = intermediate else {
        return w.to_vec();
    };
    // Non-empty: it contains a vowel.
    let last = stem[stem.len() - 1];
    let last_str = last.to_string();
    let not_lsz = |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let cvc_e = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        &stem,
        &[
            ("at", "ate", &always),
            ("bl", "ble", &always),
            ("iz", "ize", &always),
            ("*d", &last_str, &not_lsz),
            ("", "e", &cvc_e),
        ],
    )
}

fn step1c(w: &[char]) -> Word {
    let cond = |s: &[char]| s.len() > 1 && is_consonant(s, s.len() - 1);
    apply_rules(w, &[("y", "i", &cond)])
}

fn step2(w: &[char]) -> Word {
    if ends_with(w, "alli") && positive_measure(&cut(w, "alli")) {
        return step2(&join(&cut(w, "alli"), "al"));
    }
    // 'logi' -> 'log' with the 'l' kept on the stem for the measure.
    let logi_stem: Word = if w.len() >= 3 {
        w[..w.len() - 3].to_vec()
    } else {
        Vec::new()
    };
    let logi = move |_: &[char]| positive_measure(&logi_stem);
    let pm: Cond = &positive_measure;
    apply_rules(
        w,
        &[
            ("ational", "ate", pm),
            ("tional", "tion", pm),
            ("enci", "ence", pm),
            ("anci", "ance", pm),
            ("izer", "ize", pm),
            ("bli", "ble", pm),
            ("alli", "al", pm),
            ("entli", "ent", pm),
            ("eli", "e", pm),
            ("ousli", "ous", pm),
            ("ization", "ize", pm),
            ("ation", "ate", pm),
            ("ator", "ate", pm),
            ("alism", "al", pm),
            ("iveness", "ive", pm),
            ("fulness", "ful", pm),
            ("ousness", "ous", pm),
            ("aliti", "al", pm),
            ("iviti", "ive", pm),
            ("biliti", "ble", pm),
            ("fulli", "ful", pm),
            ("logi", "log", &logi),
        ],
    )
}

fn step3(w: &[char]) -> Word {
    let pm: Cond = &positive_measure;
    apply_rules(
        w,
        &[
            ("icate", "ic", pm),
            ("ative", "", pm),
            ("alize", "al", pm),
            ("iciti", "ic", pm),
            ("ical", "ic", pm),
            ("ful", "", pm),
            ("ness", "", pm),
        ],
    )
}

fn step4(w: &[char]) -> Word {
    let m1: Cond = &measure_gt_1;
    let ion = |s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    apply_rules(
        w,
        &[
            ("al", "", m1),
            ("ance", "", m1),
            ("ence", "", m1),
            ("er", "", m1),
            ("ic", "", m1),
            ("able", "", m1),
            ("ible", "", m1),
            ("ant", "", m1),
            ("ement", "", m1),
            ("ment", "", m1),
            ("ent", "", m1),
            ("ion", "", &ion),
            ("ou", "", m1),
            ("ism", "", m1),
            ("ate", "", m1),
            ("iti", "", m1),
            ("ous", "", m1),
            ("ive", "", m1),
            ("ize", "", m1),
        ],
    )
}

fn step5a(w: &[char]) -> Word {
    if ends_with(w, "e") {
        let stem = cut(w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w.to_vec()
}

fn step5b(w: &[char]) -> Word {
    let drop_one: Word = if w.is_empty() {
        Vec::new()
    } else {
        w[..w.len() - 1].to_vec()
    };
    let cond = move |_: &[char]| measure_gt_1(&drop_one);
    apply_rules(w, &[("ll", "l", &cond)])
}

/// Stems `word` like nltk's `PorterStemmer().stem(word)` (default `NLTK_EXTENSIONS` mode,
/// `to_lowercase=True`).
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(&(_, s)) = IRREGULAR.iter().find(|(form, _)| *form == lower) {
        return s.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Word = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(&w);
    }
    w.into_iter().collect()
}
