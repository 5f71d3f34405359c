//! # ptnet-backend
//!
//! The host daemon: serves netmap ports to ptnet frontends over vhost-user and runs the host side
//! of each ring's sync.
//!
//! * [`portspec`]: PORT arguments (nmport syntax);
//! * [`netmap`]: the built-in userspace netmap (memory allocator, pipes, VALE, null);
//! * [`nic`]: host interfaces (tap, AF_PACKET, AF_XDP, kernel netmap);
//! * [`port`]: a served port and its ring workers;
//! * [`syncloop`]: the per-ring host sync threads;
//! * [`device`]: the vhost-user device (the frontend contract);
//! * [`server`]: sockets and connections;
//! * [`cli`]: the command line;
//! * [`sys`]: memfd, mmap and poll (the crate's `unsafe`).

#![warn(missing_docs)]

pub mod cli;
pub mod device;
#[doc(hidden)]
pub mod fuzzing;
pub mod netmap;
pub mod nic;
pub mod port;
pub mod portspec;
pub mod server;
pub mod syncloop;
pub mod sys;
