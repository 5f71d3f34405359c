//! What the NIC port kinds share: their errors, the port's buffers as a sync reaches them, and
//! the parts of a port before its syncs exist.

use super::sys;
use crate::port::built::{BuiltPort, RingParts};
use crate::port::mem::{IfSpec, NetmapMemory};
use crate::port::ring::{RingStats, RingSync};
use crate::portspec::PortSpec;
use crate::sys::MappedFile;
use ptnet_protocol::netmap::BufPool;
use ptnet_protocol::shmem::SharedMem;
use std::io;
use std::sync::Arc;

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
            bufs: mem.bufs().clone(),
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
    rings: RingParts,
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
        let rings = RingParts::new(c.tx_rings + c.rx_rings).map_err(io)?;
        Ok(Self {
            spec: ifs,
            mem,
            bufs,
            stats: rings.stats.clone(),
            rings,
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
    ) -> BuiltPort {
        let workers = self.rings.workers(&self.spec, syncs);
        let port = BuiltPort::new(name, self.mem, 0, workers);
        match vnet_hdr_len {
            Some(len) => port.with_vnet_hdr(len),
            None => port,
        }
    }
}
