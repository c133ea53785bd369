//! HTTP/1.1 on plain threads, over httparse: request heads read and checked
//! once for every server here, the reverse proxy of the named URLs, and the
//! small server the dashboard answers through.

pub mod chunked;
pub mod head;
pub mod proxy;
pub mod reader;
pub mod response;
pub mod server;
