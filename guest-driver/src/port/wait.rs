//! Blocking waits: on rings of one port ([`Port::wait`], [`Port::wait_any`]) and on rings of
//! several ports at once ([`Port::wait_ports`]), by one `poll` over every transport's interrupt
//! descriptors when they all have some, else port by port in slices.

use super::{Port, RingId, WAIT_PORTS_SLICE};
#[cfg(doc)]
use crate::transport::Transport;
use crate::Error;
use ptnet_protocol::regs::ptnet;
use std::time::Duration;

impl Port {
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
    /// ([`Transport::wait_fds`]: the vhost-user transport's epoll instance, readable while an
    /// interrupt waits in it, and taken by one `epoll_wait` for each port that fired; the pci
    /// transport's uio descriptor), this is one `poll` over all of them. (A single port's wait
    /// is the transport's own [`Transport::wait_many`]: for vhost-user, one `epoll_wait` a
    /// wake-up.) Otherwise it blocks on one port's
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
        let ms = crate::sys::timeout_ms(limit);
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
}

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

#[cfg(test)]
mod tests {
    use crate::port::mock::{host_receives, Mock};
    use crate::{Port, RingId};
    use std::time::Duration;

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
