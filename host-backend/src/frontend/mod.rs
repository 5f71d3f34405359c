//! Frontends: what serves a port to a VMM over vhost-user.
//!
//! * [`ptnet`]: the ptnet device (the guest syncs the port's own netmap rings, zero copy).
//! * [`virtio_net`]: a standard vhost-user virtio-net device (stock QEMU and `virtio_net`
//!   guests; one copy each way between virtqueues and the port's netmap buffers).

pub mod ptnet;
pub mod virtio_net;
