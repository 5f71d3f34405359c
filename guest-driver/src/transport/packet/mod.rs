//! `packet:IFNAME`: the port API over any Linux network interface, through an `AF_PACKET`
//! socket bound to it, the way netmap's emulated adapter serves a NIC without a native driver.
//!
//! The transport is the device and the host at once, in this process: a ptnet register file
//! (`PtnetConfig`), a netmap memory it lays out itself (one TX and one RX ring), a CSB in plain
//! memory, and the host side of both rings (the protocol's [`HostKring`] passes) run inline, in
//! [`PassMode::Kicked`]:
//!
//! * TX: a kick (every txsync with new slots kicks: the host always asks for kicks) runs the TX
//!   pass, which hands the slots from `hwcur` to `head` to the kernel in `sendmmsg` batches
//!   straight from their buffers; sent slots complete at once. Frames the kernel refuses (too
//!   short, too long, link down) are dropped and counted; a full socket buffer leaves the rest
//!   queued until [`Transport::wait`] sees POLLOUT.
//! * RX: a kick (an rxsync that found nothing, or released slots) and [`Transport::wait`] run
//!   the RX pass, which receives into the free slots with `recvmmsg`; frames longer than a
//!   buffer are dropped and counted.
//!
//! The socket sees every frame the interface receives (not those it sends); the interface's own
//! stack still sees them too.

use crate::sys::packet::PacketSocket;
use crate::transport::{CsbArrays, PollWait, Transport};
use crate::Error;
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::device::{PortGeometry, PtnetConfig, MEMDEV_CONFIG_BASE};
use ptnet_protocol::netmap::{ring, BufPool, IfView, RingView};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE, PTCTL_DELETE};
use ptnet_protocol::shmem::{OwnedMem, SharedMem};
use ptnet_protocol::sync::{HostKring, PassMode};
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod host;

use host::{RxSide, TxSide};

/// Slots per ring.
pub const SLOTS: u32 = 1024;
/// Bytes per buffer: the largest frame a slot carries (an interface with a larger MTU gets its
/// longer frames dropped and counted).
pub const BUF_SIZE: u32 = 2048;
/// Where the rings start (the netmap_if is at 0).
const RING_POOL: usize = 1024;
/// The CSB: guest-to-host entries in the first page, host-to-guest in the second.
const CSB_PAGE: usize = 4096;
/// A made-up guest-physical address for the CSB registers (nothing reads them back).
const CSB_GPA: u64 = 0x1000_0000;
/// The memory allocator id the registers report.
const MEM_ID: u32 = 1;

/// What the host side moved and dropped, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames sent.
    pub tx_frames: u64,
    /// TX slots dropped: a bad buffer index or length, or refused by the kernel.
    pub tx_dropped: u64,
    /// Frames received into RX slots.
    pub rx_frames: u64,
    /// Received frames longer than a buffer, dropped.
    pub rx_truncated: u64,
    /// RX slots whose buffer index the application broke, handed back empty.
    pub rx_bad_slots: u64,
}

impl PacketStats {
    fn fields(&self) -> [u64; 5] {
        [
            self.tx_frames,
            self.tx_dropped,
            self.rx_frames,
            self.rx_truncated,
            self.rx_bad_slots,
        ]
    }
}

/// The transport's [`PacketStats`], readable from any thread while the port runs (a pass adds
/// what it did once, at its end).
#[derive(Debug, Default)]
pub struct PacketCounters([AtomicU64; 5]);

impl PacketCounters {
    /// The counts so far.
    pub fn snapshot(&self) -> PacketStats {
        let v = self.0.each_ref().map(|a| a.load(Ordering::Relaxed));
        PacketStats {
            tx_frames: v[0],
            tx_dropped: v[1],
            rx_frames: v[2],
            rx_truncated: v[3],
            rx_bad_slots: v[4],
        }
    }

    fn add(&self, s: &PacketStats) {
        for (a, v) in self.0.iter().zip(s.fields()) {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}

/// One ring's host side.
struct HostRing {
    kring: HostKring,
    atok: Atok,
    ktoa: Ktoa,
    view: RingView,
}

/// The host's mutable state: run only from this transport's own calls.
struct Host {
    /// Between CREATE and DELETE.
    rings: Option<[HostRing; 2]>,
    stats: Arc<PacketCounters>,
}

/// The `packet:IFNAME` transport (see the module's documentation).
pub struct PacketTransport {
    name: String,
    sock: PacketSocket,
    cfg: PtnetConfig,
    mem: OwnedMem,
    csb: OwnedMem,
    views: [RingView; 2],
    bufs: BufPool,
    host: RefCell<Host>,
}

impl std::fmt::Debug for PacketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketTransport")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PacketTransport {
    /// Opens a packet socket on `ifname` (root, or `CAP_NET_RAW`) and lays out the port's memory.
    pub fn open(ifname: &str) -> Result<Self, Error> {
        let name = format!("packet:{ifname}");
        let (sock, mac) = PacketSocket::open(ifname).map_err(|source| Error::Io {
            what: format!("{name}: packet socket"),
            source,
        })?;
        let ring_size = ring::size(SLOTS).next_multiple_of(64);
        let buf_pool = (RING_POOL + 2 * ring_size).next_multiple_of(4096);
        // Buffers 0 and 1 are netmap's reserved ones; then one per slot, and a few spare.
        let nbufs = 2 + 2 * SLOTS + 2;
        let mem_size = buf_pool + (nbufs * BUF_SIZE) as usize;
        let mem = OwnedMem::new(mem_size);
        let m = mem.mem();
        let mut ofs = [0i64; 2];
        let views = [0u32, 1].map(|k| {
            let addr = RING_POOL + k as usize * ring_size;
            let view = RingView::new(m.sub(addr, ring::size(SLOTS)).expect("laid out"), SLOTS)
                .expect("laid out");
            let (dir, tail) = if k == 0 {
                (ring::DIR_TX, SLOTS - 1)
            } else {
                (ring::DIR_RX, 0)
            };
            view.init_header(buf_pool as i64 - addr as i64, BUF_SIZE, 0, dir, tail);
            for i in 0..SLOTS {
                view.set_buf_idx(i, 2 + k * SLOTS + i);
            }
            ofs[k as usize] = addr as i64;
            view
        });
        IfView::new(m.sub(0, RING_POOL).expect("laid out"))
            .expect("laid out")
            .init(&name, 0, &ofs[..1], &ofs[1..]);
        let geo = PortGeometry {
            features: 0,
            mac,
            nifp_offset: 0,
            num_tx_rings: 1,
            num_rx_rings: 1,
            num_tx_slots: SLOTS,
            num_rx_slots: SLOTS,
            mem_id: MEM_ID,
            mem_size: mem_size as u64,
            if_pool: (0, 1, RING_POOL as u32),
            ring_pool: (RING_POOL as u32, 2, ring_size as u32),
            buf_pool: (buf_pool as u32, nbufs, BUF_SIZE),
        };
        let bufs = BufPool::new(
            m.sub(buf_pool, (nbufs * BUF_SIZE) as usize)
                .expect("laid out"),
            nbufs,
            BUF_SIZE,
        )
        .expect("laid out");
        Ok(PacketTransport {
            name,
            sock,
            cfg: PtnetConfig::new(&geo),
            mem,
            csb: OwnedMem::new(2 * CSB_PAGE),
            views,
            bufs,
            host: RefCell::new(Host {
                rings: None,
                stats: Arc::default(),
            }),
        })
    }

    /// The host side's counters, shared: keep them to read after handing the transport to
    /// [`crate::Port::attach`].
    pub fn counters(&self) -> Arc<PacketCounters> {
        self.host.borrow().stats.clone()
    }

    /// CREATE: both rings start from scratch, the host asking for every kick.
    fn create(&self) {
        let atoks = self.csb.mem().sub(0, CSB_PAGE).expect("sized");
        let ktoas = self.csb.mem().sub(CSB_PAGE, CSB_PAGE).expect("sized");
        let rings = [0u32, 1].map(|k| {
            let mut kring = if k == 0 {
                HostKring::new_tx(SLOTS)
            } else {
                HostKring::new_rx(SLOTS)
            };
            let atok = Atok::new(&atoks, k).expect("sized");
            let ktoa = Ktoa::new(&ktoas, k).expect("sized");
            kring.start(&atok, &ktoa);
            HostRing {
                kring,
                atok,
                ktoa,
                view: self.views[k as usize].clone(),
            }
        });
        self.host.borrow_mut().rings = Some(rings);
    }

    /// One host pass of ring `ring` (0: TX, 1: RX), in [`PassMode::Kicked`]: this host runs
    /// only when the application's sync kicks it (or [`Transport::wait`] runs it), so every
    /// kick it may need stays requested; a pass that stopped with kicks off would never run
    /// again. No interrupt to raise: the application is in this process.
    fn pass(&self, ring: u32) {
        let mut host = self.host.borrow_mut();
        let Host { rings, stats } = &mut *host;
        let Some(r) = rings.as_mut().and_then(|r| r.get_mut(ring as usize)) else {
            return;
        };
        let mut no_irq = || {};
        let mut done = PacketStats::default();
        if ring == 0 {
            let mut side = TxSide::new(&self.sock, &self.bufs, &r.view, &mut done);
            r.kring
                .tx_pass(&r.atok, &r.ktoa, &mut side, PassMode::Kicked, &mut no_irq);
        } else {
            let mut side = RxSide::new(&self.sock, &self.bufs, &r.view, &mut done);
            r.kring
                .rx_pass(&r.atok, &r.ktoa, &mut side, PassMode::Kicked, &mut no_irq);
        }
        stats.add(&done);
    }

    /// RX: frames received beyond the application's `cur`, i.e. not yet seen by it.
    fn rx_unseen(&self) -> bool {
        let host = self.host.borrow();
        host.rings
            .as_ref()
            .is_some_and(|r| r[1].atok.kernel_read().1 % SLOTS != r[1].kring.hwtail)
    }

    /// TX slots the host holds but could not send yet (the socket's buffer was full).
    fn tx_pending(&self) -> bool {
        let host = self.host.borrow();
        host.rings
            .as_ref()
            .is_some_and(|r| r[0].kring.hwcur != r[0].kring.rhead)
    }
}

impl Transport for PacketTransport {
    fn read_reg(&mut self, off: u32) -> Result<u32, Error> {
        Ok(self.cfg.get(off))
    }

    fn write_reg(&mut self, off: u32, val: u32) -> Result<(), Error> {
        match off {
            ptnet::PTFEAT => {
                let offered = self.cfg.get(ptnet::PTFEAT);
                self.cfg.set(off, offered & val);
            }
            ptnet::PTCTL => {
                match val {
                    PTCTL_CREATE => self.create(),
                    PTCTL_DELETE => self.host.borrow_mut().rings = None,
                    _ => {}
                }
                let errno = if matches!(val, PTCTL_CREATE | PTCTL_DELETE) {
                    0
                } else {
                    libc::EINVAL as u32
                };
                self.cfg.set(off, errno);
            }
            // A virtio-net header is never offered: no length but 0 sticks.
            ptnet::VNET_HDR_LEN => self.cfg.set(off, 0),
            _ => self.cfg.set(off, val),
        }
        Ok(())
    }

    fn read_memdev(&mut self, off: u32) -> Result<u32, Error> {
        Ok(self.cfg.get(MEMDEV_CONFIG_BASE + off))
    }

    fn netmap_mem(&mut self) -> Result<SharedMem, Error> {
        Ok(self.mem.mem())
    }

    fn alloc_csb(&mut self, rings: u32) -> Result<CsbArrays, Error> {
        if rings != 2 {
            return Err(Error::CsbRings { rings, max: 2 });
        }
        let m = self.csb.mem();
        m.zero(0, m.len());
        Ok(CsbArrays {
            atok: m.sub(0, CSB_PAGE).expect("sized"),
            atok_gpa: CSB_GPA,
            ktoa: m.sub(CSB_PAGE, CSB_PAGE).expect("sized"),
            ktoa_gpa: CSB_GPA + CSB_PAGE as u64,
        })
    }

    fn kick(&self, ring: u32) {
        self.pass(ring);
    }

    fn wait(&self, ring: u32, timeout: Option<Duration>) -> Result<bool, Error> {
        if self.host.borrow().rings.is_none() || ring > 1 {
            return Err(Error::UnknownRings(vec![ring]));
        }
        let events = if ring == 0 {
            // Sent slots complete at once: only a full socket buffer leaves something to wait for.
            if !self.tx_pending() {
                return Ok(true);
            }
            libc::POLLOUT
        } else {
            // A kick may have received frames the application has not synced yet.
            self.pass(1);
            if self.rx_unseen() {
                return Ok(true);
            }
            libc::POLLIN
        };
        let mut fds = [libc::pollfd {
            fd: self.sock.fd(),
            events,
            revents: 0,
        }];
        match crate::sys::poll(&mut fds, crate::sys::timeout_ms(timeout)) {
            Ok(0) => Ok(false),
            Ok(_) => {
                self.pass(ring);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(source) => Err(Error::Io {
                what: format!("{}: poll", self.name),
                source,
            }),
        }
    }

    /// The socket, when the RX ring is among `rings` (its readability: frames to receive). No
    /// descriptor for the TX ring alone: its slots complete at once, or after a full socket
    /// buffer drains, which a short cap lets the next sync see.
    fn wait_fds(&self, rings: &[u32], out: &mut [RawFd]) -> Option<PollWait> {
        let rx = rings.contains(&1);
        let tx_pending = rings.contains(&0) && self.tx_pending();
        let cap = if rx && self.rx_unseen() || !rx && !tx_pending {
            // Something is there already (frames a kick received, completed TX slots).
            Some(Duration::ZERO)
        } else if tx_pending {
            Some(Duration::from_millis(1))
        } else {
            None
        };
        let n = match out.first_mut() {
            Some(fd) if rx => {
                *fd = self.sock.fd();
                1
            }
            _ => 0,
        };
        Some(PollWait { n, cap })
    }

    /// Receives what made the socket readable; retries the TX slots a full buffer held back.
    fn wait_done(&self, rings: &[u32], ready: &[bool]) -> Result<(), Error> {
        if rings.contains(&1) && ready.first() == Some(&true) {
            self.pass(1);
        }
        if rings.contains(&0) && self.tx_pending() {
            self.pass(0);
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
