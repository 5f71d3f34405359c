//! # ptnet-driver
//!
//! The ptnet driver as a library: a netmap-like API (ports, TX/RX rings, slots, buffers,
//! txsync/rxsync, blocking waits) over two transports, `pci` inside a guest and `vhost-user` from a
//! host process.

#![warn(missing_docs)]

mod error;
pub mod port;
pub mod portspec;
mod sys;
pub mod transport;

pub use error::Error;
pub use port::{Port, RingId, RxRing, SlotReader, SlotWriter, TxRing};
pub use portspec::{PciSelector, PortSpec};
