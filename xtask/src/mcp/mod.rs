//! The agent interface's protocol: a Model Context Protocol server over
//! stdio (newline-delimited JSON-RPC 2.0), serving whatever tools a front
//! end gives it. It knows nothing of services: `cargo xtask mcp` supplies
//! the tools.
//!
//! Read in this order: `jsonrpc` (the wire), `lifecycle` (the two eras of
//! MCP), `tools` (what a front end implements), `schema` (the argument
//! check), `server` (the loop).

// Until `cargo xtask mcp` serves it (with the engine), only the tests use
// this module and its re-exports.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

mod jsonrpc;
mod lifecycle;
mod schema;
mod server;
#[cfg(test)]
mod tests;
mod tools;

pub use lifecycle::Info;
pub use server::serve;
pub use tools::{Annotations, Call, Tool, Tools};
