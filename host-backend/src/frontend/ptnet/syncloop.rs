//! The host sync loops: one thread per ring, running the protocol's host pass
//! ([`HostKring::tx_pass`](ptnet_protocol::sync::HostKring::tx_pass) / [`HostKring::rx_pass`](ptnet_protocol::sync::HostKring::rx_pass)) whenever the guest kicks or the port
//! notifies, spinning briefly while traffic flows and sleeping in `epoll_wait` otherwise.
//!
//! Nothing here allocates, locks or makes a per-packet syscall: a pass handles a whole batch, and
//! the only syscalls are the eventfd writes the CSB flags ask for and the one `epoll_wait` of a
//! sleep. The kick and notify eventfds are watched edge-triggered, so what woke the thread is
//! never read back (see the `sys` module's notes on epoll for why an unread counter cannot matter): a
//! wake-up costs that one syscall, where `poll` needed a drain `read` after it.
//!
//! Each thread owns its ring's pass state ([`PassState`]: the host kring, the CSB entries, the
//! interrupt eventfd) for as long as it runs, and gives the kring back to the port's
//! [`RingWorker`] when it stops. RX rings that other rings fill (pipes, VALE) use direct delivery
//! when the loop sleeps: the thread lends its pass state to the ring ([`DirectRx::lend`]) and
//! the producer runs the ring's host pass itself after it commits packets (see
//! [`crate::port::delivery`]), so the ring's own thread wakes only for its guest's kicks.

use crate::port::idle::SpinThenSleep;
use crate::port::ring::Wake;
pub use crate::port::ring::{csb_entries, FrontendRings, Keepalive};
use crate::port::ring::{DirectRx, PassDone, PassState, RingStats, RingSync, RingWorker};
use crate::sys::eventfd_take_nowait;
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::sync::HostStop;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// How the loops wait.
#[derive(Clone, Copy, Debug)]
pub struct LoopOptions {
    /// Never sleep: poll the CSB and the port continuously.
    pub busy_poll: bool,
    /// How long to keep polling after the last progress before sleeping.
    pub spin: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            busy_poll: false,
            spin: Duration::from_micros(50),
        }
    }
}

/// What one ring thread needs besides its worker, from the frontend: the ring's part of
/// [`FrontendRings`].
pub struct RingIo {
    /// Guest-to-host CSB entry.
    pub atok: Atok,
    /// Host-to-guest CSB entry.
    pub ktoa: Ktoa,
    /// Kick eventfd from the frontend.
    pub kick: File,
    /// Interrupt eventfd to the frontend, if it gave one.
    pub call: Option<File>,
}

/// Running ring threads of one port.
pub struct RingRunner {
    stop_flag: Arc<AtomicBool>,
    stop_fd: Arc<EventFd>,
    threads: Vec<JoinHandle<RingWorker>>,
    /// The frontend's interrupt eventfds, which [`RingRunner::stop`] drains (see there).
    calls: Vec<File>,
}

impl RingRunner {
    /// Starts one thread per worker. `io[i]` belongs to `workers[i]`. When a thread cannot be
    /// started, the ones already running are stopped and every worker comes back with the error,
    /// so the port keeps its rings for the next CREATE.
    pub fn start(
        port_name: &str,
        workers: Vec<RingWorker>,
        io: Vec<RingIo>,
        keep: Keepalive,
        opts: LoopOptions,
    ) -> Result<Self, (std::io::Error, Vec<RingWorker>)> {
        let stop_flag = Arc::new(AtomicBool::new(false));
        let stop_fd = match EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) {
            Ok(fd) => Arc::new(fd),
            Err(e) => return Err((e, workers)),
        };
        let mut runner = Self {
            stop_flag,
            stop_fd,
            threads: Vec::with_capacity(workers.len()),
            calls: io
                .iter()
                .filter_map(|i| i.call.as_ref().and_then(|c| c.try_clone().ok()))
                .collect(),
        };
        let mut pending = workers.into_iter().zip(io);
        while let Some((w, io)) = pending.next() {
            let (flag, fd, keep) = (
                runner.stop_flag.clone(),
                runner.stop_fd.clone(),
                keep.clone(),
            );
            let name = format!(
                "{}-{}{}",
                port_name,
                if w.is_tx { "tx" } else { "rx" },
                w.index
            );
            let port = port_name.to_string();
            // The worker goes to its thread through a slot, so a failed spawn (which drops the
            // closure) leaves it here rather than losing it.
            let slot = Arc::new(Mutex::new(Some((w, io))));
            let theirs = slot.clone();
            let spawned = std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || {
                    let _keep = keep;
                    let (w, io) = theirs
                        .lock()
                        .expect("worker slot")
                        .take()
                        .expect("the worker waits in its slot");
                    ring_loop(&port, w, io, &flag, &fd, opts)
                });
            match spawned {
                Ok(t) => runner.threads.push(t),
                Err(e) => {
                    let mut back = runner.stop();
                    let (w, _) = slot
                        .lock()
                        .expect("worker slot")
                        .take()
                        .expect("no thread took it");
                    back.push(w);
                    back.extend(pending.map(|(w, _)| w));
                    return Err((e, back));
                }
            }
        }
        Ok(runner)
    }

    /// Stops the threads and returns the workers with their ring state.
    ///
    /// A ring thread can be stuck in one place the frontend controls: an interrupt write to an
    /// eventfd whose O_NONBLOCK it cleared and whose counter it filled (see
    /// `sys::eventfd_signal_nowait`). Reading the counter releases such a write, so while a
    /// thread has not ended the interrupt eventfds are drained (the frontend loses interrupts
    /// owed to rings that are stopping anyway; only after a grace period, so a normal stop
    /// never eats a pending interrupt): stopping never waits on a frontend.
    pub fn stop(self) -> Vec<RingWorker> {
        self.stop_flag.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        // A thread that is not stuck ends at once (its sleep watches `stop_fd`): only one that
        // is still there after a grace period has its frontend's interrupts drained.
        let grace = Instant::now() + Duration::from_millis(50);
        while self.threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= grace {
                for c in &self.calls {
                    let _ = crate::sys::eventfd_take_nowait(c);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.threads
            .into_iter()
            .map(|t| t.join().expect("ring thread panicked"))
            .collect()
    }
}

/// Rate limit for log lines about what a guest did wrong.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Rings stopped because their kick descriptor hung up or failed (every port, since start).
static KICK_FAULTS: AtomicU64 = AtomicU64::new(0);

/// How many rings stopped because their kick descriptor reported a hang-up or an error (an
/// eventfd does at a counter of `u64::MAX`, which only the kernel's own signalling can reach),
/// could not be read or could not be waited on (every port, since the daemon started).
pub fn kick_faults() -> u64 {
    KICK_FAULTS.load(Ordering::Relaxed)
}

/// A kick descriptor that hung up or failed: the ring stops (a descriptor in that state is
/// always ready, so waiting on it again would spin), logged once for the ring and counted.
fn kick_fault(port: &str, ring: u32, what: &str) {
    let n = KICK_FAULTS.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        port,
        ring,
        kick_faults = n,
        "the frontend's kick descriptor {what}; ring stopped until the frontend sets it up again"
    );
}

fn ring_loop(
    port: &str,
    w: RingWorker,
    io: RingIo,
    stop: &AtomicBool,
    stop_fd: &EventFd,
    opts: LoopOptions,
) -> RingWorker {
    // The worker comes apart while the loop runs: its kring goes into the pass state, the one
    // copy of it until the worker is put back together at the end.
    let RingWorker {
        index,
        is_tx,
        kring,
        mut sync,
        notify,
        stats,
    } = w;
    let RingIo {
        atok,
        ktoa,
        kick: kick_fd,
        call,
    } = io;
    // Spin-then-sleep: after progress the ring keeps polling for `opts.spin` rather than going
    // to sleep, but only while work comes densely (the last sleep was shorter than the spin
    // window): for sparse work a spin would only take the CPU from the threads producing it.
    let mut idle = SpinThenSleep::new(opts.busy_poll, opts.spin);
    let mut dense = true;
    let mut last_reset_log: Option<Instant> = None;
    let mut last_bad_log: Option<Instant> = None;
    let mut bad_slots_logged = stats.bad_slots.load(Ordering::Relaxed);
    // Drain stale kicks and notifications from before CREATE, then make a first pass: the guest
    // may have published work before we started.
    let mut kick_ok = drain(port, index, &kick_fd, &stats);
    let _ = notify.read();
    // What the thread sleeps on (see [`Sleep`]), watched from here on.
    let mut sleep = match Sleep::new(kick_fd.as_raw_fd(), notify.as_raw_fd(), stop_fd.as_raw_fd()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                port,
                ring = index,
                "cannot set up the ring's sleep: {e}; ring stopped"
            );
            None
        }
    };
    kick_ok &= sleep.is_some();
    // The ring's pass state, this thread's while it runs. Direct delivery: the state goes to the
    // ring instead, and every pass, this loop's too, runs through it. A busy-polling loop keeps
    // its state: it sees a producer's packets as soon as the producer's own pass would.
    let obs = crate::port::ring::RingObs::new(&stats);
    let mut state = Some(PassState {
        kring,
        atok,
        ktoa,
        call,
        obs,
    });
    let direct = if opts.busy_poll {
        None
    } else {
        sync.direct_rx()
    };
    if let Some(rx) = &direct {
        rx.lend(state.take().expect("not lent yet"));
    }
    while kick_ok && !stop.load(Ordering::Relaxed) {
        let PassDone {
            stop: result,
            moved,
        } = pass(
            sync.as_mut(),
            is_tx,
            state.as_mut(),
            direct.as_deref(),
            idle.spinning(),
        );
        if moved {
            // A lent ring does not spin: its producers run the passes that matter (delivery and
            // the slots its guest releases), and this thread, which only serves kicks, would
            // spin on the receiving guest's CPU, taking it from the guest.
            idle.progress(dense && direct.is_none());
            let bad = stats.bad_slots.load(Ordering::Relaxed);
            if bad != bad_slots_logged && last_bad_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                last_bad_log = Some(Instant::now());
                tracing::warn!(
                    port,
                    ring = index,
                    bad_slots = bad,
                    "guest slots with a buffer index outside the port's pool or a length over the buffer size were dropped"
                );
                bad_slots_logged = bad;
            }
        }
        match result {
            HostStop::Poll => {
                // (The pass asked to poll again: it was told to spin. Whether the window goes
                // on is for the next pass.)
                idle.empty();
                std::hint::spin_loop();
                continue;
            }
            HostStop::Reset(bad) => {
                if direct.is_none() {
                    // (A lent ring counts its resets itself, whoever ran the pass.)
                    RingStats::add(&stats.resets, 1);
                }
                if last_reset_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    last_reset_log = Some(Instant::now());
                    tracing::warn!(
                        port,
                        ring = index,
                        resets = stats.resets.load(Ordering::Relaxed),
                        "guest published {bad}; ring reset"
                    );
                }
            }
            HostStop::Idle | HostStop::PortBlocked => {}
        }
        // After a reset only the guest can repair its indexes: wait for its kick. (Asking the
        // port would spin: the pass stopped before the port's news was taken in.)
        // With direct delivery there is nothing to ask the port: its producers run a pass after
        // each commit, and the guest kicks for what only this thread handles.
        let reset = matches!(result, HostStop::Reset(_));
        // (The state is here exactly when it is not lent.)
        if !reset && state.as_ref().is_some_and(|st| sync.arm(&st.kring)) {
            continue;
        }
        // Not the port's descriptor after a reset either: what it asked for at its last `arm` may
        // hold at once and spin the loop.
        let Some(sleep) = sleep.as_mut() else { break };
        let asleep = Instant::now();
        let woken = sleep.sleep(sync.wake_fd().filter(|_| !reset), -1);
        dense = asleep.elapsed() < opts.spin;
        match woken {
            Ok(kick) => {
                let kick = kick.unwrap_or(0);
                if kick & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    // An eventfd does that only at a counter of u64::MAX, where it stays: the
                    // ring stops rather than spin on it.
                    kick_fault(port, index, &format!("reported poll events {kick:#x}"));
                    break;
                }
                if kick != 0 {
                    RingStats::add(&stats.kicks, 1);
                }
            }
            Err(e) => {
                tracing::error!(port, ring = index, "epoll failed: {e}; ring stopped");
                break;
            }
        }
    }
    // A last pass on the way out takes in what the guest published since it was last seen
    // (released RX slots, queued TX packets): the next frontend then starts from the state this
    // guest left, and released slots are never delivered twice. Busy mode asks for no kicks
    // (the next loop's first pass takes in what the guest publishes meanwhile). A lent state comes back first (waiting for a producer's pass to end):
    // from then on producers only commit, and notify the next loop's first pass.
    if let Some(rx) = &direct {
        state = rx.take_back();
    }
    let mut state = state.expect("the pass state comes back");
    let _ = pass(sync.as_mut(), is_tx, Some(&mut state), None, true);
    RingWorker {
        index,
        is_tx,
        kring: state.kring,
        sync,
        notify,
        stats,
    }
}

/// One host pass over the ring, raising the guest's interrupt through the call eventfd. Returns
/// why it stopped and whether it moved the ring (hwcur, hwtail or the guest's head).
///
/// With direct delivery (`direct`) the pass runs through the ring, which holds the state. If a
/// producer is running one there, it runs ours too before it lets go (it starts after our call,
/// so it sees the kick we drained); this thread then has nothing to wait for and may sleep: the
/// producer's pass asks the guest for a kick if one is needed.
fn pass(
    sync: &mut dyn RingSync,
    is_tx: bool,
    state: Option<&mut PassState>,
    direct: Option<&dyn DirectRx>,
    busy: bool,
) -> PassDone {
    match (direct, state) {
        (Some(rx), _) => rx.host_pass(busy).unwrap_or(PassDone {
            stop: HostStop::PortBlocked,
            moved: false,
        }),
        (None, Some(s)) => s.run(sync, is_tx, busy),
        (None, None) => unreachable!("the pass state is the loop's or lent"),
    }
}

/// The epoll tokens of what a ring thread sleeps on.
const KICK: u64 = 0;
const NOTIFY: u64 = 1;
const STOP: u64 = 2;
const WAKE: u64 = 3;

/// A ring thread's sleep: one epoll instance watching the frontend's kick eventfd and the port's
/// notify eventfd edge-triggered (each write wakes it once, and neither is ever read back), the
/// runner's stop eventfd level-triggered (it stays set), and the port's own descriptor
/// ([`RingSync::wake_fd`], NIC ports: readable for RX, writable for a TX ring blocked on a full
/// kernel queue) level-triggered as `poll` watched it, only while the port asks for it. An error
/// or hang-up on the port's descriptor wakes the ring like the events asked: the next pass runs
/// the port's error handling.
///
/// The port's descriptor is re-registered only when what the port asks changes (one
/// `epoll_ctl`); the descriptor itself belongs to the port's ring, which this thread owns for
/// the whole loop, so its number cannot be reused under the registration.
struct Sleep {
    ep: Epoll,
    wake: Option<Wake>,
}

impl Sleep {
    fn new(kick: RawFd, notify: RawFd, stop: RawFd) -> std::io::Result<Self> {
        let ep = Epoll::new()?;
        let edge = EventSet::IN | EventSet::EDGE_TRIGGERED;
        ep.ctl(ControlOperation::Add, kick, EpollEvent::new(edge, KICK))?;
        ep.ctl(ControlOperation::Add, notify, EpollEvent::new(edge, NOTIFY))?;
        ep.ctl(
            ControlOperation::Add,
            stop,
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        Ok(Self { ep, wake: None })
    }

    /// Watches `want` as the port's descriptor from now on (nothing if `None`).
    fn set_wake(&mut self, want: Option<Wake>) -> std::io::Result<()> {
        if want == self.wake {
            return Ok(());
        }
        // `poll(2)`'s POLLIN and POLLOUT have epoll's values.
        let event = |w: Wake| {
            let set = EventSet::from_bits_truncate(u32::from(w.events as u16));
            EpollEvent::new(set, WAKE)
        };
        match (self.wake, want) {
            (Some(old), Some(new)) if old.fd == new.fd => {
                self.ep.ctl(ControlOperation::Modify, new.fd, event(new))?
            }
            (old, new) => {
                if let Some(old) = old {
                    // (It cannot fail for a descriptor still open and watched.)
                    let _ = self
                        .ep
                        .ctl(ControlOperation::Delete, old.fd, EpollEvent::default());
                    self.wake = None;
                }
                if let Some(new) = new {
                    self.ep.ctl(ControlOperation::Add, new.fd, event(new))?;
                }
            }
        }
        self.wake = want;
        Ok(())
    }

    /// Sleeps until a kick, a notification, the stop or the port's descriptor `wake` (as
    /// [`Sleep::set_wake`]) wakes the thread, or `timeout_ms` passes (-1: never). Returns the
    /// kick descriptor's events (0 when something else woke it), `None` after a timeout or
    /// EINTR.
    fn sleep(&mut self, wake: Option<Wake>, timeout_ms: i32) -> std::io::Result<Option<u32>> {
        self.set_wake(wake)?;
        let mut out = [EpollEvent::default(); 4];
        let n = match self.ep.wait(timeout_ms, &mut out) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok((n > 0).then(|| {
            out[..n]
                .iter()
                .filter(|e| e.data() == KICK)
                .fold(0, |m, e| m | e.events())
        }))
    }
}

/// Takes the kicks counted on the kick eventfd, without ever blocking (the frontend shares the
/// descriptor and may have cleared O_NONBLOCK and read the counter itself). False, logged and
/// counted, when the descriptor cannot be read: the ring then stops.
fn drain(port: &str, ring: u32, f: &File, stats: &RingStats) -> bool {
    match eventfd_take_nowait(f) {
        Ok(v) => {
            RingStats::add(&stats.kicks, u64::from(v != 0));
            true
        }
        Err(e) => {
            kick_fault(port, ring, &format!("cannot be read ({e})"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd_file;
    use std::io::Write;

    fn write(mut f: &File, v: u64) {
        f.write_all(&v.to_ne_bytes()).unwrap();
    }

    #[test]
    fn a_ring_sleep_wakes_once_per_burst_and_never_reads_what_woke_it() {
        let (kick, stop) = (eventfd_file(true).unwrap(), eventfd_file(true).unwrap());
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = Sleep::new(kick.as_raw_fd(), notify.as_raw_fd(), stop.as_raw_fd()).unwrap();
        // Nothing written: the sleep times out.
        let t = Instant::now();
        assert_eq!(s.sleep(None, 30).unwrap(), None);
        assert!(t.elapsed() >= Duration::from_millis(29));
        // A thousand kicks: one wake-up, its one call, and the next sleep sleeps.
        for _ in 0..1000 {
            write(&kick, 1);
        }
        assert_eq!(s.sleep(None, 1000).unwrap(), Some(libc::EPOLLIN as u32));
        assert_eq!(s.sleep(None, 15).unwrap(), None);
        // The port's notification wakes it as no kick; so does a kick from another thread.
        notify.write(1).unwrap();
        assert_eq!(s.sleep(None, 1000).unwrap(), Some(0));
        let k2 = kick.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            write(&k2, 1);
        });
        assert_eq!(s.sleep(None, 5000).unwrap(), Some(libc::EPOLLIN as u32));
        t.join().unwrap();
        assert_eq!(eventfd_take_nowait(&kick).unwrap(), 1001);
        // A frontend saturating its kick counter wakes it once, then stops only its own kicks.
        write(&kick, u64::MAX - 1);
        assert_eq!(s.sleep(None, 1000).unwrap(), Some(libc::EPOLLIN as u32));
        assert!((&kick).write_all(&1u64.to_ne_bytes()).is_err());
        assert_eq!(
            s.sleep(None, 15).unwrap(),
            None,
            "no spin on a saturated counter"
        );
        // The stop still wakes it, every time.
        write(&stop, 1);
        for _ in 0..3 {
            assert_eq!(s.sleep(None, 1000).unwrap(), Some(0));
        }
    }

    #[test]
    fn the_ports_descriptor_is_watched_only_while_asked_for() {
        let (kick, stop) = (eventfd_file(true).unwrap(), eventfd_file(true).unwrap());
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = Sleep::new(kick.as_raw_fd(), notify.as_raw_fd(), stop.as_raw_fd()).unwrap();
        // A readable descriptor (an eventfd with a count) is level-triggered: it wakes each
        // sleep while asked for, and none once the port stops asking.
        let port = eventfd_file(true).unwrap();
        write(&port, 1);
        let rd = Wake {
            fd: port.as_raw_fd(),
            events: libc::POLLIN,
        };
        for _ in 0..2 {
            assert_eq!(s.sleep(Some(rd), 1000).unwrap(), Some(0));
        }
        assert_eq!(s.sleep(None, 15).unwrap(), None);
        // Writable (a count below the maximum), then readable again on the same descriptor.
        let wr = Wake {
            events: libc::POLLOUT,
            ..rd
        };
        assert_eq!(s.sleep(Some(wr), 1000).unwrap(), Some(0));
        assert_eq!(s.sleep(Some(rd), 1000).unwrap(), Some(0));
        assert_eq!(eventfd_take_nowait(&port).unwrap(), 1);
        assert_eq!(s.sleep(Some(rd), 15).unwrap(), None);
        // A descriptor that cannot be watched is an error for this ring's loop, not a spin.
        let memfd = crate::sys::sealable_memfd(c"sleep-test", 8).unwrap();
        let bad = Wake {
            fd: memfd.as_raw_fd(),
            events: libc::POLLIN,
        };
        assert!(s.sleep(Some(bad), 15).is_err());
        assert_eq!(s.sleep(None, 15).unwrap(), None);
    }
}
