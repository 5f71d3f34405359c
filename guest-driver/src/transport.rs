//! How the driver reaches a ptnet device. The rest of the driver only uses this trait.
//!
//! * [`vhost_user`]: a host process attaches to `ptnet-backend`'s socket as QEMU would.
//! * [`pci`]: inside a Linux guest, through sysfs and `uio_pci_generic`.
//! * [`packet`]: any Linux network interface through an `AF_PACKET` socket (no ptnet device: the
//!   transport plays device and host itself, like netmap's emulated adapter).

use crate::Error;
use ptnet_protocol::shmem::SharedMem;
use std::os::fd::RawFd;
use std::time::Duration;

pub mod packet;
pub mod pci;
pub mod vhost_user;

/// The CSB arrays the driver allocated, with the guest-physical addresses to program.
#[derive(Clone, Debug)]
pub struct CsbArrays {
    /// Guest-to-host array (one 64-byte entry per ring), as the driver writes it.
    pub atok: SharedMem,
    /// Its guest-physical address.
    pub atok_gpa: u64,
    /// Host-to-guest array.
    pub ktoa: SharedMem,
    /// Its guest-physical address.
    pub ktoa_gpa: u64,
}

/// A ptnet device as the driver sees it: registers, netmap memory, CSB memory, kicks, interrupts.
pub trait Transport: Send {
    /// Reads a ptnet NIC register (offset in BAR0, see `ptnet_protocol::regs::ptnet`).
    fn read_reg(&mut self, off: u32) -> Result<u32, Error>;
    /// Writes a ptnet NIC register.
    fn write_reg(&mut self, off: u32, val: u32) -> Result<(), Error>;
    /// Reads a memdev register (see `ptnet_protocol::regs::memdev`).
    fn read_memdev(&mut self, off: u32) -> Result<u32, Error>;
    /// The port's netmap memory, mapped read-write (the memdev's memory BAR).
    fn netmap_mem(&mut self) -> Result<SharedMem, Error>;
    /// Allocates zeroed CSB arrays for `rings` rings in memory the host can reach.
    fn alloc_csb(&mut self, rings: u32) -> Result<CsbArrays, Error>;
    /// Kicks ring `ring` (TX rings first, then RX rings). Called on the data path.
    fn kick(&self, ring: u32);
    /// Waits until ring `ring` may have been interrupted, or `timeout`. Returns false on timeout.
    /// Spurious wake-ups are allowed: callers re-sync and check.
    fn wait(&self, ring: u32, timeout: Option<Duration>) -> Result<bool, Error>;
    /// Waits until any of `rings` may have been interrupted, or `timeout`. Returns false on
    /// timeout. Spurious wake-ups are allowed.
    ///
    /// The default polls each ring without blocking, then blocks on the first one for at most a
    /// millisecond at a time; transports that can wait on several interrupts at once override it.
    fn wait_many(&self, rings: &[u32], timeout: Option<Duration>) -> Result<bool, Error> {
        let Some((&first, _)) = rings.split_first() else {
            return Ok(false);
        };
        if rings.len() == 1 {
            return self.wait(first, timeout);
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            for &r in rings {
                if self.wait(r, Some(Duration::ZERO))? {
                    return Ok(true);
                }
            }
            let step = Duration::from_millis(1);
            let step = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    left.min(step)
                }
                None => step,
            };
            if self.wait(first, Some(step))? {
                return Ok(true);
            }
        }
    }
    /// For a wait shared with other ports ([`crate::Port::wait_ports`]): writes into `out` the
    /// descriptors whose readability means one of `rings` may have been interrupted (and any the
    /// transport must watch while it sleeps, such as the daemon's socket), re-arming the interrupt
    /// source if it must. Returns how many, and the longest the poll may block before the
    /// transport wants to look again; `None` when this transport cannot be waited on through
    /// descriptors (the caller then waits on it with [`Transport::wait_many`]).
    fn wait_fds(&self, _rings: &[u32], _out: &mut [RawFd]) -> Option<PollWait> {
        None
    }

    /// After a poll over the descriptors of [`Transport::wait_fds`]: `ready[i]` says whether
    /// `out[i]` was readable. Consumes the interrupts that fired and reports what went wrong
    /// (the daemon hung up, say).
    fn wait_done(&self, _rings: &[u32], _ready: &[bool]) -> Result<(), Error> {
        Ok(())
    }

    /// A short name for messages ("vhost-user:/tmp/p.sock", "pci:0000:00:04.0").
    fn name(&self) -> &str;
}

/// How to sleep on a transport's interrupts in a poll shared with other ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollWait {
    /// Descriptors written.
    pub n: usize,
    /// The longest the poll may block (`None`: no limit).
    pub cap: Option<Duration>,
}
