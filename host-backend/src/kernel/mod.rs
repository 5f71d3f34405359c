//! Kernel netmap ports (`/dev/netmap`, request API of NETMAP_API 14: `NIOCCTRL` and
//! `struct nmreq_header`): `netmap:IFNAME`, and with `--netmap kernel` also pipe and VALE names.
//! This is the daemon's second datapath: for these ports the kernel, not a thread of ours, runs
//! the sync loop, so nothing of [`crate::port`]'s ring contract is used; the port layer only
//! lends its error type. The module, one step at a time:
//!
//! * [`abi`]: the request structures (`repr(C)`, pinned to netmap's layout by tests);
//! * `sys` (private, the module's only `unsafe`): `NIOCCTRL` on the control device;
//! * [`KernelNetmap`]: opening and registering a port, its geometry, CSB mode;
//! * [`KernelLoop`]: the kernel's loop running for one frontend.
//!
//! How a kernel netmap port is served (the daemon only sets up and tears down; the kernel moves
//! the packets):
//! 1. When the daemon starts: bind the port on a `/dev/netmap` descriptor (REGISTER, all hardware
//!    rings, `NR_EXCLUSIVE`, which CSB mode requires) and ask where its pools lie
//!    (POOLS_INFO_GET). The registers the guest reads come from these answers, and that
//!    descriptor is the memory SHMEM_MAP sends: the frontend maps `/dev/netmap` itself.
//! 2. On PTCTL CREATE: CSB_ENABLE with option CSB pointing at the guest's CSB arrays as mapped in
//!    the daemon (the kernel reaches them as user memory of the thread that runs its loop), then
//!    SYNC_KLOOP_START with option SYNC_KLOOP_EVENTFDS (per ring: the frontend's kick eventfd as
//!    `ioeventfd`, its call eventfd as `irqfd`) on a thread of its own, where it blocks.
//! 3. On DELETE or disconnect: SYNC_KLOOP_STOP, and join that thread.

pub mod abi;
mod control;
pub mod kloop;
#[allow(unsafe_code)]
mod sys;

pub use abi::DEV_NETMAP;
pub use control::{Csb, KernelNetmap};
pub use kloop::KernelLoop;

use crate::port::nic::{require_if, NicError};
use crate::portspec::{PortKind, PortSpec, MAX_RINGS};
use std::path::Path;

/// Opens kernel netmap port `nmport` for `spec` (step 1 above), refusing what a ptnet device
/// cannot serve.
pub fn open_port(spec: &PortSpec, nmport: &str) -> Result<KernelNetmap, NicError> {
    if !Path::new(DEV_NETMAP).exists() {
        return Err(NicError::NoNetmap {
            port: spec.name.clone(),
            ifname: nmport.to_string(),
        });
    }
    if let PortKind::KernelNetmap { ifname } = &spec.kind {
        require_if(&spec.name, ifname)?;
    }
    let k = KernelNetmap::open(nmport, &spec.conf).map_err(|e| {
        NicError::io(
            &spec.name,
            format!("registering {nmport} with kernel netmap"),
            e,
        )
    })?;
    let rings = u32::from(k.reg.nr_tx_rings) + u32::from(k.reg.nr_rx_rings);
    if rings > MAX_RINGS {
        return Err(NicError::Unsupported {
            port: spec.name.clone(),
            reason: format!(
                "the kernel port has {} TX and {} RX rings; a ptnet device has at most {MAX_RINGS} in all (reduce the NIC's queues, e.g. ethtool -L IFNAME combined N)",
                k.reg.nr_tx_rings, k.reg.nr_rx_rings
            ),
        });
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dev_netmap_is_named() {
        if Path::new(DEV_NETMAP).exists() {
            return; // only meaningful without the module
        }
        let spec = PortSpec::parse("netmap:eth0").unwrap();
        let e = open_port(&spec, "netmap:eth0")
            .err()
            .expect("no /dev/netmap");
        let msg = e.to_string();
        assert!(
            msg.contains("/dev/netmap") && msg.contains("netmap kernel module"),
            "{msg}"
        );
    }
}
