//! The agent interface's protocol: a Model Context Protocol server over
//! stdio (newline-delimited JSON-RPC 2.0), serving whatever tools it is
//! given. It knows nothing of services: the agent interface's `tools`
//! supplies them.
//!
//! Read in this order: `jsonrpc` (the wire), `lifecycle` (the two eras of
//! MCP), `tools` (what a front end implements), `schema` (the argument
//! check), `server` (the loop).

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
