//! smelt: trains GPT-style language models through a small define-then-run autograd graph
//! on pluggable backends (a CPU reference backend today; CUDA kernels in `kernels/` next).
//!
//! The way of the data: text → [`data`] (tokenizer, token streams, batches) →
//! [`model::Gpt`] (a [`graph::Graph`] planned and run by [`graph::executor::Executor`] on a
//! [`backend::Backend`]) → loss, gradients → AdamW ([`optim`]) → [`checkpoint`].

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod generate;
pub mod graph;
pub mod infer;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod progress;
pub mod rng;
pub mod serve;
pub mod text_stream;
pub mod threads;
pub mod train;

pub use error::{Error, Result};
