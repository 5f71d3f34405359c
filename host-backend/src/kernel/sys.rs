//! The `unsafe` corner of kernel netmap: `NIOCCTRL` on a `/dev/netmap` control device. Each
//! wrapper builds its request (header, body, options) on its own stack frame from Rust values,
//! so every pointer the kernel follows during the call is valid and of the size the kernel
//! reads. What the kernel keeps beyond a call, the addresses of the CSB arrays, it uses again
//! only in its loop ([`NetmapCtrl::sync_kloop_start`]), which starts only while the memory they
//! lie in is held here ([`Csb`]).

use super::abi::{
    kloop_eventfds_option, opt, req, KloopEventfds, NmreqHeader, NmreqOptCsb, NmreqOption,
    NmreqPoolsInfo, NmreqRegister, NmreqSyncKloopStart, DEV_NETMAP, NIOCCTRL,
};
use crate::port::ring::Keepalive;
use ptnet_protocol::csb::ENTRY_SIZE;
use ptnet_protocol::shmem::SharedMem;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// The CSB arrays the kernel was pointed at (guest-to-host, host-to-guest), and what keeps the
/// guest memory they are windows of mapped.
pub struct Csb {
    /// Guest-to-host array.
    pub atok: SharedMem,
    /// Host-to-guest array.
    pub ktoa: SharedMem,
    /// Keeps them mapped.
    pub keep: Keepalive,
}

/// A `/dev/netmap` descriptor bound to one port (REGISTER), how many rings the kernel bound (the
/// CSB arrays given to [`Self::csb_enable`] must hold an entry for each), and the arrays it was
/// last pointed at while they may be used.
pub struct NetmapCtrl {
    // First: closing the descriptor makes the kernel forget the arrays before they are let go.
    dev: File,
    rings: u32,
    csb: Mutex<Option<Arc<Csb>>>,
}

/// `ioctl(dev, NIOCCTRL, hdr)`.
///
/// # Safety
/// `hdr.nr_body` and `hdr.nr_options` must be 0 or point to the body and option chain the
/// request `hdr.nr_reqtype` expects, valid (for the kernel's reads and writes) for the call.
unsafe fn ctrl(dev: &File, hdr: &mut NmreqHeader) -> io::Result<()> {
    // SAFETY: `hdr` is a live `struct nmreq_header`, the size NIOCCTRL encodes; what it points
    // to is the caller's contract.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), NIOCCTRL as _, hdr as *mut NmreqHeader) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl NetmapCtrl {
    /// Opens `/dev/netmap` and registers port `name` (the kernel's name: `eth0`, `vale0:1`,
    /// `p{1`) with the request `reg`, which the kernel completes with its answer.
    pub fn register(name: &str, reg: &mut NmreqRegister) -> io::Result<Self> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_NETMAP)?;
        let mut hdr = NmreqHeader::new(req::REGISTER, name);
        hdr.nr_body = reg as *mut NmreqRegister as u64;
        // SAFETY: REGISTER's body is a `struct nmreq_register`, borrowed for the call.
        unsafe { ctrl(&dev, &mut hdr)? };
        let rings = u32::from(reg.nr_tx_rings) + u32::from(reg.nr_rx_rings);
        Ok(Self {
            dev,
            rings,
            csb: Mutex::new(None),
        })
    }

    fn csb_slot(&self) -> MutexGuard<'_, Option<Arc<Csb>>> {
        self.csb.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A descriptor that is not a registered netmap port, for tests of what is built from the
    /// kernel's answers: every request on it fails.
    #[cfg(test)]
    pub fn unregistered(dev: File) -> Self {
        Self {
            dev,
            rings: 0,
            csb: Mutex::new(None),
        }
    }

    /// The descriptor (what SHMEM_MAP sends: mapping it gives the port's memory).
    pub fn file(&self) -> &File {
        &self.dev
    }

    /// POOLS_INFO_GET for port `name`, `pools.nr_mem_id` naming the allocator.
    pub fn pools_info(&self, name: &str, pools: &mut NmreqPoolsInfo) -> io::Result<()> {
        let mut hdr = NmreqHeader::new(req::POOLS_INFO_GET, name);
        hdr.nr_body = pools as *mut NmreqPoolsInfo as u64;
        // SAFETY: POOLS_INFO_GET's body is a `struct nmreq_pools_info`, borrowed for the call.
        unsafe { ctrl(&self.dev, &mut hdr) }
    }

    /// CSB_ENABLE with `csb`'s arrays: checked to be 64-byte aligned and to hold an entry for
    /// every bound ring, since the kernel writes them now and while its loop runs
    /// ([`Self::sync_kloop_start`]). Once the kernel took them, they are held here until
    /// [`Self::csb_release`] or the next CSB_ENABLE.
    pub fn csb_enable(&self, csb: Csb) -> io::Result<()> {
        let need = self.rings as usize * ENTRY_SIZE;
        let (atok, ktoa) = (&csb.atok, &csb.ktoa);
        for a in [atok, ktoa] {
            if a.len() < need || !(a.as_ptr() as usize).is_multiple_of(ENTRY_SIZE) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "CSB arrays must be {ENTRY_SIZE}-byte aligned and hold {} entries",
                        self.rings
                    ),
                ));
            }
        }
        let mut opt = NmreqOptCsb {
            nro_opt: NmreqOption {
                nro_reqtype: opt::CSB,
                ..Default::default()
            },
            csb_atok: atok.as_ptr() as u64,
            csb_ktoa: ktoa.as_ptr() as u64,
        };
        let mut hdr = NmreqHeader::new(req::CSB_ENABLE, "");
        hdr.nr_options = &mut opt as *mut NmreqOptCsb as u64;
        // The slot is held across the call: no loop starts while the kernel's arrays change.
        let mut slot = self.csb_slot();
        // SAFETY: one CSB option, borrowed for the call (the kernel writes its status back). The
        // arrays it points to hold an entry per bound ring (checked above) and are mapped (`csb`
        // holds their memory); the kernel uses them again only in a loop, which starts only while
        // `csb` is held in the slot.
        let r = unsafe { ctrl(&self.dev, &mut hdr) };
        // Whatever the answer, the kernel may now hold these addresses.
        *slot = Some(Arc::new(csb));
        r?;
        match opt.nro_opt.nro_status {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// The arrays of the last CSB_ENABLE, while held.
    pub fn csb(&self) -> Option<Arc<Csb>> {
        self.csb_slot().clone()
    }

    /// Lets the arrays of the last CSB_ENABLE go (a loop running on them keeps them until it
    /// ends): no loop starts until the next CSB_ENABLE.
    pub fn csb_release(&self) {
        *self.csb_slot() = None;
    }

    /// SYNC_KLOOP_START with one entry of `fds` per ring: blocks, running the kernel's loop over
    /// the arrays of the last [`Self::csb_enable`], until [`Self::sync_kloop_stop`]. Refused
    /// (EINVAL) when those arrays were released.
    pub fn sync_kloop_start(&self, fds: &[KloopEventfds], sleep_us: u32) -> io::Result<()> {
        // Held for the whole loop: the memory the kernel syncs through stays mapped.
        let Some(_csb) = self.csb() else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut body = NmreqSyncKloopStart { sleep_us, pad1: 0 };
        let mut opt = kloop_eventfds_option(fds);
        let mut hdr = NmreqHeader::new(req::SYNC_KLOOP_START, "");
        hdr.nr_body = &mut body as *mut NmreqSyncKloopStart as u64;
        hdr.nr_options = opt.as_mut_ptr() as u64;
        // SAFETY: the body and a complete SYNC_KLOOP_EVENTFDS option (its `nro_size` is the
        // buffer's size), both borrowed for the call. The CSB arrays the loop syncs through are
        // the ones the last `csb_enable` checked, kept mapped by `_csb` until the call returns.
        unsafe { ctrl(&self.dev, &mut hdr) }
    }

    /// SYNC_KLOOP_STOP (from another thread than the loop's).
    pub fn sync_kloop_stop(&self) -> io::Result<()> {
        let mut hdr = NmreqHeader::new(req::SYNC_KLOOP_STOP, "");
        // SAFETY: a header without body or options.
        unsafe { ctrl(&self.dev, &mut hdr) }
    }
}
