//! One virtqueue as a pair thread runs it ([`Vq`]: the queue, its kick and interrupt, its
//! counters [`VqStats`]).

use super::ring::VirtQueue;
use crate::port::RingStats;
use crate::sys::eventfd_signal_nowait;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// Counters of one virtqueue. Written by its pair's thread only.
#[derive(Debug, Default)]
pub struct VqStats {
    /// Frames moved (TX: into the port; RX: into the guest).
    pub packets: AtomicU64,
    /// Their bytes (without virtio-net headers).
    pub bytes: AtomicU64,
    /// TX: chains with a device-writable descriptor; RX: chains with a readable one or one
    /// outside guest memory.
    pub bad_chains: AtomicU64,
    /// Descriptors outside guest memory (TX).
    pub bad_addresses: AtomicU64,
    /// Frames longer than a netmap buffer (TX), or than the guest's buffers (RX).
    pub too_long: AtomicU64,
    /// Frames shorter than a header plus an Ethernet header (TX).
    pub too_short: AtomicU64,
    /// Malformed headers or offloads not negotiated (TX: the guest's; RX: the slot's).
    pub bad_headers: AtomicU64,
    /// Chain heads outside the queue (the used entry could not be written).
    pub bad_heads: AtomicU64,
    /// The queue stopped: an avail index more than a queue ahead (split), a chain that could
    /// not be followed (packed: its wrap bits, its length, its buffer id), or a kick descriptor
    /// that failed. It needs a reset (a new SET_VRING_* setup) to run again.
    pub broken: AtomicU64,
    /// Interrupts raised.
    pub interrupts: AtomicU64,
    /// Rounds that used chains of the queue without raising an interrupt: the guest asked for
    /// none (EVENT_IDX's used_event not passed, or VRING_AVAIL_F_NO_INTERRUPT).
    pub interrupts_suppressed: AtomicU64,
    /// Rounds of the pair thread that moved frames through the queue.
    pub batches: AtomicU64,
    /// Kicks received (the kick eventfd found signalled).
    pub kicks: AtomicU64,
}

impl VqStats {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        RingStats::add(c, n);
    }

    /// A one-line summary.
    pub fn line(&self) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "packets={} bytes={} bad_chains={} bad_addresses={} too_long={} too_short={} \
             bad_headers={} bad_heads={} broken={} interrupts={} interrupts_suppressed={} \
             batches={} kicks={}",
            l(&self.packets),
            l(&self.bytes),
            l(&self.bad_chains),
            l(&self.bad_addresses),
            l(&self.too_long),
            l(&self.too_short),
            l(&self.bad_headers),
            l(&self.bad_heads),
            l(&self.broken),
            l(&self.interrupts),
            l(&self.interrupts_suppressed),
            l(&self.batches),
            l(&self.kicks)
        )
    }
}

/// One virtqueue as a pair thread runs it.
pub struct Vq {
    /// The queue (addresses, size, positions).
    pub queue: VirtQueue,
    /// Kick eventfd from the frontend.
    pub kick: File,
    /// Interrupt eventfd to the frontend.
    pub call: Option<File>,
    /// Counters.
    pub stats: Arc<VqStats>,
    /// Stopped for bad input until the frontend sets the queue up again.
    pub broken: bool,
}

impl Vq {
    /// Raises the interrupt if the used ring moved past what the guest asked (EVENT_IDX) or
    /// it did not suppress it.
    pub(super) fn notify(&mut self, mem: &GuestMemoryMmap) {
        if self.queue.needs_notification(mem) {
            if let Some(c) = &self.call {
                // A write that had to be cut: this guest holds its own interrupts; stop
                // signalling it until the queue is set up again.
                if let Ok(crate::sys::Raised::Cut) = eventfd_signal_nowait(c) {
                    self.call = None;
                }
                VqStats::add(&self.stats.interrupts, 1);
            }
        } else {
            VqStats::add(&self.stats.interrupts_suppressed, 1);
        }
    }

    /// Checks the queue before a round ([`VirtQueue::check`]): a split avail index more than a
    /// queue ahead of what we consumed, or a packed chain that could not be followed, is a broken
    /// driver (re-checking it on every wake-up would spin). The queue stops until it is set up
    /// again.
    pub(super) fn check(&mut self, mem: &GuestMemoryMmap, port: &str, what: &str) -> bool {
        if self.broken {
            return false;
        }
        match self.queue.check(mem) {
            Ok(()) => true,
            Err(e) => {
                self.broken = true;
                VqStats::add(&self.stats.broken, 1);
                tracing::warn!(
                    port,
                    queue = what,
                    "the guest's queue: {e}; stopped until reset"
                );
                false
            }
        }
    }
}
