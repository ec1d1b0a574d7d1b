//! Cleaning rules of the `prepare` pipeline, applied to one document at a time.
//!
//! [`normalize`]: line breaks become `\n` (`\r\n` and a lone `\r`), control characters
//! (Unicode category Cc) other than `\n` and `\t` are removed, and so is U+FEFF (byte order
//! mark / zero-width no-break space); then the text is put in Unicode NFC.
//!
//! [`Cleaner`]: takes documents as pieces (see [`crate::data::pieces`]), normalises each,
//! drops documents shorter than `min_chars` characters (counted after trimming whitespace)
//! and exact duplicates of a piece already kept. [`can_cut_between`] says where a text can
//! be cut so that normalising the parts gives the normalised whole.
//!
//! Memory: duplicates are found by a 128-bit key per distinct kept piece (the first 16
//! bytes of the SHA-256 of its normalised text), so the cleaner holds 16 bytes of key per
//! kept piece, about 20–40 bytes with the hash table's slack (e.g. 100 M pieces:
//! 1.6 GB of keys, 2–4 GB in all). With `dedup = false` it holds nothing. The chance that two
//! different pieces share a key is about n² / 2¹²⁹: nil for any real corpus.
//!
//! Speed: ASCII text without `\r` or control characters (and more generally text whose
//! characters are all below U+0300) is recognised by one byte scan and only copied; the
//! character-level pass and the NFC pass run only where they can change something.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};
use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// Cleaning settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanOptions {
    /// Documents with fewer characters (after normalisation, whitespace trimmed) are dropped.
    pub min_chars: usize,
    /// Drop exact duplicates (after normalisation).
    pub dedup: bool,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            min_chars: 64,
            dedup: true,
        }
    }
}

/// What the cleaner did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CleanStats {
    /// Pieces kept (a document of one piece is one piece).
    pub kept: u64,
    /// Documents dropped for being shorter than `min_chars`.
    pub dropped_short: u64,
    /// Pieces dropped as exact duplicates of a piece already kept.
    pub dropped_duplicate: u64,
    /// Control characters (and U+FEFF) removed, over all documents seen.
    pub control_chars_removed: u64,
}

/// What one byte scan found out about a text.
struct Scan {
    /// A byte that may start something the character pass changes: a control byte other
    /// than `\n` `\t` (this includes `\r`), DEL, 0xC2 (maybe a C1 control U+0080..U+009F) or
    /// 0xEF (maybe U+FEFF).
    maybe_filter: bool,
    /// A byte >= 0xCC: a character at or above U+0300 (where NFC can change something).
    maybe_denormal: bool,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut filter = false;
    let mut high = false;
    // Branch-free over chunks so the compiler vectorises it; stop early once both are known.
    for chunk in bytes.chunks(256) {
        let mut f = false;
        let mut h = false;
        for &b in chunk {
            f |= (b < 0x20 && b != b'\n' && b != b'\t') | (b == 0x7F) | (b == 0xC2) | (b == 0xEF);
            h |= b >= 0xCC;
        }
        filter |= f;
        high |= h;
        if filter && high {
            break;
        }
    }
    Scan {
        maybe_filter: filter,
        maybe_denormal: high,
    }
}

/// Whether the character pass removes or changes `c` (`\r` included).
fn is_filtered(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{FEFF}'
}

/// The line-break and control-character pass: `None` if it changes nothing, else the new
/// text and the number of characters removed. Unchanged runs are copied whole.
fn filter(text: &str) -> Option<(String, u64)> {
    let mut out: Option<String> = None;
    let mut removed = 0u64;
    let mut flushed = 0; // text[..flushed] is accounted for in `out`
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if !is_filtered(c) {
            continue;
        }
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[flushed..i]);
        flushed = i + c.len_utf8();
        if c == '\r' {
            if iter.peek().map(|&(_, n)| n) != Some('\n') {
                o.push('\n');
            }
        } else {
            removed += 1;
        }
    }
    let mut out = out?;
    out.push_str(&text[flushed..]);
    Some((out, removed))
}

/// NFC, applied only to the pieces (between boundaries) that quick check does not pass;
/// everything else is copied as is. `None` if the text is already NFC.
fn to_nfc(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut flushed = 0; // text[..flushed] is accounted for in `out`
    let mut piece = 0; // start of the current piece
    let mut dirty = false; // the current piece may not be NFC
    let mut last_ccc = 0u8;
    let fix = |out: &mut Option<String>, flushed: &mut usize, a: usize, b: usize| {
        let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
        o.push_str(&text[*flushed..a]);
        o.extend(text[a..b].nfc());
        *flushed = b;
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            // ASCII: a boundary.
            if dirty {
                fix(&mut out, &mut flushed, piece, i);
                dirty = false;
            }
            piece = i;
            last_ccc = 0;
            i += 1;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        // Characters below U+0300 are all NFC_QC=Yes with combining class 0 (pinned by a
        // test), so need no lookup.
        let (ccc, quick_yes) = if c < '\u{300}' {
            (0, true)
        } else {
            let yes = is_nfc_quick(std::iter::once(c)) == IsNormalized::Yes;
            (canonical_combining_class(c), yes)
        };
        if ccc == 0 && quick_yes {
            // A stable code point (UAX #15): nothing before it composes with it or reorders
            // past it, so the text can be cut here and each piece put in NFC on its own.
            if dirty {
                fix(&mut out, &mut flushed, piece, i);
                dirty = false;
            }
            piece = i;
            last_ccc = 0;
        } else {
            // A mark, or a character that may compose with what precedes it.
            dirty |= !quick_yes || ccc < last_ccc;
            last_ccc = ccc;
        }
        i += c.len_utf8();
    }
    if dirty {
        fix(&mut out, &mut flushed, piece, bytes.len());
    }
    let mut out = out?;
    out.push_str(&text[flushed..]);
    Some(out)
}

/// Normalises one document: newlines (\r\n and lone \r → \n), removes control characters
/// other than \n and \t (Unicode category Cc) and U+FEFF, Unicode NFC. Returns the text and
/// how many characters were removed (control characters and U+FEFF; a `\r` turned into or
/// merged with `\n` is not counted).
pub fn normalize(text: &str) -> (String, u64) {
    let s = scan(text.as_bytes());
    let (filtered, removed): (Cow<str>, u64) = match s.maybe_filter.then(|| filter(text)) {
        Some(Some((t, n))) => (t.into(), n),
        _ => (text.into(), 0),
    };
    // Text made only of characters below U+0300 (no byte >= 0xCC) is already NFC.
    let out = match s.maybe_denormal.then(|| to_nfc(&filtered)) {
        Some(Some(t)) => t,
        _ => filtered.into_owned(),
    };
    (out, removed)
}

/// Whether text may be cut between the characters `before` and `after` so that cleaning each
/// side on its own gives exactly the cleaning of the whole (what streaming a document in
/// pieces relies on):
///
/// - not between `\r` and `\n`: the pair is one line break, each half would become one;
/// - and either `before` is a line break (`\n`, or `\r`, which becomes one): a starter that
///   composes with nothing and blocks every mark after it from what precedes it;
/// - or `after` is kept by the character pass and is a stable code point (combining class 0,
///   NFC_QC=Yes, as in [`normalize`]'s NFC pass): nothing before it composes with it or
///   reorders past it. A `\r` counts as the `\n` it becomes. (A removed control character
///   is not such a point: removing it can join a base letter with a mark that follows.)
pub fn can_cut_between(before: char, after: char) -> bool {
    if before == '\r' && after == '\n' {
        return false;
    }
    if before == '\n' || before == '\r' || after == '\r' {
        return true;
    }
    if is_filtered(after) {
        return false;
    }
    after < '\u{300}' // all NFC_QC=Yes with class 0 (pinned by a test)
        || (canonical_combining_class(after) == 0
            && is_nfc_quick(std::iter::once(after)) == IsNormalized::Yes)
}

/// The full SHA-256 of a text.
fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A stable 64-bit hash of a document's text (for the deterministic train/val/test split):
/// first 8 bytes of sha256, little-endian.
pub fn document_hash(text: &str) -> u64 {
    let d = sha256(text);
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Hashes the dedup keys (already uniformly random) by folding them to 64 bits.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 ^= (k as u64) ^ ((k >> 64) as u64);
    }
}

/// A cleaned piece of a document, ready to be split and encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct CleanPiece {
    pub text: String,
    /// [`document_hash`] of `text`: the key of the train/val/test split.
    pub hash: u64,
    /// The document it belongs to, numbered from 0 in the order the cleaner saw them.
    pub document: u64,
    /// Its place in the document (0 = first), counting pieces dropped as duplicates, so a
    /// piece continues the text of the piece `(document, index - 1)` and of no other.
    pub index: u64,
}

/// The document being cleaned.
#[derive(Default)]
struct Current {
    document: u64,
    /// Its trimmed length so far has reached `min_chars`: its pieces pass as they come.
    long_enough: bool,
    /// Until then, its normalised pieces (with their index) wait here.
    held: Vec<(String, u64)>,
    chars: TrimmedChars,
}

/// Counts the characters of a text given in parts, as `text.trim().chars().count()` would.
#[derive(Default)]
struct TrimmedChars {
    started: bool,
    count: usize,
    /// Whitespace seen since the last other character (counted once something follows it).
    trailing: usize,
}

impl TrimmedChars {
    /// Adds the next part; whether the count has reached `min` (looks no further than that).
    fn add(&mut self, part: &str, min: usize) -> bool {
        for c in part.chars() {
            if self.count >= min {
                break;
            }
            if !c.is_whitespace() {
                self.started = true;
                self.count += self.trailing + 1;
                self.trailing = 0;
            } else if self.started {
                self.trailing += 1;
            }
        }
        self.count >= min
    }
}

/// Stateful cleaner of documents given in pieces (see [`crate::data::pieces`]): normalises
/// each piece, drops documents shorter than `min_chars` characters (counted over the whole
/// document after normalisation, whitespace trimmed at its two ends) and exact duplicate
/// pieces, by a 128-bit key of the normalised text (first 16 bytes of its SHA-256, stable
/// across runs and platforms). A document of one piece is cleaned exactly as a whole.
///
/// Pieces are the unit of de-duplication because they are what streams: a duplicate must be
/// known when its piece is seen, before the rest of its document is read. Equal documents
/// are cut at the same places, so a repeated document still goes whole; so does a repeated
/// piece inside other text. Memory: 16 bytes of key per distinct kept piece (see the module
/// doc), plus the pieces of a document held back until it reaches `min_chars` (normally the
/// first piece reaches it).
pub struct Cleaner {
    opts: CleanOptions,
    seen: HashSet<u128, BuildHasherDefault<KeyHasher>>,
    stats: CleanStats,
    current: Current,
    documents: u64,
}

impl Cleaner {
    pub fn new(opts: CleanOptions) -> Self {
        Cleaner {
            opts,
            seen: HashSet::default(),
            stats: CleanStats::default(),
            current: Current::default(),
            documents: 0,
        }
    }

    /// Takes the next piece of a document: `index` 0 starts a new document, `last` ends it;
    /// a document's pieces come in order. Returns the cleaned pieces this releases, in order:
    /// none while the document is still shorter than `min_chars` (or if it ends so, when its
    /// held pieces are dropped), then every kept piece.
    pub fn push(&mut self, raw: &str, index: u64, last: bool) -> Vec<CleanPiece> {
        if index == 0 {
            self.current = Current {
                document: self.documents,
                ..Current::default()
            };
            self.documents += 1;
        }
        let (text, removed) = normalize(raw);
        self.stats.control_chars_removed += removed;
        let mut out = Vec::new();
        let cur = &mut self.current;
        if !cur.long_enough {
            cur.long_enough = cur.chars.add(&text, self.opts.min_chars);
            cur.held.push((text, index));
            if !cur.long_enough {
                if last {
                    cur.held.clear();
                    self.stats.dropped_short += 1;
                }
                return out;
            }
            for (text, index) in std::mem::take(&mut cur.held) {
                out.extend(self.keep(text, index));
            }
        } else {
            out.extend(self.keep(text, index));
        }
        out
    }

    /// De-duplicates one normalised piece of the current document.
    fn keep(&mut self, text: String, index: u64) -> Option<CleanPiece> {
        let digest = sha256(&text);
        if self.opts.dedup {
            let key = u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"));
            if !self.seen.insert(key) {
                self.stats.dropped_duplicate += 1;
                return None;
            }
        }
        self.stats.kept += 1;
        Some(CleanPiece {
            text,
            hash: u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")),
            document: self.current.document,
            index,
        })
    }

    /// Cleans a whole document given as one piece: its text, or `None` if it is dropped.
    pub fn clean(&mut self, raw: &str) -> Option<String> {
        self.clean_hashed(raw).map(|(text, _)| text)
    }

    /// As [`Cleaner::clean`], also returning [`document_hash`] of the cleaned text (computed
    /// from the same SHA-256 as the dedup key, so the caller need not hash it again).
    pub fn clean_hashed(&mut self, raw: &str) -> Option<(String, u64)> {
        let piece = self.push(raw, 0, true).pop()?;
        Some((piece.text, piece.hash))
    }

    pub fn stats(&self) -> &CleanStats {
        &self.stats
    }

    /// Distinct pieces remembered for dedup.
    pub fn distinct(&self) -> usize {
        self.seen.len()
    }
}
