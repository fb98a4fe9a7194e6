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
//! It is mimalloc v3 (the crate's default without the `v2` feature), built with arenas
//! committed as they are used, not up front (`MI_DEFAULT_ARENA_EAGER_COMMIT=0`, set in
//! `.cargo/config.toml`: mimalloc reads its options before `main`, so setting one at run
//! time is too late), so memory freed after a burst goes back to the system: with
//! mimalloc's default, 1,000 idle TLS peers held 70 MiB instead of about 52.
//! `MIMALLOC_ARENA_EAGER_COMMIT` in the environment overrides the build's default; the
//! `deploy/` unit and image set it to 0 too, for builds whose own CFLAGS replaced ours.

pub use mimalloc::MiMalloc;
