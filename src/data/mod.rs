//! Data: reading a text corpus, the tokenizer, token streams and batches.
//!
//! This is the simple in-memory path the CPU engine needs; memory-mapped token shards and
//! the `prepare` pipeline replace `corpus` and `batches` for large corpora.

pub mod batches;
pub mod clean;
pub mod corpus;
pub mod loader;
pub mod shard;
pub mod source;
pub mod tokenizer;

pub use batches::TokenStream;
pub use tokenizer::{Tokenizer, END_OF_TEXT};
