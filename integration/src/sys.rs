//! The crate's only `unsafe`: installing a signal handler and creating sealed memfds for
//! hostile-frontend tests (no safe API for either in our dependencies). Everything else reaches
//! the system through `std`, `nix` and `vmm-sys-util`.

use nix::libc;
use nix::sys::signal::{signal, SigHandler, Signal};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// A memfd of `size` bytes (sparse) standing for guest RAM, sealable, with `seals` added
/// (`libc::F_SEAL_*`, 0 for none). The daemon maps guest memory only from memfds sealed against
/// shrinking (QEMU's `memory-backend-memfd` seals by default).
pub fn guest_memfd(size: u64, seals: libc::c_int) -> File {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"ptnet-test-guest".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("size the memfd");
    if seals != 0 {
        // SAFETY: fcntl on a descriptor we own; F_ADD_SEALS takes an int.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        assert_eq!(r, 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
    }
    f
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: std::ffi::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag, read with [`stop_requested`], instead of ending the
/// process (best effort: a failure leaves the default action in place).
pub fn catch_stop_signals() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler is async-signal-safe: it only stores to an atomic.
        let _ = unsafe { signal(sig, SigHandler::Handler(on_stop_signal)) };
    }
}

/// Has SIGINT or SIGTERM arrived since [`catch_stop_signals`]?
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
