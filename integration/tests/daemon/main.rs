//! `ptnet-backend` end to end, without QEMU: the daemon as a process, drivers attached through the
//! `vhost-user` transport (as `ptnet-pkt-gen` processes, or in this process through the driver
//! library), and a hostile "raw guest" that writes whatever it likes into its CSB and rings.
//!
//! * [`traffic`]: pipes, VALE and `null:` ports carrying traffic, frontends that vanish;
//! * [`raw_guest`]: a guest that breaks every rule;
//! * [`cli`]: the command line, signals and counters.

mod cli;
mod common;
mod raw_guest;
mod traffic;
