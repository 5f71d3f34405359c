//! What the ring threads' sleeping waits (`vmm_sys_util::epoll`, in the ptnet sync loop) rely
//! on, checked against the kernel here: one syscall per wake-up.
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

#[cfg(test)]
mod tests {
    use crate::sys::{eventfd_file, eventfd_take_nowait};
    use std::io::{self, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

    const IN_ET: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

    fn ctl(ep: &Epoll, op: ControlOperation, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        ep.ctl(
            op,
            fd,
            EpollEvent::new(EventSet::from_bits_truncate(events), token),
        )
    }

    fn add(ep: &Epoll, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        ctl(ep, ControlOperation::Add, fd, events, token)
    }

    fn wait(ep: &Epoll, out: &mut [EpollEvent], ms: i32) -> io::Result<usize> {
        ep.wait(ms, out)
    }

    #[test]
    fn an_edge_triggered_eventfd_wakes_once_per_burst_of_writes_without_being_read() {
        let ep = Epoll::new().unwrap();
        let (mut kick, stop) = (eventfd_file(true).unwrap(), eventfd_file(true).unwrap());
        add(&ep, kick.as_raw_fd(), IN_ET, 7).unwrap();
        add(&ep, stop.as_raw_fd(), libc::EPOLLIN as u32, 9).unwrap();
        let mut out = [EpollEvent::default(); 4];
        // Nothing written: the wait times out, and not early.
        let t = Instant::now();
        assert_eq!(wait(&ep, &mut out, 30).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(29));
        // Many writes, one wake-up; the counter, never read, does not wake it again.
        for _ in 0..1000 {
            kick.write_all(&1u64.to_ne_bytes()).unwrap();
        }
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
        assert_eq!(out[0].data(), 7);
        assert_eq!(out[0].events(), libc::EPOLLIN as u32);
        assert_eq!(wait(&ep, &mut out, 20).unwrap(), 0, "no new edge");
        // Each later write is a new edge, the counter still unread.
        kick.write_all(&1u64.to_ne_bytes()).unwrap();
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
        assert_eq!(eventfd_take_nowait(&kick).unwrap(), 1001);
        // A write from another thread wakes a sleeping wait.
        let mut k2 = kick.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            k2.write_all(&1u64.to_ne_bytes()).unwrap();
        });
        assert_eq!(wait(&ep, &mut out, 5000).unwrap(), 1);
        assert_eq!(out[0].data(), 7);
        t.join().unwrap();
        // A level-triggered stop wakes every wait while it is set.
        (&stop).write_all(&1u64.to_ne_bytes()).unwrap();
        for _ in 0..3 {
            assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
            assert_eq!(out[0].data(), 9);
        }
    }

    #[test]
    fn a_saturated_counter_stops_only_the_writes_that_would_overflow_it() {
        let ep = Epoll::new().unwrap();
        let mut kick = eventfd_file(true).unwrap();
        add(&ep, kick.as_raw_fd(), IN_ET, 1).unwrap();
        let mut out = [EpollEvent::default(); 4];
        kick.write_all(&(u64::MAX - 1).to_ne_bytes()).unwrap();
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
        // Further kicks fail at once and wake nobody: the wait times out, it does not spin.
        let e = kick.write_all(&1u64.to_ne_bytes()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(wait(&ep, &mut out, 20).unwrap(), 0);
        // Draining the counter (a restart of the ring) brings the kicks back.
        assert_eq!(eventfd_take_nowait(&kick).unwrap(), u64::MAX - 1);
        kick.write_all(&1u64.to_ne_bytes()).unwrap();
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
    }

    #[test]
    fn ready_descriptors_registered_late_and_refusals() {
        let ep = Epoll::new().unwrap();
        let mut kick = eventfd_file(true).unwrap();
        kick.write_all(&3u64.to_ne_bytes()).unwrap();
        // Written before it was watched: the registration itself reports it.
        add(&ep, kick.as_raw_fd(), IN_ET, 2).unwrap();
        let mut out = [EpollEvent::default(); 1];
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
        // Level-triggered descriptors and their changes: a pipe's write end is writable.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors nobody else owns.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        add(&ep, w.as_raw_fd(), libc::EPOLLOUT as u32, 5).unwrap();
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
        assert_eq!(out[0].data(), 5);
        ctl(
            &ep,
            ControlOperation::Modify,
            w.as_raw_fd(),
            libc::EPOLLIN as u32,
            5,
        )
        .unwrap();
        assert_eq!(wait(&ep, &mut out, 10).unwrap(), 0);
        // The read end hung up: reported whatever was asked.
        drop(r);
        assert_eq!(wait(&ep, &mut out, 1000).unwrap(), 1);
        assert_ne!(out[0].events() & libc::EPOLLERR as u32, 0);
        ctl(&ep, ControlOperation::Delete, w.as_raw_fd(), 0, 0).unwrap();
        assert_eq!(wait(&ep, &mut out, 10).unwrap(), 0);
        // A file without poll support (a memfd) cannot be watched; an empty output is refused.
        let tmp = crate::sys::sealable_memfd(c"epoll-test", 8).unwrap();
        let e = add(&ep, tmp.as_raw_fd(), IN_ET, 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(wait(&ep, &mut [], 0).is_err());
    }
}
