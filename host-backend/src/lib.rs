//! # ptnet-backend
//!
//! The host daemon: serves netmap ports to ptnet frontends over vhost-user and runs the host side
//! of each ring's sync.
//!
//! Layers, arrows pointing down only:
//!
//! * [`cli`]: the command line; [`ctl`]: `ptnet-ctl`, the control socket's client;
//! * [`daemon`]: sockets and connections ([`daemon::server`]);
//! * [`frontend`]: what serves a port to a VMM ([`frontend::ptnet`]: the ptnet vhost-user device
//!   and its per-ring host sync threads);
//! * [`served`]: a port as the daemon serves it, over one of the two datapaths below, and
//!   building every port of the command line;
//! * [`kernel`]: kernel netmap ports (`/dev/netmap`: the kernel runs the sync loop);
//! * [`port`]: the ring contract every port kind implements, and the kinds: the built-in
//!   userspace netmap (memory allocator, pipes, VALE, null) and host interfaces ([`port::nic`]:
//!   tap, AF_PACKET, AF_XDP);
//! * [`capture`]: a port's frames copied out for `ptnet-ctl capture`, never slowing the port;
//! * [`portspec`]: PORT arguments (nmport syntax);
//! * [`sys`]: memfd, mmap and poll;
//! * [`man`]: the man pages, from the command lines' clap definitions.
//!
//! `unsafe` code is denied (workspace lints) except in the modules that allow it at their `mod`
//! line: [`sys`], `port::nic::sys` (sockets, ioctls, `bpf(2)`), `kernel::sys` (`NIOCCTRL`);
//! every block there carries its `// SAFETY:` argument.

pub mod capture;
pub mod cli;
pub mod ctl;
pub mod daemon;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
pub mod man;
pub mod port;
pub mod portspec;
pub mod served;
#[allow(unsafe_code)]
pub mod sys;
