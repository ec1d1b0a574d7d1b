//! The serve subsystem: the generation engine (continuous batching over one CPU model,
//! [`engine`]) and its HTTP front end.

pub mod engine;
pub mod http;
