//! What the transports need of the system that the standard library does not wrap: shared file
//! mappings, a locked anonymous page, `memfd_create`, `poll`, and x86 port I/O confined to one
//! device's I/O BAR; `packet`: an `AF_PACKET` socket moving frames in batches. Each `unsafe` block here carries its own `// SAFETY:` comment; the
//! transports above use only the safe functions of this module.

use ptnet_protocol::shmem::SharedMem;
use std::ffi::CStr;

pub(crate) mod packet;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A read-write mapping (of a file, shared, or anonymous) whose address range stays valid for the
/// rest of the process: on drop the mapping is replaced, in place, by fresh anonymous memory
/// rather than unmapped, so that a [`SharedMem`] view handed out through a safe API (a
/// transport's `netmap_mem`, its CSB arrays) can never dangle, whoever keeps a copy. What is
/// released is the file or device memory behind the range (and any lock on it); what stays is
/// address space, and zero pages only if something writes there later. Stored as integers so that
/// its owners stay `Send`.
#[derive(Debug)]
pub(crate) struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset`, shared, read-write. A bad descriptor, offset or length
    /// is refused by the kernel (or here, for a zero length or an offset beyond `off_t`).
    pub(crate) fn map_shared(fd: RawFd, offset: u64, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot alias Rust memory; the
        // arguments are checked by the kernel and the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: ptr as usize,
            len,
        })
    }

    /// `len` bytes of anonymous private memory, populated, zeroed and locked in RAM (so that it
    /// keeps its physical page: the pci transport hands that page's address to the device).
    pub(crate) fn anonymous_locked(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address cannot alias Rust memory;
        // the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let m = Self {
            addr: ptr as usize,
            len,
        };
        // SAFETY: pins the pages just mapped (owned by `m`); no effect on memory contents.
        if unsafe { libc::mlock(ptr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(m)
    }

    /// Address of the first byte of the mapping in this process.
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// A view of the whole mapping, valid for the rest of the process (see the type's doc).
    pub(crate) fn shared(&self) -> SharedMem {
        // SAFETY: the range is page-aligned, `len` bytes long and mapped read-write; it stays
        // mapped read-write after `self` is dropped (the drop replaces the mapping in place and
        // never unmaps it), so every copy of the view stays valid.
        unsafe { SharedMem::new(self.addr as *mut u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: MAP_FIXED over `addr..addr+len`, a range this value mapped and nothing else
        // unmaps or reuses: it replaces exactly that mapping (only ever reached through
        // `SharedMem` views, by atomics and copies) with zeroed private memory, read-write as
        // before. If it fails the old mapping simply stays, which is as valid.
        unsafe {
            libc::mmap(
                self.addr as *mut libc::c_void,
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
    }
}

/// A new anonymous memory file of `size` bytes, owned by the result, sealed against shrinking,
/// growing and further seals: `ptnet-backend` maps only guest memory that cannot shrink under it
/// (as QEMU's `memory-backend-memfd,seal=on` gives it).
pub(crate) fn memfd_create(name: &CStr, size: u64) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name (a `CStr`) and flags; the result is checked.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(size)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own; F_ADD_SEALS takes an int and only adds seals.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// A timeout as `poll` and `epoll_wait` take it: -1 for none, else milliseconds rounded up (a
/// short timeout must not become a busy loop of zero-timeout calls), at most `i32::MAX`.
pub(crate) fn timeout_ms(timeout: Option<std::time::Duration>) -> i32 {
    timeout.map_or(-1, |t| {
        i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    })
}

/// `poll(fds, timeout_ms)` once (no retry on EINTR): the number of entries with events, 0 on
/// timeout.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, initialised slice of pollfd that outlives the call, and the length
    // passed is its own.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Port I/O on one range of x86 I/O ports (a device's I/O BAR), for guests whose kernel refuses
/// 32-bit accesses through the BAR's sysfs file. Every access is checked to lie inside the range,
/// so this value cannot reach other devices' ports.
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub(crate) struct PortIo {
    base: u16,
    size: u32,
}

#[cfg(target_arch = "x86_64")]
impl PortIo {
    /// Raises the process's I/O privilege level (`iopl(3)`, needs root) for ports
    /// `base..base + size`.
    pub(crate) fn open(base: u16, size: u32) -> io::Result<Self> {
        if size == 0 || u32::from(base) + size > 0x1_0000 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: iopl changes only this process's I/O privilege level; it has no effect on
        // memory.
        if unsafe { libc::iopl(3) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { base, size })
    }

    fn port(&self, off: u32) -> Option<u16> {
        (off.is_multiple_of(4) && off.checked_add(4)? <= self.size).then(|| self.base + off as u16)
    }

    /// `inl` from the 32-bit register at `off`; `None` outside the range or unaligned.
    pub(crate) fn read(&self, off: u32) -> Option<u32> {
        let port = self.port(off)?;
        let v: u32;
        // SAFETY: `in` from a port inside this device's range (checked above) with iopl(3)
        // held; port I/O touches no memory of this process.
        unsafe {
            std::arch::asm!("in eax, dx", out("eax") v, in("dx") port,
                options(nomem, nostack, preserves_flags))
        };
        Some(v)
    }

    /// `outl` to the 32-bit register at `off`; false outside the range or unaligned.
    pub(crate) fn write(&self, off: u32, val: u32) -> bool {
        let Some(port) = self.port(off) else {
            return false;
        };
        // SAFETY: as in `read`: a port inside this device's range, iopl(3) held, no memory.
        unsafe {
            std::arch::asm!("out dx, eax", in("eax") val, in("dx") port,
                options(nomem, nostack, preserves_flags))
        };
        true
    }
}
