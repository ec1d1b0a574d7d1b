//! Data: from text files to training batches.
//!
//! `source` finds and streams documents (in `pieces`), `clean` normalises and de-duplicates them,
//! `tokenizer` turns text into ids, `prepare` runs the whole pipeline into token `shard`s,
//! and `loader` serves (B, T) batches from those shards through mmap.

pub mod batches;
pub mod clean;
pub mod loader;
pub mod pieces;
pub mod prepare;
pub mod shard;
pub mod source;
pub mod tokenizer;

pub use batches::Batch;
pub use tokenizer::{Tokenizer, END_OF_TEXT};
