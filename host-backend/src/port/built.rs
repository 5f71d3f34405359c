//! What a port kind of the userspace netmap builds ([`BuiltPort`]): the port's memory, its
//! interface in it, and one [`RingWorker`] per ring carrying the kind's [`RingSync`]. The daemon
//! serves it as it is (`served::Port`); everything else about a port (the sync loops, the
//! device, the validation) is shared by all kinds.

use crate::port::mem::{IfSpec, NetmapMemory};
use crate::port::ring::{RingStats, RingSync, RingWorker};
use ptnet_protocol::sync::HostKring;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// A port of the userspace netmap, as its kind built it.
pub struct BuiltPort {
    /// The port's name (as given on the command line, without `@conf`).
    pub name: String,
    /// The netmap memory (a memfd).
    pub memory: Arc<NetmapMemory>,
    /// The port's interface in that memory.
    pub if_index: usize,
    /// One worker per ring, TX rings first.
    pub workers: Vec<RingWorker>,
    /// The virtio-net header length the guest set (0, 10, 12), shared with the rings that
    /// convert between ports; `None` for ports that carry no header.
    pub vnet_hdr_len: Option<Arc<AtomicU8>>,
    /// What the port kind undoes when a frontend goes (VALE: the source addresses it claimed).
    pub on_frontend_gone: Option<Box<dyn Fn() + Send + Sync>>,
    /// What the port kind undoes when the port is removed at runtime (VALE: leaving the
    /// switch), before its rings stop and after.
    pub on_remove: Option<RemoveHooks>,
}

/// What a port kind does when the port is removed: `before` its rings stop (no new traffic
/// toward it), `after` (what its own rings could still have redone). Dropped unrun (a port
/// built but never served, or the daemon stopping), both run then.
pub struct RemoveHooks {
    before: Option<Box<dyn FnOnce() + Send>>,
    after: Option<Box<dyn FnOnce() + Send>>,
}

impl RemoveHooks {
    /// Runs `before` (once).
    pub fn before(&mut self) {
        if let Some(f) = self.before.take() {
            f();
        }
    }

    /// Runs `before` if not yet run, then `after` (once).
    pub fn after(&mut self) {
        self.before();
        if let Some(f) = self.after.take() {
            f();
        }
    }
}

impl Drop for RemoveHooks {
    fn drop(&mut self) {
        self.after();
    }
}

impl BuiltPort {
    /// A port over interface `if_index` of `memory`, with one worker per ring in ring order.
    pub fn new(
        name: &str,
        memory: Arc<NetmapMemory>,
        if_index: usize,
        workers: Vec<RingWorker>,
    ) -> Self {
        Self {
            name: name.to_string(),
            memory,
            if_index,
            workers,
            vnet_hdr_len: None,
            on_frontend_gone: None,
            on_remove: None,
        }
    }

    /// The port carries a virtio-net header of the length in `len` (which its rings read).
    pub fn with_vnet_hdr(mut self, len: Arc<AtomicU8>) -> Self {
        self.vnet_hdr_len = Some(len);
        self
    }

    /// Runs `f` whenever a frontend goes.
    pub fn with_frontend_gone(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_frontend_gone = Some(Box::new(f));
        self
    }

    /// Runs `before` and `after` when the port is removed (see [`RemoveHooks`]).
    pub fn with_on_remove(
        mut self,
        before: impl FnOnce() + Send + 'static,
        after: impl FnOnce() + Send + 'static,
    ) -> Self {
        self.on_remove = Some(RemoveHooks {
            before: Some(Box::new(before)),
            after: Some(Box::new(after)),
        });
        self
    }
}

/// Ring notifiers and counters of one interface, made before the syncs that need them.
pub struct RingParts {
    /// One eventfd per ring, which the port signals.
    pub notify: Vec<Arc<EventFd>>,
    /// One set of counters per ring.
    pub stats: Vec<Arc<RingStats>>,
}

impl RingParts {
    /// For `n` rings.
    pub fn new(n: u32) -> std::io::Result<Self> {
        Ok(Self {
            notify: (0..n)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map(Arc::new))
                .collect::<Result<_, _>>()?,
            stats: (0..n).map(|_| Arc::new(RingStats::default())).collect(),
        })
    }

    /// The workers of interface `spec`, from one sync per ring (TX rings first).
    pub fn workers(self, spec: &IfSpec, syncs: Vec<Box<dyn RingSync>>) -> Vec<RingWorker> {
        syncs
            .into_iter()
            .zip(self.notify)
            .zip(self.stats)
            .enumerate()
            .map(|(i, ((sync, notify), stats))| {
                let is_tx = (i as u32) < spec.tx_rings;
                RingWorker {
                    index: i as u32,
                    is_tx,
                    kring: if is_tx {
                        HostKring::new_tx(spec.tx_slots)
                    } else {
                        HostKring::new_rx(spec.rx_slots)
                    },
                    sync,
                    notify,
                    stats,
                }
            })
            .collect()
    }
}

/// A locally administered unicast MAC derived from a port name (FNV-1a).
pub fn mac_for(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_le_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_local_unicast_and_stable() {
        let a = mac_for("vale0:1");
        assert_eq!(a[0] & 0x03, 0x02);
        assert_eq!(a, mac_for("vale0:1"));
        assert_ne!(a, mac_for("vale0:2"));
    }
}
