//! [`KernelLoop`]: the kernel's sync loop serving one frontend's rings (steps 2 and 3 in
//! [`crate::kernel`]'s notes): CSB_ENABLE with the guest's arrays, then SYNC_KLOOP_START on a
//! thread of its own, where it blocks until DELETE or disconnect stops it.

use super::abi::KloopEventfds;
use super::control::{Csb, KernelNetmap};
use crate::port::ring::FrontendRings;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        let FrontendRings {
            kicks,
            calls,
            keep,
            atok,
            ktoa,
        } = fe;
        // Checked there to be aligned and to hold an entry per ring; the arrays stay mapped
        // through `keep` (the guest memory they are windows of), which the port holds until
        // `stop`, and the loop's thread until it ends.
        let started = port
            .enable_csb(Csb {
                atok,
                ktoa,
                keep: keep.clone(),
            })
            .and_then(|()| Self::spawn(&port, name, kicks, calls, keep));
        match started {
            Ok(thread) => Ok(Self { port, thread }),
            Err(e) => {
                port.release_csb();
                Err(e)
            }
        }
    }

    /// Runs the kernel's loop on a thread of its own; returns it once the kernel has had time to
    /// refuse, or the refusal.
    fn spawn(
        port: &Arc<KernelNetmap>,
        name: &str,
        kicks: Vec<std::fs::File>,
        calls: Vec<Option<std::fs::File>>,
        keep: crate::port::ring::Keepalive,
    ) -> io::Result<JoinHandle<io::Result<()>>> {
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
            Err(RecvTimeoutError::Timeout) => Ok(thread),
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
        // The loop's thread holds the memory until it ends; no new loop starts on these arrays.
        self.port.release_csb();
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
