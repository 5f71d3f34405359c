//! The data path of one queue pair: a thread that is the in-process "guest" of the port's
//! netmap TX ring and RX ring of the same number.
//!
//! The port layer is used exactly as a ptnet guest's host sync loop uses it, through
//! [`crate::port::private_csb`]: the thread takes the two rings' [`RingWorker`]s apart (the host
//! kring goes into the ring's [`PassState`], its one owner while the thread runs; the port
//! kind's [`RingSync`] stays with the thread), and a private CSB pair per ring in its own memory
//! stands where a ptnet guest's CSB would be. The guest side of that CSB is the protocol's
//! [`GuestKring`]; the host side runs [`HostKring::tx_pass`] / [`HostKring::rx_pass`] over the
//! port's sync, inline on this thread:
//!
//! * TX kick: each TX chain's frame is copied into the next free slot of the netmap TX ring
//!   (`queue::tx_chain_to_buf`), the chain goes to the used ring, and one host TX pass hands
//!   the batch to the port (VALE copies into the destinations' RX rings, a pipe swaps buffers
//!   into its peer's, a NIC writes to its socket).
//! * RX: ports whose RX rings others fill (pipes, VALE) use direct delivery
//!   ([`crate::port::delivery`]): the ring's [`PassState`] is lent to the ring
//!   ([`DirectRx::lend`]) while the thread runs, exactly as the ptnet sync loop lends it, and the
//!   producer's pass publishes into the private CSB and signals this thread's own interrupt
//!   eventfd when the ring had been empty. Other ports' RX passes run here. Frames
//!   between the guest's head and hwtail are copied into RX chains (`queue::RxWriter`), and
//!   the slots released with the next guest sync.
//!
//! Kicks and interrupts: virtqueue notifications are off while the thread works and re-enabled
//! (EVENT_IDX: `avail_event`) only before it sleeps, with a re-check; the guest is interrupted
//! once per batch, when the used ring crosses its `used_event`. Nothing here allocates, locks
//! or makes a per-packet system call.
//!
//! [`PassState`]: crate::port::ring::PassState
//! [`RingSync`]: crate::port::RingSync
//! [`HostKring::tx_pass`]: ptnet_protocol::sync::HostKring::tx_pass
//! [`HostKring::rx_pass`]: ptnet_protocol::sync::HostKring::rx_pass

use super::mem::{FrontendMemory, MemCache};
use super::queue::{
    emit_port_header, tx_chain_in, HdrConf, RxDrop, RxOutcome, RxWriter, TxDrop, TxFrame,
};
use super::rxchain::{ChainDone, ChainRx};
use super::sys::buffer;
use super::vq::{Vq, VqStats};
use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::port::idle::SpinThenSleep;
use crate::port::private_csb::{InlineRing, PrivateCsb};
use crate::port::ring::{DirectRx, Keepalive, PassDone};
use crate::port::RingWorker;
use crate::sys::{eventfd_file, eventfd_take_nowait, poll_revents};
use ptnet_protocol::csb::{Atok, Ktoa, NAF_FORCE_RECLAIM};
use ptnet_protocol::netmap::{ring_add, ring_dist, slot_flags, BufPool, RingView};
use ptnet_protocol::sync::{GuestKring, HostStop};
use ptnet_protocol::vnet::{self, VnetHeader};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

mod rx;
mod tx;

/// What a pair thread gets and gives back.
pub struct PairParts {
    /// Queue pair number (netmap ring pair).
    pub pair: u32,
    /// The RX virtqueue (2 * pair).
    pub rxq: Vq,
    /// The TX virtqueue (2 * pair + 1).
    pub txq: Vq,
    /// The netmap TX ring `pair`.
    pub txw: RingWorker,
    /// The netmap RX ring `pair`.
    pub rxw: RingWorker,
}

/// What the thread needs of the port.
pub struct PortRings {
    /// Netmap TX ring.
    pub tx: RingView,
    /// Netmap RX ring.
    pub rx: RingView,
    /// The port's buffers.
    pub bufs: BufPool,
}

/// A running pair thread.
pub struct PairThread {
    stop_flag: Arc<AtomicBool>,
    stop_fd: Arc<EventFd>,
    thread: std::thread::JoinHandle<PairParts>,
}

impl PairThread {
    /// Starts the thread. `keep` keeps the port's memory and the guest memory alive.
    pub fn start(
        port: &str,
        parts: PairParts,
        rings: PortRings,
        mem: Arc<FrontendMemory>,
        conf: HdrConf,
        opts: LoopOptions,
        keep: Keepalive,
    ) -> Result<Self, (std::io::Error, Box<PairParts>)> {
        let stop_fd = match EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) {
            Ok(e) => Arc::new(e),
            Err(e) => return Err((e, Box::new(parts))),
        };
        let call = match eventfd_file(true) {
            Ok(f) => f,
            Err(e) => return Err((e, Box::new(parts))),
        };
        let stop_flag = Arc::new(AtomicBool::new(false));
        let name: String = format!("{port}-vq{}", parts.pair)
            .chars()
            .take(15)
            .collect();
        let (flag, fd, port) = (stop_flag.clone(), stop_fd.clone(), port.to_string());
        // The parts go through a slot, so a failed spawn leaves them here.
        let slot = Arc::new(std::sync::Mutex::new(Some(parts)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _keep = keep;
            let parts = theirs
                .lock()
                .expect("slot")
                .take()
                .expect("parts wait in the slot");
            Pair::new(&port, parts, rings, mem, conf, call, opts).run(&flag, &fd)
        });
        match spawned {
            Ok(thread) => Ok(Self {
                stop_flag,
                stop_fd,
                thread,
            }),
            Err(e) => {
                let parts = slot
                    .lock()
                    .expect("slot")
                    .take()
                    .expect("no thread took them");
                Err((e, Box::new(parts)))
            }
        }
    }

    /// Stops the thread and returns its parts (queue positions, ring state).
    pub fn stop(self) -> PairParts {
        self.stop_flag.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        self.thread.join().expect("virtio-net pair thread panicked")
    }
}

struct Pair<'a> {
    port: &'a str,
    pair: u32,
    rxq: Vq,
    txq: Vq,
    /// Netmap TX ring `pair` (entries 0 of the private CSB).
    tx: InlineRing,
    /// Netmap RX ring `pair` (entries 1).
    rx: InlineRing,
    rings: PortRings,
    mem: Arc<FrontendMemory>,
    conf: HdrConf,
    _csb: PrivateCsb,
    tx_atok: Atok,
    tx_ktoa: Ktoa,
    rx_atok: Atok,
    rx_ktoa: Ktoa,
    gtx: GuestKring,
    grx: GuestKring,
    direct: Option<Arc<dyn DirectRx>>,
    /// Our own interrupt eventfd, signalled by a direct-delivery pass.
    call: File,
    rxw_writer: RxWriter,
    /// RX: frames in several netmap slots ([`ChainRx`]).
    rx_chain: ChainRx,
    gso: GsoBuffers,
    /// TX: the netmap ring is full (wait for the port).
    tx_full: bool,
    /// RX: frames wait for the guest's buffers.
    rx_need_bufs: bool,
    /// The guest's avail index when they were found wanting.
    rx_avail_seen: u16,
    last_log: Option<Instant>,
    opts: LoopOptions,
}

/// Largest GSO frame a guest may send (Linux's is 64 KiB, headers included).
const GSO_FRAME_MAX: usize = 65536 + 256;

/// The TX side's scratch buffers for GSO frames, allocated once when TSO was negotiated: the
/// whole frame, and one segment.
struct GsoBuffers {
    frame: Vec<u8>,
    segment: Vec<u8>,
}

impl GsoBuffers {
    fn new(conf: &HdrConf, buf_size: usize) -> Self {
        if conf.tso4 || conf.tso6 {
            Self {
                frame: vec![0; GSO_FRAME_MAX],
                segment: vec![0; buf_size.saturating_sub(conf.port_len)],
            }
        } else {
            Self {
                frame: Vec::new(),
                segment: Vec::new(),
            }
        }
    }
}

/// Rate limit for log lines about a guest's bad input.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl<'a> Pair<'a> {
    fn new(
        port: &'a str,
        p: PairParts,
        rings: PortRings,
        mem: Arc<FrontendMemory>,
        conf: HdrConf,
        call: File,
        opts: LoopOptions,
    ) -> Self {
        let csb = PrivateCsb::new(2);
        let PairParts {
            pair,
            rxq,
            txq,
            txw,
            rxw,
        } = p;
        // The host side's views of the entries go into the pass states; the guest side makes its
        // own (two views of the same entries: nothing here copies a view).
        let direct = rxw.sync.direct_rx();
        // Direct delivery: a producer's pass raises our own interrupt. Our own passes need none
        // (this thread runs them).
        let rx_call = direct.as_ref().and_then(|_| call.try_clone().ok());
        let (tx, gt) = csb.start(txw, 0, None);
        let (mut rx, gr) = csb.start(rxw, 1, rx_call);
        if let Some(d) = &direct {
            d.lend(rx.state.take().expect("not lent yet"));
        }
        let buf_size = rings.bufs.buf_size() as usize;
        Self {
            port,
            pair,
            rxq,
            txq,
            tx,
            rx,
            rings,
            mem,
            conf,
            _csb: csb,
            tx_atok: gt.atok,
            tx_ktoa: gt.ktoa,
            rx_atok: gr.atok,
            rx_ktoa: gr.ktoa,
            gtx: gt.kring,
            grx: gr.kring,
            direct,
            call,
            rxw_writer: RxWriter::new(buf_size),
            rx_chain: ChainRx::default(),
            gso: GsoBuffers::new(&conf, buf_size),
            tx_full: false,
            rx_need_bufs: false,
            rx_avail_seen: 0,
            last_log: None,
            opts,
        }
    }

    // Never inlined: the one symbol of the thread's loop (profiles collect on it).
    #[inline(never)]
    fn run(mut self, stop: &AtomicBool, stop_fd: &EventFd) -> PairParts {
        let mem = self.mem.clone();
        let mem = &mem.mem;
        self.txq.queue.disable_notification(mem);
        self.rxq.queue.disable_notification(mem);
        // Spin-then-sleep, as the ptnet sync loops (`port::idle`).
        let mut idle = SpinThenSleep::new(self.opts.busy_poll, self.opts.spin);
        while !stop.load(Ordering::Relaxed) {
            let moved_tx = self.tx_round(mem);
            let moved_rx = self.rx_round(mem);
            if moved_tx || moved_rx {
                idle.progress(true);
                continue;
            }
            if idle.empty() {
                std::hint::spin_loop();
                continue;
            }
            if !self.prepare_sleep(mem) {
                continue;
            }
            let tx_wake = self.tx.sync.wake_fd().filter(|_| self.tx_full);
            let rx_wake = if self.direct.is_none() && !self.rx_need_bufs {
                self.rx.sync.wake_fd()
            } else {
                None
            };
            let kick_fd = |q: &Vq| if q.broken { -1 } else { q.kick.as_raw_fd() };
            let fds = [
                (stop_fd.as_raw_fd(), libc::POLLIN),
                (kick_fd(&self.txq), libc::POLLIN),
                (kick_fd(&self.rxq), libc::POLLIN),
                (self.tx.notify.as_raw_fd(), libc::POLLIN),
                (self.rx.notify.as_raw_fd(), libc::POLLIN),
                (self.call.as_raw_fd(), libc::POLLIN),
                tx_wake.map_or((-1, 0), |w| (w.fd, w.events)),
                rx_wake.map_or((-1, 0), |w| (w.fd, w.events)),
            ];
            let mut rev = [0i16; 8];
            if let Err(e) = poll_revents(&fds, -1, &mut rev) {
                tracing::error!(
                    port = self.port,
                    pair = self.pair,
                    "poll: {e}; pair stopped"
                );
                break;
            }
            for (i, q) in [(1usize, &mut self.txq), (2, &mut self.rxq)] {
                if rev[i] == 0 {
                    continue;
                }
                let hup = rev[i] & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
                let took = if hup {
                    None
                } else {
                    eventfd_take_nowait(&q.kick).ok()
                };
                if took.is_some_and(|n| n > 0) {
                    VqStats::add(&q.stats.kicks, 1);
                }
                if took.is_none() {
                    q.broken = true;
                    VqStats::add(&q.stats.broken, 1);
                    tracing::warn!(
                        port = self.port,
                        "a kick descriptor failed (poll events {:#x}); queue stopped until reset",
                        rev[i]
                    );
                }
            }
            if rev[3] != 0 {
                let _ = self.tx.notify.read();
            }
            if rev[4] != 0 {
                let _ = self.rx.notify.read();
            }
            if rev[5] != 0 {
                let _ = eventfd_take_nowait(&self.call);
            }
        }
        self.finish(mem)
    }

    /// Before sleeping: turns the notifications wanted back on and re-checks. False when there
    /// is work after all (do not sleep).
    fn prepare_sleep(&mut self, mem: &GuestMemoryMmap) -> bool {
        let mut sleep = true;
        if !self.txq.broken && !self.tx_full && self.txq.queue.enable_notification(mem) {
            self.txq.queue.disable_notification(mem);
            sleep = false;
        }
        if self.tx_full && self.tx.arm() {
            sleep = false;
        }
        // Frames wait for buffers: a kick once the guest adds chains past those that were not
        // enough (not at once because some are there: that would spin on a guest that posts
        // one small buffer and no more).
        if !self.rxq.broken
            && self.rx_need_bufs
            && !self.rxq.queue.arm_avail_past(mem, self.rx_avail_seen)
        {
            sleep = false;
        }
        // (Not while frames wait for the guest's buffers: the port could say it has more, and
        // nothing here could take them.)
        if self.direct.is_none() && !self.rx_need_bufs && self.rx.arm() {
            sleep = false;
        }
        sleep
    }

    /// A rate-limited line about a guest's bad input (the arguments are rendered only then).
    fn log_bad(&mut self, what: std::fmt::Arguments<'_>) {
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last_log = Some(Instant::now());
            tracing::warn!(
                port = self.port,
                pair = self.pair,
                "guest: {what} (counted; rate-limited)"
            );
        }
    }

    /// On the way out: the lent RX state comes back, and a last pass over each ring leaves the
    /// port's state as the guest side left it.
    fn finish(mut self, _mem: &GuestMemoryMmap) -> PairParts {
        // Waits for a producer's pass to end: from then on producers only commit, and notify
        // the next thread's first pass.
        if let Some(d) = &self.direct {
            self.rx.state = d.take_back();
        }
        let _ = self.rx.pass(true);
        let _ = self.tx.pass(true);
        PairParts {
            pair: self.pair,
            rxq: self.rxq,
            txq: self.txq,
            txw: self.tx.into_worker(),
            rxw: self.rx.into_worker(),
        }
    }
}
