//! The pure core: what `ports.toml` says, how ports are given out, the
//! port book (`.ports.json`) and `.env.runtime`. No IO here: the layers
//! above read and write, and hand text and probes in.

pub mod alloc;
pub mod book;
pub mod config;
pub mod envfile;
pub mod json;
pub mod policy;
