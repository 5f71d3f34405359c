//! The driver's error type: one variant per step that can fail, with the numbers the device
//! reported as fields and the underlying error kept as the [`source`](std::error::Error::source).
//!
//! The one most callers match on is [`Error::Disconnected`]: the daemon behind a vhost-user port
//! closed the connection (it exited, was restarted, or dropped us), as opposed to a device that
//! misbehaves or a request that failed.

use crate::ring_id::{Direction, RingId};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong attaching to or using a ptnet device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The port string could not be parsed.
    #[error("bad port '{spec}': {reason}")]
    BadPort {
        /// The string given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No ptnet PCI device matches the selector.
    #[error("no ptnet device matches '{0}'")]
    NoDevice(String),
    /// A system call failed, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What the driver was doing.
        what: String,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection: the `ptnet-backend` daemon behind a vhost-user port exited,
    /// restarted or dropped this frontend. The port is unusable; open it again to reconnect.
    #[error("{port}: the daemon closed the connection")]
    Disconnected {
        /// The transport's name (`vhost-user:/path`).
        port: String,
    },
    /// A vhost-user request failed (the daemon refused it, or its reply made no sense).
    #[error("vhost-user {request}: {source}")]
    VhostUser {
        /// The request (`SET_MEM_TABLE`, ...).
        request: String,
        /// What the `vhost` crate reported.
        #[source]
        source: vhost::Error,
    },
    /// The daemon did not answer a vhost-user request in time (the connection is closed then).
    #[error("vhost-user {request}: no reply from the daemon within {after:?}")]
    NoReply {
        /// The request.
        request: String,
        /// How long we waited.
        after: Duration,
    },
    /// The daemon's reply to a request we make by hand (`GET_CONFIG`, raw `SET_VRING_*`) was
    /// malformed.
    #[error("vhost-user {request}: bad reply: {problem}")]
    BadReply {
        /// The request.
        request: String,
        /// What was wrong.
        problem: ReplyProblem,
    },
    /// The daemon lacks a (protocol) feature the driver needs.
    #[error("the daemon offers {what} {offered:#x}, the driver needs {needed:#x}")]
    MissingFeatures {
        /// `"features"` or `"protocol features"`.
        what: &'static str,
        /// The bits offered.
        offered: u64,
        /// The bits needed.
        needed: u64,
    },
    /// `GET_QUEUE_NUM` reported no rings or more than a port can have.
    #[error("GET_QUEUE_NUM says {queues} rings (1..={max} supported)")]
    QueueCount {
        /// The number reported.
        queues: u64,
        /// The most supported.
        max: u32,
    },
    /// `GET_QUEUE_NUM` disagrees with the ring counts in the registers.
    #[error("GET_QUEUE_NUM says {queues} rings, the registers {tx} TX + {rx} RX")]
    QueueCountMismatch {
        /// Rings from `GET_QUEUE_NUM`.
        queues: u32,
        /// TX rings from the registers.
        tx: u32,
        /// RX rings from the registers.
        rx: u32,
    },
    /// `GET_SHMEM_CONFIG` announced no usable netmap memory region.
    #[error("GET_SHMEM_CONFIG: {regions} regions, region 0 of {size} bytes")]
    ShmemConfig {
        /// Regions announced.
        regions: u32,
        /// Size of region 0.
        size: u64,
    },
    /// The daemon's `SHMEM_MAP` (the netmap memory) was missing or refused.
    #[error("backend channel: expected SHMEM_MAP: {0}")]
    ShmemMap(ShmemMapProblem),
    /// PTFEAT read back bits the driver did not ask for.
    #[error("PTFEAT reads {read:#x} after writing {wrote:#x}")]
    Features {
        /// What the driver wrote.
        wrote: u32,
        /// What it read back.
        read: u32,
    },
    /// VNET_HDR_LEN read back a length that is not 0, 10 or 12.
    #[error("VNET_HDR_LEN reads {0}")]
    VnetHdrLen(u32),
    /// No TX or no RX ring, or more rings than a port can have.
    #[error("{tx} TX and {rx} RX rings: need at least one of each, at most {max} in all")]
    RingCount {
        /// TX rings.
        tx: u32,
        /// RX rings.
        rx: u32,
        /// The most a port can have.
        max: u32,
    },
    /// A slot count per ring outside `2..=max`.
    #[error("{slots} slots per {dir} ring (2..={max} supported)")]
    SlotCount {
        /// TX or RX rings.
        dir: Direction,
        /// The count reported.
        slots: u32,
        /// The most supported.
        max: u32,
    },
    /// The memdev is not the port's memory.
    #[error("memdev MEMID {memdev} does not match the port's HOSTMEMID {port}")]
    MemIdMismatch {
        /// The memdev's MEMID.
        memdev: u32,
        /// The NIC's HOSTMEMID.
        port: u32,
    },
    /// The netmap memory size is zero or larger than what can be mapped.
    #[error("netmap memory of {size} bytes does not fit the {available} bytes available")]
    MemorySize {
        /// MEMSIZE as the device reports it.
        size: u64,
        /// What is mapped (vhost-user) or the memdev BAR's size (pci).
        available: u64,
    },
    /// The buffer pool lies outside the netmap memory, or is too small to be one.
    #[error(
        "buffer pool ({num} x {size} bytes at {offset}) unusable in the {mem_size}-byte memory"
    )]
    BufferPool {
        /// Buffers.
        num: u32,
        /// Bytes per buffer.
        size: u32,
        /// Offset of the pool in the memory.
        offset: usize,
        /// Size of the memory.
        mem_size: usize,
    },
    /// NIFP_OFS does not leave room for a netmap_if in the memory.
    #[error("NIFP_OFS {offset} outside the {mem_size}-byte memory")]
    NifpOffset {
        /// NIFP_OFS.
        offset: usize,
        /// Size of the memory.
        mem_size: usize,
    },
    /// The netmap_if and the registers disagree on the ring counts.
    #[error("netmap_if has {if_tx} TX and {if_rx} RX rings, the registers {tx} and {rx}")]
    IfRingCount {
        /// TX rings in the netmap_if.
        if_tx: u32,
        /// RX rings in the netmap_if.
        if_rx: u32,
        /// TX rings in the registers.
        tx: u32,
        /// RX rings in the registers.
        rx: u32,
    },
    /// The netmap_if claims more host rings than a port can have.
    #[error("netmap_if has {0} host TX rings")]
    HostRings(u32),
    /// A netmap ring of the port is malformed or misplaced.
    #[error("{ring}: {problem}")]
    BadRing {
        /// Which ring.
        ring: RingId,
        /// What is wrong with it.
        problem: RingProblem,
    },
    /// No ptnetmap-memdev carries the NIC's memory.
    #[error("{nic}: no ptnetmap-memdev with MEMID {mem_id} (HOSTMEMID of the NIC)")]
    NoMemdev {
        /// The NIC's PCI address.
        nic: String,
        /// Its HOSTMEMID.
        mem_id: u32,
    },
    /// An I/O BAR can be reached neither through its sysfs file nor by port I/O.
    #[error("{}: 32-bit reads refused and port I/O unavailable", path.display())]
    NoRegisterAccess {
        /// The BAR's sysfs resource file.
        path: PathBuf,
    },
    /// A register access moved fewer than 4 bytes.
    #[error("short register access at {offset} ({bytes} bytes)")]
    ShortRegisterAccess {
        /// The register.
        offset: u32,
        /// Bytes moved.
        bytes: usize,
    },
    /// A register offset outside the device's I/O BAR (or unaligned).
    #[error("register {0} outside the BAR")]
    RegisterOutsideBar(u32),
    /// The CSB arrays for this many rings cannot be allocated.
    #[error("cannot allocate a CSB for {rings} rings (1..={max})")]
    CsbRings {
        /// Rings asked for.
        rings: u32,
        /// The most this transport can hold.
        max: u32,
    },
    /// The physical address of a CSB page cannot be learnt from `/proc/self/pagemap`.
    #[error("CSB page: {0}")]
    PhysAddr(PhysAddrProblem),
    /// A wait named no ring the transport knows.
    #[error("wait on unknown rings {0:?}")]
    UnknownRings(Vec<u32>),
    /// PTCTL returned an errno.
    #[error("PTCTL command {cmd} failed with errno {errno}")]
    Ptctl {
        /// The command written.
        cmd: u32,
        /// The errno read back.
        errno: u32,
    },
    /// The application published inconsistent ring indexes.
    #[error("ring {ring}: {source}")]
    BadIndexes {
        /// Ring number.
        ring: u32,
        /// What was wrong.
        #[source]
        source: ptnet_protocol::sync::BadIndexes,
    },
}

impl Error {
    /// Wraps an `io::Error` with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Is this [`Error::Disconnected`]?
    #[must_use]
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. })
    }
}

/// What is wrong with a netmap ring ([`Error::BadRing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingProblem {
    /// `ring_ofs[index]` of the netmap_if lies outside the memory.
    #[error("ring_ofs[{index}] outside the memory")]
    OffsetOutside {
        /// Index into `ring_ofs`.
        index: u32,
    },
    /// An RX ring that libnetmap and a ptnet guest kernel would find in different places (a
    /// netmap_if without its host rings).
    #[error(
        "at ring_ofs[{libnetmap}] for libnetmap but ring_ofs[{kernel}] for a ptnet guest kernel \
         (a netmap_if without its host rings)"
    )]
    KernelLayout {
        /// Where libnetmap looks.
        libnetmap: u32,
        /// Where a ptnet guest kernel looks.
        kernel: u32,
    },
    /// The ring's offset does not give an address.
    #[error("bad ring offset {0}")]
    Offset(i64),
    /// The ring does not fit the memory at its address, or is misaligned.
    #[error("{slots} slots at {addr} do not fit the memory (or misaligned)")]
    DoesNotFit {
        /// Slots.
        slots: u32,
        /// Offset of the ring in the memory.
        addr: usize,
    },
    /// The ring's `num_slots` disagrees with the registers.
    #[error("num_slots {ring}, registers say {regs}")]
    NumSlots {
        /// In the ring.
        ring: u32,
        /// In the registers.
        regs: u32,
    },
    /// A TX ring marked RX or the other way round.
    #[error("direction {0}")]
    Direction(u16),
    /// The ring's `nr_buf_size` disagrees with the memdev.
    #[error("nr_buf_size {ring}, memdev says {memdev}")]
    BufSize {
        /// In the ring.
        ring: u32,
        /// In the memdev.
        memdev: u32,
    },
    /// The ring's `buf_ofs` does not point at the buffer pool.
    #[error("buf_ofs {buf_ofs} does not point at the buffer pool ({pool})")]
    BufOfs {
        /// The ring's `buf_ofs`.
        buf_ofs: i64,
        /// The pool's offset in the memory.
        pool: usize,
    },
}

/// Why the netmap memory did not arrive ([`Error::ShmemMap`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmemMapProblem {
    /// Nothing came within the reply timeout.
    #[error("none within {0:?} of SET_BACKEND_REQ_FD")]
    Timeout(Duration),
    /// A region or offset other than the netmap memory's.
    #[error("SHMEM_MAP of region {shmid} offset {offset}")]
    Region {
        /// Region id.
        shmid: u8,
        /// Offset in the region.
        offset: u64,
    },
    /// A length other than the one GET_SHMEM_CONFIG announced.
    #[error("SHMEM_MAP of {len} bytes, GET_SHMEM_CONFIG said {expected}")]
    Length {
        /// Length mapped.
        len: u64,
        /// Length announced.
        expected: u64,
    },
    /// A read-only mapping.
    #[error("SHMEM_MAP is read-only")]
    ReadOnly,
    /// A second SHMEM_MAP.
    #[error("second SHMEM_MAP")]
    Second,
    /// The daemon unmapped the memory.
    #[error("daemon sent SHMEM_UNMAP")]
    Unmap,
    /// Mapping the descriptor failed.
    #[error("mmap of the netmap memory: {0}")]
    Mmap(#[source] io::Error),
    /// Another request, or a broken message, on the backend channel.
    #[error("backend channel: {0}")]
    Channel(#[source] vhost::vhost_user::Error),
    /// The handler saw no SHMEM_MAP.
    #[error("unexpected request")]
    Unexpected,
}

/// What was wrong with a reply ([`Error::BadReply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyProblem {
    /// More than vhost-user allows was asked for.
    #[error("at most {0} bytes")]
    TooLarge(usize),
    /// The reply is another request, or lacks the reply flag.
    #[error("reply is request {request} with flags {flags:#x}")]
    NotAReply {
        /// Request code in the reply.
        request: u32,
        /// Flags in the reply.
        flags: u32,
    },
    /// A body length outside what the request allows.
    #[error("reply body of {0} bytes")]
    BodyLength(usize),
    /// The daemon refused (an empty config).
    #[error("refused by the daemon (it answered with an empty config)")]
    Refused,
    /// The reply describes another range than the one asked for.
    #[error("reply of {size} bytes at {offset} in a body of {body} bytes")]
    Mismatch {
        /// Offset in the reply.
        offset: u32,
        /// Size in the reply.
        size: u32,
        /// Body length.
        body: usize,
    },
}

/// Why a page's physical address is unknown ([`Error::PhysAddr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhysAddrProblem {
    /// The page is not present (it should be: it is locked).
    #[error("not present in pagemap")]
    NotPresent,
    /// pagemap hides frame numbers from this process (it needs `CAP_SYS_ADMIN`).
    #[error("pagemap hides physical frame numbers (need CAP_SYS_ADMIN)")]
    Hidden,
}

/// Turns a `vhost` crate error for `request` into [`Error::Disconnected`] when the peer went away,
/// [`Error::VhostUser`] otherwise.
pub(crate) fn from_vhost(port: &str, request: &str, e: vhost::Error) -> Error {
    use vhost::vhost_user::Error as U;
    match e {
        vhost::Error::VhostUserProtocol(
            U::Disconnected | U::PartialMessage | U::SocketBroken(_),
        ) => Error::Disconnected {
            port: port.to_string(),
        },
        source => Error::VhostUser {
            request: request.to_string(),
            source,
        },
    }
}
