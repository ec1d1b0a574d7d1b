//! Cutting a document into pieces: consecutive parts of about `budget` bytes that together
//! are the document. `prepare` cleans, splits and encodes a document a piece at a time, so
//! its memory stays flat in the size of a document as in the size of the corpus, and a
//! corpus of one large file still spreads over train/val/test (the split is by piece).
//!
//! A text longer than the budget ends its first piece within the last half of the budget,
//! at the last
//!
//! 1. paragraph break (a whitespace run holding two or more line breaks), else
//! 2. line break, else
//! 3. space between words, else
//! 4. place where cleaning allows a cut ([`can_cut_between`]: e.g. between two letters of a
//!    script written without spaces), else
//! 5. character boundary (only text of budget/2 bytes made of nothing but combining marks
//!    and control characters has no better place).
//!
//! A cut in a whitespace run goes before its last character (a `\r\n` counting as one
//! character, as cleaning makes it one `\n`), where it is also safe for cleaning. There GPT-2's
//! pre-tokenizer ends the run's tokens alike whether or not text follows, so for GPT-2-style
//! tokenizers the pieces of a cleaned document encode to the very tokens of the whole.
//!
//! The cut looks at no more than the first `budget + LOOKAHEAD` bytes, so how a text is cut
//! depends only on the text and the budget, not on how it is read (a `.txt` file streamed
//! plain or gzip'd, and a JSONL record holding the same text, are cut alike).

use super::clean::can_cut_between;

/// The default budget: 16 KiB, about 4,000 GPT-2 tokens. Small enough that a 1 MB file
/// gives some 70 pieces (so a 10% validation split of it is not left empty by chance), large
/// enough that a piece holds several training sequences of 1024 tokens.
pub const DEFAULT_PIECE_BYTES: usize = 16 << 10;

/// How far past the budget a cut looks (to see what follows a whitespace run at the budget).
pub const LOOKAHEAD: usize = 16;

/// Budgets below this are raised to it (the last half of the budget must hold a character).
const MIN_BUDGET: usize = 8;

/// How many bytes of a text [`first_piece_len`] looks at, at most.
pub fn view_len(budget: usize) -> usize {
    budget.max(MIN_BUDGET) + LOOKAHEAD
}

/// A whitespace run being scanned.
struct Run {
    /// Line breaks in it (`\r\n` counts once).
    breaks: u32,
    /// Where its last character (or last `\r\n`) starts, and the character before that.
    last: usize,
    before_last: Option<char>,
}

/// The length in bytes of the first piece of `text`: all of it if it fits in `budget`
/// bytes, else a character boundary in `budget/2 ..= budget`, chosen as the module says.
pub fn first_piece_len(text: &str, budget: usize) -> usize {
    let budget = budget.max(MIN_BUDGET);
    if text.len() <= budget {
        return text.len();
    }
    let view = &text[..text.floor_char_boundary(view_len(budget))];
    let hi = view.floor_char_boundary(budget);
    let lo = view.ceil_char_boundary(budget / 2);
    // Start at the whitespace run that reaches into the window, if any, to count its breaks.
    let start = view[..lo]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_whitespace())
        .last()
        .map_or(lo, |(i, _)| i);
    let in_window = |i: usize| (lo..=hi).contains(&i);
    // The last candidate of each level: paragraph, line, word.
    let mut best = [None::<usize>; 3];
    let mut prev = view[..start].chars().next_back();
    let mut run: Option<Run> = None;
    for (i, c) in view[start..].char_indices() {
        let i = start + i;
        if i > hi && run.is_none() {
            break;
        }
        if c.is_whitespace() {
            let joins_cr = c == '\n' && prev == Some('\r');
            let r = run.get_or_insert(Run {
                breaks: 0,
                last: i,
                before_last: prev,
            });
            if !joins_cr {
                r.last = i;
                r.before_last = prev;
                if c == '\n' || c == '\r' {
                    r.breaks += 1;
                }
            }
        } else if let Some(r) = run.take() {
            // The run is followed by text: a cut before its last character.
            let at = view[r.last..].chars().next().expect("inside the run");
            if in_window(r.last) && r.before_last.is_some_and(|b| can_cut_between(b, at)) {
                best[match r.breaks {
                    0 => 2,
                    1 => 1,
                    _ => 0,
                }] = Some(r.last);
            }
        }
        prev = Some(c);
    }
    if let Some(at) = best.into_iter().flatten().next() {
        return at;
    }
    // No whitespace to cut at: the last safe place, else the budget.
    let mut chars = view[..view.ceil_char_boundary(hi + 1)].char_indices().rev();
    let mut after = chars.next().map(|(_, c)| c);
    for (i, c) in chars {
        let at = i + c.len_utf8();
        if at < lo {
            break;
        }
        if after.is_some_and(|a| at <= hi && can_cut_between(c, a)) {
            return at;
        }
        after = Some(c);
    }
    hi
}

/// The pieces of a text held whole in memory (a JSONL record), in order; none for "".
pub fn pieces(text: &str, budget: usize) -> Pieces<'_> {
    Pieces { rest: text, budget }
}

/// Iterator of [`pieces`].
pub struct Pieces<'a> {
    rest: &'a str,
    budget: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (piece, rest) = self.rest.split_at(first_piece_len(self.rest, self.budget));
        self.rest = rest;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str, budget: usize) -> Vec<&str> {
        let parts: Vec<&str> = pieces(text, budget).collect();
        assert_eq!(parts.concat(), text);
        parts
    }

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(cut("abc def", 64), ["abc def"]);
        assert_eq!(pieces("", 64).count(), 0);
    }

    #[test]
    fn sizes_stay_within_the_last_half_of_the_budget() {
        let text = "word ".repeat(1000) + "\n\nmore text.\nand a line\n" + &"x".repeat(900);
        for budget in [8, 13, 64, 100, 1000] {
            let parts = cut(&text, budget);
            for p in &parts[..parts.len() - 1] {
                assert!(
                    (budget / 2..=budget).contains(&p.len()),
                    "budget {budget}: {}",
                    p.len()
                );
            }
            assert!(parts.last().unwrap().len() <= budget);
        }
    }

    #[test]
    fn prefers_paragraphs_then_lines_then_words() {
        // A paragraph break early in the window beats a line break and spaces later on.
        let text = format!(
            "{}\n\nPara two has words\nand lines {}",
            "a".repeat(40),
            "z".repeat(60)
        );
        assert_eq!(cut(&text, 64)[0], format!("{}\n", "a".repeat(40)));
        // No paragraph: the last line break; the cut goes before the run's last character.
        let text = format!("{} x\n  indented line {}", "a".repeat(30), "z".repeat(60));
        assert_eq!(cut(&text, 64)[0], format!("{} x\n ", "a".repeat(30)));
        // No line break: the last space.
        let text = format!("{} b c {}", "a".repeat(30), "z".repeat(60));
        assert_eq!(cut(&text, 64)[0], format!("{} b c", "a".repeat(30)));
        // CRLF paragraphs: the cut goes before the last \r\n, never inside one.
        let text = format!("{}\r\n\r\nNext {}", "a".repeat(30), "z".repeat(60));
        assert_eq!(cut(&text, 64)[0], format!("{}\r\n", "a".repeat(30)));
    }

    #[test]
    fn never_cuts_a_crlf_or_before_a_mark() {
        // Only CRLFs: a cut between them, never inside one.
        for p in cut(&"\r\n".repeat(100), 15) {
            assert!(p.starts_with('\r') && p.ends_with('\n'), "{p:?}");
        }
        // Letters with combining marks and no spaces: cuts before a base letter only.
        let text = "e\u{301}\u{323}".repeat(100);
        for p in cut(&text, 16) {
            assert!(p.starts_with('e') && !p.ends_with('e'), "{p:?}");
        }
        // A control character between a letter and its mark is removed by cleaning, which
        // then composes them: no cut before the control character either.
        let text = "e\u{0}\u{301}".repeat(100);
        for p in cut(&text, 16) {
            assert!(p.starts_with('e'), "{p:?}");
        }
    }

    #[test]
    fn the_cut_reads_no_further_than_the_lookahead() {
        let text = "alpha beta gamma\n\ndelta epsilon zeta eta theta\niota kappa ".repeat(20);
        for budget in [10, 40, 100, 333] {
            let n = first_piece_len(&text, budget);
            let view = &text[..budget + LOOKAHEAD + 1];
            assert_eq!(first_piece_len(view, budget), n, "budget {budget}");
        }
    }
}
