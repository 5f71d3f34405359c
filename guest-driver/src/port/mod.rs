//! The netmap-like API: a [`Port`] attached to a ptnet device, its TX and RX rings, and blocking
//! waits.
//!
//! ```no_run
//! use ptnet_driver::{Port, RingId};
//! # fn main() -> Result<(), ptnet_driver::Error> {
//! let mut port = Port::open("vhost-user:/tmp/p/p{1.sock")?;
//! let mut tx = port.tx_ring(0);
//! while tx.space() > 0 {
//!     tx.send(&[0u8; 60]);
//! }
//! tx.txsync()?;
//! port.wait(RingId::Tx(0), None)?;
//! # Ok(())
//! # }
//! ```
//!
//! The application owns the slots from `cur` to `tail` (exclusive), exactly as in netmap: TX slots
//! it may fill, RX slots holding received packets. [`TxRing::send`] and [`RxRing::recv`] advance
//! `cur` and `head` together (one slot at a time); [`TxRing::txsync`] / [`RxRing::rxsync`] hand the
//! slots before `head` to the host and learn its progress through the CSB, kicking the host only
//! when it asked for kicks. Buffers live in shared memory and are only accessed by copying.
//!
//! Forwarding between ports (an NFV middlebox, `ptnet-bridge`): [`TxRing::forward_from`] moves a
//! batch of received packets from an RX ring into a TX ring, of the same port or another one,
//! either by copying each packet into the TX slot's buffer ([`ForwardMode::Copy`]) or, when both
//! ports live in one netmap memory ([`Port::shares_memory_with`]), by swapping the two slots'
//! buffer indexes and setting `BUF_CHANGED` on both ([`ForwardMode::SwapBuffers`], netmap's zero
//! copy). [`Port::wait_ports`] sleeps on the interrupts of rings of several ports at once.
//!
//! The module's parts, by job: `attach` (bring-up and validation of the device), `ring` (the
//! per-ring sync glue over `ptnet_protocol::sync`), `app` (the application's ring API), `forward`,
//! `wait` (blocking waits, one port or several) and `probe` (do two ports share a memory?).

use crate::transport::{CsbArrays, Transport};
use crate::Error;
use ptnet_protocol::netmap::BufPool;
use ptnet_protocol::regs::{ptnet, PTCTL_DELETE};
use std::time::Duration;

pub use crate::ring_id::RingId;

mod app;
mod attach;
mod batch;
mod forward;
#[cfg(test)]
mod mock;
mod probe;
mod ring;
mod wait;

pub use app::{RxRing, SlotReader, SlotWriter, TxRing};
pub use batch::Consumed;
pub use forward::{ForwardMode, Forwarded};

use ring::RingState;

/// The longest [`Port::wait_ports`] blocks on one port's interrupts before it looks at the
/// others.
pub const WAIT_PORTS_SLICE: Duration = Duration::from_millis(1);

/// A ptnet port attached through a [`Transport`]: the netmap memory, the rings and the CSB.
///
/// Dropping the port quiesces it ([`Port::quiesce`]: releases the RX slots read, publishes the TX
/// slots filled and waits briefly for the host to take them), then stops the host sync loops
/// (PTCTL DELETE) and unprograms the CSB.
pub struct Port {
    transport: Box<dyn Transport>,
    mac: [u8; 6],
    num_tx_rings: u32,
    num_rx_rings: u32,
    num_tx_slots: u32,
    num_rx_slots: u32,
    mem_id: u32,
    bufs: BufPool,
    rings: Vec<RingState>,
    busy_poll: bool,
    vnet_hdr_len: u32,
    _csb: CsbArrays,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.transport.name())
            .field("mac", &self.mac)
            .field("tx_rings", &self.num_tx_rings)
            .field("rx_rings", &self.num_rx_rings)
            .field("tx_slots", &self.num_tx_slots)
            .field("rx_slots", &self.num_rx_slots)
            .finish()
    }
}

impl Port {
    /// The transport's name for messages (`vhost-user:/path`, `pci:0000:00:04.0`).
    #[must_use]
    pub fn name(&self) -> &str {
        self.transport.name()
    }

    /// The port's MAC address.
    #[must_use]
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Bytes of virtio-net header in front of every frame, both ways (0: none).
    #[must_use]
    pub fn vnet_hdr_len(&self) -> u32 {
        self.vnet_hdr_len
    }

    /// Number of TX rings.
    #[must_use]
    pub fn num_tx_rings(&self) -> u32 {
        self.num_tx_rings
    }

    /// Number of RX rings.
    #[must_use]
    pub fn num_rx_rings(&self) -> u32 {
        self.num_rx_rings
    }

    /// Slots per TX ring.
    #[must_use]
    pub fn num_tx_slots(&self) -> u32 {
        self.num_tx_slots
    }

    /// Slots per RX ring.
    #[must_use]
    pub fn num_rx_slots(&self) -> u32 {
        self.num_rx_slots
    }

    /// Size of every packet buffer (the largest frame a slot carries).
    #[must_use]
    pub fn buf_size(&self) -> u32 {
        self.bufs.buf_size()
    }

    /// Number of packet buffers in the port's memory (valid buffer indexes are below it).
    #[must_use]
    pub fn num_bufs(&self) -> u32 {
        self.bufs.num()
    }

    /// The netmap memory allocator id.
    #[must_use]
    pub fn mem_id(&self) -> u32 {
        self.mem_id
    }

    /// Busy-poll mode: when on, syncs never ask the host for interrupts (call [`Port::wait`] only
    /// in interrupt mode). Off by default.
    pub fn set_busy_poll(&mut self, on: bool) {
        self.busy_poll = on;
        for r in &mut self.rings {
            r.kring.want_interrupts = !on;
        }
    }

    /// Is busy-poll mode on?
    #[must_use]
    pub fn busy_poll(&self) -> bool {
        self.busy_poll
    }

    /// The index in `rings` of ring `id`. Panics if the port has no such ring.
    fn ring_index(&self, id: RingId) -> usize {
        match id {
            RingId::Tx(i) => {
                assert!(
                    i < self.num_tx_rings,
                    "TX ring {i} of {}",
                    self.num_tx_rings
                );
                i as usize
            }
            RingId::Rx(i) => {
                assert!(
                    i < self.num_rx_rings,
                    "RX ring {i} of {}",
                    self.num_rx_rings
                );
                (self.num_tx_rings + i) as usize
            }
        }
    }

    /// TX ring `i`. Panics if `i >= num_tx_rings()`.
    #[must_use]
    pub fn tx_ring(&mut self, i: u32) -> TxRing<'_> {
        let idx = self.ring_index(RingId::Tx(i));
        TxRing::new(&mut self.rings[idx], self.transport.as_ref(), &self.bufs)
    }

    /// RX ring `i`. Panics if `i >= num_rx_rings()`.
    #[must_use]
    pub fn rx_ring(&mut self, i: u32) -> RxRing<'_> {
        let idx = self.ring_index(RingId::Rx(i));
        RxRing::new(&mut self.rings[idx], self.transport.as_ref(), &self.bufs)
    }

    /// txsync or rxsync of `rings[idx]`, as its direction wants.
    fn sync(&mut self, idx: usize) -> Result<(), Error> {
        let t = self.transport.as_ref();
        let r = &mut self.rings[idx];
        if idx < self.num_tx_rings as usize {
            r.txsync(t, 0)
        } else {
            r.rxsync(t, 0)
        }
    }

    /// Syncs every ring, then waits (at most `limit`) until the host has caught up with every
    /// ring's head: RX slots read are released, TX slots filled are transmitted. The host keeps
    /// its rings across connections and DELETE stops its loops wherever they are, so without this
    /// the next user of the port would see released RX slots again. Called on drop.
    pub fn quiesce(&mut self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        if self.sync_all().is_err() {
            return;
        }
        let behind = |r: &RingState| r.ktoa.hwcur() % r.view.num_slots() != r.kring.rhead;
        // A host that asked for no kicks may not look at this ring again for a long while (a
        // kernel netmap loop waits for the port): kick every ring it has not caught up on, once,
        // so what we released and queued is taken in before we go (over a netmap pipe, the
        // peer's TX slots complete only when these are released).
        for r in self.rings.iter().filter(|r| behind(r)) {
            self.transport.kick(r.index);
        }
        loop {
            if !self.rings.iter().any(behind) || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Syncs every ring once (txsync on TX rings, rxsync on RX rings).
    pub fn sync_all(&mut self) -> Result<(), Error> {
        for i in 0..self.rings.len() {
            self.sync(i)?;
        }
        Ok(())
    }
}

/// DELETE, then zero the four CSB address registers. Errors are ignored: the device may be gone.
fn detach(t: &mut dyn Transport) {
    let _ = t.write_reg(ptnet::PTCTL, PTCTL_DELETE);
    for reg in [
        ptnet::CSB_GH_BAH,
        ptnet::CSB_GH_BAL,
        ptnet::CSB_HG_BAH,
        ptnet::CSB_HG_BAL,
    ] {
        let _ = t.write_reg(reg, 0);
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.quiesce(Duration::from_millis(200));
        detach(self.transport.as_mut());
    }
}
