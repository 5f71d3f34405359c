//! Kernel netmap ports (`/dev/netmap`, request API of NETMAP_API 14: `NIOCCTRL` and
//! `struct nmreq_header`): `netmap:IFNAME`, and with `--netmap kernel` also pipe and VALE names.
//!
//! The layouts below are those of `sys/net/netmap.h` in luigirizzo/netmap (the version with
//! `NETMAP_REQ_OPT_SYNC_KLOOP_MODE` and host ring counts in `nmreq_register`); the tests pin every
//! size and offset to the header's numbers on x86-64.
//!
//! How a kernel netmap port is served (the daemon only sets up and tears down; the kernel moves
//! the packets):
//! 1. When the daemon starts: bind the port on a `/dev/netmap` descriptor (REGISTER, all hardware
//!    rings, `NR_EXCLUSIVE`, which CSB mode requires) and ask where its pools lie
//!    (POOLS_INFO_GET). The registers the guest reads come from these answers, and that
//!    descriptor is the memory SHMEM_MAP sends: the frontend maps `/dev/netmap` itself.
//! 2. On PTCTL CREATE: CSB_ENABLE with option CSB pointing at the guest's CSB arrays as mapped in
//!    the daemon (the kernel reaches them as user memory of the thread that runs its loop), then
//!    SYNC_KLOOP_START with option SYNC_KLOOP_EVENTFDS (per ring: the frontend's kick eventfd as
//!    `ioeventfd`, its call eventfd as `irqfd`) on a thread of its own, where it blocks.
//! 3. On DELETE or disconnect: SYNC_KLOOP_STOP, and join that thread.

use crate::frontend::ptnet::syncloop::FrontendRings;
use crate::port::nic::{sys, NicError};
use crate::port::Port;
use crate::portspec::{PortKind, PortSpec, RingConf, MAX_RINGS};
use ptnet_protocol::device::PortGeometry;
use ptnet_protocol::shmem::SharedMem;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The netmap device.
pub const DEV_NETMAP: &str = "/dev/netmap";
/// The API version this code speaks.
pub const NETMAP_API: u16 = 14;
/// Size of `nmreq_header.nr_name`.
pub const NETMAP_REQ_IFNAMSIZ: usize = 64;

/// Request types (`nr_reqtype`).
pub mod req {
    /// Register a port (bind it to the control device).
    pub const REGISTER: u16 = 1;
    /// Port information.
    pub const PORT_INFO_GET: u16 = 2;
    /// Attach to a VALE switch.
    pub const VALE_ATTACH: u16 = 3;
    /// Detach from a VALE switch.
    pub const VALE_DETACH: u16 = 4;
    /// List a VALE switch.
    pub const VALE_LIST: u16 = 5;
    /// Set the port header length.
    pub const PORT_HDR_SET: u16 = 6;
    /// Get the port header length.
    pub const PORT_HDR_GET: u16 = 7;
    /// New persistent VALE port.
    pub const VALE_NEWIF: u16 = 8;
    /// Delete a persistent VALE port.
    pub const VALE_DELIF: u16 = 9;
    /// Enable VALE polling.
    pub const VALE_POLLING_ENABLE: u16 = 10;
    /// Disable VALE polling.
    pub const VALE_POLLING_DISABLE: u16 = 11;
    /// Memory pools information.
    pub const POOLS_INFO_GET: u16 = 12;
    /// Start the in-kernel sync loop (blocks until STOP).
    pub const SYNC_KLOOP_START: u16 = 13;
    /// Stop the in-kernel sync loop.
    pub const SYNC_KLOOP_STOP: u16 = 14;
    /// Enable CSB mode on a registered control device.
    pub const CSB_ENABLE: u16 = 15;
}

/// Option types (`nro_reqtype`).
pub mod opt {
    /// User-allocated memory.
    pub const EXTMEM: u32 = 1;
    /// Per-ring eventfds for the in-kernel loop.
    pub const SYNC_KLOOP_EVENTFDS: u32 = 2;
    /// CSB mode.
    pub const CSB: u32 = 3;
    /// Direct TX/RX mode of the in-kernel loop.
    pub const SYNC_KLOOP_MODE: u32 = 4;
}

/// `nr_mode` values.
pub mod mode {
    /// All hardware rings.
    pub const NR_REG_ALL_NIC: u32 = 1;
    /// Host rings only.
    pub const NR_REG_SW: u32 = 2;
    /// Hardware and host rings.
    pub const NR_REG_NIC_SW: u32 = 3;
    /// One hardware ring pair.
    pub const NR_REG_ONE_NIC: u32 = 4;
}

/// `nr_flags`: the application handles virtio-net headers.
pub const NR_ACCEPT_VNET_HDR: u64 = 0x8000;
/// `nmreq_opt_sync_kloop_mode.mode`: sync TX in the kick's context.
pub const NM_OPT_SYNC_KLOOP_DIRECT_TX: u32 = 1;
/// ... and RX.
pub const NM_OPT_SYNC_KLOOP_DIRECT_RX: u32 = 2;

/// `_IOWR('i', 151, struct nmreq_header)`.
pub const NIOCCTRL: libc::c_ulong = ioc(3, b'i', 151, std::mem::size_of::<NmreqHeader>());
/// `_IO('i', 148)`.
pub const NIOCTXSYNC: libc::c_ulong = ioc(0, b'i', 148, 0);
/// `_IO('i', 149)`.
pub const NIOCRXSYNC: libc::c_ulong = ioc(0, b'i', 149, 0);

/// Linux's `_IOC(dir, type, nr, size)`.
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}

/// `struct nmreq_header` (88 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NmreqHeader {
    /// API version.
    pub nr_version: u16,
    /// Request type.
    pub nr_reqtype: u16,
    /// Must be zero.
    pub nr_reserved: u32,
    /// Port name.
    pub nr_name: [u8; NETMAP_REQ_IFNAMSIZ],
    /// User pointer to the first option (`NmreqOption` header), 0 for none.
    pub nr_options: u64,
    /// User pointer to the request body.
    pub nr_body: u64,
}

impl NmreqHeader {
    /// A header for request `reqtype` on port `name` (truncated to 63 bytes).
    pub fn new(reqtype: u16, name: &str) -> Self {
        let mut nr_name = [0u8; NETMAP_REQ_IFNAMSIZ];
        let b = name.as_bytes();
        let n = b.len().min(NETMAP_REQ_IFNAMSIZ - 1);
        nr_name[..n].copy_from_slice(&b[..n]);
        Self {
            nr_version: NETMAP_API,
            nr_reqtype: reqtype,
            nr_reserved: 0,
            nr_name,
            nr_options: 0,
            nr_body: 0,
        }
    }
}

/// `struct nmreq_option` (24 bytes): the header of every option.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqOption {
    /// User pointer to the next option, 0 at the end.
    pub nro_next: u64,
    /// Option type.
    pub nro_reqtype: u32,
    /// Out: 0 if processed, else an errno.
    pub nro_status: u32,
    /// Size of variable-size options (whole option), 0 otherwise.
    pub nro_size: u64,
}

/// `struct nmreq_register` (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqRegister {
    /// Out: offset of the netmap_if in the memory.
    pub nr_offset: u64,
    /// Out: memory size.
    pub nr_memsize: u64,
    /// Slots per TX ring.
    pub nr_tx_slots: u32,
    /// Slots per RX ring.
    pub nr_rx_slots: u32,
    /// TX rings.
    pub nr_tx_rings: u16,
    /// RX rings.
    pub nr_rx_rings: u16,
    /// Host TX rings.
    pub nr_host_tx_rings: u16,
    /// Host RX rings.
    pub nr_host_rx_rings: u16,
    /// Memory allocator id.
    pub nr_mem_id: u16,
    /// Ring id (with NR_REG_ONE_NIC).
    pub nr_ringid: u16,
    /// NR_REG_* mode.
    pub nr_mode: u32,
    /// Extra buffers wanted.
    pub nr_extra_bufs: u32,
    /// NR_* flags.
    pub nr_flags: u64,
}

/// `struct nmreq_opt_csb` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqOptCsb {
    /// Option header (type CSB).
    pub nro_opt: NmreqOption,
    /// User pointer to the application-to-kernel array (`nm_csb_atok`, 64 bytes per ring).
    pub csb_atok: u64,
    /// User pointer to the kernel-to-application array (`nm_csb_ktoa`).
    pub csb_ktoa: u64,
}

/// One entry of `nmreq_opt_sync_kloop_eventfds.eventfds[]` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KloopEventfds {
    /// Application-to-kernel notifier (the guest's kick), or -1.
    pub ioeventfd: i32,
    /// Kernel-to-application notifier (the guest's interrupt), or -1.
    pub irqfd: i32,
}

/// `struct nmreq_opt_sync_kloop_mode` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqOptSyncKloopMode {
    /// Option header (type SYNC_KLOOP_MODE).
    pub nro_opt: NmreqOption,
    /// NM_OPT_SYNC_KLOOP_DIRECT_* bits.
    pub mode: u32,
}

/// `struct nmreq_sync_kloop_start` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqSyncKloopStart {
    /// Sleep between iterations when there is no work (0: sleep on the eventfds).
    pub sleep_us: u32,
    /// Padding.
    pub pad1: u32,
}

/// `nmreq_opt_sync_kloop_eventfds` with its array: the option header followed by one
/// [`KloopEventfds`] per ring, in one buffer (`nro_size` = the whole size).
pub fn kloop_eventfds_option(fds: &[KloopEventfds]) -> Vec<u64> {
    let bytes = std::mem::size_of::<NmreqOption>() + fds.len() * 8;
    let mut words = vec![0u64; bytes / 8];
    words[1] = u64::from(opt::SYNC_KLOOP_EVENTFDS); // nro_reqtype (low half), nro_status 0
    words[2] = bytes as u64; // nro_size
    for (i, e) in fds.iter().enumerate() {
        words[3 + i] = u64::from(e.ioeventfd as u32) | (u64::from(e.irqfd as u32) << 32);
    }
    words
}

/// `struct nmreq_pools_info` (64 bytes): where the pools lie in the port's memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqPoolsInfo {
    /// Out: memory size.
    pub nr_memsize: u64,
    /// In/out: memory allocator id.
    pub nr_mem_id: u16,
    /// Padding.
    pub pad1: [u16; 3],
    /// Interface pool offset.
    pub nr_if_pool_offset: u64,
    /// Interface pool object count.
    pub nr_if_pool_objtotal: u32,
    /// Interface pool object size.
    pub nr_if_pool_objsize: u32,
    /// Ring pool offset.
    pub nr_ring_pool_offset: u64,
    /// Ring pool object count.
    pub nr_ring_pool_objtotal: u32,
    /// Ring pool object size.
    pub nr_ring_pool_objsize: u32,
    /// Buffer pool offset.
    pub nr_buf_pool_offset: u64,
    /// Buffer pool object count.
    pub nr_buf_pool_objtotal: u32,
    /// Buffer pool object size.
    pub nr_buf_pool_objsize: u32,
}

/// `nr_flags`: exclusive use of the bound rings (CSB mode requires it).
pub const NR_EXCLUSIVE: u64 = 0x800;

/// A control device bound to one kernel netmap port (all its hardware rings, exclusively), whose
/// memory the frontend maps and whose rings the kernel's sync loop serves in CSB mode.
pub struct KernelNetmap {
    dev: File,
    /// What the kernel answered to REGISTER.
    pub reg: NmreqRegister,
    /// Where the pools lie.
    pub pools: NmreqPoolsInfo,
    /// While the kernel's loop runs: the CSB arrays it syncs through (and what keeps them
    /// mapped), so the daemon can show the rings' positions ([`KernelNetmap::csb_positions`]).
    csb: std::sync::Mutex<
        Option<(
            SharedMem,
            SharedMem,
            crate::frontend::ptnet::syncloop::Keepalive,
        )>,
    >,
}

impl KernelNetmap {
    /// Opens `/dev/netmap` and binds `nmport` (`netmap:eth0`, `vale0:1`, `netmap:p{1`, ...):
    /// all of its hardware rings, exclusively, with `conf`'s ring counts and sizes as a request
    /// (NICs keep their own). CSB mode is entered later, per frontend, by [`Self::enable_csb`].
    pub fn open(nmport: &str, conf: &RingConf) -> io::Result<Self> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_NETMAP)?;
        let mut reg = register_request(conf);
        let name = kernel_port_name(nmport);
        let mut hdr = NmreqHeader::new(req::REGISTER, name);
        hdr.nr_body = &mut reg as *mut NmreqRegister as u64;
        // SAFETY: NIOCCTRL reads the header and the body it points to, both alive on this stack
        // frame, and writes the answer back into the body.
        unsafe { sys::ioctl_ptr(dev.as_raw_fd(), NIOCCTRL, &mut hdr)? };
        let mut pools = NmreqPoolsInfo {
            nr_mem_id: reg.nr_mem_id,
            ..Default::default()
        };
        let mut hdr = NmreqHeader::new(req::POOLS_INFO_GET, name);
        hdr.nr_body = &mut pools as *mut NmreqPoolsInfo as u64;
        // SAFETY: as above, with the pools body.
        unsafe { sys::ioctl_ptr(dev.as_raw_fd(), NIOCCTRL, &mut hdr)? };
        Ok(Self {
            dev,
            reg,
            pools,
            csb: std::sync::Mutex::new(None),
        })
    }

    /// Per ring (TX first) while the kernel's loop runs: the guest's head and the kernel's
    /// hwcur and hwtail, from the CSB (the kernel keeps no counters we could read).
    pub fn csb_positions(&self) -> Option<Vec<(u32, u32, u32)>> {
        let guard = self.csb.lock().unwrap_or_else(|p| p.into_inner());
        let (atok, ktoa, _) = guard.as_ref()?;
        let rings = atok.len() / ptnet_protocol::csb::ENTRY_SIZE;
        Some(
            (0..rings as u32)
                .filter_map(|r| {
                    let (a, k) = crate::frontend::ptnet::syncloop::csb_entries(atok, ktoa, r)?;
                    let (hwtail, hwcur) = k.appl_read();
                    Some((a.kernel_read().0, hwcur, hwtail))
                })
                .collect(),
        )
    }

    /// The control device: SHMEM_MAP sends it; mapping it gives the port's memory.
    pub fn file(&self) -> &File {
        &self.dev
    }

    /// The port as the ptnet registers describe it.
    pub fn geometry(&self, mac: [u8; 6]) -> Result<PortGeometry, String> {
        let (r, p) = (&self.reg, &self.pools);
        let u32_of = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| {
                format!("the kernel's {what} ({v:#x}) does not fit the 32-bit register")
            })
        };
        Ok(PortGeometry {
            features: 0,
            mac,
            nifp_offset: u32_of(r.nr_offset, "netmap_if offset")?,
            num_tx_rings: u32::from(r.nr_tx_rings),
            num_rx_rings: u32::from(r.nr_rx_rings),
            num_tx_slots: r.nr_tx_slots,
            num_rx_slots: r.nr_rx_slots,
            mem_id: u32::from(r.nr_mem_id),
            mem_size: r.nr_memsize,
            if_pool: (
                u32_of(p.nr_if_pool_offset, "interface pool offset")?,
                p.nr_if_pool_objtotal,
                p.nr_if_pool_objsize,
            ),
            ring_pool: (
                u32_of(p.nr_ring_pool_offset, "ring pool offset")?,
                p.nr_ring_pool_objtotal,
                p.nr_ring_pool_objsize,
            ),
            buf_pool: (
                u32_of(p.nr_buf_pool_offset, "buffer pool offset")?,
                p.nr_buf_pool_objtotal,
                p.nr_buf_pool_objsize,
            ),
        })
    }

    /// Puts the bound rings in CSB mode with the arrays at `csb_atok` and `csb_ktoa` (daemon
    /// addresses, 64-byte aligned, one entry per ring, TX rings first). The kernel checks it can
    /// reach both, then initialises them from its ring state, as our own CREATE does.
    pub fn enable_csb(&self, csb_atok: u64, csb_ktoa: u64) -> io::Result<()> {
        let mut csb = NmreqOptCsb {
            nro_opt: NmreqOption {
                nro_reqtype: opt::CSB,
                ..Default::default()
            },
            csb_atok,
            csb_ktoa,
        };
        let mut hdr = NmreqHeader::new(req::CSB_ENABLE, "");
        hdr.nr_options = &mut csb as *mut NmreqOptCsb as u64;
        // SAFETY: a header with one option, alive on this stack frame; the kernel writes the
        // option's status back.
        unsafe { sys::ioctl_ptr(self.dev.as_raw_fd(), NIOCCTRL, &mut hdr)? };
        match csb.nro_opt.nro_status {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// Runs the kernel's sync loop on the calling thread until [`Self::stop_kloop`]. `fds` has one
    /// entry per ring (TX rings first), matching the CSB arrays.
    pub fn run_kloop(&self, fds: &[KloopEventfds], sleep_us: u32) -> io::Result<()> {
        let mut body = NmreqSyncKloopStart { sleep_us, pad1: 0 };
        let mut opt = kloop_eventfds_option(fds);
        let mut hdr = NmreqHeader::new(req::SYNC_KLOOP_START, "");
        hdr.nr_body = &mut body as *mut NmreqSyncKloopStart as u64;
        hdr.nr_options = opt.as_mut_ptr() as u64;
        // SAFETY: as in `open`; `opt` is a complete option with its array.
        unsafe { sys::ioctl_ptr(self.dev.as_raw_fd(), NIOCCTRL, &mut hdr) }
    }

    /// Stops the kernel's sync loop (from another thread).
    pub fn stop_kloop(&self) -> io::Result<()> {
        let mut hdr = NmreqHeader::new(req::SYNC_KLOOP_STOP, "");
        // SAFETY: a header without body or options.
        unsafe { sys::ioctl_ptr(self.dev.as_raw_fd(), NIOCCTRL, &mut hdr) }
    }
}

/// The name the kernel takes for an nmport name: `netmap:` is the userspace scope and is not
/// passed (`netmap:eth0` is `eth0`, `netmap:p{1` is `p{1`); VALE names go as they are.
fn kernel_port_name(nmport: &str) -> &str {
    nmport.strip_prefix("netmap:").unwrap_or(nmport)
}

/// The REGISTER body: all hardware rings, exclusively (CSB mode is refused without
/// `NR_EXCLUSIVE`), asking for `conf`'s geometry (VALE ports and pipes take it; NICs keep theirs).
fn register_request(conf: &RingConf) -> NmreqRegister {
    NmreqRegister {
        nr_mode: mode::NR_REG_ALL_NIC,
        nr_flags: NR_EXCLUSIVE,
        nr_tx_rings: u16::try_from(conf.tx_rings).unwrap_or(u16::MAX),
        nr_rx_rings: u16::try_from(conf.rx_rings).unwrap_or(u16::MAX),
        nr_tx_slots: conf.tx_slots,
        nr_rx_slots: conf.rx_slots,
        ..Default::default()
    }
}

/// How long CREATE waits for the kernel to refuse its loop before taking it as running: the
/// kernel checks the options and the CSB before it enters the loop, so a refusal comes at once.
const KLOOP_REFUSAL_WINDOW: Duration = Duration::from_millis(100);

/// The kernel's sync loop running for one frontend: a thread blocked in SYNC_KLOOP_START, owning
/// the frontend's kick and call eventfds (the kernel holds references to them while it runs) and
/// keeping the guest memory that holds the CSB mapped.
pub struct KernelLoop {
    port: Arc<KernelNetmap>,
    thread: JoinHandle<io::Result<()>>,
}

impl KernelLoop {
    /// Enters CSB mode with the guest's arrays (`atok` and `ktoa`, windows of mapped guest
    /// memory holding one entry per ring) and starts the kernel's loop with one kick and one call
    /// eventfd per ring. Returns the kernel's refusal, if it refuses.
    pub fn start(port: Arc<KernelNetmap>, name: &str, fe: FrontendRings) -> io::Result<Self> {
        let entry = ptnet_protocol::csb::ENTRY_SIZE;
        let (a, k) = (fe.atok.as_ptr() as u64, fe.ktoa.as_ptr() as u64);
        if a % entry as u64 != 0 || k % entry as u64 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CSB arrays must be {entry}-byte aligned"),
            ));
        }
        port.enable_csb(a, k)?;
        // The arrays stay mapped through `keep` (the guest memory they are windows of).
        let FrontendRings {
            kicks,
            calls,
            keep,
            atok,
            ktoa,
        } = fe;
        *port.csb.lock().unwrap_or_else(|p| p.into_inner()) = Some((atok, ktoa, keep.clone()));
        let fds: Vec<KloopEventfds> = kicks
            .iter()
            .zip(&calls)
            .map(|(kick, call)| KloopEventfds {
                ioeventfd: kick.as_raw_fd(),
                irqfd: call.as_ref().map_or(-1, |c| c.as_raw_fd()),
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = port.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-kloop").chars().take(15).collect())
            .spawn(move || {
                // The descriptors and the guest memory stay open and mapped until the loop ends.
                let _held = (kicks, calls, keep);
                let r = p.run_kloop(&fds, 0);
                let _ = tx.send(());
                r
            })?;
        match rx.recv_timeout(KLOOP_REFUSAL_WINDOW) {
            Err(RecvTimeoutError::Timeout) => Ok(Self { port, thread }),
            _ => match thread.join() {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(io::Error::other("the kernel's sync loop returned at once")),
                Err(_) => Err(io::Error::other("the kernel loop thread panicked")),
            },
        }
    }

    /// Stops the loop and waits for its thread. STOP is repeated until the thread is out, in case
    /// it came before the kernel entered the loop.
    pub fn stop(self) {
        *self.port.csb.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.thread.is_finished() {
            if let Err(e) = self.port.stop_kloop() {
                tracing::debug!("SYNC_KLOOP_STOP: {e}");
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    "the kernel's sync loop did not stop within 5 s; leaving its thread"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match self.thread.join() {
            Ok(Err(e)) => tracing::warn!("the kernel's sync loop ended with: {e}"),
            Ok(Ok(())) => {}
            Err(_) => tracing::error!("the kernel loop thread panicked"),
        }
    }
}

pub(crate) fn build(spec: &PortSpec, nmport: &str) -> Result<Arc<Port>, NicError> {
    if !Path::new(DEV_NETMAP).exists() {
        return Err(NicError::NoNetmap {
            port: spec.name.clone(),
            ifname: nmport.to_string(),
        });
    }
    if let PortKind::KernelNetmap { ifname } = &spec.kind {
        crate::port::nic::require_if(&spec.name, ifname)?;
    }
    let k = KernelNetmap::open(nmport, &spec.conf).map_err(|e| {
        NicError::io(
            &spec.name,
            format!("registering {nmport} with kernel netmap"),
            e,
        )
    })?;
    let rings = u32::from(k.reg.nr_tx_rings) + u32::from(k.reg.nr_rx_rings);
    if rings > MAX_RINGS {
        return Err(NicError::Unsupported {
            port: spec.name.clone(),
            reason: format!(
                "the kernel port has {} TX and {} RX rings; a ptnet device has at most {MAX_RINGS} in all (reduce the NIC's queues, e.g. ethtool -L IFNAME combined N)",
                k.reg.nr_tx_rings, k.reg.nr_rx_rings
            ),
        });
    }
    Port::kernel(&spec.name, k)
        .map(Arc::new)
        .map_err(|reason| NicError::Unsupported {
            port: spec.name.clone(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_netmap_h() {
        assert_eq!(size_of::<NmreqHeader>(), 88);
        assert_eq!(offset_of!(NmreqHeader, nr_version), 0);
        assert_eq!(offset_of!(NmreqHeader, nr_reqtype), 2);
        assert_eq!(offset_of!(NmreqHeader, nr_reserved), 4);
        assert_eq!(offset_of!(NmreqHeader, nr_name), 8);
        assert_eq!(offset_of!(NmreqHeader, nr_options), 72);
        assert_eq!(offset_of!(NmreqHeader, nr_body), 80);

        assert_eq!(size_of::<NmreqOption>(), 24);
        assert_eq!(offset_of!(NmreqOption, nro_reqtype), 8);
        assert_eq!(offset_of!(NmreqOption, nro_status), 12);
        assert_eq!(offset_of!(NmreqOption, nro_size), 16);

        assert_eq!(size_of::<NmreqRegister>(), 56);
        assert_eq!(offset_of!(NmreqRegister, nr_offset), 0);
        assert_eq!(offset_of!(NmreqRegister, nr_memsize), 8);
        assert_eq!(offset_of!(NmreqRegister, nr_tx_slots), 16);
        assert_eq!(offset_of!(NmreqRegister, nr_rx_slots), 20);
        assert_eq!(offset_of!(NmreqRegister, nr_tx_rings), 24);
        assert_eq!(offset_of!(NmreqRegister, nr_rx_rings), 26);
        assert_eq!(offset_of!(NmreqRegister, nr_host_tx_rings), 28);
        assert_eq!(offset_of!(NmreqRegister, nr_host_rx_rings), 30);
        assert_eq!(offset_of!(NmreqRegister, nr_mem_id), 32);
        assert_eq!(offset_of!(NmreqRegister, nr_ringid), 34);
        assert_eq!(offset_of!(NmreqRegister, nr_mode), 36);
        assert_eq!(offset_of!(NmreqRegister, nr_extra_bufs), 40);
        assert_eq!(offset_of!(NmreqRegister, nr_flags), 48);

        assert_eq!(size_of::<NmreqOptCsb>(), 40);
        assert_eq!(offset_of!(NmreqOptCsb, csb_atok), 24);
        assert_eq!(offset_of!(NmreqOptCsb, csb_ktoa), 32);

        assert_eq!(size_of::<NmreqOptSyncKloopMode>(), 32);
        assert_eq!(offset_of!(NmreqOptSyncKloopMode, mode), 24);
        assert_eq!(size_of::<NmreqSyncKloopStart>(), 8);
        assert_eq!(size_of::<KloopEventfds>(), 8);

        assert_eq!(size_of::<NmreqPoolsInfo>(), 64);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_memsize), 0);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_mem_id), 8);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_if_pool_offset), 16);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_if_pool_objtotal), 24);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_if_pool_objsize), 28);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_ring_pool_offset), 32);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_ring_pool_objtotal), 40);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_ring_pool_objsize), 44);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_buf_pool_offset), 48);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_buf_pool_objtotal), 56);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_buf_pool_objsize), 60);
    }

    fn answered(reg: NmreqRegister, pools: NmreqPoolsInfo) -> KernelNetmap {
        KernelNetmap {
            dev: File::open("/dev/null").unwrap(),
            reg,
            pools,
            csb: std::sync::Mutex::new(None),
        }
    }

    #[test]
    fn registers_come_from_the_kernel_answers() {
        let reg = NmreqRegister {
            nr_offset: 0x1_2340,
            nr_memsize: 0x1000_0000,
            nr_tx_slots: 512,
            nr_rx_slots: 1024,
            nr_tx_rings: 4,
            nr_rx_rings: 2,
            nr_mem_id: 3,
            ..Default::default()
        };
        let pools = NmreqPoolsInfo {
            nr_memsize: 0x1000_0000,
            nr_mem_id: 3,
            nr_if_pool_offset: 0,
            nr_if_pool_objtotal: 100,
            nr_if_pool_objsize: 1024,
            nr_ring_pool_offset: 0x19000,
            nr_ring_pool_objtotal: 200,
            nr_ring_pool_objsize: 36864,
            nr_buf_pool_offset: 0x71_0000,
            nr_buf_pool_objtotal: 163840,
            nr_buf_pool_objsize: 2048,
            ..Default::default()
        };
        let g = answered(reg, pools).geometry([2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(
            (g.nifp_offset, g.mem_size, g.mem_id),
            (0x1_2340, 0x1000_0000, 3)
        );
        assert_eq!((g.num_tx_rings, g.num_rx_rings), (4, 2));
        assert_eq!((g.num_tx_slots, g.num_rx_slots), (512, 1024));
        assert_eq!(g.if_pool, (0, 100, 1024));
        assert_eq!(g.ring_pool, (0x19000, 200, 36864));
        assert_eq!(g.buf_pool, (0x71_0000, 163840, 2048));
        assert_eq!(g.mac, [2, 0, 0, 0, 0, 1]);

        // Offsets past 4 GiB cannot be told through the 32-bit registers: refused, not cut.
        let far = NmreqPoolsInfo {
            nr_buf_pool_offset: 1 << 32,
            ..pools
        };
        let e = answered(reg, far).geometry([0; 6]).unwrap_err();
        assert!(e.contains("buffer pool offset"), "{e}");
    }

    #[test]
    fn the_kernel_gets_names_without_the_netmap_scope() {
        assert_eq!(kernel_port_name("netmap:eth0"), "eth0");
        assert_eq!(kernel_port_name("netmap:p{1"), "p{1");
        assert_eq!(kernel_port_name("netmap:p}1"), "p}1");
        assert_eq!(kernel_port_name("vale0:vm1"), "vale0:vm1");
    }

    #[test]
    fn register_request_asks_exclusive_access_to_all_hardware_rings() {
        let conf = RingConf {
            tx_rings: 2,
            rx_rings: 3,
            tx_slots: 256,
            rx_slots: 512,
        };
        let r = register_request(&conf);
        assert_eq!(r.nr_flags, 0x800, "NR_EXCLUSIVE and nothing else");
        assert_eq!(r.nr_mode, 1, "NR_REG_ALL_NIC");
        assert_eq!((r.nr_tx_rings, r.nr_rx_rings), (2, 3));
        assert_eq!((r.nr_tx_slots, r.nr_rx_slots), (256, 512));
        assert_eq!(
            (r.nr_offset, r.nr_memsize, r.nr_mem_id),
            (0, 0, 0),
            "outputs start zeroed"
        );
    }

    #[test]
    fn ioctl_numbers_and_request_types() {
        assert_eq!(NIOCCTRL, 0xc058_6997);
        assert_eq!(NIOCTXSYNC, 0x6994);
        assert_eq!(NIOCRXSYNC, 0x6995);
        assert_eq!(
            (req::REGISTER, req::POOLS_INFO_GET, req::SYNC_KLOOP_START),
            (1, 12, 13)
        );
        assert_eq!((req::SYNC_KLOOP_STOP, req::CSB_ENABLE), (14, 15));
        assert_eq!(
            (
                opt::EXTMEM,
                opt::SYNC_KLOOP_EVENTFDS,
                opt::CSB,
                opt::SYNC_KLOOP_MODE
            ),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn header_and_eventfds_encode_as_netmap_reads_them() {
        let h = NmreqHeader::new(req::REGISTER, "netmap:eth0");
        assert_eq!(h.nr_version, 14);
        assert_eq!(&h.nr_name[..12], b"netmap:eth0\0");
        let long = "x".repeat(100);
        assert_eq!(NmreqHeader::new(1, &long).nr_name[63], 0, "NUL-terminated");

        let o = kloop_eventfds_option(&[
            KloopEventfds {
                ioeventfd: 5,
                irqfd: 6,
            },
            KloopEventfds {
                ioeventfd: -1,
                irqfd: 7,
            },
        ]);
        let bytes: Vec<u8> = o.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(bytes.len(), 24 + 16);
        assert_eq!(&bytes[0..8], &[0; 8], "nro_next");
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(bytes[16..24].try_into().unwrap()), 40);
        let i32_at = |o: usize| i32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        assert_eq!(
            (i32_at(24), i32_at(28), i32_at(32), i32_at(36)),
            (5, 6, -1, 7)
        );
    }

    #[test]
    fn missing_dev_netmap_is_named() {
        if Path::new(DEV_NETMAP).exists() {
            return; // only meaningful without the module
        }
        let spec = PortSpec::parse("netmap:eth0").unwrap();
        let e = build(&spec, "netmap:eth0").err().expect("no /dev/netmap");
        let msg = e.to_string();
        assert!(
            msg.contains("/dev/netmap") && msg.contains("netmap kernel module"),
            "{msg}"
        );
    }
}
