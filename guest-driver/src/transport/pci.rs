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
use crate::sys::{self, Mapping};
use crate::error::PhysAddrProblem;
use crate::{Error, PciSelector};
use ptnet_protocol::csb;
use ptnet_protocol::regs::{self, memdev, ptnet};
use ptnet_protocol::shmem::SharedMem;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

const SYSFS_PCI: &str = "/sys/bus/pci/devices";
const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;
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

/// Opens the ptnet device `sel` designates.
pub fn open(sel: &PciSelector) -> Result<Box<dyn Transport>, Error> {
    Ok(Box::new(PciTransport::open(sel)?))
}

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(p)?.trim().to_string())
}

fn read_hex(p: &Path) -> Option<u64> {
    let s = read_trim(p).ok()?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// (start, end, flags) of each resource line in a device's `resource` file.
fn resources(dev: &Path) -> Vec<(u64, u64, u64)> {
    let Ok(text) = fs::read_to_string(dev.join("resource")) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            let mut it = l
                .split_whitespace()
                .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap_or(0));
            (
                it.next().unwrap_or(0),
                it.next().unwrap_or(0),
                it.next().unwrap_or(0),
            )
        })
        .collect()
}

fn bar_is(dev: &Path, bar: usize, kind: u64) -> bool {
    resources(dev)
        .get(bar)
        .is_some_and(|&(start, end, flags)| end > start && flags & kind != 0)
}

fn ids(dev: &Path) -> Option<(u64, u64, u64)> {
    Some((
        read_hex(&dev.join("vendor"))?,
        read_hex(&dev.join("device"))?,
        read_hex(&dev.join("class"))?,
    ))
}

/// Is `dev` a ptnet NIC (ids, class and BAR0 type all match)?
fn is_ptnet_nic(dev: &Path) -> bool {
    ids(dev).is_some_and(|(v, d, c)| {
        v == u64::from(regs::PCI_VENDOR_ID)
            && d == u64::from(regs::PTNET_PCI_DEVICE_ID)
            && c >> 8 == u64::from(regs::PTNET_PCI_CLASS)
    }) && bar_is(dev, 0, IORESOURCE_IO)
}

/// Is `dev` a ptnet memdev (ids, not a bridge, BAR0 I/O and BAR1 memory)?
fn is_memdev(dev: &Path) -> bool {
    ids(dev).is_some_and(|(v, d, c)| {
        v == u64::from(regs::PCI_VENDOR_ID)
            && d == u64::from(regs::MEMDEV_PCI_DEVICE_ID)
            && c >> 16 != 0x06 // pcie-root-port is a bridge (class 0x0604)
    }) && bar_is(dev, 0, IORESOURCE_IO)
        && bar_is(dev, regs::MEMDEV_MEM_BAR as usize, IORESOURCE_MEM)
}

/// All PCI devices in sysfs order (sorted by address).
fn pci_devices() -> Result<Vec<PathBuf>, Error> {
    let mut v: Vec<PathBuf> = fs::read_dir(SYSFS_PCI)
        .map_err(|e| Error::io(format!("reading {SYSFS_PCI}"), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Makes sure the kernel has enabled the device (I/O and memory decoding).
fn enable(dev: &Path) {
    let p = dev.join("enable");
    if read_trim(&p).map(|s| s == "0").unwrap_or(false) {
        let _ = fs::write(&p, "1");
    }
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
            IoBar::Port(p) => p
                .read(off)
                .ok_or(Error::RegisterOutsideBar(off)),
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
    fds: Vec<OnceLock<Option<File>>>,
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
            fds: (0..ptnet::MAX_RINGS).map(|_| OnceLock::new()).collect(),
        };
        uio.unmask();
        Ok(uio)
    }

    fn fd(&self, ring: u32) -> Option<&File> {
        self.fds
            .get(ring as usize)?
            .get_or_init(|| {
                self.may_be_masked.store(true, Ordering::Relaxed);
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.dev)
                    .ok()
            })
            .as_ref()
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
        let devices = pci_devices()?;
        let nics: Vec<&PathBuf> = devices.iter().filter(|d| is_ptnet_nic(d)).collect();
        let dev = match sel {
            PciSelector::Index(n) => nics.get(*n).copied(),
            PciSelector::Address(a) => nics
                .iter()
                .copied()
                .find(|d| d.file_name().is_some_and(|f| f.to_string_lossy() == *a)),
        }
        .ok_or_else(|| Error::NoDevice(sel.to_string()))?
        .clone();
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
        let mut pfd = [libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = limit.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let r = match sys::poll(&mut pfd, ms) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(Error::io("poll uio", e)),
        };
        if r == 0 {
            // Only a timeout the caller asked for is reported as one; our own cap is a
            // spurious wake-up.
            return Ok(timeout.is_none_or(|t| t > cap));
        }
        if pfd[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            // uio without an interrupt line: behave as the polling fallback.
            std::thread::sleep(limit.min(POLL_INTERVAL));
            return Ok(true);
        }
        let mut b = [0u8; 4];
        if f.read_at(&mut b, 0).is_ok_and(|n| n == 4) {
            uio.interrupted();
        }
        uio.unmask();
        Ok(true)
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
        let f = uio.fd(*rings.first()?)?;
        *out.first_mut()? = f.as_raw_fd();
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
            let mut b = [0u8; 4];
            if f.read_at(&mut b, 0).is_ok_and(|n| n == 4) {
                uio.interrupted();
            }
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

    #[test]
    fn locked_page_has_a_physical_address() {
        // Needs root (pagemap hides PFNs otherwise) and mlock permission: skip quietly without.
        if !sys::is_root() {
            return;
        }
        if let Ok((m, pa)) = alloc_locked_page() {
            assert_eq!(pa % PAGE_SIZE as u64, 0);
            assert!(m.shared().load_u32(0, std::sync::atomic::Ordering::Relaxed) == 0);
        }
    }

    #[test]
    fn no_device_is_an_error() {
        // No machine has a ptnet NIC at ff:1f.7: the error names the selector, and no other
        // device is touched.
        match open(&PciSelector::Address("0000:ff:1f.7".into())) {
            Err(Error::NoDevice(what)) => assert_eq!(what, "ptnet:0000:ff:1f.7"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a device at 0000:ff:1f.7"),
        }
    }
}
