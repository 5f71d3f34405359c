//! `epoll`, for the transports' sleeping waits: one syscall per wake-up.
//!
//! An eventfd watched edge-triggered (`EPOLLET`) reports a new event on every write to it (the
//! kernel wakes its waiters on each write, whether the counter was read or not), so a waiter
//! never reads the eventfds that woke it: the wait is the whole cost of a wake-up, where `poll`
//! needs a drain `read` after it (an unread counter keeps `poll` returning at once). Writes made
//! before the wait coalesce into one event. The counter, never read, grows by one a write; a
//! write that would take it past `u64::MAX - 1` fails and wakes nobody, which only someone
//! writing huge values on purpose reaches.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance, owned (closed on drop).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

/// One event from [`Epoll::wait`]: the token given at registration and the events reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpollEvent {
    pub(crate) token: u64,
    pub(crate) events: u32,
}

impl Epoll {
    /// A new, empty epoll instance (close-on-exec).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; it returns a fresh descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Watches `fd` for `events` (`EPOLLIN`, with `EPOLLET` for edges), reported with `token`.
    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live, initialised epoll_event for the duration of the call (the
        // kernel only reads it); the descriptors are checked by the kernel.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: for ever) for events, filling `out` (at most 16 a call).
    /// Returns how many; 0 on timeout or EINTR.
    pub(crate) fn wait(&self, out: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
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
    use std::time::{Duration, Instant};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const IN_ET: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

    #[test]
    fn one_wait_per_wake_up_whatever_was_written_and_a_timeout_when_nothing_was() {
        let ep = Epoll::new().unwrap();
        let (a, b) = (
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        );
        ep.add(a.as_raw_fd(), IN_ET, 0).unwrap();
        ep.add(b.as_raw_fd(), IN_ET, 1).unwrap();
        let mut out = [EpollEvent::default(); 4];
        let t = Instant::now();
        assert_eq!(ep.wait(&mut out, 25).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(24));
        for _ in 0..500 {
            a.write(1).unwrap();
        }
        // One call takes the wake-up; nothing is read, and no second wake-up follows.
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 1);
        assert_eq!(
            out[0],
            EpollEvent {
                token: 0,
                events: libc::EPOLLIN as u32
            }
        );
        assert_eq!(ep.wait(&mut out, 15).unwrap(), 0);
        // Both at once, then a write from another thread wakes a sleeping wait.
        a.write(1).unwrap();
        b.write(1).unwrap();
        assert_eq!(ep.wait(&mut out, 1000).unwrap(), 2);
        let b2 = b.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b2.write(1).unwrap();
        });
        assert_eq!(ep.wait(&mut out, 5000).unwrap(), 1);
        assert_eq!(out[0].token, 1);
        t.join().unwrap();
        assert_eq!(a.read().unwrap(), 501, "the counter was never read");
        assert!(ep.wait(&mut [], 0).is_err());
    }
}
