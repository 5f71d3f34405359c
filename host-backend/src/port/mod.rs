//! A port as the daemon serves it: its netmap memory and the data path that syncs its rings
//! ([`Datapath`]).
//!
//! Ports of the userspace netmap (pipes, VALE, null, and the NIC ports that copy into it) have
//! one [`RingWorker`] per ring carrying the port kind's own sync ([`RingSync`]): the sync loop,
//! the vhost-user device and the validation are shared, and kinds differ only in their
//! `RingSync`s. Kernel netmap ports have the kernel's memory and the kernel's sync loop.

pub mod build;
pub mod mactable;
pub mod mem;
pub mod nic;
pub mod null;
pub mod pipe;
pub mod rxring;
pub mod vale;

pub use build::{build_ports, BuildError, NetmapImpl};

use crate::kernel::KernelNetmap;
use crate::port::mem::NetmapMemory;
use crate::port::rxring::RxRing;
use ptnet_protocol::device::PortGeometry;
use ptnet_protocol::sync::{HostKring, PortSync};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// The port side of one ring, as a sync loop drives it.
pub trait RingSync: PortSync + Send {
    /// Asks the port to signal this ring's notifier when the ring can make progress without the
    /// guest (RX: packets arrived; TX: room freed for packets left pending). Returns true when it
    /// already can, so the caller must not sleep.
    fn arm(&mut self, k: &HostKring) -> bool;

    /// A descriptor of the port, and the `poll(2)` events on it, that the sync loop also waits
    /// for while it sleeps after [`Self::arm`] returned false: NIC ports hand their socket or tap
    /// here, so frames arriving ([`Wake::readable`]) or room in a kernel queue that was full
    /// ([`Wake::writable`]) wake the ring.
    ///
    /// The contract:
    /// - Asked after every `arm` that returned false, never after a ring reset (then only the
    ///   guest can move the ring on). `None` (the default): no wake-up wanted.
    /// - `poll` is level-triggered: it returns at once while the event holds, so ask only while
    ///   the event means the ring can move (RX: frames may arrive *and* the guest left free
    ///   slots; TX: slots are pending *and* the kernel's queue is full). Anything else spins the
    ///   loop. A port whose descriptor has no event that says so hands another one
    ///   (`packet:`/`xdp:` TX: an epoll descriptor that turns readable on the socket's wake-ups,
    ///   `nic::sys::EdgeWait`).
    /// - POLLERR and POLLHUP (which `poll` reports whatever was asked) wake the ring too: the
    ///   pass that follows runs the port's own error handling, and `arm` must clear the error
    ///   (e.g. read `SO_ERROR`) or stop asking, or the loop spins.
    fn wake_fd(&self) -> Option<Wake> {
        None
    }

    /// An RX ring whose producers can run its host pass themselves (direct delivery, see
    /// [`crate::port::rxring`]): the sync loop lends the ring its host state while it runs and
    /// syncs through it. `None` (the default): the loop alone runs the ring's passes.
    fn direct_rx(&self) -> Option<Arc<RxRing>> {
        None
    }
}

/// What a ring's sync loop polls on the port's behalf ([`RingSync::wake_fd`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The descriptor.
    pub fd: std::os::fd::RawFd,
    /// The `poll(2)` events that wake the ring (`POLLIN`, `POLLOUT`).
    pub events: i16,
}

impl Wake {
    /// Wake when `fd` is readable.
    pub fn readable(fd: std::os::fd::RawFd) -> Self {
        Self {
            fd,
            events: libc::POLLIN,
        }
    }

    /// Wake when `fd` is writable.
    pub fn writable(fd: std::os::fd::RawFd) -> Self {
        Self {
            fd,
            events: libc::POLLOUT,
        }
    }
}

/// Counters of one ring. Written by its sync loop only; read by anyone.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Packets moved (TX: sent or dropped by the port; RX: received).
    pub packets: AtomicU64,
    /// Bytes moved: counted where the frames are handled (TX rings, and RX rings of NIC ports;
    /// the RX rings of pipes and VALE only move indexes, their bytes are the sender's).
    pub bytes: AtomicU64,
    /// Packets dropped for lack of room at a destination.
    pub drops: AtomicU64,
    /// Slots refused for a bad buffer index or length.
    pub bad_slots: AtomicU64,
    /// Ring resets for bad head/cur values.
    pub resets: AtomicU64,
    /// VALE: frames refused for a source address the port does not own (`netmap::mactable`).
    pub src_refused: AtomicU64,
}

impl RingStats {
    /// Adds `n` to a counter (single writer, so a plain load/store pair suffices).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
    }
}

/// One ring of a port: its host state (kept across frontend connections), the port's sync for
/// it, the eventfd the port signals, and its counters.
pub struct RingWorker {
    /// Ring number (TX rings first, then RX rings): also the vhost-user queue index.
    pub index: u32,
    /// TX or RX.
    pub is_tx: bool,
    /// The host kring.
    pub kring: HostKring,
    /// The port kind's sync.
    pub sync: Box<dyn RingSync>,
    /// Signalled by the port when this ring can make progress (after [`RingSync::arm`]).
    pub notify: Arc<EventFd>,
    /// Counters.
    pub stats: Arc<RingStats>,
}

/// How a port's rings are synced with the guest.
pub enum Datapath {
    /// The daemon's own sync loop over memory it allocated: one thread per ring.
    Threads {
        /// The netmap memory (a memfd).
        memory: Arc<NetmapMemory>,
        /// The port's interface in that memory.
        if_index: usize,
        /// The rings, while no frontend runs them.
        workers: Mutex<Option<Vec<RingWorker>>>,
    },
    /// A kernel netmap port: the kernel's memory and the kernel's sync loop.
    Kernel(Arc<KernelNetmap>),
}

/// A port served by the daemon.
pub struct Port {
    name: String,
    mac: [u8; 6],
    geometry: PortGeometry,
    datapath: Datapath,
    stats: Vec<Arc<RingStats>>,
    /// The virtio-net header length the guest set (0, 10, 12), shared with the rings that
    /// convert between ports; `None` for ports that carry no header.
    vnet_hdr_len: Option<Arc<AtomicU8>>,
    /// Rings started at least once by this daemon (see [`Port::first_start`]).
    started: AtomicBool,
    /// What the port kind undoes when a frontend goes (VALE: the source addresses it claimed).
    on_frontend_gone: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Port {
    /// A port over interface `if_index` of `memory`, with one worker per ring in ring order.
    pub fn new(
        name: &str,
        memory: Arc<NetmapMemory>,
        if_index: usize,
        workers: Vec<RingWorker>,
    ) -> Self {
        let mac = mac_for(name);
        let stats = workers.iter().map(|w| w.stats.clone()).collect();
        Self {
            geometry: memory.geometry(if_index, 0, mac),
            mac,
            name: name.to_string(),
            datapath: Datapath::Threads {
                memory,
                if_index,
                workers: Mutex::new(Some(workers)),
            },
            stats,
            vnet_hdr_len: None,
            started: AtomicBool::new(false),
            on_frontend_gone: None,
        }
    }

    /// The port carries a virtio-net header of the length in `len` (which its rings read):
    /// it offers PTFEAT `PTNETMAP_F_VNET_HDR`.
    pub fn with_vnet_hdr(mut self, len: Arc<AtomicU8>) -> Self {
        self.geometry.features |= ptnet_protocol::regs::PTNETMAP_F_VNET_HDR;
        self.vnet_hdr_len = Some(len);
        self
    }

    /// Runs `f` whenever a frontend goes (see [`Port::frontend_gone`]).
    pub fn with_frontend_gone(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_frontend_gone = Some(Box::new(f));
        self
    }

    /// A frontend went: what it set up in the port kind (not in the rings) is undone.
    pub fn frontend_gone(&self) {
        if let Some(f) = &self.on_frontend_gone {
            f();
        }
    }

    /// The port's virtio-net header length, if it can carry one.
    pub fn vnet_hdr_len(&self) -> Option<&Arc<AtomicU8>> {
        self.vnet_hdr_len.as_ref()
    }

    /// A kernel netmap port, as the kernel answered its registration.
    pub fn kernel(name: &str, k: KernelNetmap) -> Result<Self, String> {
        let mac = mac_for(name);
        Ok(Self {
            geometry: k.geometry(mac)?,
            mac,
            name: name.to_string(),
            datapath: Datapath::Kernel(Arc::new(k)),
            stats: Vec::new(),
            vnet_hdr_len: None,
            started: AtomicBool::new(false),
            on_frontend_gone: None,
        })
    }

    /// The port's name (as given on the command line, without `@conf`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port as the ptnet and memdev registers describe it.
    pub fn geometry(&self) -> &PortGeometry {
        &self.geometry
    }

    /// The descriptor of the port's netmap memory (what SHMEM_MAP sends) and its size.
    pub fn memory_file(&self) -> (&std::fs::File, u64) {
        match &self.datapath {
            Datapath::Threads { memory, .. } => (memory.file(), memory.size() as u64),
            Datapath::Kernel(k) => (k.file(), self.geometry.mem_size),
        }
    }

    /// How the rings are synced.
    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    /// A locally administered MAC derived from the name (stable across restarts).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Total rings (TX + RX).
    pub fn num_rings(&self) -> u32 {
        self.geometry.num_rings()
    }

    /// Takes the ring workers to run them; `None` while they run, and for kernel ports.
    pub fn take_workers(&self) -> Option<Vec<RingWorker>> {
        match &self.datapath {
            Datapath::Threads { workers, .. } => workers.lock().expect("workers lock").take(),
            Datapath::Kernel(_) => None,
        }
    }

    /// Gives the ring workers back after running them.
    pub fn put_workers(&self, w: Vec<RingWorker>) {
        if let Datapath::Threads { workers, .. } = &self.datapath {
            *workers.lock().expect("workers lock") = Some(w);
        }
    }

    /// Has this daemon never started the port's rings? Then its memory is new to any frontend
    /// that comes back from a previous daemon.
    pub fn first_start(&self) -> bool {
        !self.started.load(Ordering::Relaxed)
    }

    /// Records that the rings ran (and so the port's memory is live).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
        if let Some(m) = self.threads_memory() {
            m.mark_live();
        }
    }

    /// The userspace netmap memory of the port; `None` for kernel ports.
    pub fn threads_memory(&self) -> Option<&Arc<NetmapMemory>> {
        match &self.datapath {
            Datapath::Threads { memory, .. } => Some(memory),
            Datapath::Kernel(_) => None,
        }
    }

    /// Ring `r` (TX first) in the port's memory; `None` for kernel ports.
    pub fn ring_view(&self, r: u32) -> Option<ptnet_protocol::netmap::RingView> {
        match &self.datapath {
            Datapath::Threads {
                memory, if_index, ..
            } => Some(memory.ring(*if_index, r)),
            Datapath::Kernel(_) => None,
        }
    }

    /// Per-ring counters, in ring order.
    pub fn stats(&self) -> &[Arc<RingStats>] {
        &self.stats
    }

    /// A one-line summary of the counters.
    pub fn stats_line(&self) -> String {
        if let Datapath::Kernel(k) = &self.datapath {
            // The kernel runs the rings and keeps no counters we can read: show where each
            // ring is, from the CSB, while a frontend runs them.
            let Some(pos) = k.csb_positions() else {
                return "kernel netmap: rings not running".to_string();
            };
            let ntx = self.geometry.num_tx_rings as usize;
            let rings: Vec<String> = pos
                .iter()
                .enumerate()
                .map(|(i, (head, hwcur, hwtail))| {
                    let (dir, n) = if i < ntx { ("tx", i) } else { ("rx", i - ntx) };
                    format!("{dir}{n}: head={head} hwcur={hwcur} hwtail={hwtail}")
                })
                .collect();
            return format!(
                "kernel netmap (positions from the CSB): {}",
                rings.join(", ")
            );
        }
        let (tx, all) = self.ring_ranges();
        let (tx_packets, rx_packets) = self.packets();
        format!(
            "tx_packets={tx_packets} tx_bytes={} rx_packets={rx_packets} drops={} bad_slots={} resets={} src_refused={}",
            self.total(tx, |s| &s.bytes),
            self.total(all.clone(), |s| &s.drops),
            self.total(all.clone(), |s| &s.bad_slots),
            self.total(all.clone(), |s| &s.resets),
            self.total(all, |s| &s.src_refused),
        )
    }

    /// Packets moved so far by the TX rings and by the RX rings (0 and 0 for kernel ports, whose
    /// counters are the kernel's).
    pub fn packets(&self) -> (u64, u64) {
        let (tx, all) = self.ring_ranges();
        let rx = tx.end..all.end;
        (
            self.total(tx, |s| &s.packets),
            self.total(rx, |s| &s.packets),
        )
    }

    /// The TX rings' indexes in [`Self::stats`], and all of them.
    fn ring_ranges(&self) -> (Range<usize>, Range<usize>) {
        let n = self.stats.len();
        ((0..(self.geometry.num_tx_rings as usize).min(n)), 0..n)
    }

    /// The sum of counter `f` over the rings `r`.
    fn total(&self, r: Range<usize>, f: fn(&RingStats) -> &AtomicU64) -> u64 {
        self.stats[r]
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// A locally administered unicast MAC derived from a port name (FNV-1a).
pub fn mac_for(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_le_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_local_unicast_and_stable() {
        let a = mac_for("vale0:1");
        assert_eq!(a[0] & 0x03, 0x02);
        assert_eq!(a, mac_for("vale0:1"));
        assert_ne!(a, mac_for("vale0:2"));
    }
}
