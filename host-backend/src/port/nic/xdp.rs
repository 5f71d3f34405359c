//! `xdp:IFNAME[@QUEUE]`: a host interface through AF_XDP sockets in copy mode, one per queue.
//!
//! Ring i (TX and RX) is the socket on queue `QUEUE + i`. Each socket has its own UMEM (a private
//! anonymous mapping: the guest's memory is never handed to the kernel): the first half of its
//! chunks circulate through the fill and RX rings, the second half carry TX frames and come back
//! through the completion ring. Syncs copy between those chunks and the netmap buffers, a batch at
//! a time; one `sendto(MSG_DONTWAIT)` (the kernel sends at most 32 frames per call in copy mode, so
//! a few) pushes a TX batch out.
//!
//! No libbpf: the XDP program redirecting each queue to its socket is six hand-assembled
//! instructions ([`super::bpf`]), attached through a BPF link (native mode, else generic); it goes
//! away with the daemon. Frames of other queues, or of queues without a socket, go to the host
//! stack (XDP_PASS). Like kernel netmap, and unlike `packet:`, the port's queues are taken away
//! from the host stack while the port exists. One `xdp:` port per interface (the interface has
//! one XDP program).

use super::common::{link_error, require_if, NicError, NicParts, PortBufs};
use super::{bpf, sys};
use crate::port::built::BuiltPort;
use crate::port::ring::{BatchCounts, RingStats, RingSync, TxBatch, Wake};
use crate::portspec::PortSpec;
use ptnet_protocol::netmap::{ring_add, RingView};
use ptnet_protocol::shmem::SharedMem;
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// UMEM chunk size (one netmap buffer).
const CHUNK: u64 = 2048;
/// `sizeof(struct xdp_desc)`.
const DESC: usize = 16;
const ETH_HLEN: usize = 14;
/// How long a TX ring waiting for the kernel sleeps at most: the socket is not woken when the
/// link goes down (its poll then reports nothing), nor when a busy driver queue restarts with
/// none of our frames in flight; the ring finds out this long after, on its own.
const TX_BACKSTOP: Duration = Duration::from_millis(50);
/// How long opening a queue waits for it to be free. The kernel releases an AF_XDP socket's hold
/// on its queue some time after the socket is closed (after its process exited, in deferred
/// work), so a daemon started right after another one stopped on the same interface finds the
/// queue busy (EBUSY from the bind) for a short while; it tries again until this deadline, then
/// fails naming the interface and the queue.
const BIND_BUSY_WAIT: Duration = Duration::from_secs(5);
/// The longest pause between two binding attempts.
const BIND_BUSY_PAUSE: Duration = Duration::from_millis(100);

/// The XDP program, its map and the link keeping it attached (dropped with the last ring).
struct Attachment {
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
}

/// One of the four rings of a socket, in its mapping.
#[derive(Clone)]
struct XskRing {
    mem: SharedMem,
    producer: usize,
    consumer: usize,
    desc: usize,
    mask: u32,
}

impl XskRing {
    fn new(mem: SharedMem, off: &libc::xdp_ring_offset, size: u32) -> Self {
        Self {
            mem,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            desc: off.desc as usize,
            mask: size - 1,
        }
    }

    fn producer(&self) -> u32 {
        self.mem.load_u32(self.producer, Ordering::Acquire)
    }
    fn set_producer(&self, v: u32) {
        self.mem.store_u32(self.producer, v, Ordering::Release)
    }
    fn consumer(&self) -> u32 {
        self.mem.load_u32(self.consumer, Ordering::Acquire)
    }
    fn set_consumer(&self, v: u32) {
        self.mem.store_u32(self.consumer, v, Ordering::Release)
    }
    /// Offset of entry `i` (entries of `size` bytes).
    fn entry(&self, i: u32, size: usize) -> usize {
        self.desc + (i & self.mask) as usize * size
    }
}

/// One AF_XDP socket with its UMEM and rings.
struct Xsk {
    // Mappings first: unmapped before the socket closes.
    _maps: Vec<sys::Mapping>,
    umem: sys::Mapping,
    fd: OwnedFd,
    rx: Option<XskRing>,
    tx: Option<XskRing>,
    fill: XskRing,
    comp: XskRing,
    /// Chunks 0..rx_chunks feed RX; the next tx_chunks carry TX.
    rx_chunks: u32,
    tx_chunks: u32,
}

fn ring_map(
    fd: BorrowedFd<'_>,
    off: &libc::xdp_ring_offset,
    entry: usize,
    size: u32,
    pgoff: u64,
) -> std::io::Result<sys::Mapping> {
    let len = off.desc as usize + size as usize * entry;
    sys::Mapping::shared(fd, pgoff, len, libc::MAP_POPULATE)
}

/// Why one attempt at opening a socket failed.
enum OpenError {
    /// The queue is still held by another socket (EBUSY from the bind): worth another try.
    Busy(std::io::Error),
    /// Anything else.
    Failed(NicError),
}

impl From<NicError> for OpenError {
    fn from(e: NicError) -> Self {
        Self::Failed(e)
    }
}

impl Xsk {
    /// [`Xsk::try_open`] until the queue is free or [`BIND_BUSY_WAIT`] has passed (a new socket
    /// each time: a socket whose bind failed is not reused).
    fn open(
        port: &str,
        (ifname, ifindex): (&str, u32),
        queue: u32,
        rx_size: Option<u32>,
        tx_size: Option<u32>,
    ) -> Result<Self, NicError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let e = match Self::try_open(port, ifindex, queue, rx_size, tx_size) {
                Ok(x) => {
                    if tries > 1 {
                        tracing::info!(
                            port,
                            ifname,
                            queue,
                            waited_ms = start.elapsed().as_millis() as u64,
                            tries,
                            "queue released by its previous socket"
                        );
                    }
                    return Ok(x);
                }
                Err(OpenError::Failed(e)) => return Err(e),
                Err(OpenError::Busy(e)) => e,
            };
            let left = BIND_BUSY_WAIT.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(NicError::io(
                    port,
                    format!(
                        "binding to queue {queue} of {ifname}: still busy after {:.1} s and \
                         {tries} tries (another AF_XDP socket, or a program such as another \
                         daemon, holds that queue)",
                        start.elapsed().as_secs_f64()
                    ),
                    e,
                ));
            }
            if tries == 1 {
                tracing::info!(
                    port,
                    ifname,
                    queue,
                    "queue busy (the previous socket not released yet?): trying again"
                );
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(BIND_BUSY_PAUSE);
        }
    }

    /// One attempt: a socket, its UMEM and rings, bound to `queue`.
    fn try_open(
        port: &str,
        ifindex: u32,
        queue: u32,
        rx_size: Option<u32>,
        tx_size: Option<u32>,
    ) -> Result<Self, OpenError> {
        let io = |what: String, e| NicError::io(port, what, e);
        let fd =
            sys::socket(libc::AF_XDP, 0).map_err(|e| io("creating an AF_XDP socket".into(), e))?;
        let raw = fd.as_raw_fd();
        let fill_size = rx_size.unwrap_or(2);
        let comp_size = tx_size.unwrap_or(2);
        let (rx_chunks, tx_chunks) = (rx_size.unwrap_or(0), tx_size.unwrap_or(0));
        let umem =
            sys::Mapping::anonymous(((rx_chunks + tx_chunks).max(2) as u64 * CHUNK) as usize)
                .map_err(|e| io("allocating the UMEM".into(), e))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.mem().as_ptr() as u64,
            len: umem.mem().len() as u64,
            chunk_size: CHUNK as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::setsockopt(raw, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
            .map_err(|e| io("registering the UMEM".into(), e))?;
        let set = |opt, size: u32, what: &str| {
            sys::setsockopt(raw, libc::SOL_XDP, opt, &size).map_err(|e| io(what.into(), e))
        };
        set(libc::XDP_UMEM_FILL_RING, fill_size, "sizing the fill ring")?;
        set(
            libc::XDP_UMEM_COMPLETION_RING,
            comp_size,
            "sizing the completion ring",
        )?;
        if let Some(s) = rx_size {
            set(libc::XDP_RX_RING, s, "sizing the RX ring")?;
        }
        if let Some(s) = tx_size {
            set(libc::XDP_TX_RING, s, "sizing the TX ring")?;
        }
        let mut off: libc::xdp_mmap_offsets = sys::zeroed();
        sys::getsockopt(raw, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, &mut off)
            .map_err(|e| io("XDP_MMAP_OFFSETS".into(), e))?;
        let mut maps = Vec::new();
        let mut map =
            |o: &libc::xdp_ring_offset, entry, size, pgoff| -> Result<XskRing, OpenError> {
                let m = ring_map(fd.as_fd(), o, entry, size, pgoff)
                    .map_err(|e| OpenError::Failed(io("mapping an AF_XDP ring".into(), e)))?;
                let r = XskRing::new(m.mem().clone(), o, size);
                maps.push(m);
                Ok(r)
            };
        let fill = map(&off.fr, 8, fill_size, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = map(&off.cr, 8, comp_size, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx = rx_size
            .map(|s| map(&off.rx, DESC, s, libc::XDP_PGOFF_RX_RING as u64))
            .transpose()?;
        let tx = tx_size
            .map(|s| map(&off.tx, DESC, s, libc::XDP_PGOFF_TX_RING as u64))
            .transpose()?;
        // Every RX chunk starts in the fill ring.
        for c in 0..rx_chunks {
            fill.mem.store_u64(fill.entry(c, 8), u64::from(c) * CHUNK);
        }
        fill.set_producer(rx_chunks);
        let mut sa: libc::sockaddr_xdp = sys::zeroed();
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_COPY;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        sys::bind_raw(raw, &sa).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EBUSY) => return OpenError::Busy(e),
                Some(libc::EINVAL) => " (does the interface have that many queues?)",
                _ => "",
            };
            OpenError::Failed(io(format!("binding to queue {queue}{hint}"), e))
        })?;
        Ok(Self {
            _maps: maps,
            umem,
            fd,
            rx,
            tx,
            fill,
            comp,
            rx_chunks,
            tx_chunks,
        })
    }
}

pub(crate) fn build(spec: &PortSpec, ifname: &str, queue: u32) -> Result<BuiltPort, NicError> {
    let port = spec.name.as_str();
    let ifindex = require_if(port, ifname)?;
    let parts = NicParts::new(spec)?;
    let (t, r) = (parts.spec.tx_rings, parts.spec.rx_rings);
    let n = t.max(r);
    let map = bpf::xskmap(queue + n).map_err(|e| {
        NicError::io(
            port,
            "creating the XSKMAP (bpf(2); needs CAP_BPF/CAP_NET_ADMIN)",
            e,
        )
    })?;
    let mut socks = Vec::new();
    for i in 0..n {
        let x = Xsk::open(
            port,
            (ifname, ifindex),
            queue + i,
            (i < r).then(|| parts.spec.rx_slots.next_power_of_two()),
            (i < t).then(|| parts.spec.tx_slots.next_power_of_two()),
        )?;
        bpf::map_set(&map, queue + i, x.fd.as_raw_fd())
            .map_err(|e| NicError::io(port, "adding the socket to the XSKMAP", e))?;
        socks.push(Arc::new(x));
    }
    let prog = bpf::load_redirect(&map)
        .map_err(|e| NicError::io(port, "loading the XDP redirect program", e))?;
    let (link, mode) = attach(port, &prog, (ifname, ifindex))?;
    let att = Arc::new(Attachment {
        _link: link,
        _prog: prog,
        _map: map,
    });
    let mut syncs: Vec<Box<dyn RingSync>> = Vec::new();
    for i in 0..t {
        let x = socks[i as usize].clone();
        let free = (x.rx_chunks..x.rx_chunks + x.tx_chunks)
            .map(|c| u64::from(c) * CHUNK)
            .collect();
        let room = sys::EdgeWait::writable(x.fd.as_raw_fd(), Some(TX_BACKSTOP))
            .map_err(|e| NicError::io(port, "watching the AF_XDP socket (epoll)", e))?;
        syncs.push(Box::new(XdpTx {
            x,
            room,
            blocked: false,
            _att: att.clone(),
            free,
            tx_prod: 0,
            comp_cons: 0,
            link_down: false,
            tx: parts.ring(i),
            bufs: parts.bufs.clone(),
            stats: parts.stats[i as usize].clone(),
        }));
    }
    for i in 0..r {
        let x = socks[i as usize].clone();
        let fill_prod = x.rx_chunks;
        syncs.push(Box::new(XdpRx {
            x,
            _att: att.clone(),
            rx_cons: 0,
            fill_prod,
            kernel_drops: 0,
            want_wake: false,
            rx: parts.ring(t + i),
            bufs: parts.bufs.clone(),
            stats: parts.stats[(t + i) as usize].clone(),
        }));
    }
    tracing::info!(
        port,
        ifname,
        ifindex,
        queue,
        queues = n,
        mode,
        "AF_XDP sockets attached (copy mode)"
    );
    Ok(parts.into_port(port, syncs, None))
}

/// Attaches `prog` to the interface, natively, else in generic mode. An interface that still has
/// an XDP program (EBUSY: a daemon that just exited, whose link the kernel has not let go of yet)
/// is tried again until [`BIND_BUSY_WAIT`], as the queues are.
fn attach(
    port: &str,
    prog: &OwnedFd,
    (ifname, ifindex): (&str, u32),
) -> Result<(OwnedFd, &'static str), NicError> {
    let start = Instant::now();
    loop {
        let e = match bpf::attach_xdp(prog, ifindex, bpf::XDP_FLAGS_DRV_MODE) {
            Ok(l) => return Ok((l, "native")),
            Err(_) => match bpf::attach_xdp(prog, ifindex, bpf::XDP_FLAGS_SKB_MODE) {
                Ok(l) => return Ok((l, "generic")),
                Err(e) => e,
            },
        };
        let busy = e.raw_os_error() == Some(libc::EBUSY);
        if !busy || start.elapsed() >= BIND_BUSY_WAIT {
            let hint = if busy {
                " (the interface already has an XDP program)"
            } else {
                ""
            };
            return Err(NicError::io(
                port,
                format!("attaching the XDP program to {ifname}{hint}"),
                e,
            ));
        }
        std::thread::sleep(BIND_BUSY_PAUSE / 4);
    }
}

/// TX ring i: netmap slots -> TX chunks -> the socket's TX ring.
pub struct XdpTx {
    x: Arc<Xsk>,
    /// Wake-ups of the socket for room (frames sent or completed).
    room: sys::EdgeWait,
    /// Waiting for the kernel: wake on `room`.
    blocked: bool,
    _att: Arc<Attachment>,
    /// TX chunk addresses not in flight (capacity: every TX chunk, so never reallocates).
    free: Vec<u64>,
    tx_prod: u32,
    comp_cons: u32,
    /// The last kick found the link down: frames that find no chunk are dropped, not kept.
    link_down: bool,
    tx: RingView,
    bufs: PortBufs,
    stats: Arc<RingStats>,
}

impl XdpTx {
    fn reclaim(&mut self) {
        let c = &self.x.comp;
        let prod = c.producer();
        while self.comp_cons != prod {
            let addr = c.mem.load_u64(c.entry(self.comp_cons, 8));
            if self.free.len() < self.free.capacity() {
                self.free.push(addr & !(CHUNK - 1));
            }
            self.comp_cons = self.comp_cons.wrapping_add(1);
        }
        c.set_consumer(prod);
    }

    /// Asks the kernel to send what the TX ring holds: copy mode sends at most 32 frames per
    /// call, so call until it has taken everything (bounded). Also how a link that was down is
    /// found up again (the call fails with ENETDOWN while it is down).
    fn kick(&mut self) {
        let Some(txr) = self.x.tx.clone() else { return };
        let mut budget = self.tx_prod.wrapping_sub(txr.consumer()) / 32 + 4;
        while budget > 0 {
            budget -= 1;
            match sys::kick_tx(self.x.fd.as_raw_fd(), true) {
                Ok(_) => {
                    self.link_down = false;
                    if txr.consumer() == self.tx_prod {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                    ) => {}
                Err(e) => {
                    self.link_down = link_error(&e);
                    return;
                }
            }
        }
    }
}

impl PortSync for XdpTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let Some(txr) = self.x.tx.clone() else { return };
        self.reclaim();
        if self.link_down {
            self.kick();
        }
        let umem = self.x.umem.mem();
        let mut queued = 0;
        let mut b = TxBatch::new(k);
        while let Some(j) = b.slot() {
            let (idx, len) = (self.tx.buf_idx(j), usize::from(self.tx.len(j)));
            match self.bufs.offset(idx) {
                Some(_) if self.link_down => {
                    // The link is down: drop rather than queue frames for later.
                    b.counts.drops += 1;
                }
                Some(off) if (ETH_HLEN..=self.bufs.buf_size()).contains(&len) => {
                    let Some(addr) = self.free.pop() else {
                        break;
                    };
                    umem.copy_from(addr as usize, self.bufs.pool(), off, len);
                    let d = txr.entry(self.tx_prod, DESC);
                    txr.mem.store_u64(d, addr);
                    txr.mem.store_u32(d + 8, len as u32, Ordering::Relaxed);
                    txr.mem.store_u32(d + 12, 0, Ordering::Relaxed);
                    self.tx_prod = self.tx_prod.wrapping_add(1);
                    queued += 1;
                    b.counts.moved(len);
                }
                _ => b.counts.bad_slots += 1,
            }
            b.next();
        }
        if queued > 0 {
            txr.set_producer(self.tx_prod);
        }
        if queued > 0 || (!self.link_down && txr.consumer() != self.tx_prod) {
            self.kick();
            self.reclaim();
        }
        b.finish(k, &self.stats);
    }
}

impl RingSync for XdpTx {
    fn arm(&mut self, k: &HostKring) -> bool {
        // Two things wait for the kernel: slots left because every TX chunk is in flight (sent,
        // not completed), and descriptors the kernel has not taken from the TX ring (the kick
        // found the send buffer full or the driver busy). POLLOUT says neither: it means the TX
        // ring is at most half full, which it is while the chunks are in flight (a spin). The
        // socket's wake-ups do: the kernel wakes it (write space) as frames complete and as it
        // sends some. And in copy mode every poll of the socket, these included, also sends
        // what the TX ring holds (the kick the kernel needs: `xsk_poll` calls the generic xmit),
        // so waiting makes progress too. A link going down wakes nothing (`xsk_poll` reports
        // nothing then): the backstop timer ([`TX_BACKSTOP`]) covers it. A link that is down
        // drops slots and waits for nothing.
        self.blocked = false;
        let Some(txr) = self.x.tx.clone() else {
            return false;
        };
        if self.link_down {
            return false;
        }
        let pending = k.hwcur != k.rhead;
        if !pending && txr.consumer() == self.tx_prod {
            return false;
        }
        // Forget the wake-ups so far, then look (a wake-up in between is kept).
        self.room.clear();
        self.reclaim();
        if pending && !self.free.is_empty() {
            return true;
        }
        self.blocked = pending || txr.consumer() != self.tx_prod;
        false
    }

    fn wake_fd(&self) -> Option<Wake> {
        self.blocked.then(|| Wake::readable(self.room.fd()))
    }
}

/// RX ring i: the socket's RX ring -> netmap buffers; chunks go straight back to the fill ring.
pub struct XdpRx {
    x: Arc<Xsk>,
    _att: Arc<Attachment>,
    rx_cons: u32,
    fill_prod: u32,
    /// Kernel drops (RX ring full, no fill chunk) already counted.
    kernel_drops: u64,
    want_wake: bool,
    rx: RingView,
    bufs: PortBufs,
    stats: Arc<RingStats>,
}

impl PortSync for XdpRx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        k.hwcur = k.rhead;
        let Some(rxr) = &self.x.rx else { return };
        let stop = ring_prev(k.hwcur, n);
        let (fill, umem) = (&self.x.fill, self.x.umem.mem());
        let prod = rxr.producer();
        let mut c = BatchCounts::default();
        let mut taken = 0;
        while self.rx_cons != prod && k.hwtail != stop {
            let d = rxr.entry(self.rx_cons, DESC);
            let addr = rxr.mem.load_u64(d);
            let len = rxr.mem.load_u32(d + 8, Ordering::Relaxed) as usize;
            let slot = k.hwtail;
            match self.bufs.offset(self.rx.buf_idx(slot)) {
                Some(off) if len <= self.bufs.buf_size() => {
                    if self.bufs.pool().copy_from(off, umem, addr as usize, len) {
                        self.rx.set_len(slot, len as u16);
                        c.moved(len);
                    } else {
                        self.rx.set_len(slot, 0);
                        c.drops += 1;
                    }
                    self.rx.set_flags(slot, 0);
                    k.hwtail = ring_add(slot, 1, n);
                }
                Some(_) => c.drops += 1,
                None => {
                    self.rx.set_len(slot, 0);
                    self.rx.set_flags(slot, 0);
                    c.bad_slots += 1;
                    k.hwtail = ring_add(slot, 1, n);
                }
            }
            fill.mem
                .store_u64(fill.entry(self.fill_prod, 8), addr & !(CHUNK - 1));
            self.fill_prod = self.fill_prod.wrapping_add(1);
            self.rx_cons = self.rx_cons.wrapping_add(1);
            taken += 1;
        }
        if taken > 0 {
            rxr.set_consumer(self.rx_cons);
            fill.set_producer(self.fill_prod);
        }
        self.stats.add_batch(&c);
    }
}

impl RingSync for XdpRx {
    fn arm(&mut self, k: &HostKring) -> bool {
        let fd = self.x.fd.as_raw_fd();
        let mut st: libc::xdp_statistics = sys::zeroed();
        if sys::getsockopt(fd, libc::SOL_XDP, libc::XDP_STATISTICS, &mut st).is_ok() {
            let total = st.rx_dropped + st.rx_ring_full;
            RingStats::add(&self.stats.drops, total.saturating_sub(self.kernel_drops));
            self.kernel_drops = total;
        }
        let _ = sys::take_socket_error(fd);
        self.want_wake = k.hwtail != ring_prev(k.hwcur, k.num_slots);
        self.want_wake
            && self
                .x
                .rx
                .as_ref()
                .is_some_and(|r| r.producer() != self.rx_cons)
    }

    fn wake_fd(&self) -> Option<Wake> {
        self.want_wake
            .then(|| Wake::readable(self.x.fd.as_raw_fd()))
    }
}
