//! The served-port aggregate: a port as the daemon serves it ([`Port`]: its name, its registers,
//! its memory and the datapath that syncs its rings, [`Datapath`]), and [`build_ports`], which
//! builds every port of the command line and decides which datapath serves it.
//!
//! Two datapaths, from the two layers below: ports of the daemon's userspace netmap
//! ([`crate::port`]: pipes, VALE, null, and the NIC ports that copy into it) have one
//! [`RingWorker`] per ring, run by the daemon's own sync threads; kernel netmap ports
//! ([`crate::kernel`]) have the kernel's memory and the kernel's sync loop.

use crate::capture::ring::RingTap;
use crate::capture::Tap;
use crate::kernel::KernelNetmap;
use crate::port::build::{build_user_ports, BuildError};
use crate::port::built::{mac_for, BuiltPort, RemoveHooks};
use crate::port::mem::NetmapMemory;
use crate::port::ring::{RingStats, RingWorker};
use crate::port::vale::Switches;
use crate::portspec::{PortKind, PortSpec};
use ptnet_protocol::device::PortGeometry;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

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
    /// What the port kind undoes when the port is removed (VALE: leaving the switch).
    on_remove: Mutex<Option<RemoveHooks>>,
    /// The port's capture point, fed by every ring (`None` for kernel ports).
    tap: Option<Arc<Tap>>,
}

impl Port {
    /// A port of the userspace netmap, as its kind built it: its rings run on the daemon's
    /// threads. A port that carries a virtio-net header offers PTFEAT `PTNETMAP_F_VNET_HDR`.
    pub fn threads(b: BuiltPort) -> Self {
        let mac = mac_for(&b.name);
        let stats = b.workers.iter().map(|w| w.stats.clone()).collect();
        let tap = Arc::new(Tap::default());
        for w in &b.workers {
            let ring = RingTap::new(
                tap.clone(),
                b.memory.ring(b.if_index, w.index),
                b.memory.bufs().clone(),
                b.vnet_hdr_len.clone(),
                w.is_tx,
            );
            let _ = w.stats.tap.set(Arc::new(ring));
        }
        let mut geometry = b.memory.geometry(b.if_index, 0, mac);
        if b.vnet_hdr_len.is_some() {
            geometry.features |= ptnet_protocol::regs::PTNETMAP_F_VNET_HDR;
        }
        Self {
            geometry,
            mac,
            name: b.name,
            datapath: Datapath::Threads {
                memory: b.memory,
                if_index: b.if_index,
                workers: Mutex::new(Some(b.workers)),
            },
            stats,
            vnet_hdr_len: b.vnet_hdr_len,
            started: AtomicBool::new(false),
            on_frontend_gone: b.on_frontend_gone,
            on_remove: Mutex::new(b.on_remove),
            tap: Some(tap),
        }
    }

    /// The port is being removed: what its kind does before its rings stop (a VALE port leaves
    /// its switch's port table).
    pub fn removing(&self) {
        if let Some(h) = self
            .on_remove
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            h.before();
        }
    }

    /// The port was removed, its rings stopped: what its kind does last (a VALE port's
    /// addresses are forgotten).
    pub fn removed(&self) {
        if let Some(mut h) = self
            .on_remove
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.after();
        }
    }

    /// A frontend went: what it set up in the port kind (not in the rings) is undone.
    pub fn frontend_gone(&self) {
        if let Some(f) = &self.on_frontend_gone {
            f();
        }
    }

    /// The port's capture point (`None` for kernel ports: the kernel runs their rings).
    pub fn tap(&self) -> Option<&Arc<Tap>> {
        self.tap.as_ref()
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
            on_remove: Mutex::new(None),
            tap: None,
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

/// Which netmap serves pipe and VALE ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetmapImpl {
    /// The kernel's (`/dev/netmap`): ports are registered with the kernel, which runs their sync.
    Kernel,
    /// The daemon's own userspace netmap.
    User,
}

/// Builds every port named on the command line, in the order given. With [`NetmapImpl::Kernel`],
/// pipe and VALE names go to the kernel as they are; `netmap:IFNAME` always does. VALE ports of
/// the userspace netmap join their switch in `switches` (made by its first port); the daemon
/// calls this again for ports added at runtime.
pub fn build_ports(
    all: &[PortSpec],
    netmap: NetmapImpl,
    switches: &Switches,
) -> Result<Vec<Arc<Port>>, BuildError> {
    let mut seen = HashSet::new();
    for s in all {
        if !seen.insert(s.name.clone()) {
            return Err(BuildError::Duplicate(s.name.clone()));
        }
    }
    let kernel_name = |s: &PortSpec| match &s.kind {
        PortKind::KernelNetmap { ifname } => Some(format!("netmap:{ifname}")),
        PortKind::Pipe { .. } | PortKind::Vale { .. } if netmap == NetmapImpl::Kernel => {
            Some(s.name.clone())
        }
        _ => None,
    };
    let user: Vec<&PortSpec> = all.iter().filter(|s| kernel_name(s).is_none()).collect();
    let mut user = build_user_ports(&user, switches)?;
    let mut ports = Vec::with_capacity(all.len());
    for s in all {
        let port = match kernel_name(s) {
            Some(nmport) => {
                let k = crate::kernel::open_port(s, &nmport)?;
                Port::kernel(&s.name, k).map_err(|reason| {
                    BuildError::Nic(crate::port::nic::NicError::Unsupported {
                        port: s.name.clone(),
                        reason,
                    })
                })?
            }
            None => Port::threads(user.remove(&s.name).expect("built with the others")),
        };
        ports.push(Arc::new(port));
    }
    Ok(ports)
}
