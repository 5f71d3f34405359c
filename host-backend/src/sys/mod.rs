//! The daemon's small `unsafe` corner: memfds, mmap and poll (the ring threads' epoll waits are
//! vmm-sys-util's; `epoll.rs` checks what they rely on). Everything above is safe Rust.
//!
//! # Shared memory that cannot fault
//!
//! A shared mapping of a file faults with SIGBUS where the file no longer reaches, and a SIGBUS in
//! any thread kills the whole daemon. So the daemon maps only files that cannot shrink under it:
//!
//! * its own port memories are memfds sealed against shrinking and growing (and further seals)
//!   before anyone else sees them ([`MappedFile::memfd`]): a frontend given one with SHMEM_MAP,
//!   or either end of a pipe, gets EPERM from `ftruncate`;
//! * a frontend's guest memory must be a memfd already sealed with `F_SEAL_SHRINK`
//!   ([`MappedFile::map_guest`]), each region inside the file as `fstat` sees it once the seal
//!   holds. QEMU's `memory-backend-memfd` seals by default (`seal=on`), and so does the driver's
//!   vhost-user transport.
//!
//! Files that cannot be sealed (a regular, tmpfs or hugetlbfs file, as QEMU's
//! `memory-backend-file` or DPDK's virtio-user use) are refused, not mapped: their owner can
//! truncate them at any time. Catching the SIGBUS instead (a handler mapping zero pages over the
//! faulting guest mapping) was considered and not done: it needs a signal-safe registry of guest
//! mappings that stays exact while connections map and unmap, chaining to Rust's own SIGBUS
//! handler, and a way for the faulting ring thread to close its connection; a refusal with a
//! message saying what to use instead (`memory-backend-memfd,seal=on`, or
//! `memory-backend-memfd,hugetlb=on,seal=on` for huge pages) costs users one option.

mod epoll;
mod fds;
mod inherit;

pub use fds::*;
pub use inherit::{claim_listening_unix_socket, InheritError};
use ptnet_protocol::shmem::SharedMem;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};

/// A read-write mapping (of a file, a socket's rings, or anonymous memory). Its window, and
/// every clone and sub-window of it, holds the mapping alive: it is unmapped when the last of
/// them is dropped, so no view can outlive the memory it points into.
#[derive(Debug)]
pub struct Mapping {
    mem: SharedMem,
}

/// Unmaps `[base, base + len)` when dropped: the keepalive of a [`Mapping`]'s windows.
struct Unmap {
    base: usize,
    len: usize,
}

impl Drop for Unmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `Mapping::new`, once: this value is the
        // keepalive of every window into it, so no window is left when it is dropped.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset`, shared and read-write; `flags` adds to MAP_SHARED
    /// (MAP_POPULATE to pre-fault). The mapping does not keep `fd` open.
    pub fn shared(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        Self::new(fd.as_raw_fd(), off, len, libc::MAP_SHARED | flags)
    }

    /// `len` bytes of private anonymous memory (an AF_XDP UMEM), page-aligned, pre-faulted.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        Self::new(-1, 0, len, flags)
    }

    fn new(fd: RawFd, off: libc::off_t, len: usize, flags: libc::c_int) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping at an address the kernel picks, so no existing memory is
        // touched; the kernel checks the descriptor, the length and the offset.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let keep: ptnet_protocol::shmem::Keepalive = std::sync::Arc::new(Unmap {
            base: p as usize,
            len,
        });
        // SAFETY: the mapping is `len` bytes, page-aligned, readable and writable, and stays
        // mapped while `keep` lives (it unmaps it on drop).
        let mem = unsafe { SharedMem::with_keepalive(p.cast(), len, keep) };
        Ok(Self { mem })
    }

    /// The mapped window (clone it to keep the memory beyond this value).
    pub fn mem(&self) -> &SharedMem {
        &self.mem
    }
}

/// A file mapped shared and read-write, kept open while mapped; unmapped on drop.
#[derive(Debug)]
pub struct MappedFile {
    // The mapping first: unmapped before the file closes.
    map: Mapping,
    file: File,
}

impl MappedFile {
    /// Creates a memfd of `size` bytes named `name`, seals it against shrinking, growing and
    /// further seals (so nobody it is handed to can make our mapping fault), and maps it.
    pub fn memfd(name: &str, size: usize) -> io::Result<Self> {
        let cname = std::ffi::CString::new(name.replace('\0', "_")).expect("no NUL left");
        // SAFETY: plain syscall with a valid NUL-terminated name.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size as u64)?;
        add_seals(
            &file,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )?;
        Self::map(file, 0, size)
    }

    /// Maps `len` bytes of `file` from `offset`, shared and read-write. For files the daemon
    /// trusts (its own memfds); a frontend's go through [`MappedFile::map_guest`].
    pub fn map(file: File, offset: u64, len: usize) -> io::Result<Self> {
        let map = Mapping::shared(file.as_fd(), offset, len, 0)?;
        Ok(Self { map, file })
    }

    /// Maps `len` bytes of a frontend's `file` from `offset`, once sure the mapping can never
    /// fault: the file must be a memfd sealed with `F_SEAL_SHRINK` (so its size only grows), and
    /// `[offset, offset + len)` must lie inside it as `fstat` sees it after the seal.
    pub fn map_guest(file: File, offset: u64, len: usize) -> Result<Self, GuestFileError> {
        check_guest_file(&file, offset, len)?;
        Self::map(file, offset, len).map_err(GuestFileError::Map)
    }

    /// The mapped window (clone it to keep the memory beyond this value).
    pub fn mem(&self) -> &SharedMem {
        self.map.mem()
    }

    /// The file behind the mapping.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// The checks of [`MappedFile::map_guest`], for a caller that maps the file itself (the
/// virtio-net device, through vm-memory): a memfd sealed with `F_SEAL_SHRINK`, and
/// `[offset, offset + len)` inside it as `fstat` sees it once the seal holds.
pub fn check_guest_file(file: &File, offset: u64, len: usize) -> Result<(), GuestFileError> {
    let seals = seals(file).map_err(GuestFileError::NotAMemfd)?;
    if seals & libc::F_SEAL_SHRINK == 0 {
        return Err(GuestFileError::NotSealed { seals });
    }
    // The seal holds from here on: the size fstat reports now can only grow.
    let size = file.metadata().map_err(GuestFileError::Map)?.len();
    if len == 0 || offset.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(GuestFileError::PastEnd { offset, len, size });
    }
    Ok(())
}

/// Why a frontend's memory file was not mapped ([`MappedFile::map_guest`]).
#[derive(Debug)]
pub enum GuestFileError {
    /// `F_GET_SEALS` failed: not a memfd (a regular, tmpfs or hugetlbfs file cannot be sealed).
    NotAMemfd(io::Error),
    /// A memfd without `F_SEAL_SHRINK` (its seals are given).
    NotSealed {
        /// The seals it has.
        seals: libc::c_int,
    },
    /// The region does not lie inside the file (or is empty, or `offset + len` overflows).
    PastEnd {
        /// The region's offset in the file.
        offset: u64,
        /// The region's length.
        len: usize,
        /// The file's size.
        size: u64,
    },
    /// `fstat` or `mmap` failed.
    Map(io::Error),
}

impl std::fmt::Display for GuestFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAMemfd(e) => write!(
                f,
                "the memory file cannot be sealed ({e}): guest memory must be a memfd sealed \
                 against shrinking (QEMU: -object memory-backend-memfd,...,share=on,seal=on; \
                 memory-backend-file and hugetlbfs files are refused)"
            ),
            Self::NotSealed { seals } => write!(
                f,
                "the guest memory memfd is not sealed against shrinking (seals {seals:#x}): \
                 use QEMU's memory-backend-memfd with seal=on (its default), or add \
                 F_SEAL_SHRINK with fcntl(F_ADD_SEALS)"
            ),
            Self::PastEnd { offset, len, size } => write!(
                f,
                "region of {len} bytes at file offset {offset} does not fit in its file of \
                 {size} bytes"
            ),
            Self::Map(e) => write!(f, "mapping guest memory: {e}"),
        }
    }
}

impl std::error::Error for GuestFileError {}

/// The seals of `f` (`F_GET_SEALS`); an error (EINVAL) for a file that is not a memfd.
pub fn seals(f: &File) -> io::Result<libc::c_int> {
    // SAFETY: fcntl on a descriptor we hold; F_GET_SEALS only reads.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// Adds `seals` to the memfd `f` (`F_ADD_SEALS`).
pub fn add_seals(f: &File, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold; F_ADD_SEALS takes an int and only adds seals.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signals the daemon's main thread takes: SIGINT and SIGTERM stop it, SIGUSR1 asks for the
/// counters.
fn daemon_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the local set before sigaddset adds to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

/// Blocks the daemon's signals (SIGINT, SIGTERM, SIGUSR1) in the calling thread and the threads
/// it spawns afterwards, so that [`wait_for_signal`] receives them.
pub fn block_daemon_signals() {
    let set = daemon_signals();
    // SAFETY: pthread_sigmask only changes this thread's mask; the set is initialised.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits up to `timeout` (forever with `None`) for one of the signals blocked with
/// [`block_daemon_signals`]; `None` when the time ran out.
pub fn wait_for_signal(timeout: Option<std::time::Duration>) -> Option<i32> {
    let set = daemon_signals();
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    loop {
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the set is initialised, `tsp` is null or points to a live local, and no
        // siginfo is asked for.
        let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), tsp) };
        if r > 0 {
            return Some(r);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return None,
            _ => continue, // EINTR: another signal's handler ran; wait again
        }
    }
}

/// Puts `f` in non-blocking mode (eventfds from a frontend may come blocking).
pub fn set_nonblocking(f: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we hold; only the status flags change.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the process's file mode creation mask, returning the previous one (`umask(2)`).
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask only swaps the process's mask; it cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Bytes queued for reading on a socket (`FIONREAD`; on a Unix stream socket: all its messages).
pub fn bytes_queued(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Copies the first bytes queued on a socket into `buf` without consuming them and without
/// waiting (`recv(MSG_PEEK | MSG_DONTWAIT)`); attached descriptors stay queued.
pub fn peek(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which we borrow mutably.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// The id of the group named `name` (`getgrnam_r`); `None` if there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a group name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: `grp` is plain data that getgrnam_r fills; `buf` outlives the call and its
        // length is passed; `res` receives either null or a pointer to `grp`.
        let (r, found, gid) = unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut res: *mut libc::group = std::ptr::null_mut();
            let r = libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut res,
            );
            (r, !res.is_null(), grp.gr_gid)
        };
        match r {
            0 => return Ok(found.then_some(gid)),
            libc::ERANGE if buf.len() < (1 << 24) => buf.resize(buf.len() * 2, 0),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

// --- Descriptors a frontend sends (fuzzing and in-process tests make them). ---

/// A memfd of `size` bytes that can be sealed, with no seal yet: what a frontend sends as guest
/// memory (it seals it, or not, with [`add_seals`]).
pub fn sealable_memfd(name: &std::ffi::CStr, size: u64) -> io::Result<File> {
    // SAFETY: plain syscall with a valid NUL-terminated name.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// Sets or clears `O_NONBLOCK` on `f`'s file description; returns whether it was set before.
pub fn set_nonblocking_to(f: &File, on: bool) -> io::Result<bool> {
    // SAFETY: fcntl on a descriptor we hold; only the status flags change.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn memfd_maps_and_shares() {
        let m = MappedFile::memfd("t", 8192).unwrap();
        m.mem().store_u32(4096, 77, Ordering::Relaxed);
        let again = MappedFile::map(m.file().try_clone().unwrap(), 4096, 4096).unwrap();
        assert_eq!(again.mem().load_u32(0, Ordering::Relaxed), 77);
        assert!(MappedFile::map(m.file().try_clone().unwrap(), 0, 0).is_err());
    }

    #[test]
    fn a_window_keeps_its_mapping_alive() {
        let m = MappedFile::memfd("t", 8192).unwrap();
        let window = m.mem().sub(4096, 4096).unwrap();
        drop(m);
        // The mapping is still there: it goes with the last window, not with its owner.
        window.store_u32(0, 5, Ordering::Relaxed);
        assert_eq!(window.load_u32(0, Ordering::Relaxed), 5);
    }

    #[test]
    fn port_memfds_are_sealed() {
        let m = MappedFile::memfd("t", 8192).unwrap();
        let s = seals(m.file()).unwrap();
        let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        assert_eq!(s & want, want);
        // Nobody holding the fd can shrink (or grow) it, so our mapping never faults.
        let e = m.file().set_len(4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(m.file().set_len(16384).is_err());
        m.mem().store_u32(8188, 1, Ordering::Relaxed);
    }

    /// A memfd of `size` bytes, sealable, with `seals` added.
    fn guest_memfd(size: u64, seals: libc::c_int) -> File {
        // SAFETY: plain syscall with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"g".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor we own.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(size).unwrap();
        if seals != 0 {
            add_seals(&f, seals).unwrap();
        }
        f
    }

    #[test]
    fn guest_memory_must_be_sealed_and_inside_its_file() {
        let shrink = libc::F_SEAL_SHRINK;
        let f = || guest_memfd(8192, shrink);
        assert!(MappedFile::map_guest(f(), 0, 8192).is_ok());
        assert!(MappedFile::map_guest(f(), 4096, 4096).is_ok());
        for (off, len) in [
            (0, 8193),
            (4096, 8192),
            (8192, 4096),
            (u64::MAX - 4095, 8192),
        ] {
            match MappedFile::map_guest(f(), off, len) {
                Err(GuestFileError::PastEnd { size: 8192, .. }) => {}
                r => panic!("{off}+{len}: {r:?}"),
            }
        }
        // 64 TiB over 4 KiB: refused before any address space is taken.
        assert!(matches!(
            MappedFile::map_guest(guest_memfd(4096, shrink), 0, 64 << 40),
            Err(GuestFileError::PastEnd { .. })
        ));
        assert!(matches!(
            MappedFile::map_guest(guest_memfd(8192, 0), 0, 4096),
            Err(GuestFileError::NotSealed { .. })
        ));
        // Sealed against growing only: it could still shrink.
        let e = MappedFile::map_guest(guest_memfd(8192, libc::F_SEAL_GROW), 0, 4096).unwrap_err();
        assert!(e.to_string().contains("seal=on"), "{e}");
        // A regular file cannot be sealed at all.
        let path = std::env::temp_dir().join(format!("ptnet-sys-test-{}", std::process::id()));
        let plain = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        plain.set_len(8192).unwrap();
        let e = MappedFile::map_guest(plain, 0, 4096).unwrap_err();
        assert!(matches!(e, GuestFileError::NotAMemfd(_)), "{e}");
    }

    #[test]
    fn poll_reports_readable() {
        let e = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let f = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let fds = [(e.as_raw_fd(), libc::POLLIN), (f.as_raw_fd(), libc::POLLIN)];
        assert_eq!(poll_fds(&fds, 0).unwrap(), 0);
        f.write(1).unwrap();
        assert_eq!(poll_fds(&fds, 0).unwrap(), 0b10);
        // Negative descriptors are skipped.
        assert_eq!(poll_fds(&[(-1, libc::POLLIN), fds[1]], 0).unwrap(), 0b10);
    }

    /// A pipe (read end, write end), both non-blocking.
    fn pipe() -> (File, File) {
        let mut p = [0; 2];
        // SAFETY: `p` has room for the two descriptors pipe2 returns, which we then own.
        unsafe {
            assert_eq!(
                libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC),
                0
            );
            (File::from_raw_fd(p[0]), File::from_raw_fd(p[1]))
        }
    }

    #[test]
    fn poll_waits_for_the_events_asked_per_descriptor() {
        use std::io::Write;
        let (r, mut w) = pipe();
        let e = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let rd = (r.as_raw_fd(), libc::POLLIN);
        let wr = (w.as_raw_fd(), libc::POLLOUT);
        let ev = (e.as_raw_fd(), libc::POLLIN);
        // An empty pipe: the write end is writable, the read end is not readable.
        assert_eq!(poll_fds(&[ev, rd, wr], 0).unwrap(), 0b100);
        // Asked for readability only, a writable descriptor does not wake.
        assert_eq!(
            poll_fds(&[ev, (w.as_raw_fd(), libc::POLLIN)], 0).unwrap(),
            0
        );
        // Fill the pipe: the write end stops being writable, the read end becomes readable.
        while w.write(&[0u8; 4096]).is_ok() {}
        assert_eq!(poll_fds(&[ev, rd, wr], 0).unwrap(), 0b010);
        assert_eq!(poll_fds(&[ev, wr], 0).unwrap(), 0);
    }

    #[test]
    fn poll_reports_errors_and_hangups_whatever_was_asked() {
        // The read end closed: the write end reports POLLERR, though no event was asked.
        let (r, w) = pipe();
        drop(r);
        assert_eq!(poll_fds(&[(-1, 0), (w.as_raw_fd(), 0)], 0).unwrap(), 0b10);
        // The write end closed: the read end reports POLLHUP though only POLLOUT was asked.
        let (r, w) = pipe();
        drop(w);
        assert_eq!(poll_fds(&[(r.as_raw_fd(), libc::POLLOUT)], 0).unwrap(), 0b1);
    }
}
