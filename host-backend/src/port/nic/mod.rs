//! Host interfaces as ports: what a ptnet guest sees is an ordinary netmap port (private memory,
//! the rings and slots of [`crate::port::mem`]); the port's ring syncs copy frames between those
//! rings and a host interface, a batch per sync.
//!
//! | kind | how | multi-queue |
//! |---|---|---|
//! | `tap:NAME` ([`tap`]) | a tap device (created if missing), `read`/`write` per frame | `IFF_MULTI_QUEUE`, one fd per ring pair |
//! | `packet:IFNAME` ([`packet`]) | AF_PACKET with TPACKET_V2 mmap'ed TX and RX rings, one `sendto` per TX batch | one socket per ring, RX sockets in a `PACKET_FANOUT_HASH` group |
//! | `xdp:IFNAME[@Q]` ([`xdp`]) | AF_XDP in copy mode, with a 6-instruction XDP program (loaded with `bpf(2)`) redirecting queue q to the socket | ring i on queue Q+i |
//! | `netmap:IFNAME` ([`crate::kernel`]) | kernel netmap (`/dev/netmap`, NETMAP_API 14) | the NIC's rings |
//!
//! Rings wake their sync loop through [`crate::port::RingSync::wake_fd`]: RX rings with their
//! socket or tap readable (while the guest has free slots). TX hands frames to the kernel in the
//! sync; when the kernel's queue is full the slots left wait, and the ring sleeps until there is
//! room: a tap's POLLOUT, and for `packet:` / `xdp:` the socket's own wake-ups (write space: sent
//! frames completing), edge-triggered through an epoll descriptor ([`sys::EdgeWait`]), because
//! their POLLOUT holds while every frame is still in flight. Errors of a link that is down
//! (ENETDOWN, ENXIO, EIO) count as drops; the port keeps working when the link comes back.

// TEMPORARY, until bpf.rs moves its `unsafe` into a sys module (the other branch).
#[allow(unsafe_code)]
pub mod bpf;
pub mod packet;
#[allow(unsafe_code)]
pub mod sys;
pub mod tap;
pub mod xdp;

use crate::port::mem::{IfSpec, NetmapMemory};
use crate::port::{Port, RingStats, RingSync, RingWorker};
use crate::portspec::{PortKind, PortSpec};
use crate::sys::MappedFile;
use ptnet_protocol::netmap::BufPool;
use ptnet_protocol::shmem::SharedMem;
use ptnet_protocol::sync::HostKring;
use std::io;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// Why a host interface port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// The interface does not exist in the daemon's network namespace.
    #[error("port '{port}': interface '{ifname}' does not exist")]
    NoInterface {
        /// The port.
        port: String,
        /// The missing interface.
        ifname: String,
    },
    /// `/dev/netmap` is absent.
    #[error("port '{port}': /dev/netmap does not exist: 'netmap:IFNAME' ports need the netmap kernel module (netmap.ko) loaded; without it, use packet:{ifname}, xdp:{ifname} or a tap: port")]
    NoNetmap {
        /// The port.
        port: String,
        /// The interface.
        ifname: String,
    },
    /// A system call failed while opening the port.
    #[error("port '{port}': {what}: {source}")]
    Io {
        /// The port.
        port: String,
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The port cannot be served as asked.
    #[error("port '{port}': {reason}")]
    Unsupported {
        /// The port.
        port: String,
        /// Why.
        reason: String,
    },
}

impl NicError {
    pub(crate) fn io(port: &str, what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            port: port.to_string(),
            what: what.into(),
            source,
        }
    }
}

/// Is this a host interface port (built here rather than by the userspace netmap)?
pub fn is_nic(kind: &PortKind) -> bool {
    matches!(
        kind,
        PortKind::Tap { .. }
            | PortKind::Packet { .. }
            | PortKind::Xdp { .. }
            | PortKind::KernelNetmap { .. }
    )
}

/// Builds one host interface port.
pub fn build_port(spec: &PortSpec) -> Result<Arc<Port>, NicError> {
    match &spec.kind {
        PortKind::Tap { name } => tap::build(spec, name),
        PortKind::Packet { ifname } => packet::build(spec, ifname),
        PortKind::Xdp { ifname, queue } => xdp::build(spec, ifname, *queue),
        PortKind::KernelNetmap { ifname } => {
            crate::kernel::build(spec, &format!("netmap:{ifname}"))
        }
        _ => Err(NicError::Unsupported {
            port: spec.name.clone(),
            reason: "not a host interface port".into(),
        }),
    }
}

/// The interface index of `ifname`, or the error naming it.
pub(crate) fn require_if(port: &str, ifname: &str) -> Result<u32, NicError> {
    sys::if_index(ifname).ok_or_else(|| NicError::NoInterface {
        port: port.to_string(),
        ifname: ifname.to_string(),
    })
}

/// Is this error what a link that is down (or a device going away) gives?
pub(crate) fn link_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETDOWN | libc::ENXIO | libc::EIO | libc::ENODEV | libc::ENOBUFS)
    )
}

/// A port's netmap memory as the NIC syncs reach it: the buffer pool through a mapping of our
/// own (frames are read and written by system calls straight into the buffers).
#[derive(Clone)]
pub struct PortBufs {
    _map: Arc<MappedFile>,
    pool: SharedMem,
    bufs: BufPool,
}

impl PortBufs {
    fn new(mem: &NetmapMemory) -> io::Result<Self> {
        let map = Arc::new(MappedFile::map(mem.file().try_clone()?, 0, mem.size())?);
        let g = mem.geometry(0, 0, [0; 6]);
        let (ofs, num, size) = g.buf_pool;
        let pool = map
            .mem()
            .sub(ofs as usize, num as usize * size as usize)
            .ok_or_else(|| io::Error::other("buffer pool outside the memory"))?;
        Ok(Self {
            _map: map,
            pool,
            bufs: mem.bufs(),
        })
    }

    /// Buffer size.
    #[inline]
    pub fn buf_size(&self) -> usize {
        self.bufs.buf_size() as usize
    }

    /// Offset of buffer `idx` in [`Self::pool`], if it is a buffer a slot may carry.
    #[inline]
    pub fn offset(&self, idx: u32) -> Option<usize> {
        self.bufs.offset(idx)
    }

    /// The buffer pool window.
    #[inline]
    pub fn pool(&self) -> &SharedMem {
        &self.pool
    }
}

/// A port's memory, buffers and per-ring notifiers/counters, before its syncs exist.
pub(crate) struct NicParts {
    pub spec: IfSpec,
    pub mem: Arc<NetmapMemory>,
    pub bufs: PortBufs,
    pub stats: Vec<Arc<RingStats>>,
    notify: Vec<Arc<EventFd>>,
}

impl NicParts {
    pub fn new(spec: &PortSpec) -> Result<Self, NicError> {
        let c = &spec.conf;
        let ifs = IfSpec {
            name: spec.name.clone(),
            tx_rings: c.tx_rings,
            rx_rings: c.rx_rings,
            tx_slots: c.tx_slots,
            rx_slots: c.rx_slots,
        };
        let io = |e| NicError::io(&spec.name, "creating the netmap memory", e);
        let mem = Arc::new(NetmapMemory::new(&spec.name, std::slice::from_ref(&ifs)).map_err(io)?);
        let bufs = PortBufs::new(&mem).map_err(io)?;
        let n = c.tx_rings + c.rx_rings;
        let notify = (0..n)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        Ok(Self {
            spec: ifs,
            mem,
            bufs,
            stats: (0..n).map(|_| Arc::new(RingStats::default())).collect(),
            notify,
        })
    }

    /// Ring `r` (TX first) of the port.
    pub fn ring(&self, r: u32) -> ptnet_protocol::netmap::RingView {
        self.mem.ring(0, r)
    }

    /// The port, from one sync per ring (TX rings first).
    pub fn into_port(
        self,
        name: &str,
        syncs: Vec<Box<dyn RingSync>>,
        vnet_hdr_len: Option<Arc<std::sync::atomic::AtomicU8>>,
    ) -> Arc<Port> {
        let spec = &self.spec;
        let workers = syncs
            .into_iter()
            .zip(self.notify)
            .zip(&self.stats)
            .enumerate()
            .map(|(i, ((sync, notify), stats))| {
                let is_tx = (i as u32) < spec.tx_rings;
                RingWorker {
                    index: i as u32,
                    is_tx,
                    kring: if is_tx {
                        HostKring::new_tx(spec.tx_slots)
                    } else {
                        HostKring::new_rx(spec.rx_slots)
                    },
                    sync,
                    notify,
                    stats: stats.clone(),
                }
            })
            .collect();
        let port = Port::new(name, self.mem, 0, workers);
        Arc::new(match vnet_hdr_len {
            Some(len) => port.with_vnet_hdr(len),
            None => port,
        })
    }
}
