//! The tokenizer: a byte-level BPE (GPT-2's scheme) trained with the `tokenizers` crate,
//! saved as a standard `tokenizer.json` that Hugging Face tools read as it is.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::error::{Error, Result};

/// The document separator, a special token, as in GPT-2.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eot: u32,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Trains a byte-level BPE of `vocab_size` tokens (including the 256 byte tokens and
    /// `<|endoftext|>`) on the given texts.
    pub fn train<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        if vocab_size < 258 {
            return Err(Error::Config(format!(
                "vocab_size ({vocab_size}) must be at least 258: 256 byte tokens, <|endoftext|> and one merge"
            )));
        }
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_post_processor(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner.train(&mut trainer, texts).map_err(tk_err)?;
        Self::from_inner(inner)
    }

    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_inner(inner)
    }

    fn from_inner(inner: tokenizers::Tokenizer) -> Result<Self> {
        let eot = inner
            .token_to_id(END_OF_TEXT)
            .ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no {END_OF_TEXT} token")))?;
        Ok(Tokenizer { inner, eot })
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eot(&self) -> u32 {
        self.eot
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Encodes documents in parallel into one stream, each document followed by `<|endoftext|>`.
    pub fn encode_documents(&self, docs: &[String]) -> Result<Vec<u32>> {
        let inputs: Vec<&str> = docs.iter().map(|s| s.as_str()).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, false)
            .map_err(tk_err)?;
        let mut out = Vec::with_capacity(encodings.iter().map(|e| e.len() + 1).sum());
        for e in encodings {
            out.extend_from_slice(e.get_ids());
            out.push(self.eot);
        }
        Ok(out)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }
}
