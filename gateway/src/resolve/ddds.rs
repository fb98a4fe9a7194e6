//! ENUM DDDS and SRV ordering (being written).
