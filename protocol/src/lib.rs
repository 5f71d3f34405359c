//! # ptnet-protocol
//!
//! The one definition of what the ptnet guest, its frontend and the host daemon share:
//!
//! * [`regs`]: the ptnet NIC and memdev registers (the guest ABI of the two PCI devices);
//! * [`csb`]: the Communication Status Block entries;
//! * [`conformance`]: every device-state access of the stock ptnet guest drivers, with the netmap
//!   function that makes it;
//! * [`netmap`]: `netmap_if`, `netmap_ring`, `netmap_slot` and the buffer pool;
//! * [`sync`]: the ring-sync algorithms of the guest and of the host, used by both other crates;
//! * [`device`]: the vhost-user device contract (config space, features, queue numbering);
//! * [`vnet`]: the virtio-net header of VNET_HDR ports, and the checksum and GSO offloads a
//!   switch performs for a receiver without one;
//! * [`shmem`]: bounds-checked access to shared memory (the crate's only `unsafe`).
//!
//! No I/O and no threads here: this crate is plain data and algorithms over shared memory.

pub mod conformance;
pub mod csb;
pub mod device;
pub mod netmap;
pub mod regs;
#[allow(unsafe_code)]
pub mod shmem;
pub mod sync;
pub mod vnet;
