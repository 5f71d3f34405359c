//! Host interfaces as ports: what a ptnet guest sees is an ordinary netmap port (private memory,
//! the rings and slots of [`crate::port::mem`]); the port's ring syncs copy frames between those
//! rings and a host interface, a batch per sync.
//!
//! | kind | how | multi-queue |
//! |---|---|---|
//! | `tap:NAME` ([`tap`]) | a tap device (created if missing), `read`/`write` per frame | `IFF_MULTI_QUEUE`, one fd per ring pair |
//! | `packet:IFNAME` ([`packet`]) | AF_PACKET with TPACKET_V2 mmap'ed TX and RX rings, one `sendto` per TX batch | one socket per ring, RX sockets in a `PACKET_FANOUT_HASH` group |
//! | `xdp:IFNAME[@Q]` ([`xdp`]) | AF_XDP in copy mode, with a 6-instruction XDP program (loaded with `bpf(2)`) redirecting queue q to the socket | ring i on queue Q+i |
//!
//! (`netmap:IFNAME`, a host interface through kernel netmap, is not built here: the kernel runs
//! its rings, see [`crate::kernel`].)
//!
//! Rings wake their sync loop through [`crate::port::ring::RingSync::wake_fd`]: RX rings with their
//! socket or tap readable (while the guest has free slots). TX hands frames to the kernel in the
//! sync; when the kernel's queue is full the slots left wait, and the ring sleeps until there is
//! room: a tap's POLLOUT, and for `packet:` / `xdp:` the socket's own wake-ups (write space: sent
//! frames completing), edge-triggered through an epoll descriptor ([`sys::EdgeWait`]), because
//! their POLLOUT holds while every frame is still in flight. Errors of a link that is down
//! (ENETDOWN, ENXIO, EIO) count as drops; the port keeps working when the link comes back.

pub mod bpf;
mod common;
pub mod packet;
#[allow(unsafe_code)]
pub mod sys;
pub mod tap;
pub mod xdp;

use crate::port::built::BuiltPort;
use crate::portspec::{PortKind, PortSpec};
pub(crate) use common::require_if;
pub use common::{NicError, PortBufs};

/// Is this a host interface port served by copying into the userspace netmap (built here)?
pub fn is_nic(kind: &PortKind) -> bool {
    matches!(
        kind,
        PortKind::Tap { .. } | PortKind::Packet { .. } | PortKind::Xdp { .. }
    )
}

/// Builds one host interface port.
pub fn build_port(spec: &PortSpec) -> Result<BuiltPort, NicError> {
    match &spec.kind {
        PortKind::Tap { name } => tap::build(spec, name),
        PortKind::Packet { ifname } => packet::build(spec, ifname),
        PortKind::Xdp { ifname, queue } => xdp::build(spec, ifname, *queue),
        _ => Err(NicError::Unsupported {
            port: spec.name.clone(),
            reason: "not a host interface port".into(),
        }),
    }
}
