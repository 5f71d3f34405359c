#![doc = include_str!("../README.md")]

pub mod error;
pub mod port;
pub mod portspec;
mod ring_id;
pub mod summary;
#[allow(unsafe_code)]
mod sys;
pub mod testframe;
pub mod transport;

pub use error::Error;
pub use port::{
    Consumed, ForwardMode, Forwarded, Port, RingId, RxRing, SlotReader, SlotWriter, TxRing,
};
pub use portspec::{PciSelector, PortSpec};
pub use ring_id::Direction;
