//! The port layer: the ring contract every port kind implements ([`ring`]) and the kinds, over
//! the daemon's own userspace netmap ([`mem`]): pipes ([`pipe`]), VALE switches ([`vale`], with
//! [`mactable`]), null ports ([`null`]), and host interfaces copied into it ([`nic`]: tap,
//! AF_PACKET, AF_XDP). RX rings that other rings fill (pipes, VALE) share a [`delivery`] ring with
//! their producers, which run its host pass themselves (direct delivery).
//!
//! A kind builds a [`built::BuiltPort`]: the port's memory and one [`ring::RingWorker`] per ring
//! carrying the kind's [`ring::RingSync`] ([`build`] builds them all); the sync loop, the vhost-user
//! device and the validation are shared, and kinds differ only in their `RingSync`s. Nothing here
//! knows of kernel netmap ([`crate::kernel`]) or of how a port is served (`served`, `frontend`).
//!
//! Modules import each other directly (`crate::port::ring::...`), never through this one.

pub mod build;
pub mod built;
pub mod delivery;
pub mod idle;
pub mod mactable;
pub mod mem;
pub mod nic;
pub mod null;
pub mod pipe;
pub mod private_csb;
pub mod ring;
pub mod vale;

pub use build::BuildError;
pub use ring::{RingStats, RingSync, RingWorker, Wake};
