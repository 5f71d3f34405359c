//! # ptnet-backend
//!
//! The host daemon: serves netmap ports to ptnet frontends over vhost-user and runs the host side
//! of each ring's sync.
//!
//! Layers, arrows pointing down only:
//!
//! * [`cli`]: the command line;
//! * [`daemon`]: sockets and connections ([`daemon::server`]);
//! * [`frontend`]: what serves a port to a VMM ([`frontend::ptnet`]: the ptnet vhost-user device
//!   and its per-ring host sync threads);
//! * [`kernel`]: kernel netmap ports (`/dev/netmap`: the kernel runs the sync loop);
//! * [`port`]: the ring contract every port kind implements, and the kinds: the built-in
//!   userspace netmap (memory allocator, pipes, VALE, null) and host interfaces ([`port::nic`]:
//!   tap, AF_PACKET, AF_XDP);
//! * [`portspec`]: PORT arguments (nmport syntax);
//! * [`sys`]: memfd, mmap and poll (the crate's `unsafe`).

pub mod cli;
pub mod daemon;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
// TEMPORARY, until kernel/ moves its `unsafe` into a sys module (the other branch).
#[allow(unsafe_code)]
pub mod kernel;
pub mod port;
pub mod portspec;
#[allow(unsafe_code)]
pub mod sys;
