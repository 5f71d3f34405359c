//! Frontends: what serves a port to a VMM over vhost-user.
//!
//! * [`ptnet`]: the ptnet device (the guest syncs the port's own netmap rings, zero copy).

pub mod ptnet;
