//! The allocator the binaries use (each declares it: `#[global_allocator] static ALLOC:
//! ssp_gateway::alloc::MiMalloc = ssp_gateway::alloc::MiMalloc;`). Not declared here, so
//! the fuzz targets keep the sanitizer's.
//!
//! Why mimalloc: every request allocates buffers above glibc's per-thread cache (1 KiB: the
//! request's future, hyper's read buffers, the written messages), which glibc serves from
//! shared bins; mimalloc serves them from per-thread pages. In the load ladder it takes
//! 1.4 µs (inbound) to 2.5 µs (outbound) of CPU off each relayed request (README,
//! Performance).
//!
//! It is mimalloc v2 (the crate's `v2` feature), not v3 (the crate's default): Rust passes
//! every allocation's alignment, and v3 serves an aligned request it cannot take from a
//! small page (every one above 1 KiB) through a slower path, which over-allocates by the
//! alignment where the size is not a power of two. v2 takes such a request as a plain one
//! when the alignment is at most 16 bytes, as nearly all of Rust's are. Counted by
//! `tests/benches/instructions.sh`, v2 took about 1,300 instructions off each relayed
//! request and 900 off the pass-through's, with the same memory for 1,000 idle peers.
//!
//! It is built with arenas committed as they are used, not up front
//! (`MI_DEFAULT_ARENA_EAGER_COMMIT=0`, set in `.cargo/config.toml`: mimalloc reads its
//! options before `main`, so setting one at run time is too late), so memory freed after a
//! burst goes back to the system: with mimalloc's default, 1,000 idle TLS peers held 70 MiB
//! instead of about 52.
//! `MIMALLOC_ARENA_EAGER_COMMIT` in the environment overrides the build's default; the
//! `deploy/` unit and image set it to 0 too, for builds whose own CFLAGS replaced ours.

pub use mimalloc::MiMalloc;
