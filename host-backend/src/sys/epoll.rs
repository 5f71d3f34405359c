//! `epoll`, for the sleeping waits of the ring threads: one syscall per wake-up.
//!
//! An eventfd registered edge-triggered (`EPOLLET`) reports a new event on every write that
//! changes its counter, read or not (the kernel wakes its waiters on each write), so a waiter
//! that registers its eventfds that way never needs to read them: the wait is the whole cost of
//! a wake-up, where `poll` needs a drain `read` after it (the counter stays non-zero, so the next
//! `poll` would return at once). Several writes before the wait coalesce into one event.
//!
//! What a counter that is never read can do: nothing to the daemon. A write that would take an
//! eventfd's counter past `u64::MAX - 1` fails (or waits, on a blocking description) and wakes
//! nobody, so a frontend that saturates its own kick counter (one write of `u64::MAX - 1`)
//! gets one wake-up and then only stops its own later kicks: the ring thread sleeps until the
//! port or a stop wakes it, and the next start of the ring drains the counter. Honest kicks add
//! one each, and 2^64 of them do not happen.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance, owned (closed on drop).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One event from [`Epoll::wait`]: the token given at registration and the events that fired
/// (`libc::EPOLLIN`, `EPOLLOUT`, `EPOLLERR`, `EPOLLHUP`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpollEvent {
    /// What the descriptor was registered with.
    pub token: u64,
    /// The events reported.
    pub events: u32,
}

impl Epoll {
    /// A new, empty epoll instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; it returns a fresh descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live, initialised epoll_event for the duration of the call (the
        // kernel only reads it); the descriptors are checked by the kernel.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events` (`EPOLLIN`, `EPOLLOUT`, with `EPOLLET` for edges), reported
    /// with `token`. A descriptor that cannot be polled (a regular file) is refused with EPERM.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes what a watched `fd` is watched for.
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: for ever) for events, filling `out` (at most 16 are taken
    /// per call). Returns how many; 0 on timeout or EINTR.
    pub fn wait(&self, out: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        const MAX: usize = 16;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let max = out.len().min(MAX);
        if max == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `evs` is a local array of `MAX >= max` epoll_event the kernel may write; the
        // count passed is at most its length.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                evs.as_mut_ptr(),
                max as libc::c_int,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = r as usize;
        for (o, e) in out.iter_mut().zip(&evs[..n]) {
            *o = EpollEvent {
                token: e.u64,
                events: e.events,
            };
        }
        Ok(n)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{eventfd_file, eventfd_take_nowait};
    use std::io::Write;
    use std::time::{Duration, Instant};

    const IN_ET: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

    #[test]
    fn an_edge_triggered_eventfd_wakes_once_per_burst_of_writes_without_being_read() {
        let ep = Epoll::new().unwrap();
        let (mut kick, stop) = (eventfd_file(true).unwrap(), eventfd_file(true).unwrap());
        ep.add(kick.as_raw_fd(), IN_ET, 7).unwrap();
        ep.add(stop.as_raw_fd(), libc::EPOLLIN as u32, 9).unwrap();
        let mut out = [EpollEvent::default(); 4];
        // Nothing written: the wait times out, and not early.
        let t = Instant::now();
        assert_eq!(ep.wait(&mut out, 30).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(29));
        // Many writes, one wake-up; the counter, never read, does not wake it again.
        for _ in 0..1000 {
            kick.write_all(&1u64.to_ne_bytes()).unwrap();
        }
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        assert_eq!(out[0].token, 7);
        assert_eq!(out[0].events, libc::EPOLLIN as u32);
        assert_eq!(ep.wait(&mut out, 20).unwrap(), 0, "no new edge");
        // Each later write is a new edge, the counter still unread.
        kick.write_all(&1u64.to_ne_bytes()).unwrap();
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        assert_eq!(eventfd_take_nowait(&kick).unwrap(), 1001);
        // A write from another thread wakes a sleeping wait.
        let mut k2 = kick.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            k2.write_all(&1u64.to_ne_bytes()).unwrap();
        });
        assert_eq!(ep.wait(&mut out, 5000).unwrap(), 1);
        assert_eq!(out[0].token, 7);
        t.join().unwrap();
        // A level-triggered stop wakes every wait while it is set.
        (&stop).write_all(&1u64.to_ne_bytes()).unwrap();
        for _ in 0..3 {
            assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
            assert_eq!(out[0].token, 9);
        }
    }

    #[test]
    fn a_saturated_counter_stops_only_the_writes_that_would_overflow_it() {
        let ep = Epoll::new().unwrap();
        let mut kick = eventfd_file(true).unwrap();
        ep.add(kick.as_raw_fd(), IN_ET, 1).unwrap();
        let mut out = [EpollEvent::default(); 4];
        kick.write_all(&(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        // Further kicks fail at once and wake nobody: the wait times out, it does not spin.
        let e = kick.write_all(&1u64.to_ne_bytes()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(ep.wait(&mut out, 20).unwrap(), 0);
        // Draining the counter (a restart of the ring) brings the kicks back.
        assert_eq!(eventfd_take_nowait(&kick).unwrap(), u64::MAX - 1);
        kick.write_all(&1u64.to_ne_bytes()).unwrap();
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
    }

    #[test]
    fn ready_descriptors_registered_late_and_refusals() {
        let ep = Epoll::new().unwrap();
        let mut kick = eventfd_file(true).unwrap();
        kick.write_all(&3u64.to_ne_bytes()).unwrap();
        // Written before it was watched: the registration itself reports it.
        ep.add(kick.as_raw_fd(), IN_ET, 2).unwrap();
        let mut out = [EpollEvent::default(); 1];
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        // Level-triggered descriptors and their changes: a pipe's write end is writable.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors nobody else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        ep.add(w.as_raw_fd(), libc::EPOLLOUT as u32, 5).unwrap();
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        assert_eq!(out[0].token, 5);
        ep.modify(w.as_raw_fd(), libc::EPOLLIN as u32, 5).unwrap();
        assert_eq!(ep.wait(&mut out, 10).unwrap(), 0);
        // The read end hung up: reported whatever was asked.
        drop(r);
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        assert_ne!(out[0].events & libc::EPOLLERR as u32, 0);
        ep.delete(w.as_raw_fd()).unwrap();
        assert_eq!(ep.wait(&mut out, 10).unwrap(), 0);
        // A file without poll support (a memfd) cannot be watched; an empty output is refused.
        let tmp = crate::sys::sealable_memfd(c"epoll-test", 8).unwrap();
        let e = ep.add(tmp.as_raw_fd(), IN_ET, 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(ep.wait(&mut [], 0).is_err());
    }
}
