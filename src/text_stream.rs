//! The text of a generation as its tokens arrive, decoded incrementally: what `generate`
//! prints and what `serve` streams.
//!
//! Decoding all tokens again for every new one costs O(n) per token, O(n²) in all. Here only
//! a short window of recent tokens is decoded (the prefix-offset / read-offset technique of
//! streaming detokenizers): the window holds the tokens of the last piece already in the
//! text (the *prefix*, kept so that decoders that treat a first token specially, e.g. strip
//! its leading space, decode the rest the same) and the tokens after it (*pending*). Each
//! push decodes the window; the part after the prefix's own text is the pending text. Once it
//! no longer ends in U+FFFD (an unfinished UTF-8 character, or bytes still unknown) it is
//! final: it joins the text and the pending tokens become the prefix. Until then, everything
//! before its trailing U+FFFDs joins the text already (a byte-level decoder can only change
//! its last, unfinished character), so the text shows up as early as decoding everything
//! would show it.
//!
//! A generation may go on producing real U+FFFD characters, so that the pending text keeps
//! ending in one; the window would then grow without bound. After [`STALL_TOKENS`] pending
//! tokens the window is cut instead at a recent token boundary where decoding the two sides
//! apart gives the same text as decoding them together: lossy UTF-8 decoding then has no
//! character open across the boundary, now or later.
//!
//! Stop strings: a stop string can only complete in new text, so each piece of new text is
//! searched together with the longest stop string's length of what precedes it, not the
//! whole text. The text is cut before the first stop string; the possible start of a stop
//! string at the end of the text is held back from the pieces handed out until it is
//! decided.
//!
//! The result is exactly [`Tokenizer::decode`] of all the tokens (cut at the first stop
//! string) for decoders whose text for a sequence starts with their text for any prefix
//! ending in a finished character: byte-level BPE (GPT-2) and the usual others. The work per
//! token is bounded by the window, whatever the length of the generation ([`StreamWork`]
//! counts it).

use crate::data::Tokenizer;
use crate::error::Result;

/// Pending tokens after which a window whose text still ends in U+FFFD is cut (an
/// unfinished UTF-8 character spans at most 4 bytes, so at most 4 tokens).
pub const STALL_TOKENS: usize = 6;

/// Recent token boundaries tried when cutting a stalled window.
const CUT_CANDIDATES: usize = 4;

const REPLACEMENT: char = '\u{FFFD}';

/// What a [`TextStream`] has done so far: the measure of its cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamWork {
    /// Tokens handed to [`Tokenizer::decode`], all calls together.
    pub decoded_tokens: u64,
    /// Bytes of text searched for stop strings, all stop strings together.
    pub scanned_bytes: u64,
    /// The most tokens decoded in one call (the largest window).
    pub max_window: usize,
}

/// The completion's text as tokens arrive: cut at the first stop string, and handed out in
/// pieces that never end in an unfinished UTF-8 character or a possible start of a stop
/// string.
pub struct TextStream {
    tokenizer: Tokenizer,
    stops: Vec<String>,
    /// Length in bytes of the longest stop string.
    longest_stop: usize,
    /// The text so far (final: later tokens never change it).
    text: String,
    /// Bytes of `text` handed out.
    sent: usize,
    /// `window[..read]`: the prefix (tokens whose text is all in `text`); `window[read..]`:
    /// the pending tokens.
    window: Vec<u32>,
    read: usize,
    /// The prefix's decoded text.
    prefix_text: String,
    /// Bytes of the pending text already in `text`.
    pending_in_text: usize,
    stopped: bool,
    tokens: usize,
    work: StreamWork,
}

impl TextStream {
    /// A stream decoding with `tokenizer` (a cheap clone is kept), stopping at the first of
    /// `stops` (empty strings are ignored).
    pub fn new(tokenizer: &Tokenizer, stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        TextStream {
            tokenizer: tokenizer.clone(),
            longest_stop: stops.iter().map(String::len).max().unwrap_or(0),
            stops,
            text: String::new(),
            sent: 0,
            window: Vec::new(),
            read: 0,
            prefix_text: String::new(),
            pending_in_text: 0,
            stopped: false,
            tokens: 0,
            work: StreamWork::default(),
        }
    }

    /// Adds a token; returns the text that may be handed out now (possibly empty). Once a
    /// stop string appeared, [`stopped`](Self::stopped) is true and further tokens are
    /// ignored.
    pub fn push(&mut self, id: u32) -> Result<String> {
        if self.stopped {
            return Ok(String::new());
        }
        self.tokens += 1;
        self.window.push(id);
        let decoded = self.decode(0, self.window.len())?;
        if let Some(pending) = decoded.strip_prefix(self.prefix_text.as_str()) {
            let finished = !pending.ends_with(REPLACEMENT);
            let stable = pending.trim_end_matches(REPLACEMENT).len();
            self.add_pending(pending, stable);
            if finished {
                self.window.drain(..self.read);
                self.read = self.window.len();
                self.prefix_text = self.decode(0, self.read)?;
                self.pending_in_text = 0;
            } else if self.window.len() - self.read >= STALL_TOKENS {
                self.cut_stalled_window(&decoded)?;
            }
        }
        let mut end = self.text.len();
        if !self.stopped {
            end -= held_back(&self.text, &self.stops);
        }
        Ok(self.take(end))
    }

    /// Ends the stream: the pending text joins the text (an unfinished character as
    /// U+FFFD, as [`Tokenizer::decode`] gives it); returns what was not handed out yet.
    pub fn finish(&mut self) -> Result<String> {
        if !self.stopped && self.read < self.window.len() {
            let decoded = self.decode(0, self.window.len())?;
            let pending = match decoded.strip_prefix(self.prefix_text.as_str()) {
                Some(p) => p.to_string(),
                // A decoder whose text is not prefix-stable: the pending tokens alone.
                None => self.decode(self.read, self.window.len())?,
            };
            self.add_pending(&pending, pending.len());
            self.window.clear();
            self.read = 0;
            self.prefix_text.clear();
            self.pending_in_text = 0;
        }
        Ok(self.take(self.text.len()))
    }

    /// Whether a stop string appeared (the text is cut before it).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Tokens taken (up to the one that completed a stop string).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The text so far (all of it after [`finish`](Self::finish)).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The work done so far.
    pub fn work(&self) -> StreamWork {
        self.work
    }

    fn decode(&mut self, from: usize, to: usize) -> Result<String> {
        let ids = &self.window[from..to];
        self.work.decoded_tokens += ids.len() as u64;
        self.work.max_window = self.work.max_window.max(ids.len());
        self.tokenizer.decode(ids)
    }

    /// Moves `pending[pending_in_text..stable]` into the text.
    fn add_pending(&mut self, pending: &str, stable: usize) {
        if stable > self.pending_in_text {
            if let Some(new) = pending.get(self.pending_in_text..stable) {
                self.append(new);
                self.pending_in_text = stable;
            }
        }
    }

    /// Appends final text and cuts the text at a stop string completed by it.
    fn append(&mut self, new: &str) {
        if self.stopped || new.is_empty() {
            return;
        }
        // Text before `old` held no stop string: one can only end in `new`.
        let old = self.text.len();
        self.text.push_str(new);
        if self.stops.is_empty() {
            return;
        }
        let mut from = old.saturating_sub(self.longest_stop.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hay = &self.text[from..];
        self.work.scanned_bytes += (hay.len() * self.stops.len()) as u64;
        if let Some(i) = self.stops.iter().filter_map(|s| hay.find(s.as_str())).min() {
            self.text.truncate(from + i);
            self.stopped = true;
        }
    }

    /// The pending text keeps ending in U+FFFD: move the window to a recent token boundary
    /// where the text of the two sides decoded apart is the text of the window, so no
    /// character is open across it. (None found: the window grows by one more token.)
    fn cut_stalled_window(&mut self, decoded: &str) -> Result<()> {
        let len = self.window.len();
        for cut in (self.read + 1..len).rev().take(CUT_CANDIDATES) {
            let before = self.decode(0, cut)?;
            let after = self.decode(cut, len)?;
            let joins = !after.is_empty()
                && before.len() + after.len() == decoded.len()
                && decoded.starts_with(&before)
                && decoded.ends_with(&after);
            let Some(piece) = before.strip_prefix(self.prefix_text.as_str()) else {
                continue;
            };
            if !joins {
                continue;
            }
            // Everything up to the cut is final.
            let piece = piece.to_string();
            self.add_pending(&piece, piece.len());
            self.pending_in_text = self.pending_in_text.saturating_sub(piece.len());
            self.window.drain(..self.read);
            self.read = cut - self.read;
            self.prefix_text = self.decode(0, self.read)?;
            return Ok(());
        }
        Ok(())
    }

    fn take(&mut self, end: usize) -> String {
        match self.text.get(self.sent..end) {
            Some(s) if !s.is_empty() => {
                let s = s.to_string();
                self.sent = end;
                s
            }
            _ => String::new(),
        }
    }
}

/// The longest suffix of `text` (on a char boundary) that is a proper prefix of a stop
/// string: it may still become one, so it is held back. Costs O(stop lengths²), not O(text).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
}
