//! The crate's only `unsafe`: installing a signal handler (no safe API exists for it). Everything
//! else reaches the system through `std`, `nix` and `vmm-sys-util`.

use nix::sys::signal::{signal, SigHandler, Signal};
use std::sync::atomic::{AtomicBool, Ordering};

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
