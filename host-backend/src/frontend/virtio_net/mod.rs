//! The virtio-net frontend: a port served as a standard vhost-user net device (virtio device
//! type 1), so stock QEMU (`-netdev vhost-user` + `virtio-net-pci`) and any guest's `virtio_net`
//! driver join the same switches and pipes as ptnet guests.
//!
//! Chosen per port with `PORT@conf:frontend=virtio-net`. The device is the in-process guest of
//! the port's netmap rings ([`worker`]): queue pair `i` (virtqueues `2i` RX and `2i + 1` TX) is
//! netmap TX ring `i` and RX ring `i`, run by one thread through the same port layer the ptnet
//! device's sync loops use (`RingWorker`, `HostKring` passes, direct RX delivery). One copy each
//! way, between guest memory and the port's netmap buffers.
//!
//! Negotiated when the guest takes them: `VIRTIO_F_VERSION_1`, `VIRTIO_RING_F_EVENT_IDX`,
//! `VIRTIO_RING_F_INDIRECT_DESC`, `VIRTIO_NET_F_MRG_RXBUF`, `VIRTIO_NET_F_MAC`,
//! `VIRTIO_NET_F_STATUS`, `VIRTIO_NET_F_MQ` (with `rings=N`), and on ports whose slots carry a
//! virtio-net header (VALE, pipes, tap) `VIRTIO_NET_F_CSUM` / `VIRTIO_NET_F_GUEST_CSUM`: the
//! 12-byte header travels in the slot and the switch converts it for ports with other lengths.
//! `VIRTIO_F_RING_PACKED` too ([`packed`], our own: virtio-queue has split queues only; both
//! layouts behind [`ring::VirtQueue`]). With CSUM, `VIRTIO_NET_F_HOST_TSO4` and `TSO6`: the
//! guest's GSO frames (up to 64 KiB) are cut into segments here, a netmap buffer holding one
//! frame of at most 2 KiB; no GUEST_TSO (frames reach the guest as the port has them), no UFO,
//! no ECN.
//!
//! The vhost-user handling ([`vhost`]) is this crate's own, like the ptnet device's, over
//! `virtio-queue` and `vm-memory`: rust-vmm's `vhost-user-backend` daemon accepts and owns its
//! connections (its handler cannot be built outside it) with blocking reads, which would bypass
//! the daemon's connection deadlines and take-over, and maps the frontend's memory itself with
//! no place to check the memfds before it does.

pub mod config;
pub mod mem;
pub mod packed;
pub mod queue;
pub mod ring;
pub mod rxchain;
#[allow(unsafe_code)]
mod sys;
pub mod vhost;
pub mod vq;
pub mod worker;

use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::port::RingWorker;
use crate::served::Port;
use mem::FrontendMemory;
use queue::HdrConf;
use ring::VirtQueue;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vq::{Vq, VqStats};
use worker::{PairParts, PairThread, PortRings};

/// Largest virtqueue accepted (virtio-net-pci's maximum).
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// What the frontend set up for one virtqueue.
#[derive(Default)]
struct VringConf {
    size: u16,
    /// Descriptor table, avail ring, used ring: frontend virtual addresses.
    addrs: Option<(u64, u64, u64)>,
    next_avail: u16,
    next_used: u16,
    kick: Option<File>,
    call: Option<File>,
    enabled: bool,
    broken: bool,
    stats: Arc<VqStats>,
}

/// One port's virtio-net device across the messages of one connection.
pub struct VirtioNetDevice {
    port: Arc<Port>,
    pairs: u32,
    offered: u64,
    acked: Option<u64>,
    protocol_features: u64,
    memory: Option<Arc<FrontendMemory>>,
    vrings: Vec<VringConf>,
    /// The port's rings while this device holds them (ring order; `None` while a thread runs
    /// that ring).
    workers: Option<Vec<Option<RingWorker>>>,
    threads: Vec<Option<PairThread>>,
    refusals: (Option<Instant>, u64),
    /// Pairs running as last logged (every message restarts them; only changes are logged).
    logged_pairs: usize,
    /// How the pair threads wait (`--busy-poll`, `--spin-us`).
    opts: LoopOptions,
}

impl VirtioNetDevice {
    /// A device for `port` (a userspace netmap port), before any frontend talked to it; its
    /// pair threads wait as `opts` says.
    pub fn new(port: Arc<Port>, opts: LoopOptions) -> Self {
        let g = *port.geometry();
        let pairs = g.num_tx_rings.min(g.num_rx_rings).max(1);
        // The port carries the 12-byte header from the start: frames queued for it while no
        // frontend runs are then in the form the next one reads.
        if let Some(len) = port.vnet_hdr_len() {
            len.store(ptnet_protocol::vnet::HDR_LEN_MRG as u8, Ordering::Relaxed);
        }
        let offered = config::offered_features(port.vnet_hdr_len().is_some(), pairs);
        Self {
            offered,
            pairs,
            acked: None,
            protocol_features: 0,
            memory: None,
            vrings: (0..2 * pairs).map(|_| VringConf::default()).collect(),
            workers: None,
            threads: (0..pairs).map(|_| None).collect(),
            refusals: (None, 0),
            logged_pairs: 0,
            opts,
            port,
        }
    }

    /// The port this device serves.
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// Does any queue pair run?
    pub fn running(&self) -> bool {
        self.threads.iter().any(Option::is_some)
    }

    /// The counters of every virtqueue, in queue order (the same ones across connections).
    pub fn queue_stats(&self) -> Vec<Arc<VqStats>> {
        self.vrings.iter().map(|v| v.stats.clone()).collect()
    }

    /// Counters of every virtqueue, one line.
    pub fn stats_line(&self) -> String {
        self.vrings
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let dir = if i % 2 == 0 { "rx" } else { "tx" };
                format!("{dir}{}: {}", i / 2, v.stats.line())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The frontend went away: stop, give the rings back, forget everything it gave us.
    pub fn disconnect(&mut self) {
        self.stop_all();
        if let Some(w) = self.workers.take() {
            self.port.put_workers(w.into_iter().flatten().collect());
        }
        self.port.frontend_gone();
        tracing::info!(
            port = self.port.name(),
            "virtio-net frontend gone ({}; {})",
            self.port.stats_line(),
            self.stats_line()
        );
        let (refusals, stats) = (self.refusals, self.queue_stats());
        *self = Self::new(self.port.clone(), self.opts);
        self.refusals = refusals;
        // The counters go on across connections, as the rings' do.
        for (v, s) in self.vrings.iter_mut().zip(stats) {
            v.stats = s;
        }
    }

    /// Refuses a request: an error to the connection, a log line at most once a second.
    fn refuse<T>(&mut self, what: &str) -> ::vhost::vhost_user::Result<T> {
        let (last, unlogged) = &mut self.refusals;
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(
                port = self.port.name(),
                refused_unlogged = *unlogged,
                "virtio-net frontend sent {what}; refused"
            );
            *last = Some(Instant::now());
            *unlogged = 0;
        } else {
            *unlogged += 1;
        }
        Err(::vhost::vhost_user::Error::InvalidParam)
    }

    /// The header forms, from the features acked.
    fn hdr_conf(&self) -> HdrConf {
        let f = self.acked.unwrap_or(0);
        let guest_len = if f & (config::F_VERSION_1 | config::F_MRG_RXBUF) != 0 {
            ptnet_protocol::vnet::HDR_LEN_MRG
        } else {
            ptnet_protocol::vnet::HDR_LEN
        };
        let port_len = if self.port.vnet_hdr_len().is_some() {
            guest_len
        } else {
            0
        };
        HdrConf {
            guest_len,
            port_len,
            csum: f & config::F_CSUM != 0,
            guest_csum: f & config::F_GUEST_CSUM != 0,
            mrg_rxbuf: f & config::F_MRG_RXBUF != 0,
            tso4: f & config::F_HOST_TSO4 != 0,
            tso6: f & config::F_HOST_TSO6 != 0,
        }
    }

    /// Stops every pair thread, keeping the queues' positions and the rings' state.
    fn stop_all(&mut self) {
        for i in 0..self.threads.len() {
            if let Some(t) = self.threads[i].take() {
                let parts = t.stop();
                self.put_back(parts);
            }
        }
    }

    fn put_back(&mut self, p: PairParts) {
        let (rx, tx) = ((2 * p.pair) as usize, (2 * p.pair + 1) as usize);
        for (i, q) in [(rx, &p.rxq), (tx, &p.txq)] {
            let v = &mut self.vrings[i];
            v.next_avail = q.queue.next_avail();
            v.next_used = q.queue.next_used();
            v.broken |= q.broken;
        }
        let ntx = self.port.geometry().num_tx_rings as usize;
        if let Some(w) = self.workers.as_mut() {
            let (ti, ri) = (p.pair as usize, ntx + p.pair as usize);
            w[ti] = Some(p.txw);
            w[ri] = Some(p.rxw);
        }
    }

    /// A virtqueue as the data path runs it, if the frontend set it up completely.
    fn build_queue(&self, i: usize, mem: &FrontendMemory) -> Result<Option<Vq>, String> {
        let v = &self.vrings[i];
        let proto = self.acked.unwrap_or(0) & config::F_PROTOCOL_FEATURES != 0;
        let (Some((d, a, u)), Some(kick)) = (v.addrs, v.kick.as_ref()) else {
            return Ok(None);
        };
        if v.size == 0 || v.broken || (proto && !v.enabled) {
            return Ok(None);
        }
        let gpa = |va: u64, what: &str| {
            mem.va_to_gpa(va)
                .ok_or_else(|| format!("queue {i}: {what} address {va:#x} outside guest memory"))
        };
        let acked = self.acked.unwrap_or(0);
        let event_idx = acked & config::F_EVENT_IDX != 0;
        let kick = kick
            .try_clone()
            .map_err(|e| format!("queue {i}: kick: {e}"))?;
        let call = v.call.as_ref().and_then(|c| c.try_clone().ok());
        let vq = |queue| Vq {
            queue,
            kick,
            call,
            stats: v.stats.clone(),
            broken: false,
        };
        if acked & config::F_RING_PACKED != 0 {
            let areas = (
                gpa(d, "descriptor ring")?,
                gpa(a, "driver area")?,
                gpa(u, "device area")?,
            );
            let mut q = packed::PackedQueue::new(&mem.mem, v.size, areas, event_idx, v.next_avail)
                .map_err(|e| format!("queue {i}: {e}"))?;
            q.set_in_order(acked & config::F_IN_ORDER != 0);
            return Ok(Some(vq(VirtQueue::Packed(q))));
        }
        let mut q = Queue::new(MAX_QUEUE_SIZE).map_err(|e| format!("queue: {e}"))?;
        q.try_set_size(v.size)
            .map_err(|e| format!("queue {i}: size {}: {e}", v.size))?;
        q.try_set_desc_table_address(GuestAddress(gpa(d, "descriptor table")?))
            .map_err(|e| format!("queue {i}: descriptor table: {e}"))?;
        q.try_set_avail_ring_address(GuestAddress(gpa(a, "avail ring")?))
            .map_err(|e| format!("queue {i}: avail ring: {e}"))?;
        q.try_set_used_ring_address(GuestAddress(gpa(u, "used ring")?))
            .map_err(|e| format!("queue {i}: used ring: {e}"))?;
        q.set_event_idx(event_idx);
        q.set_next_avail(v.next_avail);
        q.set_next_used(v.next_used);
        q.set_ready(true);
        if !q.is_valid(&mem.mem) {
            return Err(format!("queue {i}: rings not inside guest memory"));
        }
        Ok(Some(vq(VirtQueue::Split(q))))
    }

    /// Stops the pairs and starts again every pair the frontend has set up completely. Called
    /// after every message that changes the set-up. A queue that cannot run is logged and its
    /// pair left stopped (the connection goes on: the frontend may fix it).
    fn apply(&mut self) {
        self.stop_all();
        let (Some(mem), Some(_)) = (self.memory.clone(), self.acked) else {
            return;
        };
        if self.workers.is_none() {
            let Some(w) = self.port.take_workers() else {
                tracing::warn!(
                    port = self.port.name(),
                    "the port's rings are not available (a kernel netmap port, or running for \
                     another connection)"
                );
                return;
            };
            self.workers = Some(w.into_iter().map(Some).collect());
            self.port.mark_started();
        }
        let conf = self.hdr_conf();
        let ntx = self.port.geometry().num_tx_rings;
        let Some(netmap) = self.port.threads_memory().cloned() else {
            return;
        };
        for pair in 0..self.pairs {
            let (rxi, txi) = ((2 * pair) as usize, (2 * pair + 1) as usize);
            let (rxq, txq) = match (self.build_queue(rxi, &mem), self.build_queue(txi, &mem)) {
                (Ok(Some(r)), Ok(Some(t))) => (r, t),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(port = self.port.name(), pair, "queue pair not started: {e}");
                    continue;
                }
                _ => continue,
            };
            let w = self.workers.as_mut().expect("taken above");
            let (Some(txw), Some(rxw)) = (w[pair as usize].take(), w[(ntx + pair) as usize].take())
            else {
                continue;
            };
            let rings = PortRings {
                tx: self.port.ring_view(pair).expect("a threads port"),
                rx: self.port.ring_view(ntx + pair).expect("a threads port"),
                bufs: netmap.bufs().clone(),
            };
            let parts = PairParts {
                pair,
                rxq,
                txq,
                txw,
                rxw,
            };
            let keep: Arc<dyn Send + Sync> = self.port.clone();
            match PairThread::start(
                self.port.name(),
                parts,
                rings,
                mem.clone(),
                conf,
                self.opts,
                keep,
            ) {
                Ok(t) => self.threads[pair as usize] = Some(t),
                Err((e, parts)) => {
                    tracing::error!(
                        port = self.port.name(),
                        pair,
                        "cannot start its thread: {e}"
                    );
                    self.put_back(*parts);
                }
            }
        }
        let pairs = self.threads.iter().filter(|t| t.is_some()).count();
        if pairs != self.logged_pairs {
            self.logged_pairs = pairs;
            tracing::info!(
                port = self.port.name(),
                pairs,
                features = format!("{:#x}", self.acked.unwrap_or(0)),
                "virtio-net queue pairs running (header {} bytes in the guest, {} in the port)",
                conf.guest_len,
                conf.port_len
            );
        }
    }
}

#[cfg(test)]
mod tests;

impl Drop for VirtioNetDevice {
    fn drop(&mut self) {
        self.stop_all();
        if let Some(w) = self.workers.take() {
            self.port.put_workers(w.into_iter().flatten().collect());
        }
    }
}
