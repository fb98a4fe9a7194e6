//! Core simulator (being written).
