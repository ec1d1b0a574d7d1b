//! The tokenizer: GPT-2's byte-level BPE scheme, in three flavours, always saved as a standard
//! `tokenizer.json` that Hugging Face `tokenizers` / `transformers` read as it is:
//!
//! - [`Tokenizer::gpt2`]: the real GPT-2 tokenizer (r50k_base, 50,257 tokens), built offline
//!   from the ranks tiktoken-rs embeds, converted to a Hugging Face byte-level BPE;
//! - [`Tokenizer::train`]: a byte-level BPE trained on the corpus with the `tokenizers` crate;
//! - [`Tokenizer::load`]: an existing `tokenizer.json`.
//!
//! # Encoding
//!
//! `tokenizers` stays the definition of the ids; encoding goes through a faster path of our
//! own (`FastBpe`) whenever the tokenizer is GPT-2 shaped (no normalizer, ByteLevel
//! pre-tokenizer with GPT-2's regex and no prefix space, a plain BPE model over the 256 byte
//! symbols, no truncation or padding, added tokens without strip/single-word rules), which
//! covers all three flavours above. It does what `tokenizers` does, minus all the
//! bookkeeping ids don't need (normalized strings, alignments, offsets, `Token` strings):
//! added tokens are split out first (leftmost-longest, non-normalized tokens then normalized
//! ones, as `AddedVocabulary`), the text is split by a hand-written equivalent of GPT-2's
//! regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` (its
//! Unicode classes taken from the same regex engine), a piece that is a whole token BPE
//! reaches from its own bytes is looked up at once, and any other piece is merged pair by pair
//! with the lowest-ranked merge first, leftmost on ties (what `Word::merge_all` does). Other
//! tokenizers fall back to `tokenizers`' `encode_batch_fast` (no offsets).
//! The tests hold both paths, and tiktoken, to the same ids on varied text.
//!
//! Measured here (2 cores, data/shakespeare: 5.06 MB in 42 documents, `encode_batch` on both
//! cores): this path ~100 MB/s for GPT-2 and for a 2048-token BPE alike; tiktoken-rs
//! `encode_ordinary` ~11 MB/s; `tokenizers`' `encode_batch_fast` ~4.5 MB/s; Python
//! `tiktoken` `encode_ordinary_batch` ~15 MB/s, Python `tokenizers` `encode_batch` ~2.4 MB/s
//! (`cargo bench --bench tokenize`, `tools/bench_tokenizers.sh`). GPT-2 is therefore encoded
//! by this path too, not by tiktoken-rs; `Tokenizer::gpt2()` takes ~0.3 s once per process.
//!
//! # Threads
//!
//! Everything runs on rayon's global pool (`RAYON_NUM_THREADS` sets its size). `tokenizers`
//! 0.22 makes no pool of its own: its batch methods and the BPE trainer go through
//! `tokenizers::utils::parallelism` (`rayon_cond::CondIterator` over the global pool), which
//! `TOKENIZERS_PARALLELISM` switches: unset or any other value = parallel; `""`, `false`, `f`,
//! `off`, `no`, `n`, `0` = serial. [`Tokenizer::encode_batch`] follows the same switch, so one
//! variable governs both paths.

use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BpeTrainer, Merges, Vocab, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::utils::{parallelism, SysRegex};
use tokenizers::AddedToken;

use super::tokenizer_behaviour::{Behaviour, TokenizerDifference};
use crate::error::{Error, Result};

/// The document separator, a special token, as in GPT-2.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's id of `<|endoftext|>` (and its vocabulary size less one).
const GPT2_EOT: u32 = 50256;

/// Where a tokenizer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gpt2,
    Bpe,
    File,
}

/// A byte-level BPE tokenizer. Cloning is cheap (shared state).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    fast: Option<Arc<FastBpe>>,
    eot: u32,
    kind: Kind,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Refuses a BPE vocabulary that token ids cannot number or this machine cannot hold, before
/// any training: `tokenizers`' trainer reserves `vocab_size` entries up front (an id → token
/// list and a token → id map, 24-byte strings: at least 56 bytes per token) and aborts the
/// process when the allocator refuses.
fn check_bpe_vocab_size(vocab_size: usize) -> Result<()> {
    const TRAINER_BYTES_PER_TOKEN: u64 = 56;
    let max = u32::MAX as u64 + 1;
    if vocab_size as u64 > max {
        return Err(Error::Config(format!(
            "vocab_size ({vocab_size}) is more than {max}: token ids are 32-bit; choose a smaller vocabulary"
        )));
    }
    crate::memory::check(
        &format!("training a BPE vocabulary of {vocab_size} tokens"),
        (vocab_size as u64).checked_mul(TRAINER_BYTES_PER_TOKEN),
        "choose a smaller vocab_size",
    )
}

impl Tokenizer {
    /// Trains a byte-level BPE of `vocab_size` tokens (including the 256 byte tokens and
    /// `<|endoftext|>`) on the given texts.
    ///
    /// The texts are consumed as they come (from several threads) and only their word counts
    /// are kept, so `texts` can stream from a reader; but each text is pre-tokenized whole,
    /// which holds all of its words at once, at many times its size (one text of 20 MB took
    /// 2 GB), so give it pieces of documents ([`crate::data::pieces`]), not whole large ones.
    pub fn train<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        check_bpe_vocab_size(vocab_size)?;
        if vocab_size < 258 {
            return Err(Error::Config(format!(
                "vocab_size ({vocab_size}) must be at least 258: 256 byte tokens, <|endoftext|> and one merge"
            )));
        }
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        gpt2_pipeline(&mut inner);
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner.train(&mut trainer, texts).map_err(tk_err)?;
        Self::from_inner(inner, Kind::Bpe)
    }

    /// The GPT-2 tokenizer (r50k_base: 50,257 tokens, `<|endoftext|>` = 50256), offline.
    ///
    /// Built from the ranks tiktoken-rs embeds and converted to a Hugging Face byte-level BPE:
    /// the vocabulary spells each token's bytes with GPT-2's bytes-to-unicode mapping, and the
    /// merges are recovered from the ranks (for each multi-byte token in rank order, the pair
    /// of tokens that byte-pair merging of its bytes with lower-ranked merges ends at). The
    /// conversion is done once per process and cached.
    pub fn gpt2() -> Result<Self> {
        static GPT2: OnceLock<std::result::Result<Tokenizer, String>> = OnceLock::new();
        GPT2.get_or_init(|| {
            build_gpt2().map_err(|e| match e {
                Error::Tokenizer(msg) => msg,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(Error::Tokenizer)
    }

    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_inner(inner, Kind::File)
    }

    fn from_inner(inner: tokenizers::Tokenizer, kind: Kind) -> Result<Self> {
        let eot = inner
            .token_to_id(END_OF_TEXT)
            .ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no {END_OF_TEXT} token")))?;
        let json = inner.to_string(false).map_err(tk_err)?;
        let config: Value = serde_json::from_str(&json).map_err(tk_err)?;
        let fast = FastBpe::from_config(&config).map(Arc::new);
        Ok(Tokenizer {
            inner: Arc::new(inner),
            fast,
            eot,
            kind,
        })
    }

    /// Writes `tokenizer.json` (the text of [`Tokenizer::to_json`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?).map_err(|e| Error::io(path, e))
    }

    /// The `tokenizer.json` text, compact, as [`Tokenizer::save`] writes it.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    /// The sha256 of [`Tokenizer::to_json`], lowercase hex.
    pub fn sha256(&self) -> Result<String> {
        let digest = Sha256::digest(self.to_json()?.as_bytes());
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// How this tokenizer and `other` differ in what they do (encoding to ids, decoding
    /// ids), or `None` if they tokenize alike: the same vocabulary, merges, normalizer,
    /// pre-tokenizer, decoder and added tokens, however their `tokenizer.json` is written
    /// (see [`crate::data::tokenizer_behaviour`]). Not [`Tokenizer::sha256`], which changes
    /// with formatting.
    pub fn difference(&self, other: &Tokenizer) -> Result<Option<TokenizerDifference>> {
        let (a, b) = (self.to_json()?, other.to_json()?);
        if a == b {
            return Ok(None);
        }
        let parse = |json: &str| serde_json::from_str::<Value>(json).map_err(tk_err);
        let (a, b) = (Behaviour::of(&parse(&a)?), Behaviour::of(&parse(&b)?));
        Ok(a.difference(&b))
    }

    /// Where the tokenizer came from, for logs and manifests: "gpt2", "bpe" or "file".
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Gpt2 => "gpt2",
            Kind::Bpe => "bpe",
            Kind::File => "file",
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// The id of a token given as its vocabulary string (byte-level spelling, e.g. "Ġthe"),
    /// or an added token such as `<|endoftext|>`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes one text, adding nothing. A whole `<|endoftext|>` in the text is the special
    /// token, as in `tokenizers` (tiktoken's `encode_with_special_tokens`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.fast {
            Some(fast) => Ok(fast.encode(text, &mut MissCache::default())),
            None => Ok(self
                .inner
                .encode_fast(text, false)
                .map_err(tk_err)?
                .get_ids()
                .to_vec()),
        }
    }

    /// Encodes many documents in parallel, each without adding anything; one id vector per
    /// document, in order.
    pub fn encode_batch(&self, docs: &[String]) -> Result<Vec<Vec<u32>>> {
        let Some(fast) = &self.fast else {
            return self.encode_batch_reference(docs);
        };
        Ok(if parallelism::get_parallelism() {
            // A few runs of documents per thread, each with one cache: many small documents
            // (pieces) then share their caches as one large document would.
            let run = docs.len().div_ceil(rayon::current_num_threads());
            docs.par_iter()
                .with_min_len(run.max(1))
                .map_init(MissCache::default, |cache, d| fast.encode(d, cache))
                .collect()
        } else {
            let mut cache = MissCache::default();
            docs.iter().map(|d| fast.encode(d, &mut cache)).collect()
        })
    }

    /// [`Tokenizer::encode_batch`] done by `tokenizers` itself (`encode_batch_fast`: no
    /// offsets), whatever the tokenizer: the reference the fast path is tested against.
    pub fn encode_batch_reference(&self, docs: &[String]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = docs.iter().map(|s| s.as_str()).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, false)
            .map_err(tk_err)?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }
}

/// GPT-2's normalizer-free pipeline: ByteLevel pre-tokenizer (no prefix space, GPT-2 regex),
/// ByteLevel post-processor (offsets untouched) and decoder.
fn gpt2_pipeline(inner: &mut tokenizers::Tokenizer) {
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_post_processor(Some(ByteLevel::new(false, false, true)));
    inner.with_decoder(Some(ByteLevel::new(false, true, true)));
}

/// GPT-2's bytes-to-unicode mapping: printable Latin-1 bytes stand for themselves, the others
/// for 256, 257, ... in byte order.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        out[b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

fn build_gpt2() -> Result<Tokenizer> {
    let core = tiktoken_rs::r50k_base().map_err(tk_err)?;
    let tokens = (0..GPT2_EOT)
        .map(|rank| core.decode_bytes(&[rank]))
        .collect::<std::result::Result<Vec<Vec<u8>>, _>>()
        .map_err(|e| Error::Tokenizer(format!("r50k_base has no token {}", e.token)))?;
    drop(core);
    let ranks: FxMap<&[u8], u32> = tokens
        .iter()
        .enumerate()
        .map(|(rank, t)| (t.as_slice(), rank as u32))
        .collect();
    if ranks.len() != tokens.len() {
        return Err(Error::Tokenizer("r50k_base has duplicate tokens".into()));
    }
    let chars = byte_chars();
    let spell = |bytes: &[u8]| bytes.iter().map(|&b| chars[b as usize]).collect::<String>();

    let mut merges: Merges = Vec::with_capacity(tokens.len());
    for (rank, token) in tokens.iter().enumerate() {
        if token.len() < 2 {
            continue;
        }
        let split = merge_split(&ranks, token, rank as u32).ok_or_else(|| {
            Error::Tokenizer(format!(
                "r50k_base token {rank} is not a merge of two tokens"
            ))
        })?;
        merges.push((spell(&token[..split]), spell(&token[split..])));
    }
    let mut vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(rank, t)| (spell(t), rank as u32))
        .collect();
    vocab.insert(END_OF_TEXT.to_string(), GPT2_EOT);

    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(tk_err)?;
    let mut inner = tokenizers::Tokenizer::new(model);
    gpt2_pipeline(&mut inner);
    inner.add_special_tokens(&[AddedToken::from(END_OF_TEXT, true)]);
    let tok = Tokenizer::from_inner(inner, Kind::Gpt2)?;
    if tok.eot != GPT2_EOT || tok.vocab_size() != GPT2_EOT as usize + 1 || tok.fast.is_none() {
        return Err(Error::Tokenizer(
            "the converted GPT-2 tokenizer is malformed".into(),
        ));
    }
    Ok(tok)
}

/// Byte-pair merges `token`'s bytes with the merges ranked below `max_rank` (tiktoken's rule:
/// the adjacent pair whose concatenation has the lowest rank first); returns where the two
/// parts it ends at meet, if it ends at two.
fn merge_split(ranks: &FxMap<&[u8], u32>, token: &[u8], max_rank: u32) -> Option<usize> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = ranks.get(&token[bounds[i]..bounds[i + 2]]) {
                if r < max_rank && best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    (bounds.len() == 3).then(|| bounds[1])
}

// ---------------------------------------------------------------------------------------------
// The fast path.

/// FxHash (rustc's): a multiply-rotate hash, much faster than SipHash on short keys.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// What GPT-2's regex sees in a character.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Class {
    Other = 0,
    Letter = 1,
    Number = 2,
    Space = 3,
}

/// `\p{L}`, `\p{N}` and `\s` for every code point, 2 bits each, computed once with the regex
/// engine `tokenizers` uses (so both agree on the Unicode version).
struct CharClasses {
    ascii: [Class; 128],
    bits: Vec<u8>,
}

impl CharClasses {
    fn get() -> &'static CharClasses {
        static CLASSES: OnceLock<CharClasses> = OnceLock::new();
        CLASSES.get_or_init(CharClasses::build)
    }

    fn build() -> CharClasses {
        let all: String = (0..=char::MAX as u32).filter_map(char::from_u32).collect();
        let mut bits = vec![0u8; (char::MAX as usize + 1).div_ceil(4)];
        for (pattern, class) in [
            (r"\p{L}+", Class::Letter),
            (r"\p{N}+", Class::Number),
            (r"\s+", Class::Space),
        ] {
            let re = SysRegex::new(pattern).expect("valid class regex");
            for (start, end) in re.find_iter(&all) {
                for c in all[start..end].chars() {
                    let cp = c as usize;
                    bits[cp / 4] |= (class as u8) << ((cp % 4) * 2);
                }
            }
        }
        let mut ascii = [Class::Other; 128];
        for (cp, slot) in ascii.iter_mut().enumerate() {
            *slot = Self::from_bits(&bits, cp);
        }
        CharClasses { ascii, bits }
    }

    #[inline]
    fn from_bits(bits: &[u8], cp: usize) -> Class {
        match (bits[cp / 4] >> ((cp % 4) * 2)) & 3 {
            1 => Class::Letter,
            2 => Class::Number,
            3 => Class::Space,
            _ => Class::Other,
        }
    }

    /// The class and UTF-8 length of the character starting at byte `i` of `s`.
    #[inline]
    fn at(&self, s: &str, i: usize) -> (Class, usize) {
        let b = s.as_bytes()[i];
        if b < 0x80 {
            return (self.ascii[b as usize], 1);
        }
        let c = s[i..].chars().next().expect("char boundary");
        (Self::from_bits(&self.bits, c as usize), c.len_utf8())
    }

    /// Calls `f` with each piece of GPT-2's pre-tokenization of `s`: the matches of
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    #[inline]
    fn split<'a>(&self, s: &'a str, mut f: impl FnMut(&'a str)) {
        let b = s.as_bytes();
        let n = b.len();
        let mut i = 0;
        while i < n {
            // 's 't 're 've 'm 'll 'd
            if b[i] == b'\'' && i + 1 < n {
                let len = match (b[i + 1], b.get(i + 2)) {
                    (b's' | b't' | b'm' | b'd', _) => 2,
                    (b'r' | b'v', Some(b'e')) | (b'l', Some(b'l')) => 3,
                    _ => 0,
                };
                if len > 0 {
                    f(&s[i..i + len]);
                    i += len;
                    continue;
                }
            }
            let (first, first_len) = self.at(s, i);
            // A space directly before a letter, digit or other character joins its run.
            let (class, run_start) = if b[i] == b' ' && i + 1 < n {
                match self.at(s, i + 1).0 {
                    Class::Space => (Class::Space, i),
                    c => (c, i + 1),
                }
            } else {
                (first, i)
            };
            if class != Class::Space {
                let mut j = run_start;
                while j < n {
                    let (c, len) = self.at(s, j);
                    if c != class {
                        break;
                    }
                    j += len;
                }
                f(&s[i..j]);
                i = j;
            } else {
                // Whitespace: all of it at the end of the text; before anything else, all but
                // its last character (which may start the next piece); a single one alone.
                let mut j = i + first_len;
                let mut last = i;
                while j < n {
                    let (c, len) = self.at(s, j);
                    if c != Class::Space {
                        break;
                    }
                    last = j;
                    j += len;
                }
                let end = if j == n || last == i { j } else { last };
                f(&s[i..end]);
                i = end;
            }
        }
    }
}

/// Added tokens that are split out before pre-tokenization: (content, id).
type AddedSet = Vec<(String, u32)>;

/// A GPT-2-shaped byte-level BPE, for ids only (see the module docs).
struct FastBpe {
    classes: &'static CharClasses,
    /// The token of each byte.
    byte_ids: [u32; 256],
    /// (left id << 32 | right id) → (rank << 32 | merged id).
    merges: FxMap<u64, u64>,
    /// Pieces whose BPE is a single token, by their bytes.
    words: PieceMap<Box<[u8]>, u32>,
    /// Added tokens matched on the raw text, then those matched on the normalized text
    /// (the same text here: there is no normalizer).
    added: [AddedSet; 2],
}

/// The BPE of pieces that are not whole tokens, for one batch of text (pieces borrow it).
#[derive(Default)]
struct MissCache<'a> {
    /// A piece's ids: `ids[start..end]`.
    map: PieceMap<&'a [u8], (u32, u32)>,
    ids: Vec<u32>,
}

/// A map keyed by pieces of text: those of up to 15 bytes packed into a `u128` (hashing and
/// comparing them is a few integer operations), longer ones by their bytes.
struct PieceMap<K, V> {
    short: FxMap<u128, V>,
    long: FxMap<K, V>,
}

impl<K, V> Default for PieceMap<K, V> {
    fn default() -> Self {
        PieceMap {
            short: FxMap::default(),
            long: FxMap::default(),
        }
    }
}

/// The bytes of a piece of at most 15 bytes and its length, as one number.
#[inline]
fn short_key(bytes: &[u8]) -> Option<u128> {
    if bytes.len() > 15 {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[15] = bytes.len() as u8;
    Some(u128::from_le_bytes(buf))
}

impl MissCache<'_> {
    /// Emptied when its ids would pass this (1 MB of ids, a few MB in all).
    const MAX_IDS: usize = 1 << 18;
}

/// Pieces longer than this are merged with a heap instead of linear scans.
const SCAN_MAX: usize = 64;

impl FastBpe {
    /// Builds the fast path from a `tokenizer.json` value, or `None` if the tokenizer is not
    /// GPT-2 shaped (then `tokenizers` does the encoding).
    fn from_config(config: &Value) -> Option<FastBpe> {
        let null_or = |v: &Value, ok: &dyn Fn(&Value) -> bool| v.is_null() || ok(v);
        let empty_str = |v: &Value| v.as_str() == Some("");
        if !config["normalizer"].is_null()
            || !config["truncation"].is_null()
            || !config["padding"].is_null()
        {
            return None;
        }
        let pre = &config["pre_tokenizer"];
        if pre["type"] != "ByteLevel"
            || pre["add_prefix_space"] != false
            || pre["use_regex"] == false
        {
            return None;
        }
        let model = &config["model"];
        if model["type"] != "BPE"
            || !model["dropout"].is_null()
            || !null_or(&model["continuing_subword_prefix"], &empty_str)
            || !null_or(&model["end_of_word_suffix"], &empty_str)
        {
            return None;
        }
        let ignore_merges = model["ignore_merges"] == true;

        let chars = byte_chars();
        let char_byte: HashMap<char, u8> = chars
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let vocab: HashMap<&str, u32> = model["vocab"]
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.as_str(), u32::try_from(v.as_u64()?).ok()?)))
            .collect::<Option<_>>()?;
        let mut byte_ids = [0u32; 256];
        for (b, c) in chars.iter().enumerate() {
            byte_ids[b] = *vocab.get(c.to_string().as_str())?;
        }
        let mut merges = FxMap::default();
        for (rank, m) in model["merges"].as_array()?.iter().enumerate() {
            let (a, b) = match m {
                Value::String(s) => s.split_once(' ')?,
                Value::Array(p) if p.len() == 2 => (p[0].as_str()?, p[1].as_str()?),
                _ => return None,
            };
            let new_id = *vocab.get(format!("{a}{b}").as_str())?;
            let key = (*vocab.get(a)? as u64) << 32 | *vocab.get(b)? as u64;
            // A duplicate merge keeps its last rank, as `tokenizers`' merge map does.
            merges.insert(key, (rank as u64) << 32 | new_id as u64);
        }

        let mut added: [AddedSet; 2] = [Vec::new(), Vec::new()];
        for t in config["added_tokens"].as_array()? {
            if t["lstrip"] == true || t["rstrip"] == true || t["single_word"] == true {
                return None;
            }
            let content = t["content"].as_str()?;
            if content.is_empty() {
                continue;
            }
            let id = u32::try_from(t["id"].as_u64()?).ok()?;
            added[usize::from(t["normalized"] == true)].push((content.to_string(), id));
        }

        let mut fast = FastBpe {
            classes: CharClasses::get(),
            byte_ids,
            merges,
            words: PieceMap::default(),
            added,
        };
        // Whole-piece lookups: with `ignore_merges` every token spelled in bytes (what
        // `tokenizers` does), otherwise only the tokens that BPE of their own bytes reaches.
        let mut words = PieceMap::default();
        let mut scratch = Vec::new();
        for (token, &id) in &vocab {
            let Some(bytes) = token
                .chars()
                .map(|c| char_byte.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
            else {
                continue;
            };
            if !ignore_merges {
                scratch.clear();
                fast.bpe(&bytes, &mut scratch);
                if scratch != [id] {
                    continue;
                }
            }
            match short_key(&bytes) {
                Some(k) => words.short.insert(k, id),
                None => words.long.insert(bytes.into_boxed_slice(), id),
            };
        }
        fast.words = words;
        Some(fast)
    }

    /// The ids of `text`.
    fn encode<'a>(&self, text: &'a str, cache: &mut MissCache<'a>) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out, cache);
        out
    }

    /// Appends the ids of `text`.
    fn encode_into<'a>(&self, text: &'a str, out: &mut Vec<u32>, cache: &mut MissCache<'a>) {
        self.split_added(&self.added[0], text, out, &mut |seg, out| {
            self.split_added(&self.added[1], seg, out, &mut |seg, out| {
                self.encode_plain(seg, out, cache)
            })
        });
    }

    /// Splits out the added tokens of `set` (leftmost-longest, as aho-corasick's
    /// `LeftmostLongest`), pushing their ids and handing the text between them to `rest`.
    fn split_added<'a>(
        &self,
        set: &AddedSet,
        text: &'a str,
        out: &mut Vec<u32>,
        rest: &mut dyn FnMut(&'a str, &mut Vec<u32>),
    ) {
        if set.is_empty() {
            return rest(text, out);
        }
        let find = |from: usize, content: &str| {
            text[from..].find(content).map_or(usize::MAX, |p| p + from)
        };
        let mut next: Vec<usize> = set.iter().map(|(c, _)| find(0, c)).collect();
        let mut pos = 0;
        loop {
            let mut best: Option<usize> = None;
            for (k, &start) in next.iter().enumerate() {
                if start == usize::MAX {
                    continue;
                }
                best = match best {
                    Some(b)
                        if next[b] < start
                            || (next[b] == start && set[b].0.len() >= set[k].0.len()) =>
                    {
                        Some(b)
                    }
                    _ => Some(k),
                };
            }
            let Some(k) = best else { break };
            let start = next[k];
            if start > pos {
                rest(&text[pos..start], out);
            }
            out.push(set[k].1);
            pos = start + set[k].0.len();
            for (j, p) in next.iter_mut().enumerate() {
                if *p != usize::MAX && *p < pos {
                    *p = find(pos, &set[j].0);
                }
            }
        }
        if pos < text.len() {
            rest(&text[pos..], out);
        }
    }

    /// Appends the ids of text that holds no added token.
    #[inline]
    fn encode_plain<'a>(&self, text: &'a str, out: &mut Vec<u32>, cache: &mut MissCache<'a>) {
        self.classes.split(text, |piece| {
            let bytes = piece.as_bytes();
            let key = short_key(bytes);
            let word = match key {
                Some(k) => self.words.short.get(&k),
                None => self.words.long.get(bytes),
            };
            if let Some(&id) = word {
                return out.push(id);
            }
            let cached = match key {
                Some(k) => cache.map.short.get(&k),
                None => cache.map.long.get(bytes),
            };
            if let Some(&(start, end)) = cached {
                return out.extend_from_slice(&cache.ids[start as usize..end as usize]);
            }
            let start = out.len();
            self.bpe(bytes, out);
            if cache.ids.len() + (out.len() - start) > MissCache::MAX_IDS {
                cache.map.short.clear();
                cache.map.long.clear();
                cache.ids.clear();
            }
            let span = (
                cache.ids.len() as u32,
                (cache.ids.len() + out.len() - start) as u32,
            );
            cache.ids.extend_from_slice(&out[start..]);
            match key {
                Some(k) => cache.map.short.insert(k, span),
                None => cache.map.long.insert(bytes, span),
            };
        });
    }

    #[inline]
    fn merge_of(&self, a: u32, b: u32) -> u64 {
        self.merges
            .get(&((a as u64) << 32 | b as u64))
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// Appends the BPE of one piece: start from its bytes, then repeatedly apply the
    /// lowest-ranked merge among adjacent pairs, leftmost first on ties.
    fn bpe(&self, bytes: &[u8], out: &mut Vec<u32>) {
        if bytes.len() > SCAN_MAX {
            return self.bpe_heap(bytes, out);
        }
        let mut syms = [0u32; SCAN_MAX];
        let mut ranks = [u64::MAX; SCAN_MAX];
        let mut n = bytes.len();
        for (s, &b) in syms.iter_mut().zip(bytes) {
            *s = self.byte_ids[b as usize];
        }
        for i in 0..n.saturating_sub(1) {
            ranks[i] = self.merge_of(syms[i], syms[i + 1]);
        }
        while n > 1 {
            let mut best = 0;
            for i in 1..n - 1 {
                if ranks[i] < ranks[best] {
                    best = i;
                }
            }
            if ranks[best] == u64::MAX {
                break;
            }
            syms[best] = ranks[best] as u32;
            syms.copy_within(best + 2..n, best + 1);
            ranks.copy_within(best + 1..n - 1, best);
            n -= 1;
            if best > 0 {
                ranks[best - 1] = self.merge_of(syms[best - 1], syms[best]);
            }
            if best + 1 < n {
                ranks[best] = self.merge_of(syms[best], syms[best + 1]);
            } else {
                ranks[best] = u64::MAX;
            }
        }
        out.extend_from_slice(&syms[..n]);
    }

    /// `bpe` for long pieces: a min-heap of (rank, position) over a linked list of symbols,
    /// as `tokenizers`' `Word::merge_all` (stale heap entries are skipped).
    fn bpe_heap(&self, bytes: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = bytes.len();
        let mut sym: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut alive = vec![true; n];
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let m = self.merge_of(sym[i], sym[i + 1]);
            if m != u64::MAX {
                heap.push(std::cmp::Reverse((m >> 32, i, m as u32)));
            }
        }
        while let Some(std::cmp::Reverse((_, pos, new_id))) = heap.pop() {
            if !alive[pos] || next[pos] == NONE {
                continue;
            }
            let right = next[pos];
            let m = self.merge_of(sym[pos], sym[right]);
            if m == u64::MAX || m as u32 != new_id {
                continue;
            }
            sym[pos] = new_id;
            alive[right] = false;
            next[pos] = next[right];
            if next[pos] != NONE {
                prev[next[pos]] = pos;
            }
            if prev[pos] != NONE {
                let p = prev[pos];
                let m = self.merge_of(sym[p], sym[pos]);
                if m != u64::MAX {
                    heap.push(std::cmp::Reverse((m >> 32, p, m as u32)));
                }
            }
            if next[pos] != NONE {
                let m = self.merge_of(sym[pos], sym[next[pos]]);
                if m != u64::MAX {
                    heap.push(std::cmp::Reverse((m >> 32, pos, m as u32)));
                }
            }
        }
        let mut i = 0;
        while i != NONE {
            out.push(sym[i]);
            i = next[i];
        }
    }
}
