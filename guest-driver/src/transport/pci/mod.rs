//! The `pci` transport: a ptnet device inside a Linux guest, driven from user space as root.
//!
//! * Device discovery: `/sys/bus/pci/devices/*`. The ids 1b36:000d (NIC) and 1b36:000c (memdev)
//!   collide with upstream QEMU's `qemu-xhci` and `pcie-root-port`, so a device is only taken when its
//!   class code and BAR types match too (NIC: class 0x020000, BAR0 I/O; memdev: BAR0 I/O, BAR1
//!   memory).
//! * Registers: 32-bit `pread`/`pwrite` on the sysfs `resource0` file of the I/O BAR (the kernel
//!   turns them into `inl`/`outl`); if the kernel refuses, `iopl(3)` and `inl`/`outl` directly.
//! * Netmap memory: the memdev whose MEMID equals the NIC's HOSTMEMID; its `resource1` (memory BAR)
//!   is mapped shared, read-write, for MEMSIZE bytes.
//! * CSB: one locked anonymous page per array; its guest-physical address comes from
//!   `/proc/self/pagemap`.
//! * Kicks: a write to the ring's kick register.
//! * Interrupts: the NIC is bound to `uio_pci_generic` (through `driver_override`, so no other
//!   device with the same ids is touched); each ring's waiter has its own `/dev/uioN` descriptor
//!   (every open descriptor sees every interrupt). `uio_pci_generic` uses INTx, which the device
//!   raises (level, until masked) while MSI-X is disabled. The kernel's handler masks INTx in the
//!   command register; `wait` unmasks it through the sysfs `config` file (uio_pci_generic has no
//!   irqcontrol). Without uio (or with `PTNET_PCI_IRQ=poll`) the transport polls: `wait` sleeps
//!   briefly.
//!
//! Which device: a [`PciSelector`] (`ptnetN`, the N-th ptnet NIC in sysfs order, or an address),
//! parsed from a port string by [`crate::PortSpec`].

use super::{CsbArrays, PollWait, Transport};
use crate::error::PhysAddrProblem;
use crate::sys::{self, Mapping};
use crate::{Error, PciSelector};
use discover::{enable, find_nic, is_memdev, pci_devices, resources, SYSFS_PCI};
use ptnet_protocol::csb;
use ptnet_protocol::regs::{self, memdev, ptnet};
use ptnet_protocol::shmem::SharedMem;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const PAGE_SIZE: usize = 4096;
/// How long `wait` sleeps when no interrupt source is available (polling mode).
const POLL_INTERVAL: Duration = Duration::from_micros(500);
/// Upper bound on one `wait` until the first interrupt has been seen. INTx is fragile from user
/// space: `uio_pci_generic` only accepts an interrupt while the device's PCI status still shows
/// it, so a device that pulses its line (assert, deassert) is seen as spurious and never wakes
/// us; the short cap keeps such a device working, as a slow poll.
const FIRST_IRQ_WAIT: Duration = Duration::from_millis(2);
/// Upper bound on one `wait` once interrupts are known to arrive: a lost wake-up (anywhere on the
/// path: daemon, QEMU, kernel) costs at most this much, less than a default ring's worth of
/// packets at the rates a TCG guest sees; an idle waiter wakes 100 times a second.
const MAX_IRQ_WAIT: Duration = Duration::from_millis(10);

mod discover;

/// Opens the ptnet device `sel` designates.
pub fn open(sel: &PciSelector) -> Result<Box<dyn Transport>, Error> {
    Ok(Box::new(PciTransport::open(sel)?))
}

/// 32-bit access to an I/O BAR.
#[derive(Debug)]
enum IoBar {
    /// The sysfs `resourceN` file of the BAR.
    Sysfs(File),
    /// Direct port I/O on the BAR's ports (after `iopl(3)`).
    #[cfg(target_arch = "x86_64")]
    Port(sys::PortIo),
}

impl IoBar {
    fn open(dev: &Path, bar: usize) -> Result<Self, Error> {
        let path = dev.join(format!("resource{bar}"));
        let sysfs = OpenOptions::new().read(true).write(true).open(&path);
        if let Ok(f) = &sysfs {
            let mut b = [0u8; 4];
            if f.read_at(&mut b, 0).map(|n| n == 4).unwrap_or(false) {
                return Ok(IoBar::Sysfs(sysfs.unwrap()));
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(&(start, end, _)) = resources(dev).get(bar) {
                if end > start && end <= 0xffff {
                    if let Ok(p) = sys::PortIo::open(start as u16, (end - start + 1) as u32) {
                        return Ok(IoBar::Port(p));
                    }
                }
            }
        }
        Err(match sysfs {
            Err(e) => Error::io(format!("opening {}", path.display()), e),
            Ok(_) => Error::NoRegisterAccess { path },
        })
    }

    fn read(&self, off: u32) -> Result<u32, Error> {
        match self {
            IoBar::Sysfs(f) => {
                let mut b = [0u8; 4];
                match f.read_at(&mut b, off.into()) {
                    Ok(4) => Ok(u32::from_le_bytes(b)),
                    Ok(bytes) => Err(Error::ShortRegisterAccess { offset: off, bytes }),
                    Err(e) => Err(Error::io(format!("reading register {off}"), e)),
                }
            }
            #[cfg(target_arch = "x86_64")]
            IoBar::Port(p) => p.read(off).ok_or(Error::RegisterOutsideBar(off)),
        }
    }

    fn write(&self, off: u32, val: u32) -> Result<(), Error> {
        match self {
            IoBar::Sysfs(f) => match f.write_at(&val.to_le_bytes(), off.into()) {
                Ok(4) => Ok(()),
                Ok(bytes) => Err(Error::ShortRegisterAccess { offset: off, bytes }),
                Err(e) => Err(Error::io(format!("writing register {off}"), e)),
            },
            #[cfg(target_arch = "x86_64")]
            IoBar::Port(p) => {
                if p.write(off, val) {
                    Ok(())
                } else {
                    Err(Error::RegisterOutsideBar(off))
                }
            }
        }
    }
}

/// Maps `len` bytes of the memory BAR file `path` shared and read-write.
fn map_bar(path: &Path, len: usize) -> Result<Mapping, Error> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    Mapping::map_shared(f.as_raw_fd(), 0, len)
        .map_err(|e| Error::io(format!("mmap {} ({len} bytes)", path.display()), e))
}

/// One locked, zeroed, anonymous page and its physical (guest-physical) address.
fn alloc_locked_page() -> Result<(Mapping, u64), Error> {
    let m = Mapping::anonymous_locked(PAGE_SIZE).map_err(|e| Error::io("CSB page", e))?;
    // Touch it (write) so that a private physical page backs it, not the shared zero page.
    m.shared().zero(0, PAGE_SIZE);
    let gpa = virt_to_phys(m.addr())?;
    Ok((m, gpa))
}

/// Physical address of the page holding `vaddr`, from `/proc/self/pagemap` (needs root).
fn virt_to_phys(vaddr: usize) -> Result<u64, Error> {
    let f = File::open("/proc/self/pagemap").map_err(|e| Error::io("opening pagemap", e))?;
    let mut b = [0u8; 8];
    let off = (vaddr / PAGE_SIZE * 8) as u64;
    f.read_exact_at(&mut b, off)
        .map_err(|e| Error::io("reading pagemap", e))?;
    let entry = u64::from_le_bytes(b);
    let pfn = entry & ((1u64 << 55) - 1);
    if entry >> 63 == 0 {
        return Err(Error::PhysAddr(PhysAddrProblem::NotPresent));
    }
    if pfn == 0 {
        return Err(Error::PhysAddr(PhysAddrProblem::Hidden));
    }
    Ok(pfn * PAGE_SIZE as u64 + (vaddr % PAGE_SIZE) as u64)
}

/// Interrupts through `uio_pci_generic`, one descriptor per ring (opened on first wait).
#[derive(Debug)]
struct Uio {
    dev: PathBuf,
    /// The device's PCI config space (sysfs), to unmask INTx.
    config: File,
    /// Has any interrupt come through? Until then waits are capped at [`FIRST_IRQ_WAIT`].
    seen: AtomicBool,
    /// Might INTx be masked? The kernel masks it exactly when it takes an interrupt, which every
    /// open descriptor then reports: so it stays unmasked, and `unmask` need not touch the config
    /// space (a trap to the hypervisor per access), until a descriptor shows an interrupt or a
    /// new descriptor opens (it cannot show what came before it).
    may_be_masked: AtomicBool,
    /// Did a descriptor report an error (a uio device without an interrupt line)? Waits then
    /// poll.
    no_irq: AtomicBool,
    fds: Vec<OnceLock<Option<UioFd>>>,
}

/// One ring's uio descriptor, and the epoll instance that watches it edge-triggered: the uio
/// driver wakes its waiters on every interrupt, so a wait is one `epoll_wait`, and the
/// descriptor is never read (its count is not needed: the event says an interrupt came).
#[derive(Debug)]
struct UioFd {
    _file: File,
    ep: Epoll,
}

impl Uio {
    /// Binds `uio_pci_generic` to the device at `dev` (if not yet bound) and finds `/dev/uioN`.
    fn attach(dev: &Path) -> Result<Uio, String> {
        let driver = fs::read_link(dev.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        match driver.as_deref() {
            Some("uio_pci_generic") => {}
            Some(other) => return Err(format!("device is bound to driver {other}")),
            None => {
                let drv = Path::new("/sys/bus/pci/drivers/uio_pci_generic");
                if !drv.exists() {
                    let _ = Command::new("modprobe").arg("uio_pci_generic").status();
                }
                if !drv.exists() {
                    return Err("uio_pci_generic is not available".into());
                }
                let name = dev
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                fs::write(dev.join("driver_override"), "uio_pci_generic")
                    .map_err(|e| format!("driver_override: {e}"))?;
                if let Err(e) = fs::write(drv.join("bind"), &name) {
                    // Another path may have bound it meanwhile; check below.
                    if !dev.join("uio").exists() {
                        return Err(format!("binding uio_pci_generic: {e}"));
                    }
                }
            }
        }
        let uio = fs::read_dir(dev.join("uio"))
            .map_err(|e| format!("no uio node: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("uio"))
            .ok_or("no uio node")?;
        let path = Path::new("/dev").join(&uio);
        // Check that it opens now, rather than on the data path.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        drop(f);
        let config = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev.join("config"))
            .map_err(|e| format!("{}/config: {e}", dev.display()))?;
        let uio = Uio {
            dev: path,
            config,
            seen: AtomicBool::new(false),
            may_be_masked: AtomicBool::new(true),
            no_irq: AtomicBool::new(false),
            fds: (0..ptnet::MAX_RINGS).map(|_| OnceLock::new()).collect(),
        };
        uio.unmask();
        Ok(uio)
    }

    fn fd(&self, ring: u32) -> Option<&UioFd> {
        self.fds
            .get(ring as usize)?
            .get_or_init(|| {
                self.may_be_masked.store(true, Ordering::Relaxed);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.dev)
                    .ok()?;
                let ep = Epoll::new().ok()?;
                let edge = EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 0);
                ep.ctl(ControlOperation::Add, file.as_raw_fd(), edge).ok()?;
                Some(UioFd { _file: file, ep })
            })
            .as_ref()
    }

    /// After `ep` reported `n` events into `out`: true if an interrupt came (INTx is masked
    /// again then); an error (no interrupt line) switches the waits to polling.
    fn took(&self, out: &[EpollEvent], n: usize) -> bool {
        let ev = out[..n].iter().fold(0, |m, e| m | e.events());
        if ev & (libc::EPOLLERR as u32) != 0 {
            self.no_irq.store(true, Ordering::Relaxed);
            return false;
        }
        if ev != 0 {
            self.interrupted();
        }
        ev != 0
    }
}

/// One `epoll_wait` of up to `ms`: how many events it put in `out`, 0 after a timeout or EINTR.
fn edge_wait(ep: &Epoll, out: &mut [EpollEvent], ms: i32) -> std::io::Result<usize> {
    match ep.wait(ms, out) {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(0),
        r => r,
    }
}

/// Byte of the PCI command register holding INTx Disable (bit 10 = bit 2 of byte 5).
const PCI_COMMAND_HI: u64 = 5;
const INTX_DISABLE_HI: u8 = 0x04;

impl Uio {
    /// A descriptor reported an interrupt: the kernel masked INTx when it took it.
    fn interrupted(&self) {
        self.seen.store(true, Ordering::Relaxed);
        self.may_be_masked.store(true, Ordering::Release);
    }

    /// Re-enables INTx delivery. `uio_pci_generic` masks INTx (command register bit 10) in its
    /// interrupt handler and has no irqcontrol (writing to /dev/uioN fails with ENOSYS), so, as
    /// DPDK does, the bit is cleared through the device's config space.
    fn unmask(&self) {
        if !self.may_be_masked.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut b = [0u8; 1];
        if self.config.read_exact_at(&mut b, PCI_COMMAND_HI).is_ok() && b[0] & INTX_DISABLE_HI != 0
        {
            let _ = self
                .config
                .write_all_at(&[b[0] & !INTX_DISABLE_HI], PCI_COMMAND_HI);
        }
    }
}

/// A ptnet NIC inside this guest.
#[derive(Debug)]
pub struct PciTransport {
    name: String,
    nic: IoBar,
    mem_regs: IoBar,
    memdev_dir: PathBuf,
    netmap: Option<Mapping>,
    csb: Vec<Mapping>,
    uio: Option<Uio>,
    uio_error: Option<String>,
}

impl PciTransport {
    /// Finds and attaches to the device `spec` designates.
    pub fn open(sel: &PciSelector) -> Result<Self, Error> {
        let root = Path::new(SYSFS_PCI);
        let devices = pci_devices(root)?;
        let dev = find_nic(&devices, sel)?;
        let addr = dev
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();

        // Bind uio first: binding enables the device; without it, enable it ourselves.
        // PTNET_PCI_IRQ=poll skips interrupts altogether.
        let (uio, uio_error) = if std::env::var("PTNET_PCI_IRQ").is_ok_and(|v| v == "poll") {
            (None, Some("PTNET_PCI_IRQ=poll".to_string()))
        } else {
            match Uio::attach(&dev) {
                Ok(u) => (Some(u), None),
                Err(e) => (None, Some(e)),
            }
        };
        enable(&dev);
        let nic = IoBar::open(&dev, 0)?;
        let memid = nic.read(ptnet::HOSTMEMID)?;

        let mut found = None;
        for d in devices.iter().filter(|d| is_memdev(d)) {
            enable(d);
            let Ok(bar) = IoBar::open(d, 0) else { continue };
            if bar.read(memdev::MEMID).ok() == Some(memid) {
                found = Some((d.clone(), bar));
                break;
            }
        }
        let (memdev_dir, mem_regs) = found.ok_or_else(|| Error::NoMemdev {
            nic: addr.clone(),
            mem_id: memid,
        })?;
        Ok(PciTransport {
            name: format!("pci:{addr}"),
            nic,
            mem_regs,
            memdev_dir,
            netmap: None,
            csb: Vec::new(),
            uio,
            uio_error,
        })
    }

    /// Why interrupts are unavailable (the transport polls then), if they are.
    pub fn irq_unavailable(&self) -> Option<&str> {
        self.uio_error.as_deref()
    }
}

impl Transport for PciTransport {
    fn read_reg(&mut self, off: u32) -> Result<u32, Error> {
        self.nic.read(off)
    }

    fn write_reg(&mut self, off: u32, val: u32) -> Result<(), Error> {
        self.nic.write(off, val)
    }

    fn read_memdev(&mut self, off: u32) -> Result<u32, Error> {
        self.mem_regs.read(off)
    }

    fn netmap_mem(&mut self) -> Result<SharedMem, Error> {
        if let Some(m) = &self.netmap {
            return Ok(m.shared());
        }
        let hi = self.mem_regs.read(memdev::MEMSIZE_HI)?;
        let lo = self.mem_regs.read(memdev::MEMSIZE_LO)?;
        let size = (u64::from(hi) << 32) | u64::from(lo);
        let bar = resources(&self.memdev_dir)
            .get(regs::MEMDEV_MEM_BAR as usize)
            .map(|&(s, e, _)| if e > s { e - s + 1 } else { 0 })
            .unwrap_or(0);
        if size == 0 || size > bar {
            return Err(Error::MemorySize {
                size,
                available: bar,
            });
        }
        let path = self
            .memdev_dir
            .join(format!("resource{}", regs::MEMDEV_MEM_BAR));
        let m = map_bar(&path, size as usize)?;
        let mem = m.shared();
        self.netmap = Some(m);
        Ok(mem)
    }

    fn alloc_csb(&mut self, rings: u32) -> Result<CsbArrays, Error> {
        let size = csb::array_size(rings);
        if rings == 0 || size > PAGE_SIZE {
            return Err(Error::CsbRings {
                rings,
                max: (PAGE_SIZE / csb::array_size(1)) as u32,
            });
        }
        // Best effort: keep compaction from migrating locked pages under the host's feet.
        let _ = fs::write("/proc/sys/vm/compact_unevictable_allowed", "0");
        let (a, atok_gpa) = alloc_locked_page()?;
        let (k, ktoa_gpa) = alloc_locked_page()?;
        let sub = |m: &Mapping| m.shared().sub(0, size).expect("size checked above");
        let arrays = CsbArrays {
            atok: sub(&a),
            atok_gpa,
            ktoa: sub(&k),
            ktoa_gpa,
        };
        self.csb.push(a);
        self.csb.push(k);
        Ok(arrays)
    }

    fn kick(&self, ring: u32) {
        let _ = self.nic.write(ptnet::kick(ring), 1);
    }

    fn wait(&self, ring: u32, timeout: Option<Duration>) -> Result<bool, Error> {
        let Some((uio, f)) = self.uio.as_ref().and_then(|u| Some((u, u.fd(ring)?))) else {
            let limit = timeout.map_or(POLL_INTERVAL, |t| t.min(POLL_INTERVAL));
            std::thread::sleep(limit);
            return Ok(true);
        };
        let cap = if uio.seen.load(Ordering::Relaxed) {
            MAX_IRQ_WAIT
        } else {
            FIRST_IRQ_WAIT
        };
        let limit = timeout.map_or(cap, |t| t.min(cap));
        uio.unmask();
        let ms = crate::sys::timeout_ms(Some(limit));
        let mut out = [EpollEvent::default(); 1];
        let start = std::time::Instant::now();
        let n = if uio.no_irq.load(Ordering::Relaxed) {
            0
        } else {
            edge_wait(&f.ep, &mut out, ms)
                .map_err(|e| Error::io("wait for the uio interrupt", e))?
        };
        if uio.took(&out, n) {
            uio.unmask();
            return Ok(true);
        }
        if uio.no_irq.load(Ordering::Relaxed) {
            // uio without an interrupt line: behave as the polling fallback.
            std::thread::sleep(limit.min(POLL_INTERVAL));
            return Ok(true);
        }
        if start.elapsed() < limit {
            // EINTR: a spurious wake-up.
            return Ok(true);
        }
        // Only a timeout the caller asked for is reported as one; our own cap is a spurious
        // wake-up.
        Ok(timeout.is_none_or(|t| t > cap))
    }

    fn wait_many(&self, rings: &[u32], timeout: Option<Duration>) -> Result<bool, Error> {
        // One INTx line serves every ring and each descriptor sees every interrupt: waiting on
        // the first ring's descriptor covers them all.
        match rings.first() {
            Some(&r) => self.wait(r, timeout),
            None => Ok(false),
        }
    }

    fn wait_fds(&self, rings: &[u32], out: &mut [RawFd]) -> Option<PollWait> {
        // One INTx line serves every ring: the first ring's uio descriptor covers them all.
        let uio = self.uio.as_ref()?;
        if uio.no_irq.load(Ordering::Relaxed) {
            return None;
        }
        // The epoll instance: readable while an interrupt waits in it.
        let f = uio.fd(*rings.first()?)?;
        *out.first_mut()? = f.ep.as_raw_fd();
        uio.unmask();
        let cap = if uio.seen.load(Ordering::Relaxed) {
            MAX_IRQ_WAIT
        } else {
            FIRST_IRQ_WAIT
        };
        Some(PollWait {
            n: 1,
            cap: Some(cap),
        })
    }

    fn wait_done(&self, rings: &[u32], ready: &[bool]) -> Result<(), Error> {
        let (Some(uio), Some(&r), Some(true)) =
            (self.uio.as_ref(), rings.first(), ready.first().copied())
        else {
            return Ok(());
        };
        if let Some(f) = uio.fd(r) {
            let mut out = [EpollEvent::default(); 1];
            let n = edge_wait(&f.ep, &mut out, 0)
                .map_err(|e| Error::io("take the uio interrupt", e))?;
            uio.took(&out, n);
        }
        uio.unmask();
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PciTransport {
    fn drop(&mut self) {
        if !self.csb.is_empty() {
            // The host must stop writing into the CSB pages before they are freed.
            let _ = self.nic.write(ptnet::PTCTL, regs::PTCTL_DELETE);
            for r in [
                ptnet::CSB_GH_BAH,
                ptnet::CSB_GH_BAL,
                ptnet::CSB_HG_BAH,
                ptnet::CSB_HG_BAL,
            ] {
                let _ = self.nic.write(r, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does this process have CAP_SYS_ADMIN (which pagemap wants before it shows frame numbers)?
    fn has_cap_sys_admin() -> bool {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .expect("CapEff in /proc/self/status");
        eff & (1 << 21) != 0
    }

    #[test]
    fn locked_page_has_a_physical_address() {
        if !has_cap_sys_admin() {
            // Without the capability the answer is a specific error, not a made-up address.
            match alloc_locked_page() {
                Err(Error::PhysAddr(PhysAddrProblem::Hidden)) => return,
                // mlock refused (RLIMIT_MEMLOCK) before pagemap was asked.
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                    return
                }
                other => panic!("without CAP_SYS_ADMIN: {other:?}"),
            }
        }
        let (a, pa) = alloc_locked_page().expect("a locked page and its physical address");
        let (b, pb) = alloc_locked_page().expect("a second one");
        assert!(pa != 0 && pa % PAGE_SIZE as u64 == 0, "{pa:#x}");
        assert!(pb != 0 && pb % PAGE_SIZE as u64 == 0, "{pb:#x}");
        // Two live pages are two frames, and a locked page keeps its frame.
        assert_ne!(pa, pb);
        assert_eq!(virt_to_phys(a.addr()).unwrap(), pa);
        assert_eq!(virt_to_phys(b.addr() + 100).unwrap(), pb + 100);
        assert_eq!(a.shared().load_u32(0, Ordering::Relaxed), 0, "zeroed");
    }

    /// A transport whose BARs are plain files of `size` bytes (`pread`/`pwrite` on them is what
    /// the sysfs resource files get), no memdev directory and no interrupts.
    fn file_transport(name: &str, size: u64) -> (PciTransport, PathBuf) {
        let dir = std::env::temp_dir().join(format!("ptnet-pci-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let bar = |n: &str| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(n))
                .unwrap();
            f.set_len(size).unwrap();
            IoBar::Sysfs(f)
        };
        let t = PciTransport {
            name: format!("pci:{name}"),
            nic: bar("nic"),
            mem_regs: bar("memdev"),
            memdev_dir: dir.clone(),
            netmap: None,
            csb: Vec::new(),
            uio: None,
            uio_error: Some("test".into()),
        };
        (t, dir)
    }

    #[test]
    fn registers_are_32_bit_accesses_to_the_bar() {
        let (mut t, dir) = file_transport("regs", 128);
        t.write_reg(ptnet::PTFEAT, 0x1234_5678).unwrap();
        assert_eq!(t.read_reg(ptnet::PTFEAT).unwrap(), 0x1234_5678);
        // Little-endian, at the register's offset.
        let raw = fs::read(dir.join("nic")).unwrap();
        let at = ptnet::PTFEAT as usize;
        assert_eq!(raw[at..at + 4], [0x78, 0x56, 0x34, 0x12]);
        // A read the BAR cannot complete is an error, not a zero.
        match t.read_reg(126) {
            Err(Error::ShortRegisterAccess {
                offset: 126,
                bytes: 2,
            }) => {}
            other => panic!("{other:?}"),
        }
        // Netmap memory larger than the memdev BAR (none here) is refused.
        assert!(matches!(
            t.netmap_mem(),
            Err(Error::MemorySize { available: 0, .. })
        ));
        drop(t);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn csb_arrays_must_fit_a_page() {
        let (mut t, dir) = file_transport("csb", 256);
        match t.alloc_csb(65) {
            Err(Error::CsbRings { rings: 65, max: 64 }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.alloc_csb(0),
            Err(Error::CsbRings { rings: 0, .. })
        ));
        if has_cap_sys_admin() {
            let c = t.alloc_csb(64).expect("64 rings fit");
            assert_eq!(c.atok.len(), csb::array_size(64));
            assert_ne!(c.atok_gpa, c.ktoa_gpa);
            // Dropping a transport with a CSB stops the host first: DELETE, then the addresses.
            drop(t);
            let raw = fs::read(dir.join("nic")).unwrap();
            let word = |off: u32| {
                let o = off as usize;
                u32::from_le_bytes(raw[o..o + 4].try_into().unwrap())
            };
            assert_eq!(word(ptnet::PTCTL), regs::PTCTL_DELETE);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
