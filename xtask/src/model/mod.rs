//! The pure core: what `ports.toml` says, how ports are given out, the
//! port book (`.ports.json`), `.env.runtime` and the named URLs. No IO here:
//! the layers above read and write, and hand text and probes in.

pub mod alloc;
pub mod book;
pub mod config;
pub mod envfile;
pub mod json;
pub mod names;
pub mod policy;
