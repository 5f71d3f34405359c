//! The system calls of the vhost-user transport that the standard library does not wrap: shared
//! file mappings, `memfd_create` and `poll`. Each `unsafe` block here carries its own `// SAFETY:`
//! comment; the transports above use only the safe functions of this module.

use ptnet_protocol::shmem::SharedMem;
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A shared, read-write mapping of a file, unmapped on drop. Stored as integers so that its
/// owners stay `Send`.
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

    /// Address of the first byte of the mapping in this process.
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// A view of the whole mapping. The owner of this value must keep it alive for as long as the
    /// views it handed out are used (the transports keep their mappings until they are dropped,
    /// after the `Port` dropped its views).
    pub(crate) fn shared(&self) -> SharedMem {
        // SAFETY: the mapping is page-aligned, read-write, `len` bytes long, and lives as long as
        // `self`; its owner outlives every `SharedMem` handed out (see above).
        unsafe { SharedMem::new(self.addr as *mut u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr+len` is a mapping this value created and nobody else unmaps.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// `memfd_create(name, MFD_CLOEXEC)`: a new anonymous memory file, owned by the result.
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name (a `CStr`) and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
