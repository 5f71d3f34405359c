//! The ptnet vhost-user device: one per port, speaking the contract of `ptnet_protocol::device`
//! with whichever frontend is connected (QEMU with our patch, or the driver's vhost-user
//! transport).
//!
//! Everything the frontend sends is checked: config offsets and sizes, ring indexes, memory
//! regions, and the CSB addresses, which must lie inside the guest memory the frontend shared.
//!
//! * [`state`]: the device's state machine (config space, PTCTL, CSB), over a [`DevicePort`];
//!   no vhost-user in it, unit-tested against a mock port;
//! * [`memory`]: the frontend's guest memory (SET_MEM_TABLE);
//! * [`served`]: the daemon's ports as [`DevicePort`]s (ring threads, or the kernel's loop);
//! * `vhost`: [`PtnetDevice`], the thin vhost-user glue over the state machine;
//! * [`syncloop`]: the per-ring host sync threads.

pub mod memory;
pub mod served;
pub mod state;
pub mod syncloop;
mod vhost;

pub use memory::{GuestMemory, DEFAULT_MAX_GUEST_MEMORY};
pub use state::{DeviceError, DevicePort, PtctlError, PtnetState, StartError};
pub use vhost::PtnetDevice;
