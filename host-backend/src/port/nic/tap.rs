//! `tap:NAME`: a tap device (IFF_TAP | IFF_NO_PI, non-blocking), created when missing (and then
//! gone when the daemon exits) or attached when it exists. With N rings, the tap is opened
//! multi-queue with N descriptors; TX ring i and RX ring i share queue i.
//!
//! A tap moves one frame per system call (`read`/`write`), straight between the descriptor and
//! the slot's buffer: no intermediate copy, no allocation. A frame in a chain of TX slots
//! (NS_MOREFRAG on all but the last: the stock ptnet driver's TSO frames) is one `writev`.
//!
//! # Virtio-net headers
//!
//! The tap is opened with IFF_VNET_HDR and a 12-byte header (TUNSETVNETHDRSZ), and the port
//! offers PTFEAT VNET_HDR: a guest that takes it (the stock ptnet driver asks for 12) hands its
//! checksum and TSO offloads to the host kernel, which then also hands us frames with partial
//! checksums (TUNSETOFFLOAD, checksum only: a received frame must fit one slot's buffer, so the
//! kernel segments before the tap, as it must for a guest that did not negotiate GUEST_TSO). A
//! guest that uses a shorter header or none gets it converted on the way: the missing bytes are
//! written from the stack (`writev`) or read into a scratch header (`readv`), and with no header
//! the tap's offloads are off, so the kernel also checksums before a frame reaches the guest.

use super::common::{NicError, NicParts, PortBufs};
use super::sys;
use crate::port::built::BuiltPort;
use crate::port::ring::{BatchCounts, RingStats, RingSync, TxBatch, Wake};
use crate::portspec::PortSpec;
use ptnet_protocol::netmap::{ring_add, slot_flags, RingView};
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The header length the tap itself reads and writes: `virtio_net_hdr_mrg_rxbuf`.
const TAP_HDR_LEN: usize = 12;
/// What the tap may hand us while the guest takes a header: partial checksums, never GSO
/// frames. With TUN_F_TSO* the kernel hands over frames of up to 64 KiB, which a 2 KiB slot
/// truncates (dropped) and which no guest here can take as one frame: the ports deliver one
/// slot per frame, and the virtio-net device offers no GUEST_TSO. A TCP stream from the host
/// into the guest then stalls on every coalesced send (seen in CI: the echo test lost 87 frames).
const GUEST_OFFLOADS: libc::c_uint = libc::TUN_F_CSUM;

/// Shortest frame we hand to the kernel (an Ethernet header).
const ETH_HLEN: usize = 14;

pub(crate) fn build(spec: &PortSpec, name: &str) -> Result<BuiltPort, NicError> {
    let parts = NicParts::new(spec)?;
    let (t, r) = (parts.spec.tx_rings, parts.spec.rx_rings);
    let queues = t.max(r);
    let created = sys::if_index(name).is_none();
    let fds: Vec<Arc<OwnedFd>> = (0..queues)
        .map(|_| {
            sys::open_tap(name, queues > 1, true).map(Arc::new).map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::EINVAL) => {
                        " (is it an interface of another kind, or a tap with other flags, e.g. not multi-queue?)"
                    }
                    Some(libc::EBUSY) => " (another process holds it)",
                    Some(libc::EPERM) => " (needs CAP_NET_ADMIN, or a tap owned by this user)",
                    _ => "",
                };
                NicError::io(&spec.name, format!("attaching tap '{name}'{hint}"), e)
            })
        })
        .collect::<Result<_, _>>()?;
    for fd in &fds {
        sys::tap_set_vnet_hdr_len(fd.as_raw_fd(), TAP_HDR_LEN as libc::c_int)
            .and_then(|()| sys::tap_set_offload(fd.as_raw_fd(), 0))
            .map_err(|e| NicError::io(&spec.name, format!("tap '{name}': virtio-net header"), e))?;
    }
    let hdr_len = Arc::new(AtomicU8::new(0));
    if created {
        // The kernel gives a new tap a random address; a restarted daemon's tap would then show
        // the guest a new MAC behind the same IP, and the guest's ARP entry stays stale for
        // seconds. Derived from the tap's name, the address survives restarts.
        let mac = host_side_mac(name);
        if let Err(e) = sys::set_hw_addr(name, mac) {
            tracing::warn!(port = spec.name, tap = name, "setting the tap's MAC: {e}");
        }
    }
    let mut syncs: Vec<Box<dyn RingSync>> = Vec::new();
    for i in 0..t {
        syncs.push(Box::new(TapTx {
            fd: fds[i as usize].clone(),
            tx: parts.ring(i),
            bufs: parts.bufs.clone(),
            stats: parts.stats[i as usize].clone(),
            blocked: false,
            hdr_len: hdr_len.clone(),
        }));
    }
    for i in 0..r {
        syncs.push(Box::new(TapRx {
            fd: fds[i as usize].clone(),
            rx: parts.ring(t + i),
            bufs: parts.bufs.clone(),
            stats: parts.stats[(t + i) as usize].clone(),
            want_wake: false,
            dead: false,
            hdr_len: hdr_len.clone(),
            offloads_for: 0,
        }));
    }
    tracing::info!(port = spec.name, tap = name, queues, "tap attached");
    Ok(parts.into_port(&spec.name, syncs, Some(hdr_len)))
}

/// The Ethernet address the daemon gives a tap it creates: locally administered, stable for a
/// name, and never the address the port offers its guest (which is derived from the port name).
pub fn host_side_mac(tap: &str) -> [u8; 6] {
    let mut mac = crate::port::built::mac_for(&format!("tap-host:{tap}"));
    mac[0] = 0x06;
    mac
}

/// TX ring i: one `write` per frame.
pub struct TapTx {
    fd: Arc<OwnedFd>,
    tx: RingView,
    bufs: PortBufs,
    stats: Arc<RingStats>,
    /// Frames are left because a write found the tap full: wake on POLLOUT.
    blocked: bool,
    /// The guest's virtio-net header length (0, 10, 12; the device writes it).
    hdr_len: Arc<AtomicU8>,
}

/// What became of a chain of TX slots ([`TapTx::write_chain`]).
enum Chain {
    /// Written as one frame of this many bytes.
    Sent(usize),
    /// The tap is full: the chain waits, whole.
    Blocked,
    /// The write failed (link down, device gone): dropped.
    Dropped,
    /// A bad slot (index, length), more than [`sys::MAX_CHAIN`] slots, or unfinished at the
    /// guest's head.
    Bad,
}

impl TapTx {
    /// Writes the chain of slots from `j` (NS_MOREFRAG on all but its last; at most `pending`
    /// slots) as one frame: the stock Linux ptnet driver's TSO frames, which the tap takes
    /// whole behind their header and the kernel segments. Returns what happened and how many
    /// slots the chain has.
    fn write_chain(&self, j: u32, pending: u32, hdr: usize) -> (Chain, u32) {
        let mut ranges = [(0usize, 0usize); sys::MAX_CHAIN];
        let (mut n, mut total, mut ok, mut at) = (0usize, 0usize, true, j);
        let num_slots = self.tx.num_slots();
        loop {
            if n as u32 == pending {
                // Unfinished at the guest's head: refused (a driver publishes whole chains).
                return (Chain::Bad, n as u32);
            }
            let (idx, len) = (self.tx.buf_idx(at), usize::from(self.tx.len(at)));
            match self.bufs.offset(idx) {
                Some(off) if n < sys::MAX_CHAIN && len <= self.bufs.buf_size() => {
                    ranges[n] = (off, len);
                }
                _ => ok = false,
            }
            n += 1;
            total += len;
            let more = self.tx.flags(at) & slot_flags::MOREFRAG != 0;
            at = ring_add(at, 1, num_slots);
            if !more {
                break;
            }
        }
        let slots = n as u32;
        if !ok || total < hdr + ETH_HLEN || ranges[0].1 < hdr {
            return (Chain::Bad, slots);
        }
        let (fd, pool) = (self.fd.as_raw_fd(), self.bufs.pool());
        // The tap reads a 12-byte header: the guest's from its first slot, completed here.
        let mut head = [0u8; TAP_HDR_LEN];
        if hdr != TAP_HDR_LEN {
            if !pool.read(ranges[0].0, &mut head[..hdr]) {
                return (Chain::Bad, slots);
            }
            ranges[0] = (ranges[0].0 + hdr, ranges[0].1 - hdr);
        }
        let head = if hdr == TAP_HDR_LEN {
            &[][..]
        } else {
            &head[..]
        };
        match sys::writev_chain(fd, head, pool, &ranges[..n]) {
            Ok(_) => (Chain::Sent(total), slots),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (Chain::Blocked, slots),
            Err(_) => (Chain::Dropped, slots),
        }
    }
}

impl PortSync for TapTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let hdr = usize::from(self.hdr_len.load(Ordering::Relaxed));
        let mut b = TxBatch::new(k);
        while let Some(j) = b.slot() {
            if self.tx.flags(j) & slot_flags::MOREFRAG != 0 {
                let (what, slots) = self.write_chain(j, b.pending(), hdr);
                match what {
                    Chain::Sent(len) => b.counts.moved(len),
                    Chain::Blocked => break,
                    Chain::Dropped => b.counts.drops += 1,
                    Chain::Bad => b.counts.bad_slots += u64::from(slots),
                }
                for _ in 0..slots {
                    b.next();
                }
                continue;
            }
            let (idx, len) = (self.tx.buf_idx(j), usize::from(self.tx.len(j)));
            match self.bufs.offset(idx) {
                Some(off) if (hdr + ETH_HLEN..=self.bufs.buf_size()).contains(&len) => {
                    let fd = self.fd.as_raw_fd();
                    let pool = self.bufs.pool();
                    // The tap reads a 12-byte header: what the guest's lacks comes from here
                    // (num_buffers, or a whole header of zeros: no offload asked).
                    let mut head = [0u8; TAP_HDR_LEN];
                    let sent = if hdr == TAP_HDR_LEN {
                        sys::write_from(fd, pool, off, len)
                    } else if pool.read(off, &mut head[..hdr]) {
                        sys::writev_from(fd, &head, pool, off + hdr, len - hdr)
                    } else {
                        Err(std::io::Error::from_raw_os_error(libc::EFAULT))
                    };
                    match sent {
                        Ok(_) => b.counts.moved(len),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // The tap is full: the rest waits for room (see `arm`).
                            break;
                        }
                        // Link down, device gone, queue full: the frame is dropped.
                        Err(_) => b.counts.drops += 1,
                    }
                }
                _ => b.counts.bad_slots += 1,
            }
            b.next();
        }
        b.finish(k, &self.stats);
    }
}

impl RingSync for TapTx {
    fn arm(&mut self, k: &HostKring) -> bool {
        // Frames are left behind only when a write failed with EAGAIN. A tap write takes an skb
        // charged to the tap file's socket, and fails with EAGAIN only when the socket's unsent
        // bytes reach its send buffer; tun's poll reports POLLOUT when the tap is up and they are
        // under half of it (`tun_sock_writeable`), and `tun_sock_write_space` wakes the poller
        // when they get there. So POLLOUT means a write will succeed: waiting for it cannot spin.
        // (The default send buffer of a tap is INT_MAX, so writes never block unless someone set
        // a smaller one with TUNSETSNDBUF, e.g. QEMU's `sndbuf=`. A tap that is down fails
        // writes with EIO, dropped rather than left; a deleted one reports POLLERR, and the
        // writes then fail and drop what is left.)
        self.blocked = k.hwcur != k.rhead;
        false
    }

    fn wake_fd(&self) -> Option<Wake> {
        self.blocked.then(|| Wake::writable(self.fd.as_raw_fd()))
    }
}

/// RX ring i: one `read` per frame, into the free slots' buffers.
pub struct TapRx {
    fd: Arc<OwnedFd>,
    rx: RingView,
    bufs: PortBufs,
    stats: Arc<RingStats>,
    want_wake: bool,
    /// The tap device went away (deleted under us): stop polling it.
    dead: bool,
    /// The guest's virtio-net header length (0, 10, 12; the device writes it).
    hdr_len: Arc<AtomicU8>,
    /// The header length the tap's offloads were last set for.
    offloads_for: u8,
}

impl PortSync for TapRx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        k.hwcur = k.rhead;
        if self.dead {
            return;
        }
        let stop = ring_prev(k.hwcur, n);
        let mut c = BatchCounts::default();
        let size = self.bufs.buf_size();
        let hdr = self.hdr_len.load(Ordering::Relaxed);
        if hdr != self.offloads_for {
            // Offloads only toward a guest that takes the header (the device is one for all
            // queues; each queue's ring sets it once per change).
            let want = if hdr == 0 { 0 } else { GUEST_OFFLOADS };
            if let Err(e) = sys::tap_set_offload(self.fd.as_raw_fd(), want) {
                tracing::warn!("tap offloads for a {hdr}-byte header: {e}");
            }
            self.offloads_for = hdr;
        }
        let hdr = usize::from(hdr);
        // Bounded: at most a ring's worth of failed reads per pass.
        let mut errors = 0;
        while k.hwtail != stop && errors < n {
            let slot = k.hwtail;
            let Some(off) = self.bufs.offset(self.rx.buf_idx(slot)) else {
                // The guest put a bad buffer in a free slot: it gets the slot back empty.
                self.rx.set_len(slot, 0);
                self.rx.set_flags(slot, 0);
                c.bad_slots += 1;
                k.hwtail = ring_add(slot, 1, n);
                continue;
            };
            let (fd, pool) = (self.fd.as_raw_fd(), self.bufs.pool());
            let mut head = [0u8; TAP_HDR_LEN];
            let got = if hdr == TAP_HDR_LEN {
                sys::read_into(fd, pool, off, size)
            } else {
                // The tap's header goes to the stack; the guest's part of it into the slot.
                sys::readv_into(fd, &mut head, pool, off + hdr, size - hdr).map(|l| {
                    let offloaded = head[0] & 1 != 0 || head[1] != 0;
                    match l.checked_sub(TAP_HDR_LEN) {
                        // NEEDS_CSUM or GSO from before the offloads went off: the guest
                        // without a header could not finish it.
                        Some(_) if hdr == 0 && offloaded => 0,
                        Some(body) if pool.write(off, &head[..hdr]) => hdr + body,
                        _ => 0,
                    }
                })
            };
            match got {
                Ok(len) if len > 0 && len <= size => {
                    self.rx.set_len(slot, len as u16);
                    self.rx.set_flags(slot, 0);
                    c.moved(len);
                    k.hwtail = ring_add(slot, 1, n);
                }
                Ok(_) => {
                    // Empty or truncated (longer than a buffer): dropped.
                    c.drops += 1;
                    errors += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADFD)) => {
                    tracing::warn!("tap detached from its device: {e}; ring stopped");
                    self.dead = true;
                    break;
                }
                Err(_) => {
                    c.drops += 1;
                    errors += 1;
                }
            }
        }
        self.stats.add_batch(&c);
    }
}

impl RingSync for TapRx {
    fn arm(&mut self, k: &HostKring) -> bool {
        // Wake on frames only while there is room for them; the tap's readability is level
        // triggered, so frames already queued wake the poll at once.
        self.want_wake = !self.dead && k.hwtail != ring_prev(k.hwcur, k.num_slots);
        false
    }

    fn wake_fd(&self) -> Option<Wake> {
        self.want_wake.then(|| Wake::readable(self.fd.as_raw_fd()))
    }
}
