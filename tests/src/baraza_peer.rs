//! Baraza-like SSP peer (being written).
