//! NIC ports end to end: the daemon (its binary) serves `packet:`, `xdp:` and `tap:` ports inside network
//! namespaces these tests create and delete; a host-process driver (`ptnet_driver`, vhost-user)
//! stands for the guest; the kernel stack on the other side is reached with ordinary sockets
//! opened inside the namespaces (setns in a helper thread).
//!
//! Needs root (namespaces, veth, tap). A missing facility (the `ip` tool, /dev/net/tun, veth)
//! fails the test: nothing is skipped.
//!
//! One test binary, a module per port kind ([`packet`], [`xdp`], [`tap`]) and one for the ports
//! it refuses ([`refusals`]); the daemon runs through the library's harness
//! ([`ptnet_integration::Backend`], under `ip netns exec`).
//!
//! ```text
//! cargo test -p ptnet-integration --test nic
//! ```

mod attach;
mod backend;
mod driver;
mod frames;
mod netns;
mod packet;
mod refusals;
mod scenarios;
mod tap;
mod veth;
mod xdp;
mod xdp_restart;
