//! The `unsafe` corner of kernel netmap: `NIOCCTRL` on a `/dev/netmap` control device. Each
//! wrapper builds its request (header, body, options) on its own stack frame from Rust values,
//! so every pointer the kernel follows during the call is valid and of the size the kernel
//! reads; what the kernel keeps beyond a call (the CSB arrays) is a [`SharedMem`] window, whose
//! creator guarantees the mapping outlives it.

use super::abi::{
    kloop_eventfds_option, opt, req, KloopEventfds, NmreqHeader, NmreqOptCsb, NmreqOption,
    NmreqPoolsInfo, NmreqRegister, NmreqSyncKloopStart, DEV_NETMAP, NIOCCTRL,
};
use ptnet_protocol::csb::ENTRY_SIZE;
use ptnet_protocol::shmem::SharedMem;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A `/dev/netmap` descriptor bound to one port (REGISTER), and how many rings the kernel bound:
/// the CSB arrays given to [`Self::csb_enable`] must hold an entry for each.
#[derive(Debug)]
pub struct NetmapCtrl {
    dev: File,
    rings: u32,
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
        Ok(Self { dev, rings })
    }

    /// A descriptor that is not a registered netmap port, for tests of what is built from the
    /// kernel's answers: every request on it fails.
    #[cfg(test)]
    pub fn unregistered(dev: File) -> Self {
        Self { dev, rings: 0 }
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

    /// CSB_ENABLE with the arrays `atok` and `ktoa`: checked to be 64-byte aligned and to hold an
    /// entry for every bound ring, since the kernel writes `ktoa` (and reads both) now and while
    /// its loop runs ([`Self::sync_kloop_start`]).
    pub fn csb_enable(&self, atok: &SharedMem, ktoa: &SharedMem) -> io::Result<()> {
        let need = self.rings as usize * ENTRY_SIZE;
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
        let mut csb = NmreqOptCsb {
            nro_opt: NmreqOption {
                nro_reqtype: opt::CSB,
                ..Default::default()
            },
            csb_atok: atok.as_ptr() as u64,
            csb_ktoa: ktoa.as_ptr() as u64,
        };
        let mut hdr = NmreqHeader::new(req::CSB_ENABLE, "");
        hdr.nr_options = &mut csb as *mut NmreqOptCsb as u64;
        // SAFETY: one CSB option, borrowed for the call (the kernel writes its status back). The
        // arrays it points to hold an entry per bound ring (checked above) and stay mapped for as
        // long as any copy of their `SharedMem` windows lives (the windows' contract).
        unsafe { ctrl(&self.dev, &mut hdr)? };
        match csb.nro_opt.nro_status {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// SYNC_KLOOP_START with one entry of `fds` per ring: blocks, running the kernel's loop over
    /// the arrays of the last [`Self::csb_enable`], until [`Self::sync_kloop_stop`].
    pub fn sync_kloop_start(&self, fds: &[KloopEventfds], sleep_us: u32) -> io::Result<()> {
        let mut body = NmreqSyncKloopStart { sleep_us, pad1: 0 };
        let mut opt = kloop_eventfds_option(fds);
        let mut hdr = NmreqHeader::new(req::SYNC_KLOOP_START, "");
        hdr.nr_body = &mut body as *mut NmreqSyncKloopStart as u64;
        hdr.nr_options = opt.as_mut_ptr() as u64;
        // SAFETY: the body and a complete SYNC_KLOOP_EVENTFDS option (its `nro_size` is the
        // buffer's size), both borrowed for the call. The CSB arrays the loop syncs through are
        // the ones `csb_enable` checked, mapped as long as their windows live.
        unsafe { ctrl(&self.dev, &mut hdr) }
    }

    /// SYNC_KLOOP_STOP (from another thread than the loop's).
    pub fn sync_kloop_stop(&self) -> io::Result<()> {
        let mut hdr = NmreqHeader::new(req::SYNC_KLOOP_STOP, "");
        // SAFETY: a header without body or options.
        unsafe { ctrl(&self.dev, &mut hdr) }
    }
}
