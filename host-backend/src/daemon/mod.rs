//! The daemon: the served ports, their sockets and connections.

pub mod server;
