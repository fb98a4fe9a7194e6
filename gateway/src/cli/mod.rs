//! Implementations of the command-line tools (the binary's `main.rs` only parses arguments).

pub mod resolve;
pub mod rewrite;
