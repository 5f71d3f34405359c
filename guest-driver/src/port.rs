//! The netmap-like API: a [`Port`] attached to a ptnet device, its TX and RX rings, and blocking
//! waits.
//!
//! ```no_run
//! use ptnet_driver::{Port, RingId};
//! # fn main() -> Result<(), ptnet_driver::Error> {
//! let mut port = Port::open("vhost-user:/tmp/p/p{1.sock")?;
//! let mut tx = port.tx_ring(0);
//! while tx.space() > 0 {
//!     tx.send(&[0u8; 60]);
//! }
//! tx.txsync()?;
//! port.wait(RingId::Tx(0), None)?;
//! # Ok(())
//! # }
//! ```
//!
//! The application owns the slots from `cur` to `tail` (exclusive), exactly as in netmap: TX slots
//! it may fill, RX slots holding received packets. [`TxRing::send`] and [`RxRing::recv`] advance
//! `cur` and `head` together (one slot at a time); [`TxRing::txsync`] / [`RxRing::rxsync`] hand the
//! slots before `head` to the host and learn its progress through the CSB, kicking the host only
//! when it asked for kicks. Buffers live in shared memory and are only accessed by copying.
//!
//! Forwarding between ports (an NFV middlebox, `ptnet-bridge`): [`TxRing::forward_from`] moves a
//! batch of received packets from an RX ring into a TX ring, of the same port or another one,
//! either by copying each packet into the TX slot's buffer ([`ForwardMode::Copy`]) or, when both
//! ports live in one netmap memory ([`Port::shares_memory_with`]), by swapping the two slots'
//! buffer indexes and setting `BUF_CHANGED` on both ([`ForwardMode::SwapBuffers`], netmap's zero
//! copy). [`Port::wait_ports`] sleeps on the interrupts of rings of several ports at once.

use crate::transport::{CsbArrays, Transport};
use crate::{Error, PortSpec};
use ptnet_protocol::csb::{Atok, Ktoa, NAF_FORCE_RECLAIM};
use ptnet_protocol::netmap::{
    nif, ring, ring_add, ring_dist, slot_flags, BufPool, IfView, RingView,
};
use ptnet_protocol::regs::{memdev, ptnet, PTCTL_CREATE, PTCTL_DELETE, PTNETMAP_F_VNET_HDR};
use ptnet_protocol::sync::{ring_prev, GuestKring};
use std::time::Duration;

/// Largest slot count per ring we accept from a device (netmap's own limit is 16384... we allow
/// more, but keep indexes far from overflow).
const MAX_SLOTS: u32 = 1 << 20;

/// Names a ring of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingId {
    /// TX ring `i`.
    Tx(u32),
    /// RX ring `i`.
    Rx(u32),
}

/// Per-ring state: the view of the netmap ring, the CSB entries, the guest sync state and the
/// application's indexes.
struct RingState {
    view: RingView,
    atok: Atok,
    ktoa: Ktoa,
    kring: GuestKring,
    /// Global ring number (TX rings first): the kick and interrupt index.
    index: u32,
    head: u32,
    cur: u32,
    tail: u32,
}

impl RingState {
    /// Publishes head/cur/tail into the netmap ring header (for anyone inspecting the memory).
    fn store_indexes(&self) {
        self.view.set_head(self.head);
        self.view.set_cur(self.cur);
        self.view.set_tail(self.tail);
    }

    fn txsync(&mut self, t: &dyn Transport, flags: u32) -> Result<(), Error> {
        self.sync_with(t, flags, GuestKring::txsync)
    }

    fn rxsync(&mut self, t: &dyn Transport, flags: u32) -> Result<(), Error> {
        self.sync_with(t, flags, GuestKring::rxsync)
    }

    /// The body both syncs share: validate the application's indexes, run the protocol's sync,
    /// kick when it says so, and take the ring's new tail.
    #[inline]
    fn sync_with(
        &mut self,
        t: &dyn Transport,
        flags: u32,
        sync: fn(&mut GuestKring, &Atok, &Ktoa, u32) -> bool,
    ) -> Result<(), Error> {
        self.kring
            .prologue(self.head, self.cur)
            .map_err(|source| Error::BadIndexes {
                ring: self.index,
                source,
            })?;
        let resets = self.kring.host_resets;
        if sync(&mut self.kring, &self.atok, &self.ktoa, flags) {
            t.kick(self.index);
        }
        if self.kring.host_resets != resets {
            // The host started over (a restarted daemon): continue from its state.
            self.head = self.kring.rhead;
            self.cur = self.kring.rcur;
        }
        self.tail = self.kring.hwtail;
        self.store_indexes();
        Ok(())
    }

    /// Slots the application owns after cur (free TX slots, received RX packets).
    #[inline]
    fn avail(&self) -> u32 {
        ring_dist(self.cur, self.tail, self.view.num_slots())
    }
}

/// A ptnet port attached through a [`Transport`]: the netmap memory, the rings and the CSB.
///
/// Dropping the port quiesces it ([`Port::quiesce`]: releases the RX slots read, publishes the TX
/// slots filled and waits briefly for the host to take them), then stops the host sync loops
/// (PTCTL DELETE) and unprograms the CSB.
pub struct Port {
    transport: Box<dyn Transport>,
    mac: [u8; 6],
    num_tx_rings: u32,
    num_rx_rings: u32,
    num_tx_slots: u32,
    num_rx_slots: u32,
    mem_id: u32,
    bufs: BufPool,
    rings: Vec<RingState>,
    busy_poll: bool,
    vnet_hdr_len: u32,
    _csb: CsbArrays,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.transport.name())
            .field("mac", &self.mac)
            .field("tx_rings", &self.num_tx_rings)
            .field("rx_rings", &self.num_rx_rings)
            .field("tx_slots", &self.num_tx_slots)
            .field("rx_slots", &self.num_rx_slots)
            .finish()
    }
}

fn dev(msg: String) -> Error {
    Error::Device(msg)
}

impl Port {
    /// Opens a port: `vhost-user:PATH` (a `ptnet-backend` socket) or `ptnetN` /
    /// `ptnet:DDDD:BB:DD.F` (a ptnet PCI device inside a Linux guest).
    pub fn open(spec: &str) -> Result<Port, Error> {
        let transport: Box<dyn Transport> = match PortSpec::parse(spec)? {
            PortSpec::VhostUser(path) => Box::new(
                crate::transport::vhost_user::VhostUserTransport::open(&path)?,
            ),
            PortSpec::Pci(sel) => crate::transport::pci::open(&sel)?,
        };
        Port::attach(transport)
    }

    /// Attaches to the device behind `transport`, in the order the ptnet guest drivers use, and
    /// starts the host sync loops (PTCTL CREATE). Frames carry no virtio-net header.
    pub fn attach(transport: Box<dyn Transport>) -> Result<Port, Error> {
        Self::attach_with_vnet_hdr(transport, 0)
    }

    /// Opens `spec` as [`Port::open`] does, asking for a virtio-net header of `want` bytes (see
    /// [`Port::attach_with_vnet_hdr`]).
    pub fn open_with_vnet_hdr(spec: &str, want: u32) -> Result<Port, Error> {
        let transport: Box<dyn Transport> = match PortSpec::parse(spec)? {
            PortSpec::VhostUser(path) => Box::new(
                crate::transport::vhost_user::VhostUserTransport::open(&path)?,
            ),
            PortSpec::Pci(sel) => crate::transport::pci::open(&sel)?,
        };
        Port::attach_with_vnet_hdr(transport, want)
    }

    /// Attaches as [`Port::attach`], asking for a virtio-net header of `want` bytes (0, 10 or
    /// 12) in front of every frame, as netmap's stock driver does: PTFEAT `VNET_HDR` when the
    /// device offers it, then VNET_HDR_LEN, keeping what the device read back
    /// ([`Port::vnet_hdr_len`]: 0 on a port that carries no header).
    pub fn attach_with_vnet_hdr(
        mut transport: Box<dyn Transport>,
        want: u32,
    ) -> Result<Port, Error> {
        let t = transport.as_mut();
        let ask = if want == 0 { 0 } else { PTNETMAP_F_VNET_HDR };
        t.write_reg(ptnet::PTFEAT, ask)?;
        let feat = t.read_reg(ptnet::PTFEAT)?;
        if feat & !ask != 0 {
            return Err(dev(format!(
                "PTFEAT reads {feat:#x} after writing {ask:#x}"
            )));
        }
        let vnet_hdr_len = if feat & PTNETMAP_F_VNET_HDR != 0 {
            t.write_reg(ptnet::VNET_HDR_LEN, want)?;
            match t.read_reg(ptnet::VNET_HDR_LEN)? {
                l @ (0 | 10 | 12) => l,
                l => return Err(dev(format!("VNET_HDR_LEN reads {l}"))),
            }
        } else {
            0
        };
        let num_tx_rings = t.read_reg(ptnet::NUM_TX_RINGS)?;
        let num_rx_rings = t.read_reg(ptnet::NUM_RX_RINGS)?;
        let num_tx_slots = t.read_reg(ptnet::NUM_TX_SLOTS)?;
        let num_rx_slots = t.read_reg(ptnet::NUM_RX_SLOTS)?;
        let num_rings = num_tx_rings
            .checked_add(num_rx_rings)
            .filter(|&n| n <= ptnet::MAX_RINGS)
            .ok_or_else(|| {
                dev(format!(
                    "{num_tx_rings} TX + {num_rx_rings} RX rings (at most {} in all)",
                    ptnet::MAX_RINGS
                ))
            })?;
        if num_tx_rings == 0 || num_rx_rings == 0 {
            return Err(dev(format!(
                "{num_tx_rings} TX and {num_rx_rings} RX rings: need at least one of each"
            )));
        }
        for (what, n) in [("TX", num_tx_slots), ("RX", num_rx_slots)] {
            if !(2..=MAX_SLOTS).contains(&n) {
                return Err(dev(format!("{n} slots per {what} ring")));
            }
        }

        // The CSB.
        let csb = t.alloc_csb(num_rings)?;
        t.write_reg(ptnet::CSB_GH_BAH, (csb.atok_gpa >> 32) as u32)?;
        t.write_reg(ptnet::CSB_GH_BAL, csb.atok_gpa as u32)?;
        t.write_reg(ptnet::CSB_HG_BAH, (csb.ktoa_gpa >> 32) as u32)?;
        t.write_reg(ptnet::CSB_HG_BAL, csb.ktoa_gpa as u32)?;
        // From here on, failures unprogram the CSB.
        let mut guard = CsbGuard(Some(transport));
        let t = guard.0.as_mut().expect("set").as_mut();

        let mac = ptnet_protocol::regs::mac_from_regs(
            t.read_reg(ptnet::MAC_LO)?,
            t.read_reg(ptnet::MAC_HI)?,
        );
        let nifp_ofs = t.read_reg(ptnet::NIFP_OFS)? as usize;
        let host_mem_id = t.read_reg(ptnet::HOSTMEMID)?;

        // The memdev: identity, size and pools.
        let mem_id = t.read_memdev(memdev::MEMID)?;
        if mem_id != host_mem_id {
            return Err(dev(format!(
                "memdev MEMID {mem_id} does not match the port's HOSTMEMID {host_mem_id}"
            )));
        }
        let mem_size = u64::from(t.read_memdev(memdev::MEMSIZE_HI)?) << 32
            | u64::from(t.read_memdev(memdev::MEMSIZE_LO)?);
        let buf_ofs = t.read_memdev(memdev::BUF_POOL_OFS)? as usize;
        let buf_num = t.read_memdev(memdev::BUF_POOL_OBJNUM)?;
        let buf_size = t.read_memdev(memdev::BUF_POOL_OBJSZ)?;
        let mapped = t.netmap_mem()?;
        let mem_size = usize::try_from(mem_size)
            .ok()
            .filter(|&s| s > 0 && s <= mapped.len())
            .ok_or_else(|| {
                dev(format!(
                    "memdev MEMSIZE {mem_size} does not fit the {} bytes mapped",
                    mapped.len()
                ))
            })?;
        let mem = mapped.sub(0, mem_size).expect("checked above");
        let bufs = (buf_num as usize)
            .checked_mul(buf_size as usize)
            .and_then(|bytes| mem.sub(buf_ofs, bytes))
            .and_then(|m| BufPool::new(m, buf_num, buf_size))
            .ok_or_else(|| {
                dev(format!(
                    "buffer pool ({buf_num} x {buf_size} bytes at {buf_ofs}) outside the {mem_size}-byte memory"
                ))
            })?;
        if buf_size < 64 || buf_num <= ptnet_protocol::netmap::RESERVED_BUFS {
            return Err(dev(format!("buffer pool of {buf_num} x {buf_size} bytes")));
        }

        // The netmap_if and the rings.
        let nif_view = mem
            .sub(nifp_ofs, nif::RING_OFS)
            .and_then(|_| mem.sub(nifp_ofs, mem_size - nifp_ofs))
            .and_then(IfView::new)
            .ok_or_else(|| dev(format!("NIFP_OFS {nifp_ofs} outside the memory")))?;
        let (if_tx, if_rx) = (nif_view.tx_rings(), nif_view.rx_rings());
        if if_tx != num_tx_rings || if_rx != num_rx_rings {
            return Err(dev(format!(
                "netmap_if has {if_tx} TX and {if_rx} RX rings, the registers {num_tx_rings} and {num_rx_rings}"
            )));
        }
        let host_tx = nif_view.host_tx_rings();
        if host_tx > ptnet::MAX_RINGS {
            return Err(dev(format!("netmap_if has {host_tx} host TX rings")));
        }
        let mut rings = Vec::with_capacity(num_rings as usize);
        for index in 0..num_rings {
            let (is_tx, i, slots) = if index < num_tx_rings {
                (true, index, num_tx_slots)
            } else {
                (false, index - num_tx_rings, num_rx_slots)
            };
            // ring_ofs order: NIC TX, host TX, NIC RX, host RX.
            let k = if is_tx { i } else { num_tx_rings + host_tx + i };
            let what = format!("{} ring {i}", if is_tx { "TX" } else { "RX" });
            let ofs = nif_view
                .ring_ofs(k)
                .ok_or_else(|| dev(format!("{what}: ring_ofs[{k}] outside the memory")))?;
            // A ptnet guest kernel finds RX ring i at ring_ofs[NUM_TX_RINGS + 1 + i] whatever
            // ni_host_tx_rings says: refuse a layout where the stock driver and we would use
            // different rings (it would write into whatever it found there).
            if !is_tx && nif_view.rx_ring_ofs_kernel(num_tx_rings, i) != Some(ofs) {
                return Err(dev(format!(
                    "{what}: at ring_ofs[{k}] for libnetmap but ring_ofs[{}] for a ptnet guest kernel (a netmap_if without its host rings)",
                    num_tx_rings + 1 + i
                )));
            }
            let addr = i64::try_from(nifp_ofs)
                .ok()
                .and_then(|n| n.checked_add(ofs))
                .and_then(|a| usize::try_from(a).ok())
                .ok_or_else(|| dev(format!("{what}: bad ring offset {ofs}")))?;
            let view = mem
                .sub(addr, ring::size(slots))
                .and_then(|m| RingView::new(m, slots))
                .ok_or_else(|| {
                    dev(format!(
                        "{what}: {slots} slots at {addr} do not fit the memory (or misaligned)"
                    ))
                })?;
            let field = view.num_slots_field();
            if field != slots {
                return Err(dev(format!(
                    "{what}: num_slots {field}, registers say {slots}"
                )));
            }
            let want_dir = if is_tx { ring::DIR_TX } else { ring::DIR_RX };
            if view.dir() != want_dir {
                return Err(dev(format!("{what}: direction {}", view.dir())));
            }
            if view.nr_buf_size() != buf_size {
                return Err(dev(format!(
                    "{what}: nr_buf_size {}, memdev says {buf_size}",
                    view.nr_buf_size()
                )));
            }
            let pool_at = (addr as i64).checked_add(view.buf_ofs());
            if pool_at != Some(buf_ofs as i64) {
                return Err(dev(format!(
                    "{what}: buf_ofs {} does not point at the buffer pool ({buf_ofs})",
                    view.buf_ofs()
                )));
            }
            let atok = Atok::new(&csb.atok, index).expect("CSB sized for every ring");
            let ktoa = Ktoa::new(&csb.ktoa, index).expect("CSB sized for every ring");
            rings.push((view, atok, ktoa, index));
        }

        // Start the host.
        t.write_reg(ptnet::PTCTL, PTCTL_CREATE)?;
        let errno = t.read_reg(ptnet::PTCTL)?;
        if errno != 0 {
            return Err(Error::Ptctl {
                cmd: PTCTL_CREATE,
                errno,
            });
        }
        let rings = rings
            .into_iter()
            .map(|(view, atok, ktoa, index)| {
                let kring = GuestKring::attach(view.num_slots(), &atok, &ktoa);
                let r = RingState {
                    view,
                    atok,
                    ktoa,
                    kring,
                    index,
                    head: kring.rhead,
                    cur: kring.rcur,
                    tail: kring.hwtail,
                };
                r.store_indexes();
                r
            })
            .collect();
        let transport = guard.0.take().expect("set");
        Ok(Port {
            transport,
            mac,
            num_tx_rings,
            num_rx_rings,
            num_tx_slots,
            num_rx_slots,
            mem_id,
            bufs,
            rings,
            busy_poll: false,
            vnet_hdr_len,
            _csb: csb,
        })
    }

    /// The transport's name for messages (`vhost-user:/path`, `pci:0000:00:04.0`).
    pub fn name(&self) -> &str {
        self.transport.name()
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Bytes of virtio-net header in front of every frame, both ways (0: none).
    pub fn vnet_hdr_len(&self) -> u32 {
        self.vnet_hdr_len
    }

    /// Number of TX rings.
    pub fn num_tx_rings(&self) -> u32 {
        self.num_tx_rings
    }

    /// Number of RX rings.
    pub fn num_rx_rings(&self) -> u32 {
        self.num_rx_rings
    }

    /// Slots per TX ring.
    pub fn num_tx_slots(&self) -> u32 {
        self.num_tx_slots
    }

    /// Slots per RX ring.
    pub fn num_rx_slots(&self) -> u32 {
        self.num_rx_slots
    }

    /// Size of every packet buffer (the largest frame a slot carries).
    pub fn buf_size(&self) -> u32 {
        self.bufs.buf_size()
    }

    /// The netmap memory allocator id.
    pub fn mem_id(&self) -> u32 {
        self.mem_id
    }

    /// Busy-poll mode: when on, syncs never ask the host for interrupts (call [`Port::wait`] only
    /// in interrupt mode). Off by default.
    pub fn set_busy_poll(&mut self, on: bool) {
        self.busy_poll = on;
        for r in &mut self.rings {
            r.kring.want_interrupts = !on;
        }
    }

    /// Is busy-poll mode on?
    pub fn busy_poll(&self) -> bool {
        self.busy_poll
    }

    fn ring_index(&self, id: RingId) -> usize {
        match id {
            RingId::Tx(i) => {
                assert!(
                    i < self.num_tx_rings,
                    "TX ring {i} of {}",
                    self.num_tx_rings
                );
                i as usize
            }
            RingId::Rx(i) => {
                assert!(
                    i < self.num_rx_rings,
                    "RX ring {i} of {}",
                    self.num_rx_rings
                );
                (self.num_tx_rings + i) as usize
            }
        }
    }

    /// TX ring `i`. Panics if `i >= num_tx_rings()`.
    pub fn tx_ring(&mut self, i: u32) -> TxRing<'_> {
        let idx = self.ring_index(RingId::Tx(i));
        TxRing {
            ring: &mut self.rings[idx],
            transport: self.transport.as_ref(),
            bufs: &self.bufs,
        }
    }

    /// RX ring `i`. Panics if `i >= num_rx_rings()`.
    pub fn rx_ring(&mut self, i: u32) -> RxRing<'_> {
        let idx = self.ring_index(RingId::Rx(i));
        RxRing {
            ring: &mut self.rings[idx],
            transport: self.transport.as_ref(),
            bufs: &self.bufs,
        }
    }

    fn sync(&mut self, idx: usize) -> Result<(), Error> {
        let t = self.transport.as_ref();
        let r = &mut self.rings[idx];
        if idx < self.num_tx_rings as usize {
            r.txsync(t, 0)
        } else {
            r.rxsync(t, 0)
        }
    }

    /// Waits until ring `id` has something for the application (a free TX slot, a received
    /// packet), or `timeout` (`None`: forever). Enables interrupts on the ring for the wait.
    /// Returns true when the ring has slots, false on timeout. The ring is synced either way.
    pub fn wait(&mut self, id: RingId, timeout: Option<Duration>) -> Result<bool, Error> {
        self.wait_any(&[id], timeout)
    }

    /// Like [`Port::wait`] for several rings at once: returns true as soon as one of them has
    /// slots for the application.
    pub fn wait_any(&mut self, ids: &[RingId], timeout: Option<Duration>) -> Result<bool, Error> {
        let (idx, nums, n) = self.ring_numbers(ids);
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if self.arm(&idx[..n])? {
                return Ok(true);
            }
            let Some(left) = time_left(deadline) else {
                return Ok(false);
            };
            self.transport.wait_many(&nums[..n], left)?;
        }
    }

    /// Like [`Port::wait_any`] over rings of several ports (a bridge sleeping on both of its
    /// ports): returns true as soon as one of the rings has slots for the application, false at
    /// `timeout`. Every ring is synced with interrupts enabled, exactly as `wait_any` does.
    ///
    /// When every port's transport can be waited on through descriptors
    /// ([`Transport::wait_fds`]: the vhost-user call eventfds, the pci transport's uio
    /// descriptor), this is one `poll` over all of them. Otherwise it blocks on one port's
    /// interrupts at a time, for at most [`WAIT_PORTS_SLICE`], starting with the first port (put
    /// the one most likely to be interrupted first) and moving on after a slice without news.
    /// Interrupts left over from before the call are cleared first, so a stale one cannot end the
    /// wait early. An empty `waits` (or only empty ring lists) sleeps until `timeout` and returns
    /// false.
    pub fn wait_ports(
        waits: &mut [(&mut Port, &[RingId])],
        timeout: Option<Duration>,
    ) -> Result<bool, Error> {
        if let [(port, ids)] = waits {
            return port.wait_any(ids, timeout);
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut turn = 0;
        loop {
            // Clear what was signalled before the syncs below look at the rings: anything
            // signalled after this point stays pending and ends the blocking wait.
            for (port, ids) in waits.iter() {
                if !ids.is_empty() {
                    let (_, nums, n) = port.ring_numbers(ids);
                    port.transport.wait_many(&nums[..n], Some(Duration::ZERO))?;
                }
            }
            let mut ready = false;
            for (port, ids) in waits.iter_mut() {
                let (idx, _, n) = port.ring_numbers(ids);
                ready |= port.arm(&idx[..n])?;
            }
            if ready {
                return Ok(true);
            }
            let Some(left) = time_left(deadline) else {
                return Ok(false);
            };
            if Self::poll_ports(waits, left)?.is_some() {
                // One poll over every port's interrupts ran: sync and look again.
                continue;
            }
            let slice = left.map_or(WAIT_PORTS_SLICE, |l| l.min(WAIT_PORTS_SLICE));
            // The next port with rings to wait on, from `turn`.
            let Some(k) = (0..waits.len())
                .map(|d| (turn + d) % waits.len())
                .find(|&k| !waits[k].1.is_empty())
            else {
                std::thread::sleep(slice);
                continue;
            };
            let (port, ids) = &waits[k];
            let (_, nums, n) = port.ring_numbers(ids);
            if !port.transport.wait_many(&nums[..n], Some(slice))? {
                // Nothing from this port for a whole slice: try the next one.
                turn = (k + 1) % waits.len();
            } else {
                turn = k;
            }
        }
    }

    /// One `poll` over the interrupt descriptors of every port of `waits`, for at most `left`
    /// (and each transport's cap). `None` when some transport cannot be waited on that way (or
    /// there are too many descriptors), so the caller waits port by port; else whether anything
    /// fired (a timeout and a wake-up both send the caller back to sync the rings).
    fn poll_ports(
        waits: &[(&mut Port, &[RingId])],
        left: Option<Duration>,
    ) -> Result<Option<bool>, Error> {
        const MAX_FDS: usize = 4 * (ptnet::MAX_RINGS as usize + 1);
        const MAX_PORTS: usize = 4;
        if waits.len() > MAX_PORTS {
            return Ok(None);
        }
        let mut raw = [-1; MAX_FDS];
        let mut spans = [(0usize, 0usize); MAX_PORTS];
        let mut used = 0;
        let mut limit = left;
        for (k, (port, ids)) in waits.iter().enumerate() {
            let (_, nums, n) = port.ring_numbers(ids);
            if n == 0 {
                continue;
            }
            let Some(w) = port.transport.wait_fds(&nums[..n], &mut raw[used..]) else {
                return Ok(None);
            };
            spans[k] = (used, w.n);
            used += w.n;
            if let Some(cap) = w.cap {
                limit = Some(limit.map_or(cap, |l| l.min(cap)));
            }
        }
        if used == 0 {
            return Ok(None);
        }
        let mut pfds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_FDS];
        for (p, &fd) in pfds.iter_mut().zip(&raw[..used]) {
            p.fd = fd;
            p.events = libc::POLLIN;
        }
        // Round up so a short timeout does not become a busy loop.
        let ms = limit.map_or(-1, |l| {
            l.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        let fired = match crate::sys::poll(&mut pfds[..used], ms) {
            Ok(n) => n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) => return Err(Error::io("poll the ports' interrupts", e)),
        };
        let mut ready = [false; MAX_FDS];
        for (r, p) in ready.iter_mut().zip(&pfds[..used]) {
            *r = p.revents != 0;
        }
        for (k, (port, ids)) in waits.iter().enumerate() {
            let (_, nums, n) = port.ring_numbers(ids);
            let (start, len) = spans[k];
            if n > 0 && len > 0 {
                port.transport
                    .wait_done(&nums[..n], &ready[start..start + len])?;
            }
        }
        Ok(Some(fired))
    }

    /// The `rings` index and the kick/interrupt number of each ring of `ids` (at most
    /// `MAX_RINGS` of them), and how many there are.
    fn ring_numbers(
        &self,
        ids: &[RingId],
    ) -> (
        [usize; ptnet::MAX_RINGS as usize],
        [u32; ptnet::MAX_RINGS as usize],
        usize,
    ) {
        let mut idx = [0usize; ptnet::MAX_RINGS as usize];
        let mut nums = [0u32; ptnet::MAX_RINGS as usize];
        let n = ids.len().min(idx.len());
        for (k, &id) in ids[..n].iter().enumerate() {
            idx[k] = self.ring_index(id);
            nums[k] = idx[k] as u32;
        }
        (idx, nums, n)
    }

    /// Syncs the rings `idx` with interrupts wanted (the sync asks for one, and re-checks, if it
    /// would block), then restores the port's interrupt mode. True if one of them has slots for
    /// the application.
    fn arm(&mut self, idx: &[usize]) -> Result<bool, Error> {
        let mut ready = false;
        for &i in idx {
            self.rings[i].kring.want_interrupts = true;
            self.sync(i)?;
            self.rings[i].kring.want_interrupts = !self.busy_poll;
            ready |= self.rings[i].avail() > 0;
        }
        Ok(ready)
    }

    /// Do this port and `other` live in one netmap memory, so that buffer indexes of one are
    /// buffers of the other (the two ends of a netmap pipe, ports of one kernel netmap
    /// allocator)? Then [`TxRing::forward_from`] may swap buffers between their rings
    /// ([`ForwardMode::SwapBuffers`]).
    ///
    /// Equal memory ids (the memdev's MEMID) are necessary but not enough: ids are only unique
    /// within one host (two daemons both have a memory 2). So the buffer pools must have the same
    /// geometry, and a probe decides: two random values written into the buffer of a free TX
    /// slot of this port (a buffer the application owns and has not published) must read back
    /// through `other`'s mapping of the same buffer index. False when this port has no free TX
    /// slot to probe with.
    pub fn shares_memory_with(&mut self, other: &Port) -> bool {
        if self.mem_id != other.mem_id
            || self.bufs.num() != other.bufs.num()
            || self.bufs.buf_size() != other.bufs.buf_size()
        {
            return false;
        }
        let Some(r) = self.rings[..self.num_tx_rings as usize]
            .iter()
            .find(|r| r.avail() > 0)
        else {
            return false;
        };
        let idx = r.view.buf_idx(r.cur);
        if !self.bufs.valid(idx) {
            return false;
        }
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(idx);
        let nonce = h.finish();
        [nonce, !nonce].into_iter().all(|v| {
            let mut back = [0u8; 8];
            self.bufs.write(idx, 0, &v.to_le_bytes())
                && other.bufs.read(idx, 0, &mut back)
                && u64::from_le_bytes(back) == v
        })
    }

    /// Syncs every ring, then waits (at most `limit`) until the host has caught up with every
    /// ring's head: RX slots read are released, TX slots filled are transmitted. The host keeps
    /// its rings across connections and DELETE stops its loops wherever they are, so without this
    /// the next user of the port would see released RX slots again. Called on drop.
    pub fn quiesce(&mut self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        if self.sync_all().is_err() {
            return;
        }
        let behind = |r: &RingState| r.ktoa.hwcur() % r.view.num_slots() != r.kring.rhead;
        // A host that asked for no kicks may not look at this ring again for a long while (a
        // kernel netmap loop waits for the port): kick every ring it has not caught up on, once,
        // so what we released and queued is taken in before we go (over a netmap pipe, the
        // peer's TX slots complete only when these are released).
        for r in self.rings.iter().filter(|r| behind(r)) {
            self.transport.kick(r.index);
        }
        loop {
            if !self.rings.iter().any(behind) || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Syncs every ring once (txsync on TX rings, rxsync on RX rings).
    pub fn sync_all(&mut self) -> Result<(), Error> {
        for i in 0..self.rings.len() {
            self.sync(i)?;
        }
        Ok(())
    }
}

/// The longest [`Port::wait_ports`] blocks on one port's interrupts before it looks at the
/// others.
pub const WAIT_PORTS_SLICE: Duration = Duration::from_millis(1);

/// Time left until `deadline`: `Some(None)` without a deadline, `None` once it has passed.
fn time_left(deadline: Option<std::time::Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => {
            let left = d.saturating_duration_since(std::time::Instant::now());
            (!left.is_zero()).then_some(Some(left))
        }
    }
}

/// Unprograms the CSB if attaching fails after it was programmed.
struct CsbGuard(Option<Box<dyn Transport>>);

impl Drop for CsbGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.as_mut() {
            detach(t.as_mut());
        }
    }
}

/// DELETE, then zero the four CSB address registers. Errors are ignored: the device may be gone.
fn detach(t: &mut dyn Transport) {
    let _ = t.write_reg(ptnet::PTCTL, PTCTL_DELETE);
    for reg in [
        ptnet::CSB_GH_BAH,
        ptnet::CSB_GH_BAL,
        ptnet::CSB_HG_BAH,
        ptnet::CSB_HG_BAL,
    ] {
        let _ = t.write_reg(reg, 0);
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.quiesce(Duration::from_millis(200));
        detach(self.transport.as_mut());
    }
}

/// A TX ring of a [`Port`]: fill slots from `cur`, then [`TxRing::txsync`].
pub struct TxRing<'a> {
    ring: &'a mut RingState,
    transport: &'a dyn Transport,
    bufs: &'a BufPool,
}

impl TxRing<'_> {
    /// Number of slots.
    pub fn num_slots(&self) -> u32 {
        self.ring.view.num_slots()
    }

    /// Free slots the application may fill now (from `cur` to `tail`).
    pub fn space(&self) -> u32 {
        self.ring.avail()
    }

    /// Slots handed to the host that it has not completed yet (after the last sync).
    pub fn pending(&self) -> u32 {
        let n = self.ring.view.num_slots();
        n - 1 - ring_dist(self.ring.cur, self.ring.tail, n)
    }

    /// The ring's (head, cur, tail).
    pub fn indexes(&self) -> (u32, u32, u32) {
        (self.ring.head, self.ring.cur, self.ring.tail)
    }

    /// Copies `frame` into the buffer of the slot at `cur`, sets its length, and advances `cur`
    /// and `head` past it. Returns false (changing nothing) when the ring has no free slot or the
    /// frame does not fit a buffer. Call [`TxRing::txsync`] to transmit.
    #[inline]
    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.send_with(frame.len(), |w| w.write(0, frame))
    }

    /// Fills the buffer of the slot at `cur` with `fill`, which writes through a [`SlotWriter`]
    /// (shared memory is only reached by copying), then sets the slot length to `len` and advances
    /// `cur` and `head`. Returns false when there is no free slot, `len` exceeds the buffer size,
    /// or `fill` returns false.
    #[inline]
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&SlotWriter<'_>) -> bool) -> bool {
        let r = &mut *self.ring;
        if r.cur == r.tail || len > self.bufs.buf_size() as usize {
            return false;
        }
        let idx = r.view.buf_idx(r.cur);
        if !self.bufs.valid(idx) {
            return false;
        }
        let w = SlotWriter {
            bufs: self.bufs,
            idx,
            len,
        };
        if !fill(&w) {
            return false;
        }
        r.view.set_len(r.cur, len as u16);
        r.view.set_flags(r.cur, 0);
        r.cur = ring_add(r.cur, 1, r.view.num_slots());
        r.head = r.cur;
        true
    }

    /// Hands the filled slots to the host and learns which ones completed.
    pub fn txsync(&mut self) -> Result<(), Error> {
        self.ring.txsync(self.transport, 0)
    }

    /// Like [`TxRing::txsync`], but also asks the host to report completions now (netmap's forced
    /// reclaim); always kicks. Use when draining the ring.
    pub fn txsync_reclaim(&mut self) -> Result<(), Error> {
        self.ring.txsync(self.transport, NAF_FORCE_RECLAIM)
    }

    /// Moves up to `max` received packets from `rx` (from its `cur`) into this ring's free slots
    /// (from `cur`), in order, advancing `cur` and `head` of both rings; returns what it did.
    /// Call [`TxRing::txsync`] to transmit and [`RxRing::rxsync`] to release the RX slots.
    ///
    /// * [`ForwardMode::Copy`]: each packet is copied into the TX slot's own buffer (one copy,
    ///   any two ports).
    /// * [`ForwardMode::SwapBuffers`]: the RX and TX slots exchange buffer indexes and both get
    ///   `BUF_CHANGED` (no copy). Only for rings of ports in one memory
    ///   ([`Port::shares_memory_with`]); across memories the indexes would name other buffers (the
    ///   packets would be garbage, though no memory outside the pools is ever touched).
    ///
    /// A received slot with a bad buffer index or a length over either buffer size is consumed
    /// and counted in `dropped`, with no TX slot used. Allocates nothing.
    #[inline]
    pub fn forward_from(&mut self, rx: &mut RxRing<'_>, max: u32, mode: ForwardMode) -> Forwarded {
        let (t, r) = (&mut *self.ring, &mut *rx.ring);
        let (tbufs, rbufs) = (self.bufs, rx.bufs);
        let (tn, rn) = (t.view.num_slots(), r.view.num_slots());
        let max_len = tbufs.buf_size().min(rbufs.buf_size());
        let mut out = Forwarded::default();
        let (mut j, mut k) = (t.cur, r.cur);
        let mut budget = max;
        while budget > 0 && j != t.tail && k != r.tail {
            budget -= 1;
            let (ridx, len) = (r.view.buf_idx(k), r.view.len(k));
            let tidx = t.view.buf_idx(j);
            let ok = u32::from(len) <= max_len
                && match mode {
                    ForwardMode::Copy => tbufs.copy_from(tidx, rbufs, ridx, usize::from(len)),
                    ForwardMode::SwapBuffers => rbufs.valid(ridx) && tbufs.valid(tidx),
                };
            k = ring_add(k, 1, rn);
            if !ok {
                out.dropped += 1;
                continue;
            }
            match mode {
                ForwardMode::Copy => t.view.set_flags(j, 0),
                ForwardMode::SwapBuffers => {
                    t.view.set_buf_idx(j, ridx);
                    t.view.set_flags(j, slot_flags::BUF_CHANGED);
                    let rk = ring_prev(k, rn);
                    r.view.set_buf_idx(rk, tidx);
                    r.view.set_flags(rk, slot_flags::BUF_CHANGED);
                }
            }
            t.view.set_len(j, len);
            j = ring_add(j, 1, tn);
            out.packets += 1;
            out.bytes += u64::from(len);
        }
        t.cur = j;
        t.head = j;
        r.cur = k;
        r.head = k;
        out
    }
}

/// How [`TxRing::forward_from`] moves a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// Copy the packet into the TX slot's buffer.
    Copy,
    /// Swap the RX and TX slots' buffer indexes (netmap's zero copy; ports in one memory only).
    SwapBuffers,
}

/// What one [`TxRing::forward_from`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Packets placed in the TX ring.
    pub packets: u32,
    /// Their bytes.
    pub bytes: u64,
    /// Received slots consumed but not forwarded (bad buffer index or length).
    pub dropped: u32,
}

/// Write access to one TX buffer, given to the closure of [`TxRing::send_with`].
pub struct SlotWriter<'a> {
    bufs: &'a BufPool,
    idx: u32,
    len: usize,
}

impl SlotWriter<'_> {
    /// Copies `data` into the buffer at byte `at`. Returns false if it would pass the frame
    /// length given to [`TxRing::send_with`].
    #[inline]
    pub fn write(&self, at: usize, data: &[u8]) -> bool {
        at.checked_add(data.len())
            .is_some_and(|end| end <= self.len)
            && self.bufs.write(self.idx, at, data)
    }
}

/// An RX ring of a [`Port`]: read packets from `cur`, then [`RxRing::rxsync`] to release them
/// and learn of new ones.
pub struct RxRing<'a> {
    ring: &'a mut RingState,
    transport: &'a dyn Transport,
    bufs: &'a BufPool,
}

impl RxRing<'_> {
    /// Number of slots.
    pub fn num_slots(&self) -> u32 {
        self.ring.view.num_slots()
    }

    /// Received packets waiting for the application (from `cur` to `tail`).
    pub fn avail(&self) -> u32 {
        self.ring.avail()
    }

    /// The ring's (head, cur, tail).
    pub fn indexes(&self) -> (u32, u32, u32) {
        (self.ring.head, self.ring.cur, self.ring.tail)
    }

    /// Copies the packet at `cur` into `out` (at most `out.len()` bytes) and advances `cur` and
    /// `head` past it. Returns the packet's length (which may exceed what was copied), or `None`
    /// when no packet is waiting. A slot the host filled with a bad buffer index or length is
    /// consumed and reported as a zero-length packet.
    #[inline]
    pub fn recv(&mut self, out: &mut [u8]) -> Option<usize> {
        self.recv_with(|p| {
            let n = p.len().min(out.len());
            p.read(0, &mut out[..n]);
            p.len()
        })
    }

    /// Gives the packet at `cur` to `f` as a [`SlotReader`], then advances `cur` and `head` past
    /// it. Returns what `f` returned, or `None` when no packet is waiting.
    #[inline]
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&SlotReader<'_>) -> R) -> Option<R> {
        let r = &mut *self.ring;
        if r.cur == r.tail {
            return None;
        }
        let idx = r.view.buf_idx(r.cur);
        let mut len = r.view.len(r.cur) as usize;
        if !self.bufs.valid(idx) || len > self.bufs.buf_size() as usize {
            len = 0;
        }
        let p = SlotReader {
            bufs: self.bufs,
            idx,
            len,
        };
        let out = f(&p);
        r.cur = ring_add(r.cur, 1, r.view.num_slots());
        r.head = r.cur;
        Some(out)
    }

    /// Releases the packets read and learns of newly received ones.
    pub fn rxsync(&mut self) -> Result<(), Error> {
        self.ring.rxsync(self.transport, 0)
    }
}

/// Read access to one received packet, given to the closure of [`RxRing::recv_with`].
pub struct SlotReader<'a> {
    bufs: &'a BufPool,
    idx: u32,
    len: usize,
}

impl SlotReader<'_> {
    /// The packet's length (0 for a slot the host filled with a bad buffer index or length).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the packet empty?
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies packet bytes from `at` into `out`. Returns false (copying nothing) if the range
    /// passes the packet's end.
    #[inline]
    pub fn read(&self, at: usize, out: &mut [u8]) -> bool {
        at.checked_add(out.len()).is_some_and(|end| end <= self.len)
            && self.bufs.read(self.idx, at, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptnet_protocol::device::{PortGeometry, PtnetConfig};
    use ptnet_protocol::regs::mac_from_regs;
    use ptnet_protocol::shmem::OwnedMem;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    const SLOTS: u32 = 8;
    const BUF: u32 = 2048;
    const CSB_GPA: u64 = 0x1_0000_2000;

    /// What the mock device records and lets a test change.
    struct MockState {
        cfg: PtnetConfig,
        writes: Vec<(u32, u32)>,
        ptctl_errno: u32,
    }

    /// A ptnet device in plain memory, with a host that does nothing unless the test acts.
    #[derive(Clone)]
    struct Mock {
        state: Arc<Mutex<MockState>>,
        mem: Arc<OwnedMem>,
        /// Where this device's netmap_if is in `mem`.
        nifp: usize,
        csb: Arc<OwnedMem>,
        kicks: Arc<AtomicU32>,
        rings: u32,
    }

    impl Mock {
        /// One TX and one RX ring of SLOTS slots; nifp at 0, rings after it, then the buffers.
        fn new() -> Self {
            Self::sharing_memory(1).remove(0)
        }

        /// `ports` devices (one TX and one RX ring of SLOTS slots each) in one netmap memory,
        /// as the two ends of a netmap pipe: netmap_ifs every 512 bytes from 0, then the rings
        /// (port after port), then the buffers.
        fn sharing_memory(ports: u32) -> Vec<Self> {
            let (tx, rx) = (1, 1);
            let ring_pool = (ports as usize * 512).max(1024);
            let ring_size = ring::size(SLOTS).next_multiple_of(64);
            let nrings = 2 * ports;
            let buf_pool = (ring_pool + nrings as usize * ring_size).next_multiple_of(4096);
            let nbufs = 2 + nrings * SLOTS + 4;
            let mem_size = buf_pool + (nbufs * BUF) as usize;
            let mem = Arc::new(OwnedMem::new(mem_size));
            let m = mem.mem();
            let mut mocks = Vec::new();
            for p in 0..ports {
                let nifp = if ports == 1 { 0 } else { p as usize * 512 };
                let mut ofs = Vec::new();
                for r in 0..2u32 {
                    let k = 2 * p + r;
                    let addr = ring_pool + k as usize * ring_size;
                    let view =
                        RingView::new(m.sub(addr, ring::size(SLOTS)).unwrap(), SLOTS).unwrap();
                    let (dir, tail) = if r == 0 {
                        (ring::DIR_TX, SLOTS - 1)
                    } else {
                        (ring::DIR_RX, 0)
                    };
                    view.init_header(buf_pool as i64 - addr as i64, BUF, 0, dir, tail);
                    for i in 0..SLOTS {
                        view.set_buf_idx(i, 2 + k * SLOTS + i);
                    }
                    ofs.push(addr as i64 - nifp as i64);
                }
                let if_len = if ports == 1 { 1024 } else { 512 };
                IfView::new(m.sub(nifp, if_len).unwrap()).unwrap().init(
                    "mock",
                    1,
                    &ofs[..tx as usize],
                    &ofs[tx as usize..],
                );
                let geo = PortGeometry {
                    features: 1,
                    mac: [2, 0, 0, 0, 0, 9 + p as u8],
                    nifp_offset: nifp as u32,
                    num_tx_rings: tx,
                    num_rx_rings: rx,
                    num_tx_slots: SLOTS,
                    num_rx_slots: SLOTS,
                    mem_id: 7,
                    mem_size: mem_size as u64,
                    if_pool: (0, ports, if_len as u32),
                    ring_pool: (ring_pool as u32, nrings, ring_size as u32),
                    buf_pool: (buf_pool as u32, nbufs, BUF),
                };
                mocks.push(Mock {
                    state: Arc::new(Mutex::new(MockState {
                        cfg: PtnetConfig::new(&geo),
                        writes: Vec::new(),
                        ptctl_errno: 0,
                    })),
                    mem: mem.clone(),
                    nifp,
                    csb: Arc::new(OwnedMem::new(8192)),
                    kicks: Arc::new(AtomicU32::new(0)),
                    rings: tx + rx,
                });
            }
            mocks
        }

        fn set_memdev(&self, reg: u32, v: u32) {
            let mut st = self.state.lock().unwrap();
            st.cfg
                .set(ptnet_protocol::device::MEMDEV_CONFIG_BASE + reg, v);
        }

        fn ring_view(&self, k: u32) -> RingView {
            let m = self.mem.mem();
            let nif = IfView::new(m.sub(self.nifp, m.len() - self.nifp).unwrap()).unwrap();
            // Ring `k` of the port, TX rings first (not a `ring_ofs` index).
            let ofs = if k < nif.tx_rings() {
                nif.ring_ofs(k)
            } else {
                nif.rx_ring_ofs_libnetmap(k - nif.tx_rings())
            };
            let ofs = self.nifp + ofs.unwrap() as usize;
            RingView::new(self.mem.mem().sub(ofs, ring::size(SLOTS)).unwrap(), SLOTS).unwrap()
        }

        fn bufs(&self) -> BufPool {
            let st = self.state.lock().unwrap();
            let (ofs, num, sz) = st.cfg.geometry().buf_pool;
            BufPool::new(
                self.mem
                    .mem()
                    .sub(ofs as usize, (num * sz) as usize)
                    .unwrap(),
                num,
                sz,
            )
            .unwrap()
        }

        fn atok(&self, ring: u32) -> Atok {
            Atok::new(&self.csb.mem(), ring).unwrap()
        }

        fn ktoa(&self, ring: u32) -> Ktoa {
            Ktoa::new(&self.csb.mem().sub(4096, 4096).unwrap(), ring).unwrap()
        }

        fn writes(&self) -> Vec<(u32, u32)> {
            self.state.lock().unwrap().writes.clone()
        }
    }

    impl Transport for Mock {
        fn read_reg(&mut self, off: u32) -> Result<u32, Error> {
            Ok(self.state.lock().unwrap().cfg.get(off))
        }

        fn write_reg(&mut self, off: u32, val: u32) -> Result<(), Error> {
            let mut st = self.state.lock().unwrap();
            st.writes.push((off, val));
            match off {
                ptnet::PTFEAT => {
                    let offered = st.cfg.get(ptnet::PTFEAT);
                    st.cfg.set(off, offered & val);
                }
                ptnet::PTCTL => {
                    let errno = st.ptctl_errno;
                    if val == PTCTL_CREATE && errno == 0 {
                        // Host-to-guest entries from the ring state; the host wants kicks.
                        self.ktoa(0).kernel_write(0, SLOTS - 1);
                        self.ktoa(1).kernel_write(0, 0);
                        self.ktoa(0).set_kern_need_kick(true);
                        self.ktoa(1).set_kern_need_kick(true);
                    }
                    st.cfg.set(off, errno);
                }
                _ => st.cfg.set(off, val),
            }
            Ok(())
        }

        fn read_memdev(&mut self, off: u32) -> Result<u32, Error> {
            Ok(self.state.lock().unwrap().cfg.memdev(off))
        }

        fn netmap_mem(&mut self) -> Result<SharedMem, Error> {
            Ok(self.mem.mem())
        }

        fn alloc_csb(&mut self, rings: u32) -> Result<CsbArrays, Error> {
            assert_eq!(rings, self.rings);
            let m = self.csb.mem();
            Ok(CsbArrays {
                atok: m.sub(0, 4096).unwrap(),
                atok_gpa: CSB_GPA,
                ktoa: m.sub(4096, 4096).unwrap(),
                ktoa_gpa: CSB_GPA + 4096,
            })
        }

        fn kick(&self, _ring: u32) {
            self.kicks.fetch_add(1, Ordering::Relaxed);
        }

        fn wait(&self, _ring: u32, timeout: Option<Duration>) -> Result<bool, Error> {
            std::thread::sleep(
                timeout
                    .unwrap_or(Duration::from_millis(1))
                    .min(Duration::from_millis(1)),
            );
            Ok(false)
        }

        fn name(&self) -> &str {
            "mock"
        }
    }

    use ptnet_protocol::shmem::SharedMem;

    #[test]
    fn attach_follows_the_driver_order_and_detach_undoes_it() {
        let mock = Mock::new();
        let port = Port::attach(Box::new(mock.clone())).unwrap();
        assert_eq!(port.mac(), [2, 0, 0, 0, 0, 9]);
        assert_eq!((port.num_tx_rings(), port.num_rx_rings()), (1, 1));
        assert_eq!((port.num_tx_slots(), port.num_rx_slots()), (SLOTS, SLOTS));
        assert_eq!((port.buf_size(), port.mem_id()), (BUF, 7));
        assert_eq!(
            mock.writes(),
            vec![
                (ptnet::PTFEAT, 0),
                (ptnet::CSB_GH_BAH, 1),
                (ptnet::CSB_GH_BAL, 0x2000),
                (ptnet::CSB_HG_BAH, 1),
                (ptnet::CSB_HG_BAL, 0x3000),
                (ptnet::PTCTL, PTCTL_CREATE),
            ]
        );
        // The guest-to-host entries start aligned with the host's hwcur.
        assert_eq!(mock.atok(0).kernel_read(), (0, 0));
        // The netmap ring headers carry the application's view.
        assert_eq!(
            (mock.ring_view(0).head(), mock.ring_view(0).tail()),
            (0, SLOTS - 1)
        );
        drop(port);
        let w = mock.writes();
        assert_eq!(
            w[6..],
            [
                (ptnet::PTCTL, PTCTL_DELETE),
                (ptnet::CSB_GH_BAH, 0),
                (ptnet::CSB_GH_BAL, 0),
                (ptnet::CSB_HG_BAH, 0),
                (ptnet::CSB_HG_BAL, 0),
            ]
        );
        let st = mock.state.lock().unwrap();
        assert_eq!(
            mac_from_regs(st.cfg.get(8), st.cfg.get(12)),
            [2, 0, 0, 0, 0, 9]
        );
    }

    #[test]
    fn tx_fills_slots_and_publishes_head() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let mut tx = port.tx_ring(0);
        assert_eq!(tx.space(), SLOTS - 1);
        assert!(tx.send(&[0xaa; 60]));
        assert!(tx.send(&[0xbb; 100]));
        assert!(!tx.send(&vec![0; BUF as usize + 1]), "too long");
        assert!(tx.send_with(64, |w| w.write(0, &[1, 2, 3]) && w.write(61, &[4, 5, 6])));
        assert!(
            !tx.send_with(64, |w| w.write(62, &[0; 3])),
            "past the frame"
        );
        assert_eq!(tx.space(), SLOTS - 4);
        assert_eq!(tx.indexes(), (3, 3, SLOTS - 1));
        assert_eq!(mock.kicks.load(Ordering::Relaxed), 0);
        tx.txsync().unwrap();
        // The host asked for kicks: one kick, and head/cur published.
        assert_eq!(mock.kicks.load(Ordering::Relaxed), 1);
        assert_eq!(mock.atok(0).kernel_read(), (3, 3));
        let view = mock.ring_view(0);
        assert_eq!((view.len(0), view.len(1), view.len(2)), (60, 100, 64));
        let bufs = mock.bufs();
        let mut b = [0u8; 3];
        bufs.read(view.buf_idx(1), 97, &mut b);
        assert_eq!(b, [0xbb; 3]);
        bufs.read(view.buf_idx(2), 61, &mut b);
        assert_eq!(b, [4, 5, 6]);
        // Fill the ring: the last free slot is taken, the next send fails.
        let mut tx = port.tx_ring(0);
        while tx.send(&[0; 60]) {}
        assert_eq!(tx.space(), 0);
        assert_eq!(tx.pending(), SLOTS - 1);
        // The host "transmits" everything: hwcur = head, hwtail = head - 1.
        mock.ktoa(0).kernel_write(SLOTS - 1, SLOTS - 2);
        tx.txsync().unwrap();
        assert_eq!(tx.space(), SLOTS - 1);
        assert_eq!(tx.pending(), 0);
    }

    #[test]
    fn rx_reads_what_the_host_published_and_releases_it() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let view = mock.ring_view(1);
        let bufs = mock.bufs();
        for (i, len) in [(0u32, 60u16), (1, 1514)] {
            bufs.write(view.buf_idx(i), 0, &vec![i as u8 + 1; len as usize]);
            view.set_len(i, len);
        }
        let mut rx = port.rx_ring(0);
        assert_eq!(rx.avail(), 0);
        rx.rxsync().unwrap();
        assert_eq!(rx.avail(), 0);
        // Nothing there: the guest asked for an interrupt.
        assert!(mock.atok(1).appl_need_kick());
        mock.ktoa(1).kernel_write(0, 2);
        rx.rxsync().unwrap();
        assert!(!mock.atok(1).appl_need_kick());
        assert_eq!(rx.avail(), 2);
        let mut out = [0u8; 2048];
        assert_eq!(rx.recv(&mut out), Some(60));
        assert_eq!(out[..60], [1; 60]);
        let got = rx.recv_with(|p| {
            let mut b = [0u8; 4];
            assert!(p.read(1510, &mut b));
            assert!(!p.read(1511, &mut b));
            (p.len(), b)
        });
        assert_eq!(got, Some((1514, [2; 4])));
        assert_eq!(rx.recv(&mut out), None);
        rx.rxsync().unwrap();
        assert_eq!(mock.atok(1).kernel_read(), (2, 2));
    }

    #[test]
    fn bad_slots_from_the_host_are_contained() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let view = mock.ring_view(1);
        view.set_buf_idx(0, 1); // reserved
        view.set_buf_idx(1, 2);
        view.set_len(1, 4000); // longer than a buffer
        mock.ktoa(1).kernel_write(0, 2);
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        let mut out = [0u8; 64];
        assert_eq!(rx.recv(&mut out), Some(0));
        assert_eq!(rx.recv(&mut out), Some(0));
        // A TX slot with a bad buffer index is refused.
        mock.ring_view(0).set_buf_idx(0, u32::MAX);
        assert!(!port.tx_ring(0).send(&[0; 60]));
        // Out-of-range host indexes are reduced modulo the ring.
        mock.ktoa(1).kernel_write(1000, 1003);
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        assert!(rx.indexes().2 < SLOTS);
    }

    #[test]
    fn attach_refuses_bad_devices() {
        let expect_device_error = |mock: Mock, what: &str| {
            match Port::attach(Box::new(mock.clone())) {
                Err(Error::Device(msg)) => assert!(msg.contains(what), "{msg}"),
                other => panic!("{what}: {other:?}"),
            }
            // The CSB is unprogrammed again.
            let w = mock.writes();
            assert_eq!(w[w.len() - 4..], [(52, 0), (56, 0), (60, 0), (64, 0)]);
        };
        let m = Mock::new();
        m.set_memdev(memdev::MEMID, 8);
        expect_device_error(m, "MEMID");
        let m = Mock::new();
        let size = m.state.lock().unwrap().cfg.geometry().mem_size as u32;
        m.set_memdev(memdev::MEMSIZE_LO, size + 4096);
        expect_device_error(m, "MEMSIZE");
        let m = Mock::new();
        m.set_memdev(memdev::BUF_POOL_OBJNUM, 100_000);
        expect_device_error(m, "buffer pool");
        let m = Mock::new();
        let v = m.ring_view(0);
        v.init_header(v.buf_ofs() + 2048, BUF, 0, ring::DIR_TX, SLOTS - 1);
        expect_device_error(m, "buf_ofs");
        let m = Mock::new();
        m.ring_view(1).init_header(0, BUF, 0, ring::DIR_TX, 0);
        expect_device_error(m, "direction");
        let m = Mock::new();
        m.state.lock().unwrap().cfg.set(ptnet::NIFP_OFS, 1 << 30);
        expect_device_error(m, "NIFP_OFS");
        // The layout this daemon had before: no host rings, [TX 0, RX 0]. libnetmap's formula
        // finds RX 0, a stock guest kernel's would find the netmap_if itself.
        let m = Mock::new();
        let nif_mem = m.mem.mem().sub(m.nifp, nif::size(4)).unwrap();
        let rx_ofs = nif_mem.load_u64(nif::RING_OFS + 16);
        nif_mem.store_u64(nif::RING_OFS + 8, rx_ofs);
        nif_mem.store_u64(nif::RING_OFS + 16, 0);
        for at in [nif::HOST_TX_RINGS, nif::HOST_RX_RINGS] {
            nif_mem.store_u32(at, 0, std::sync::atomic::Ordering::Relaxed);
        }
        expect_device_error(m, "for a ptnet guest kernel");

        // Before the CSB is programmed: nothing to undo.
        let m = Mock::new();
        m.state.lock().unwrap().cfg.set(ptnet::NUM_RX_RINGS, 40);
        assert!(matches!(
            Port::attach(Box::new(m.clone())),
            Err(Error::Device(_))
        ));
        assert_eq!(m.writes(), vec![(ptnet::PTFEAT, 0)]);

        // PTCTL CREATE failing.
        let m = Mock::new();
        m.state.lock().unwrap().ptctl_errno = 6;
        match Port::attach(Box::new(m.clone())) {
            Err(Error::Ptctl { cmd: 1, errno: 6 }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wait_times_out_and_restores_the_interrupt_mode() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        port.set_busy_poll(true);
        let t = std::time::Instant::now();
        assert!(!port
            .wait(RingId::Rx(0), Some(Duration::from_millis(20)))
            .unwrap());
        assert!(t.elapsed() >= Duration::from_millis(20));
        // While waiting it asked for an interrupt.
        assert!(mock.atok(1).appl_need_kick());
        // A TX ring with space is ready at once.
        assert!(port
            .wait_any(&[RingId::Rx(0), RingId::Tx(0)], None)
            .unwrap());
        // Busy-poll syncs never ask for interrupts.
        port.rx_ring(0).rxsync().unwrap();
        assert!(!mock.atok(1).appl_need_kick());
        mock.ktoa(1).kernel_write(0, 1);
        assert!(port.wait(RingId::Rx(0), None).unwrap());
        assert_eq!(port.rx_ring(0).avail(), 1);
    }

    /// The host side of a mock puts `frames` into RX ring 0 (slots from 0) and publishes them.
    fn host_receives(mock: &Mock, frames: &[&[u8]]) {
        let view = mock.ring_view(1);
        let bufs = mock.bufs();
        for (i, f) in frames.iter().enumerate() {
            bufs.write(view.buf_idx(i as u32), 0, f);
            view.set_len(i as u32, f.len() as u16);
        }
        mock.ktoa(1).kernel_write(0, frames.len() as u32);
    }

    /// The frame in TX slot `i` of a mock, as the host would transmit it.
    fn host_sees(mock: &Mock, i: u32) -> Vec<u8> {
        let view = mock.ring_view(0);
        let mut out = vec![0u8; view.len(i) as usize];
        assert!(mock.bufs().read(view.buf_idx(i), 0, &mut out));
        out
    }

    #[test]
    fn forward_copies_between_ports_in_different_memories() {
        let (ma, mb) = (Mock::new(), Mock::new());
        let mut a = Port::attach(Box::new(ma.clone())).unwrap();
        let mut b = Port::attach(Box::new(mb.clone())).unwrap();
        // Same memory id (7), different memories: the probe tells them apart.
        assert_eq!(a.mem_id(), b.mem_id());
        assert!(!a.shares_memory_with(&b));
        assert!(!b.shares_memory_with(&a));
        let frames: [&[u8]; 4] = [&[1; 60], &[2; 1514], &[3; 61], &[4; 60]];
        host_receives(&ma, &frames);
        // Slot 2 carries a length over the buffer size: consumed, dropped, not forwarded.
        ma.ring_view(1).set_len(2, (BUF + 1) as u16);
        let rx_bufs: Vec<u32> = (0..4).map(|i| ma.ring_view(1).buf_idx(i)).collect();
        let tx_bufs: Vec<u32> = (0..4).map(|i| mb.ring_view(0).buf_idx(i)).collect();
        a.rx_ring(0).rxsync().unwrap();
        let mut rx = a.rx_ring(0);
        let mut tx = b.tx_ring(0);
        // A budget of one moves one packet.
        let f = tx.forward_from(&mut rx, 1, ForwardMode::Copy);
        assert_eq!(
            f,
            Forwarded {
                packets: 1,
                bytes: 60,
                dropped: 0
            }
        );
        let f = tx.forward_from(&mut rx, 64, ForwardMode::Copy);
        assert_eq!(
            f,
            Forwarded {
                packets: 2,
                bytes: 1574,
                dropped: 1
            }
        );
        assert_eq!(rx.avail(), 0);
        assert_eq!(rx.indexes(), (4, 4, 4));
        assert_eq!(tx.indexes(), (3, 3, SLOTS - 1));
        tx.txsync().unwrap();
        rx.rxsync().unwrap();
        assert_eq!(mb.atok(0).kernel_read(), (3, 3));
        assert_eq!(ma.atok(1).kernel_read(), (4, 4));
        // Copied, in order, into the TX slots' own buffers; nothing swapped.
        assert_eq!(host_sees(&mb, 0), vec![1; 60]);
        assert_eq!(host_sees(&mb, 1), vec![2; 1514]);
        assert_eq!(host_sees(&mb, 2), vec![4; 60]);
        for i in 0..4 {
            assert_eq!(ma.ring_view(1).buf_idx(i), rx_bufs[i as usize]);
            assert_eq!(mb.ring_view(0).buf_idx(i), tx_bufs[i as usize]);
            assert_eq!(mb.ring_view(0).flags(i), 0);
        }
    }

    #[test]
    fn forward_swaps_buffers_between_ports_in_one_memory() {
        let mocks = Mock::sharing_memory(2);
        let (ma, mb) = (&mocks[0], &mocks[1]);
        let mut a = Port::attach(Box::new(ma.clone())).unwrap();
        let mut b = Port::attach(Box::new(mb.clone())).unwrap();
        assert!(a.shares_memory_with(&b));
        assert!(b.shares_memory_with(&a));
        let frames: [&[u8]; 3] = [&[7; 60], &[8; 100], &[9; 60]];
        host_receives(ma, &frames);
        // Slot 1 names a reserved buffer: dropped, its index left alone.
        ma.ring_view(1).set_buf_idx(1, 1);
        let rx_bufs: Vec<u32> = (0..3).map(|i| ma.ring_view(1).buf_idx(i)).collect();
        let tx_bufs: Vec<u32> = (0..2).map(|i| mb.ring_view(0).buf_idx(i)).collect();
        a.rx_ring(0).rxsync().unwrap();
        let mut rx = a.rx_ring(0);
        let mut tx = b.tx_ring(0);
        let f = tx.forward_from(&mut rx, 64, ForwardMode::SwapBuffers);
        assert_eq!(
            f,
            Forwarded {
                packets: 2,
                bytes: 120,
                dropped: 1
            }
        );
        tx.txsync().unwrap();
        rx.rxsync().unwrap();
        assert_eq!(mb.atok(0).kernel_read(), (2, 2));
        let (rv, tv) = (ma.ring_view(1), mb.ring_view(0));
        // The TX slots carry the received buffers, the RX slots the TX slots' free ones.
        assert_eq!((tv.buf_idx(0), tv.buf_idx(1)), (rx_bufs[0], rx_bufs[2]));
        assert_eq!((rv.buf_idx(0), rv.buf_idx(2)), (tx_bufs[0], tx_bufs[1]));
        assert_eq!(rv.buf_idx(1), 1);
        for (v, i) in [(&tv, 0), (&tv, 1), (&rv, 0), (&rv, 2)] {
            assert_eq!(v.flags(i), slot_flags::BUF_CHANGED);
        }
        assert_eq!(rv.flags(1), 0);
        assert_eq!(host_sees(mb, 0), vec![7; 60]);
        assert_eq!(host_sees(mb, 1), vec![9; 60]);
        // A full TX ring takes nothing and consumes nothing.
        let mut tx = b.tx_ring(0);
        while tx.send(&[0; 60]) {}
        let mut rx = a.rx_ring(0);
        assert_eq!(
            tx.forward_from(&mut rx, 64, ForwardMode::SwapBuffers),
            Forwarded::default()
        );
    }

    #[test]
    fn wait_ports_sleeps_on_both_ports_and_wakes_on_either() {
        let (ma, mb) = (Mock::new(), Mock::new());
        let mut a = Port::attach(Box::new(ma.clone())).unwrap();
        let mut b = Port::attach(Box::new(mb.clone())).unwrap();
        let rx0 = [RingId::Rx(0)];
        let t = std::time::Instant::now();
        let got = Port::wait_ports(
            &mut [(&mut a, &rx0[..]), (&mut b, &rx0[..])],
            Some(Duration::from_millis(20)),
        )
        .unwrap();
        assert!(!got);
        assert!(t.elapsed() >= Duration::from_millis(20));
        // Both ports asked for interrupts while waiting.
        assert!(ma.atok(1).appl_need_kick());
        assert!(mb.atok(1).appl_need_kick());
        // A packet on the second port ends the wait.
        host_receives(&mb, &[&[5; 60]]);
        let got = Port::wait_ports(&mut [(&mut a, &rx0[..]), (&mut b, &rx0[..])], None).unwrap();
        assert!(got);
        assert_eq!(b.rx_ring(0).avail(), 1);
        assert_eq!(a.rx_ring(0).avail(), 0);
        // A TX ring with space is ready at once; nothing to wait on sleeps until the timeout.
        let tx0 = [RingId::Tx(0)];
        assert!(Port::wait_ports(&mut [(&mut a, &rx0[..]), (&mut b, &tx0[..])], None).unwrap());
        assert!(!Port::wait_ports(
            &mut [(&mut a, &[][..]), (&mut b, &[][..])],
            Some(Duration::from_millis(5))
        )
        .unwrap());
    }
}
