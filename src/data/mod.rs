//! Data: from text files to training batches.
//!
//! `source` finds and streams documents (in `pieces`), `clean` normalises and de-duplicates them,
//! `tokenizer` turns text into ids, `prepare` runs the whole pipeline into token `shard`s,
//! `dataset` opens a data set folder (the one rule every binary follows), `loader`
//! serves (B, T) batches from its shards, read through `mapped` files.

pub mod batches;
pub mod clean;
pub mod dataset;
pub mod loader;
pub mod mapped;
pub mod pieces;
pub mod prepare;
pub mod shard;
pub mod source;
pub mod tokenizer;
pub mod tokenizer_behaviour;

pub use batches::Batch;
pub use dataset::Dataset;
pub use tokenizer::{Tokenizer, END_OF_TEXT};
pub use tokenizer_behaviour::TokenizerDifference;
