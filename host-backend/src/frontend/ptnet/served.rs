//! The ports the daemon serves, as the device's state machine sees them ([`DevicePort`]): their
//! rings run on our threads (userspace netmap ports) or in the kernel (kernel netmap ports).

use super::state::{DevicePort, StartError};
use crate::frontend::ptnet::syncloop::{
    csb_entries, FrontendRings, LoopOptions, RingIo, RingRunner,
};
use crate::kernel::KernelLoop;
use crate::served::{Datapath, Port};
use ptnet_protocol::device::PortGeometry;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

/// A served port and how its ring threads wait.
#[derive(Clone)]
pub struct ServedPort {
    /// The port.
    pub port: Arc<Port>,
    /// Its ring threads' options.
    pub opts: LoopOptions,
}

/// The rings of a started device.
pub enum Running {
    /// Our threads, one per ring.
    Threads(RingRunner),
    /// The kernel's sync loop (kernel netmap ports).
    Kernel(KernelLoop),
}

impl DevicePort for ServedPort {
    type Running = Running;

    fn name(&self) -> &str {
        self.port.name()
    }

    fn geometry(&self) -> &PortGeometry {
        self.port.geometry()
    }

    fn vnet_hdr_len(&self) -> Option<&AtomicU8> {
        self.port.vnet_hdr_len().map(|l| &**l)
    }

    fn start(&self, rings: FrontendRings, resume: bool) -> Result<Running, StartError> {
        match self.port.datapath() {
            Datapath::Threads { .. } => self.start_threads(rings, resume),
            Datapath::Kernel(k) => KernelLoop::start(k.clone(), self.port.name(), rings)
                .map(Running::Kernel)
                .map_err(StartError::Kernel),
        }
    }

    fn stop(&self, running: Running) {
        match running {
            Running::Threads(r) => self.port.put_workers(r.stop()),
            Running::Kernel(k) => k.stop(),
        }
    }

    fn stats_line(&self) -> String {
        self.port.stats_line()
    }

    fn frontend_gone(&self) {
        self.port.frontend_gone();
    }
}

impl ServedPort {
    /// Starts one sync thread per ring (userspace netmap ports).
    fn start_threads(&self, fe: FrontendRings, resume: bool) -> Result<Running, StartError> {
        let name = self.port.name();
        let FrontendRings {
            atok,
            ktoa,
            kicks,
            calls,
            keep,
        } = fe;
        let io: Vec<RingIo> = kicks
            .into_iter()
            .zip(calls)
            .enumerate()
            .map(|(i, (kick, call))| {
                let (a, k) =
                    csb_entries(&atok, &ktoa, i as u32).expect("array sized for every ring");
                RingIo {
                    atok: a,
                    ktoa: k,
                    kick,
                    call,
                }
            })
            .collect();
        let Some(mut workers) = self.port.take_workers() else {
            return Err(StartError::Busy);
        };
        // A RESUME adopts the guest's positions only where this daemon never ran the rings: its
        // memory is then new to the guest. Otherwise the memory and our state are the ones the
        // guest has been using, and a plain start is right.
        let adopt = resume && self.port.first_start();
        let restored = self.port.threads_memory().is_some_and(|m| m.restored());
        for (w, io) in workers.iter_mut().zip(&io) {
            if !adopt {
                w.kring.start(&io.atok, &io.ktoa);
                continue;
            }
            let ring = self
                .port
                .ring_view(w.index)
                .expect("a threads port has ring views");
            // With the guest's own memory back (SET_INFLIGHT_FD), its buffers and ring headers
            // stand; without it, RESUME sets up the fresh memory to match the CSB.
            let resumed = if restored {
                w.kring.resume_in_place(w.is_tx, &io.atok, &io.ktoa)
            } else {
                w.kring.resume(w.is_tx, &io.atok, &io.ktoa, &ring)
            };
            match resumed {
                Ok((head, hwtail)) => {
                    if let Some(rx) = w.sync.direct_rx() {
                        rx.adopt(head, hwtail);
                    }
                    tracing::info!(
                        port = name,
                        ring = w.index,
                        head,
                        hwtail,
                        "resumed at the guest's positions"
                    );
                }
                Err(bad) => {
                    tracing::warn!(
                        port = name,
                        ring = w.index,
                        "RESUME: the guest's CSB holds {bad}; starting the ring afresh"
                    );
                    w.kring.start(&io.atok, &io.ktoa);
                }
            }
        }
        self.port.mark_started();
        RingRunner::start(name, workers, io, keep, self.opts)
            .map(Running::Threads)
            .map_err(|(e, workers)| {
                self.port.put_workers(workers);
                StartError::Threads(e)
            })
    }
}
