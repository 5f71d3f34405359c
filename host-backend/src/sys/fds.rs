//! Frontend descriptors: kicks and interrupts that never block a daemon thread.
//!
//! A frontend shares the file description of every eventfd it sends: it can clear O_NONBLOCK
//! after we set it, read the counter itself, or saturate it. So the flags are never relied on:
//! reads and writes ask the kernel not to wait (RWF_NOWAIT), whatever the description says, and
//! where the kernel refuses that flag a write is bounded in time instead.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Checks that `f` is an eventfd, from its `/proc/self/fd` link (an anonymous inode's link names
/// its kind: `anon_inode:[eventfd]`). `Err` says what it is instead (`pipe:[..]`, `/dev/zero`,
/// `socket:[..]`), or why that could not be read.
pub fn check_eventfd(f: &File) -> Result<(), String> {
    match std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) {
        Ok(link) if link.as_os_str() == "anon_inode:[eventfd]" => Ok(()),
        Ok(link) => Err(format!("not an eventfd ({:?})", link)),
        Err(e) => Err(format!("of unknown kind (/proc/self/fd: {e})")),
    }
}

/// Which way [`eventfd_signal_nowait`] writes: 0 not tried yet, 1 `pwritev2(RWF_NOWAIT)`, 2 the
/// bounded plain write, for kernels whose eventfds refuse RWF_NOWAIT writes (6.18 still does).
static NOWAIT_WRITE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// The same for [`eventfd_take_nowait`] (eventfds honour RWF_NOWAIT reads since Linux 5.11).
static NOWAIT_READ: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Is `fd` ready for `events` right now (poll with a zero timeout)?
fn ready_now(fd: RawFd, events: i16) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & events != 0
}

/// Takes an eventfd's counter without ever blocking, whatever its file status flags:
/// `preadv2(RWF_NOWAIT)`. `Ok(0)`: the counter was zero (or another reader took it first).
/// Kernels before 5.11 refuse the flag; there the read is made only after `poll` says the counter
/// is non-zero (a frontend reading its own kicks in between, on a description whose O_NONBLOCK it
/// cleared, could still make that read wait: not possible on 5.11 and later).
pub fn eventfd_take_nowait(f: &File) -> io::Result<u64> {
    use std::sync::atomic::Ordering::Relaxed;
    let fd = f.as_raw_fd();
    let mut v = 0u64;
    if NOWAIT_READ.load(Relaxed) != 2 {
        let iov = libc::iovec {
            iov_base: (&mut v as *mut u64).cast(),
            iov_len: 8,
        };
        // SAFETY: the iovec points to a live local of 8 bytes the kernel may write; offset -1
        // reads at the current position (eventfds have none).
        let r = unsafe { libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
        if r == 8 {
            NOWAIT_READ.store(1, Relaxed);
            return Ok(v);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            _ if r >= 0 => return Err(io::Error::other(format!("eventfd read of {r} bytes"))),
            Some(libc::EAGAIN) => return Ok(0),
            Some(libc::EOPNOTSUPP) if NOWAIT_READ.load(Relaxed) == 0 => {
                NOWAIT_READ.store(2, Relaxed);
            }
            _ => return Err(e),
        }
    }
    if !ready_now(fd, libc::POLLIN) {
        return Ok(0);
    }
    let mut b = [0u8; 8];
    match std::io::Read::read(&mut &*f, &mut b) {
        Ok(8) => Ok(u64::from_ne_bytes(b)),
        Ok(n) => Err(io::Error::other(format!("eventfd read of {n} bytes"))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Adds 1 to an eventfd's counter (raises the frontend's interrupt) without ever blocking for
/// long, whatever its file status flags. `Ok(Raised::Saturated)`: the counter is full, so the
/// interrupt is dropped (the frontend has one pending anyway: its counter is not zero).
/// The caller should stop signalling a descriptor whose write was [`Raised::Cut`]: only a
/// frontend holding its own interrupts gets there, and each cut cost the writer a tick.
///
/// Kernels whose eventfds take `pwritev2(RWF_NOWAIT)` get that (never waits). Where the kernel
/// refuses the flag on eventfds (`EOPNOTSUPP`, learnt at the first call: Linux 6.18 still does),
/// it is one plain `write`, bounded in time (`bounded_write`): one syscall per interrupt, and
/// interrupts are on every round trip's critical path. The trade: no `poll` for room first, so
/// a hostile frontend that cleared O_NONBLOCK on the shared description and saturated its
/// counter makes that write wait until the watchdog cuts it (between one and two
/// [`SIGNAL_WRITE_BOUND`]) instead of being seen as saturated at once. That costs the writing
/// thread (often another port's, with direct delivery) one bounded cut per descriptor and no
/// more, since its callers stop signalling a descriptor after [`Raised::Cut`]; a poll first
/// would not have removed the cut anyway (the frontend can saturate its counter between the
/// poll and the write). On a non-blocking description a full counter is `Saturated` at once.
pub fn eventfd_signal_nowait(f: &File) -> io::Result<Raised> {
    use std::sync::atomic::Ordering::Relaxed;
    let fd = f.as_raw_fd();
    let one = 1u64;
    if NOWAIT_WRITE.load(Relaxed) != 2 {
        let iov = libc::iovec {
            iov_base: (&one as *const u64).cast_mut().cast(),
            iov_len: 8,
        };
        // SAFETY: the iovec points to a live local of 8 bytes the kernel only reads; offset -1
        // writes at the current position (eventfds have none).
        let r = unsafe { libc::pwritev2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
        if r == 8 {
            NOWAIT_WRITE.store(1, Relaxed);
            return Ok(Raised::Yes);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            _ if r >= 0 => return Err(io::Error::other(format!("eventfd write of {r} bytes"))),
            Some(libc::EAGAIN) => return Ok(Raised::Saturated),
            Some(libc::EOPNOTSUPP) if NOWAIT_WRITE.load(Relaxed) == 0 => {
                NOWAIT_WRITE.store(2, Relaxed);
            }
            _ => return Err(e),
        }
    }
    match bounded_write(fd, &one.to_ne_bytes()) {
        Ok(Some(8)) => Ok(Raised::Yes),
        Ok(Some(n)) => Err(io::Error::other(format!("eventfd write of {n} bytes"))),
        Ok(None) => {
            SIGNAL_WRITES_CUT.fetch_add(1, Relaxed);
            Ok(Raised::Cut)
        }
        // A full counter on a non-blocking description.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Raised::Saturated),
        Err(e) => Err(e),
    }
}

/// What [`eventfd_signal_nowait`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raised {
    /// The counter went up: the frontend sees the interrupt.
    Yes,
    /// The counter was full: dropped (the frontend has one pending anyway).
    Saturated,
    /// The write waited (a blocking, full counter: a frontend holding its own interrupts) and
    /// was cut after one to two [`SIGNAL_WRITE_BOUND`]: stop signalling this descriptor.
    Cut,
}

/// About how long an interrupt write may wait on a frontend's eventfd (see
/// [`eventfd_signal_nowait`]) before it is cut: between one and two ticks of the watchdog. A
/// frontend's counter never fills up in normal operation, so no honest frontend meets it.
pub const SIGNAL_WRITE_BOUND: std::time::Duration = std::time::Duration::from_millis(10);

/// Interrupt writes cut short by the watchdog (a frontend holding its own interrupts).
static SIGNAL_WRITES_CUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many interrupt writes were cut short since the daemon started.
pub fn signal_writes_cut() -> u64 {
    SIGNAL_WRITES_CUT.load(std::sync::atomic::Ordering::Relaxed)
}

/// The signal that ends a stuck write: sent to the writing thread only, with a handler that does
/// nothing and without `SA_RESTART`, so the write returns EINTR.
fn cut_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A thread that makes writes the watchdog may cut: `state` is `(writes << 1) | writing`,
/// stored by the thread around each write (two plain stores: nothing else on the write's path),
/// read by the watchdog. `tid` 0: the thread is gone.
struct Writer {
    tid: std::sync::atomic::AtomicI32,
    state: std::sync::atomic::AtomicU64,
}

/// Every thread that made a [`bounded_write`], for the watchdog to look at.
static WRITERS: std::sync::Mutex<Vec<std::sync::Arc<Writer>>> = std::sync::Mutex::new(Vec::new());

/// This thread's entry in [`WRITERS`]; marked gone when the thread exits.
struct WriterEntry(std::sync::Arc<Writer>);

impl Drop for WriterEntry {
    fn drop(&mut self) {
        self.0.tid.store(0, std::sync::atomic::Ordering::Release);
    }
}

thread_local! {
    static WRITER: WriterEntry = WriterEntry(register_writer());
}

fn register_writer() -> std::sync::Arc<Writer> {
    static WATCHDOG: std::sync::Once = std::sync::Once::new();
    WATCHDOG.call_once(|| {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for a real-time signal
        // nobody else in the process uses; the struct is zeroed, then its fields set.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(cut_signal(), &sa, std::ptr::null_mut());
        }
        let spawned = std::thread::Builder::new()
            .name("write-watchdog".into())
            .spawn(watchdog);
        if let Err(e) = spawned {
            tracing::error!("interrupt writes are not bounded: no watchdog thread: {e}");
        }
    });
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let w = std::sync::Arc::new(Writer {
        tid: std::sync::atomic::AtomicI32::new(tid),
        state: std::sync::atomic::AtomicU64::new(0),
    });
    WRITERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(w.clone());
    w
}

/// Every tick ([`SIGNAL_WRITE_BOUND`]), signals each thread seen in the same write
/// as at the previous tick (so stuck for at least one tick), and forgets threads that are gone.
/// It sleeps on its own: a write costs nothing more than the two stores of [`Writer::state`].
fn watchdog() {
    use std::sync::atomic::Ordering::Acquire;
    let mut seen: Vec<(std::sync::Arc<Writer>, u64)> = Vec::new();
    loop {
        std::thread::sleep(SIGNAL_WRITE_BOUND);
        let now: Vec<std::sync::Arc<Writer>> = {
            let mut all = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|w| w.tid.load(Acquire) != 0);
            all.clone()
        };
        let mut next = Vec::with_capacity(now.len());
        for w in now {
            let state = w.state.load(Acquire);
            let before = seen
                .iter()
                .find(|(o, _)| std::sync::Arc::ptr_eq(o, &w))
                .map(|x| x.1);
            let tid = w.tid.load(Acquire);
            if state & 1 == 1 && before == Some(state) && tid != 0 {
                // SAFETY: sends a signal whose handler does nothing to a thread of this process
                // (a tid that exited makes the call fail with ESRCH, harmlessly).
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, cut_signal()) };
            }
            next.push((w, state));
        }
        seen = next;
    }
}

/// Writes `buf` to `fd`, giving up when the write waits longer than about [`SIGNAL_WRITE_BOUND`]
/// (`Ok(None)`): the watchdog then interrupts it. Only a write still under way for a whole tick
/// is signalled, so the signal lands in that write (in the narrow case where the write finishes
/// just as the signal is sent, it interrupts the thread's next wait, a `poll` that the ring
/// loops treat as a wake-up).
fn bounded_write(fd: RawFd, buf: &[u8]) -> io::Result<Option<usize>> {
    use std::sync::atomic::Ordering::{Relaxed, Release};
    WRITER.with(|entry| {
        let w = &entry.0;
        let writes = (w.state.load(Relaxed) >> 1).wrapping_add(1);
        w.state.store(writes << 1 | 1, Release);
        // SAFETY: `buf` is a live slice of `buf.len()` bytes the kernel only reads.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        let err = io::Error::last_os_error();
        w.state.store(writes << 1, Release);
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        match err.raw_os_error() {
            Some(libc::EINTR) => Ok(None),
            _ => Err(err),
        }
    })
}

/// Like [`poll_fds`], but gives each entry's `revents` in `out` (0 for entries that reported
/// nothing or were ignored), so a caller can tell POLLHUP / POLLERR / POLLNVAL from the events it
/// asked for. Returns how many entries reported anything; EINTR returns 0.
pub fn poll_revents(
    fds: &[(RawFd, i16)],
    timeout_ms: i32,
    out: &mut [i16; 8],
) -> io::Result<usize> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 8];
    let n = fds.len().min(pfds.len());
    for (p, &(fd, events)) in pfds.iter_mut().zip(fds) {
        *p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
    }
    *out = [0; 8];
    // SAFETY: `pfds[..n]` is a valid array of pollfd structures.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    for (o, p) in out.iter_mut().zip(&pfds[..n]) {
        *o = p.revents;
    }
    Ok(r as usize)
}

/// Waits until one of `fds` (descriptor, `poll(2)` events) reports an event, or `timeout_ms`
/// passes (-1: forever). Returns a bitmask of the entries that reported anything: the events
/// asked, or POLLERR / POLLHUP / POLLNVAL, which `poll` reports whatever was asked (a caller
/// treats them as a wake-up and lets the owner of the descriptor handle them). Descriptors below
/// 0 are ignored. At most 8 entries (the rest are ignored); EINTR returns an empty mask.
pub fn poll_fds(fds: &[(RawFd, i16)], timeout_ms: i32) -> io::Result<u64> {
    let mut revents = [0i16; 8];
    poll_revents(fds, timeout_ms, &mut revents)?;
    Ok(revents
        .iter()
        .enumerate()
        .filter(|(_, &r)| r != 0)
        .fold(0, |mask, (i, _)| mask | 1 << i))
}

/// A fresh eventfd (counter 0), as a file: what a frontend sends for a kick or an interrupt.
pub fn eventfd_file(nonblock: bool) -> io::Result<File> {
    let flags = libc::EFD_CLOEXEC | if nonblock { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: plain syscall; it returns a fresh descriptor or -1.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod frontend_fd_tests {
    use crate::sys::fds::*;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::Duration;

    fn eventfd(flags: i32) -> File {
        let e = vmm_sys_util::eventfd::EventFd::new(flags).unwrap();
        let fd = e.try_clone().unwrap();
        // SAFETY: into_raw_fd hands over a descriptor nothing else owns.
        File::from(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) })
    }

    #[test]
    fn only_eventfds_pass_the_check() {
        assert_eq!(check_eventfd(&eventfd(0)), Ok(()));
        let zero = File::open("/dev/zero").unwrap();
        assert!(check_eventfd(&zero).unwrap_err().contains("/dev/zero"));
        let (r, _w) = std::io::pipe().unwrap();
        let r = File::from(OwnedFd::from(r));
        assert!(check_eventfd(&r).unwrap_err().contains("pipe:"));
    }

    #[test]
    fn blocking_eventfds_are_read_and_written_within_bounds() {
        // No O_NONBLOCK: a plain read of a zero counter, or a write to a saturated one, would
        // wait for ever.
        let e = eventfd(0);
        assert_eq!(eventfd_take_nowait(&e).unwrap(), 0);
        assert_eq!(eventfd_signal_nowait(&e).unwrap(), Raised::Yes);
        assert_eq!(eventfd_signal_nowait(&e).unwrap(), Raised::Yes);
        assert_eq!(eventfd_take_nowait(&e).unwrap(), 2);
        std::io::Write::write_all(&mut &e, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        // Saturated: dropped at once where eventfds take RWF_NOWAIT writes, else the one write
        // waits and is cut at its bound; either way nothing is added.
        let t = std::time::Instant::now();
        let r = eventfd_signal_nowait(&e).unwrap();
        assert!(matches!(r, Raised::Saturated | Raised::Cut), "{r:?}");
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(eventfd_take_nowait(&e).unwrap(), u64::MAX - 1);
        assert_eq!(eventfd_take_nowait(&e).unwrap(), 0);
    }

    #[test]
    fn revents_tell_hangups_from_readiness() {
        let (r, w) = std::io::pipe().unwrap();
        let e = eventfd(libc::EFD_NONBLOCK);
        let fds = [(r.as_raw_fd(), libc::POLLIN), (e.as_raw_fd(), libc::POLLIN)];
        let mut out = [0; 8];
        assert_eq!(poll_revents(&fds, 0, &mut out).unwrap(), 0);
        assert_eq!(eventfd_signal_nowait(&e).unwrap(), Raised::Yes);
        assert_eq!(poll_revents(&fds, 0, &mut out).unwrap(), 1);
        assert_eq!(out[1], libc::POLLIN);
        drop(w);
        assert_eq!(poll_revents(&fds, 0, &mut out).unwrap(), 2);
        assert_ne!(out[0] & libc::POLLHUP, 0);
    }

    #[test]
    fn a_write_that_would_wait_for_ever_is_cut_at_its_bound() {
        // A blocking eventfd whose counter is full: a write of 1 waits until somebody reads,
        // which a hostile frontend never does.
        let e = eventfd_file(false).unwrap();
        std::io::Write::write_all(&mut &e, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let t = std::time::Instant::now();
        let r = bounded_write(e.as_raw_fd(), &1u64.to_ne_bytes()).unwrap();
        let took = t.elapsed();
        assert_eq!(r, None, "the write must be cut, not complete");
        assert!(took >= SIGNAL_WRITE_BOUND, "cut after {took:?}");
        assert!(took < Duration::from_millis(500), "cut after {took:?}");
        // The counter is untouched (nothing was added), and the thread's other calls are not
        // interrupted afterwards: a 50 ms poll on nothing runs its full time.
        let mut b = [0u8; 8];
        std::io::Read::read_exact(&mut &e, &mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), u64::MAX - 1);
        let t = std::time::Instant::now();
        assert_eq!(poll_fds(&[(e.as_raw_fd(), libc::POLLIN)], 50).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(45));
        // A write with room completes, and the signal armed around it never fires later.
        assert_eq!(
            bounded_write(e.as_raw_fd(), &1u64.to_ne_bytes()).unwrap(),
            Some(8)
        );
        std::thread::sleep(SIGNAL_WRITE_BOUND * 3);
        let t = std::time::Instant::now();
        assert_eq!(poll_fds(&[(e.as_raw_fd(), libc::POLLOUT)], 0).unwrap(), 0b1);
        assert!(t.elapsed() < Duration::from_millis(45));
    }

    #[test]
    fn signalling_a_saturated_blocking_eventfd_is_cut_at_its_bound_and_counted() {
        let e = eventfd_file(false).unwrap();
        std::io::Write::write_all(&mut &e, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let cut = signal_writes_cut();
        let t = std::time::Instant::now();
        let r = eventfd_signal_nowait(&e).unwrap();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "held {took:?}");
        if NOWAIT_WRITE.load(std::sync::atomic::Ordering::Relaxed) == 2 {
            // No RWF_NOWAIT writes on this kernel: one plain write, cut by the watchdog.
            assert_eq!(r, Raised::Cut);
            assert!(took >= SIGNAL_WRITE_BOUND, "cut after {took:?}");
            assert!(signal_writes_cut() > cut);
        } else {
            assert_eq!(r, Raised::Saturated);
        }
    }

    #[test]
    fn signalling_a_saturated_non_blocking_eventfd_drops_at_once() {
        let e = eventfd_file(true).unwrap();
        std::io::Write::write_all(&mut &e, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(eventfd_signal_nowait(&e).unwrap(), Raised::Saturated);
        assert!(t.elapsed() < SIGNAL_WRITE_BOUND, "waited {:?}", t.elapsed());
        assert_eq!(eventfd_take_nowait(&e).unwrap(), u64::MAX - 1);
    }
}
