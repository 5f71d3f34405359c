//! The VALE learning switch: ports with private memories; packets are copied from the sender's
//! buffers into free slots of the destination's RX ring, found by learning source MACs. Unknown
//! and multicast destinations are flooded. A full destination drops (and counts) the packet: a
//! slow receiver never blocks a sender. A port sends only from source addresses it owns
//! ([`super::mactable`]): no port can take over another's address or evict its entries.
//!
//! # Virtio-net headers
//!
//! Each port has the header length its guest set (0, 10 or 12, see `ptnet_protocol::vnet`); the
//! MACs are read after the sender's header. Between ports of equal length frames are copied as
//! they are (the receiver handles whatever header the sender wrote, as in netmap). Between
//! different lengths the switch converts, one frame at a time: a zero header is inserted (with
//! `num_buffers` 1 in the 12-byte form), the 10-byte form gains or loses `num_buffers`, and a
//! header taken off leaves its offloads done in software: a partial checksum completed, a GSO
//! frame cut into as many destination slots as it has segments (dropped whole if the destination
//! has not that many free). A malformed header is counted in the sender's `bad_slots`, once per
//! slot however many destinations refused it.
//!
//! # Frames longer than a buffer
//!
//! A frame may span several slots, each but the last flagged NS_MOREFRAG: netmap's stock Linux
//! ptnet driver sends its TSO frames (up to 64 KiB) so once it has a virtio-net header. The
//! switch assembles such a frame (module `frags`) and, since no port here takes a frame in
//! several slots, delivers it as single-slot frames: a GSO frame cut into its segments (each with
//! the destination's header, offloads done), anything else whole if it fits the destination's
//! buffer, dropped if not. Frames of the same sync before it are delivered first, so the order
//! between them holds. A chain the guest left unfinished, or one longer than
//! `frags::MAX_FRAME` (64 KiB and a header), is refused as bad slots.
//!
//! # Delivery
//!
//! A sender copies into the destination's [`DeliveryRing`] and runs that ring's host pass itself
//! (direct delivery, see [`crate::port::delivery`]): once after its commits, and once before when
//! the destination looks short of room, to take in what its guest released without a kick (a
//! switch drops what does not fit, so a stale view of the room would lose packets).
//!
//! # Ports coming and going
//!
//! The port table is read-copy-update: [`Switch::add_port`] and [`Switch::remove_port`] (the
//! control socket's `add` / `remove`, one at a time) publish a new [`PortTable`] and bump the
//! switch's generation. A TX ring keeps its own `Arc` of the table and, at the start of each
//! sync, compares one atomic generation with the one it has: only when they differ does it take
//! the new table (a `try_lock` for an `Arc` clone, once per ring and change: a sync never waits
//! for it, and keeps its old table while a change is being published) and size its
//! per-destination lists to it. An old table stays alive while any
//! ring still uses it, so a sync that started before a removal finishes into the removed port's
//! rings, harmlessly. A port's index is its slot for its whole life; a removed port's slot is
//! empty in the new table and its MAC entries are forgotten ([`MacTable::forget`]), so frames
//! for it are flooded to the ports that remain (or dropped as `no route` while a stale entry is
//! still seen).

use crate::port::delivery::DeliveryRing;
use crate::port::mactable::{mac_u64, Admit, MacTable};
use crate::port::ring::{BatchCounts, RingStats, RingSync, TxBatch};
use ptnet_protocol::netmap::{ring_add, slot_flags, BufPool, RingView};
use ptnet_protocol::sync::{HostKring, PortSync};
use ptnet_protocol::vnet::{self, VnetError, VnetHeader};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

mod frags;

/// Frames shorter than an Ethernet header cannot be switched.
const ETH_HLEN: usize = 14;

/// One port as the switch sees it: where to deliver.
pub struct SwitchPort {
    /// The port's RX rings.
    pub rx: Vec<Arc<DeliveryRing>>,
    /// Their counters: a receiver's corrupt slot counts there, not on the sender.
    pub rx_stats: Vec<Arc<RingStats>>,
    /// The MAC its device offers its guest (owned from the start; see [`super::mactable`]).
    pub mac: [u8; 6],
    /// The virtio-net header length its guest set (the device writes it).
    pub vnet_hdr_len: Arc<AtomicU8>,
}

/// The switch's ports as the TX rings see them: slot `i` is port `i`, `None` once removed.
#[derive(Default)]
pub struct PortTable {
    /// The ports, by index.
    pub ports: Vec<Option<Arc<SwitchPort>>>,
}

impl PortTable {
    /// The largest RX buffer of any port (what a conversion may write).
    fn max_buf(&self) -> usize {
        self.ports
            .iter()
            .flatten()
            .flat_map(|p| p.rx.iter().map(|r| r.bufs.buf_size() as usize))
            .max()
            .unwrap_or(0)
    }
}

/// Why a port could not join a switch.
#[derive(Debug, thiserror::Error)]
#[error("switch '{0}' has {max} ports already", max = crate::port::mactable::MAX_PORTS)]
pub struct SwitchFull(pub String);

/// A VALE switch.
pub struct Switch {
    /// Name (`vale0`).
    pub name: String,
    /// The current port table (replaced whole by a change; see the module notes).
    ports: Mutex<Arc<PortTable>>,
    /// Bumped after each change of `ports`.
    generation: AtomicU64,
    /// Learnt MACs.
    pub table: MacTable,
}

impl Switch {
    /// A switch with no ports.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ports: Mutex::new(Arc::new(PortTable::default())),
            generation: AtomicU64::new(0),
            table: MacTable::empty(),
        }
    }

    /// The current table and its generation.
    pub fn snapshot(&self) -> (Arc<PortTable>, u64) {
        let t = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: a change bumps it before unlocking.
        (t.clone(), self.generation.load(Ordering::Acquire))
    }

    /// [`Self::snapshot`] without waiting: `None` while a change (or another ring's refresh)
    /// holds the table; the caller keeps the table it has, which stays valid.
    fn try_snapshot(&self) -> Option<(Arc<PortTable>, u64)> {
        let t = match self.ports.try_lock() {
            Ok(t) => t,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some((t.clone(), self.generation.load(Ordering::Acquire)))
    }

    /// Port `i`, if it is on the switch.
    pub fn port(&self, i: usize) -> Option<Arc<SwitchPort>> {
        self.snapshot().0.ports.get(i).cloned().flatten()
    }

    /// Ports on the switch.
    pub fn num_ports(&self) -> usize {
        self.snapshot().0.ports.iter().flatten().count()
    }

    /// Puts `port` in the first free slot (its MAC its own, `mac_limit` more to claim);
    /// returns its index.
    pub fn add_port(&self, port: SwitchPort, mac_limit: u32) -> Result<usize, SwitchFull> {
        let mut t = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let mut ports = t.ports.clone();
        let i = ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(ports.len());
        if i >= crate::port::mactable::MAX_PORTS {
            return Err(SwitchFull(self.name.clone()));
        }
        self.table.add_port(i, port.mac, mac_limit);
        if i == ports.len() {
            ports.push(None);
        }
        ports[i] = Some(Arc::new(port));
        *t = Arc::new(PortTable { ports });
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(i)
    }

    /// Takes port `i` off the switch (its rings' syncs stop sending to it as soon as they see
    /// the new table). Its MAC entries go with [`Self::forget_port`], once its own TX rings
    /// have stopped (they would claim again).
    pub fn remove_port(&self, i: usize) {
        let mut t = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let mut ports = t.ports.clone();
        if let Some(p) = ports.get_mut(i) {
            *p = None;
        }
        while ports.last().is_some_and(Option::is_none) {
            ports.pop();
        }
        *t = Arc::new(PortTable { ports });
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets every address port `i` owned (see [`Self::remove_port`]).
    pub fn forget_port(&self, i: usize) {
        self.table.forget(i);
    }
}

/// The switches of the userspace netmap, by name: made by their first port.
#[derive(Default)]
pub struct Switches(Mutex<std::collections::BTreeMap<String, Arc<Switch>>>);

impl Switches {
    /// Switch `name`, made now if it does not exist.
    pub fn get_or_create(&self, name: &str) -> Arc<Switch> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_string())
            .or_insert_with(|| Arc::new(Switch::new(name)))
            .clone()
    }

    /// Switch `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Switch>> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(name).cloned()
    }
}

/// TX ring `ring_no` of switch port `me`.
pub struct ValeTx {
    /// The switch.
    pub switch: Arc<Switch>,
    /// The port table this ring uses, and its generation (see the module notes).
    ports: Arc<PortTable>,
    generation: u64,
    /// This port's index.
    pub me: usize,
    /// This ring's number among the port's TX rings.
    pub ring_no: usize,
    /// The ring.
    pub tx: RingView,
    /// This port's buffers.
    pub bufs: BufPool,
    /// Per destination port: slots to deliver this round (capacity preallocated).
    pub lists: Vec<Vec<u32>>,
    /// Counters.
    pub stats: Arc<RingStats>,
    /// The frame being converted (between ports of different header lengths), a buffer's worth;
    /// grown to `frags::MAX_FRAME` by the first chain of slots assembled in it.
    frame: Vec<u8>,
    /// The converted frame or segment.
    out: Vec<u8>,
    /// Slots of this sync refused for a bad header (each counted once).
    bad_headers: Vec<u32>,
}

/// What became of one frame delivered with a header conversion.
enum Converted {
    /// Written into this many destination slots.
    Sent(u32),
    /// Not delivered: no room, or longer than the destination's buffers.
    Dropped,
    /// The sender's header or frame was malformed.
    Bad(VnetError),
}

impl ValeTx {
    /// A TX ring of `num_slots` slots; the per-destination lists are allocated here, once.
    pub fn new(
        switch: Arc<Switch>,
        me: usize,
        ring_no: usize,
        tx: RingView,
        bufs: BufPool,
        stats: Arc<RingStats>,
    ) -> Self {
        let mut t = Self {
            frame: vec![0; bufs.buf_size() as usize],
            out: Vec::new(),
            bad_headers: Vec::with_capacity(tx.num_slots() as usize),
            ports: Arc::default(),
            generation: u64::MAX,
            lists: Vec::new(),
            switch,
            me,
            ring_no,
            tx,
            bufs,
            stats,
        };
        let now = t.switch.snapshot();
        t.take(now);
        t
    }

    /// Takes the switch's current port table if it changed (allocating only then), without
    /// ever waiting: while the table is being changed, this sync uses the one it has.
    #[inline]
    fn refresh(&mut self) {
        if self.switch.generation.load(Ordering::Acquire) == self.generation {
            return;
        }
        if let Some(now) = self.switch.try_snapshot() {
            self.take(now);
        }
    }

    /// Uses table `ports` of `generation` from now on.
    fn take(&mut self, (ports, generation): (Arc<PortTable>, u64)) {
        let slots = self.tx.num_slots() as usize;
        self.lists
            .resize_with(ports.ports.len(), || Vec::with_capacity(slots));
        let out = ports.max_buf();
        if self.out.len() < out {
            self.out.resize(out, 0);
        }
        (self.ports, self.generation) = (ports, generation);
    }

    /// Port `p` of the table this ring uses.
    #[inline]
    fn dst(&self, p: usize) -> Option<&Arc<SwitchPort>> {
        self.ports.ports.get(p).and_then(Option::as_ref)
    }

    /// Delivers the slots in `self.lists[p]` to port `p`, whose header length (`dst_len`) differs
    /// from ours (`src_len`), converting each frame. Returns (delivered, dropped).
    fn deliver_converted(&mut self, p: usize, src_len: usize, dst_len: usize) -> (u64, u64) {
        let Some(dst) = self.dst(p) else {
            return (0, self.lists[p].len() as u64);
        };
        let rx = dst.rx[self.ring_no % dst.rx.len()].clone();
        let (mut sent, mut dropped) = (0u64, 0u64);
        for i in 0..self.lists[p].len() {
            let j = self.lists[p][i];
            match self.convert_one(&rx, j, src_len, dst_len) {
                Converted::Sent(n) => sent += u64::from(n),
                Converted::Dropped => dropped += 1,
                Converted::Bad(e) => {
                    tracing::debug!(switch = self.switch.name, port = self.me, "dropped: {e}");
                    if !self.bad_headers.contains(&j) {
                        self.bad_headers.push(j);
                    }
                }
            }
        }
        if sent > 0 {
            rx.host_pass(false);
        }
        (sent, dropped)
    }

    /// Converts TX slot `j` into one or more slots of `rx` (see the module notes).
    fn convert_one(
        &mut self,
        rx: &DeliveryRing,
        j: u32,
        src_len: usize,
        dst_len: usize,
    ) -> Converted {
        let len = usize::from(self.tx.len(j));
        // The sync checked the length against our buffers and the index.
        if !self
            .bufs
            .read(self.tx.buf_idx(j), 0, &mut self.frame[..len])
        {
            return Converted::Bad(VnetError::Truncated { need: len, have: 0 });
        }
        self.convert_frame(rx, len, (src_len, dst_len), false)
    }

    /// Converts the frame in `self.frame[..len]` (with the sender's `src_len`-byte header) into
    /// one or more slots of `rx` (whose port takes `dst_len`-byte headers). A GSO frame is cut
    /// into segments when the destination has no header, or always with `split` (a frame
    /// assembled from several slots, which no destination takes whole).
    fn convert_frame(
        &mut self,
        rx: &DeliveryRing,
        len: usize,
        (src_len, dst_len): (usize, usize),
        split: bool,
    ) -> Converted {
        let hdr = match VnetHeader::parse(&self.frame[..len], src_len) {
            Ok(h) => h,
            Err(e) => return Converted::Bad(e),
        };
        let payload = src_len..len;
        let dst_buf = rx.bufs.buf_size() as usize;
        if (dst_len == 0 || split) && hdr.is_gso() {
            let g = match vnet::Gso::new(&hdr, &self.frame[payload.clone()]) {
                Ok(g) => g,
                Err(e) => return Converted::Bad(e),
            };
            let n = g.count() as u32;
            if dst_len + g.segment_len(0) > dst_buf || rx.space() < n {
                return Converted::Dropped;
            }
            // Each segment is complete (checksums done): its header, if any, asks for nothing.
            let seg_hdr = VnetHeader {
                num_buffers: u16::from(dst_len == vnet::HDR_LEN_MRG),
                ..VnetHeader::default()
            };
            // Another sender may take the room first: what does not fit is dropped.
            let Some(res) = rx.reserve(n) else {
                return Converted::Dropped;
            };
            let mut d = res.start;
            for i in 0..res.n as usize {
                let out = &mut self.out[..dst_buf];
                seg_hdr.emit(out, dst_len).expect("room for the header");
                let seg_len = g
                    .write_segment(&self.frame[payload.clone()], i, &mut out[dst_len..])
                    .expect("checked by Gso::new and sized above");
                self.put(rx, d, dst_len + seg_len);
                d = ring_add(d, 1, rx.num_slots());
            }
            rx.commit(res);
            return if res.n == n {
                Converted::Sent(n)
            } else {
                Converted::Dropped
            };
        }
        let out_len = dst_len + payload.len();
        if out_len > dst_buf {
            return Converted::Dropped;
        }
        let out = &mut self.out[..out_len];
        out[dst_len..].copy_from_slice(&self.frame[payload]);
        if dst_len == 0 {
            if let Err(e) = vnet::complete_checksum(&hdr, out) {
                return Converted::Bad(e);
            }
        } else {
            let num_buffers = u16::from(dst_len == vnet::HDR_LEN_MRG);
            let h = VnetHeader { num_buffers, ..hdr };
            h.emit(out, dst_len).expect("room for the header");
        }
        let Some(res) = rx.reserve(1) else {
            return Converted::Dropped;
        };
        self.put(rx, res.start, out_len);
        rx.commit(res);
        Converted::Sent(1)
    }

    /// Writes `self.out[..len]` into slot `d` of `rx` (a slot this producer reserved).
    fn put(&self, rx: &DeliveryRing, d: u32, len: usize) {
        let ok = rx.bufs.write(rx.ring.buf_idx(d), 0, &self.out[..len]);
        // A corrupt slot of the receiver's own gets nothing.
        rx.ring.set_len(d, if ok { len as u16 } else { 0 });
        rx.ring.set_flags(d, 0);
    }

    /// Copies the slots in `self.lists[p]` into port `p`'s RX ring. Returns (delivered, dropped
    /// for want of room); a receiver's corrupt slot counts in its own RX ring's `bad_slots`.
    fn deliver(&self, p: usize) -> (u64, u64) {
        let Some(dst) = self.dst(p) else {
            return (0, self.lists[p].len() as u64);
        };
        let k = self.ring_no % dst.rx.len();
        let rx = &dst.rx[k];
        let mut rest = &self.lists[p][..];
        let (mut sent, mut bad) = (0u64, 0u64);
        if rest.len() as u32 > rx.space() {
            // Take in the slots the destination's guest released (direct delivery: it kicks
            // for them only while a producer waits, and VALE senders never wait): a pass.
            rx.host_pass(false);
        }
        while !rest.is_empty() {
            let Some(res) = rx.reserve(rest.len() as u32) else {
                break;
            };
            let mut d = res.start;
            for &j in &rest[..res.n as usize] {
                let (src, len) = (self.tx.buf_idx(j), self.tx.len(j));
                let di = rx.ring.buf_idx(d);
                if rx.bufs.copy_from(di, &self.bufs, src, usize::from(len)) {
                    rx.ring.set_len(d, len);
                    sent += 1;
                } else {
                    // The receiver's own slot was corrupt: it gets an empty slot.
                    rx.ring.set_len(d, 0);
                    bad += 1;
                }
                rx.ring.set_flags(d, 0);
                d = ring_add(d, 1, rx.num_slots());
            }
            rx.commit(res);
            rest = &rest[res.n as usize..];
        }
        if sent + bad > 0 {
            // Direct delivery: publish to the destination's guest from here.
            rx.host_pass(false);
        }
        RingStats::add(&dst.rx_stats[k].bad_slots, bad);
        (sent, rest.len() as u64)
    }
}

impl PortSync for ValeTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        self.refresh();
        for l in &mut self.lists {
            l.clear();
        }
        self.bad_headers.clear();
        let my_len = self
            .dst(self.me)
            .map_or(0, |p| usize::from(p.vnet_hdr_len.load(Ordering::Relaxed)));
        let mut b = TxBatch::new(k);
        while let Some(j) = b.slot() {
            let (idx, len, flags) = (
                self.tx.buf_idx(j),
                usize::from(self.tx.len(j)),
                self.tx.flags(j),
            );
            if flags & slot_flags::MOREFRAG != 0 {
                // A frame in several slots (see the module notes): what came before it first.
                self.flush(&mut b.counts, my_len);
                self.multi_slot(&mut b, my_len);
                continue;
            }
            let mut hdr = [0u8; 12];
            if len < my_len + ETH_HLEN
                || len > self.bufs.buf_size() as usize
                || !self.bufs.read(idx, my_len, &mut hdr)
            {
                b.counts.bad_slots += 1;
            } else {
                match self.route(&hdr, flags, &mut b.counts) {
                    Route::Refused => {}
                    Route::To(p) => {
                        b.counts.moved(len);
                        self.lists[p].push(j);
                    }
                    Route::Flood => {
                        b.counts.moved(len);
                        let ports = &self.ports.ports;
                        for (p, l) in self.lists.iter_mut().enumerate() {
                            if p != self.me && ports[p].is_some() {
                                l.push(j);
                            }
                        }
                    }
                    Route::Nowhere => b.counts.moved(len),
                }
            }
            b.next();
        }
        self.flush(&mut b.counts, my_len);
        // Slots with a bad header were counted as packets above: they are bad slots instead.
        b.counts.bad_slots += self.bad_headers.len() as u64;
        b.counts.packets -= self.bad_headers.len() as u64;
        // Copied or dropped, every slot is complete.
        b.finish(k, &self.stats);
    }
}

/// Where a frame goes, from its MACs ([`ValeTx::route`]).
enum Route {
    /// Its source is not the sender's to use: it never reaches the switch (counted).
    Refused,
    /// The port that owns its destination.
    To(usize),
    /// Every other port (unknown or multicast destination).
    Flood,
    /// Nowhere: its destination is the sender itself, or a port this ring's table does not have
    /// yet (counted as no route).
    Nowhere,
}

impl ValeTx {
    /// Admits the frame whose MACs are `macs` (destination, source) and finds where it goes,
    /// counting a refused source or a missing route in `counts`.
    #[inline]
    fn route(&self, macs: &[u8; 12], flags: u16, counts: &mut BatchCounts) -> Route {
        let dst = mac_u64(macs[..6].try_into().expect("6 bytes"));
        let src = mac_u64(macs[6..].try_into().expect("6 bytes"));
        let t = &self.switch.table;
        let admitted = macs[6] & 1 == 0
            && if flags & slot_flags::NO_LEARN == 0 {
                matches!(t.admit(src, self.me), Admit::Owned | Admit::Claimed)
            } else {
                t.lookup(src) == Some(self.me)
            };
        if !admitted {
            // A source it does not own (another port's, a multicast one, one past its limit).
            counts.src_refused += 1;
            return Route::Refused;
        }
        let known = if macs[0] & 1 == 0 {
            t.lookup(dst)
        } else {
            None
        };
        match known {
            // An index past this ring's table: a port added since (no route until the next
            // sync takes the new table).
            Some(p) if p != self.me && p < self.lists.len() => Route::To(p),
            Some(p) if p != self.me => {
                counts.no_route += 1;
                Route::Nowhere
            }
            Some(_) => Route::Nowhere,
            None => Route::Flood,
        }
    }

    /// Delivers the frames collected in the per-destination lists, and empties them.
    fn flush(&mut self, counts: &mut BatchCounts, my_len: usize) {
        for p in 0..self.lists.len() {
            if self.lists[p].is_empty() {
                continue;
            }
            match self.dst(p) {
                // A port removed since the table was taken: no route, not a full ring.
                None => counts.no_route += self.lists[p].len() as u64,
                Some(d) => {
                    let dst_len = usize::from(d.vnet_hdr_len.load(Ordering::Relaxed));
                    counts.drops += if dst_len == my_len {
                        self.deliver(p).1
                    } else {
                        self.deliver_converted(p, my_len, dst_len).1
                    };
                }
            }
            self.lists[p].clear();
        }
    }
}

impl RingSync for ValeTx {
    fn arm(&mut self, _k: &HostKring) -> bool {
        // A switch port never waits for room: it drops instead.
        false
    }
}
