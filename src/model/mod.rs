//! The GPT-2 model: its configuration, its graph, its parameters under Hugging Face names.

pub mod config;
pub mod gpt;
pub mod hf;

pub use config::GptConfig;
pub use gpt::Gpt;
