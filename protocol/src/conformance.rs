//! Conformance: every place a stock ptnet guest driver (netmap's Linux `netmap_ptnet.c` with the
//! guest side of `netmap_mem2.c` and `netmap_kloop.c`, FreeBSD's `if_ptnet.c`, which shares the
//! memory and sync code) reads or writes device state, with the netmap function that does it.
//!
//! The facts below come from netmap's public source (luigirizzo/netmap, commit 89607e14); the
//! wording is ours. [`STOCK_ACCESSES`] is the machine-readable form: the daemon's tests walk it
//! against a real daemon (`integration/tests/stock_driver.rs`), doing each access the way the
//! stock driver does and checking what it finds.
//!
//! # Facts the stock drivers rely on
//!
//! | fact | where netmap has it | our side |
//! |---|---|---|
//! | A `netmap_if` counts at least one host ring per direction and lists `ring_ofs[]` as NIC TX, host TX, NIC RX, host RX; a placeholder host ring has offset 0 | `netmap_all_rings` (`netmap_kern.h`), `netmap_mem2_if_new` | [`crate::netmap::IfView::init`] |
//! | The guest kernel finds RX ring i at `ring_ofs[NUM_TX_RINGS + 1 + i]`, never reading `ni_host_tx_rings` | `netmap_mem_pt_guest_rings_create` | [`crate::netmap::IfView::rx_ring_ofs_kernel`] |
//! | `netmap_ring.dir` is 1 for TX, 0 for RX (`enum txrx { NR_RX, NR_TX }`; the comment in `netmap.h` says otherwise and is wrong) | `netmap_mem2_rings_create` | [`crate::netmap::ring::DIR_TX`] |
//! | Buffers are `base + BUF_POOL_OFS + i * BUF_POOL_OBJSZ`, i < BUF_POOL_OBJNUM, one contiguous array | `netmap_mem_pt_guest_finalize` | the allocator's buffer pool |
//! | PTFEAT: the guest writes what it wants (VNET_HDR = 1 when `ptnet_vnet_hdr`, the default) and reads back what it got | `ptnet_probe` | the device's PTFEAT |
//! | VNET_HDR_LEN: the guest writes 12 (`virtio_net_hdr_mrg_rxbuf`) or 0 before each CREATE and uses what it reads back | `ptnet_update_vnet_hdr` | 0, 10, 12 on ports that carry a header |
//! | Before CREATE the guest writes `atok.appl_need_kick` = (ring is RX), `ktoa.kern_need_kick` = 1 | `ptnet_nm_register` | overwritten by CREATE, as netmap's host does |
//! | CREATE initialises the CSB: atok head/cur = the host's, `appl_need_kick` = 1, `sync_flags` = 1; ktoa hwcur/hwtail = the host's, `kern_need_kick` = 1 | `netmap_csb_validate` (CSB_ENABLE, `netmap.c`) | [`crate::sync::HostKring::start`] |
//! | After CREATE the guest copies atok head/cur and ktoa hwcur/hwtail into its krings and into the rings' head/cur/tail, and never again: a host that starts over under it must adopt its positions | `ptnet_sync_from_csb` | [`crate::sync::HostKring::resume`] |
//! | One MSI-X vector per ring, vector i for ring i, TX first | `ptnet_irqs_init` | the frontend |
//! | On detach: DELETE, then the four CSB address registers set to 0 | `ptnet_remove` | the device |

use crate::csb;
use crate::regs::{memdev, ptnet};

/// What a stock driver touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A ptnet NIC register (BAR0 offset).
    Nic(u32),
    /// A memdev register (BAR0 offset of the memdev).
    Memdev(u32),
    /// A field of each guest-to-host CSB entry (byte offset in the entry).
    Atok(usize),
    /// A field of each host-to-guest CSB entry.
    Ktoa(usize),
    /// A field of the port's `netmap_if` (byte offset).
    NetmapIf(usize),
    /// A field of each `netmap_ring` header (byte offset).
    Ring(usize),
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The driver reads it.
    Read,
    /// The driver writes it.
    Write,
}

/// When the driver does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Device probe (module load).
    Probe,
    /// Interface up or a netmap application's register: before and right after PTCTL CREATE.
    Create,
    /// Every txsync/rxsync.
    Sync,
    /// Interface down, or the last netmap user gone.
    Delete,
    /// Device removal.
    Detach,
}

/// One access of a stock driver.
#[derive(Clone, Copy, Debug)]
pub struct StockAccess {
    /// What.
    pub target: Target,
    /// Read or write.
    pub access: Access,
    /// When.
    pub phase: Phase,
    /// The netmap function that does it.
    pub by: &'static str,
}

const fn a(target: Target, access: Access, phase: Phase, by: &'static str) -> StockAccess {
    StockAccess {
        target,
        access,
        phase,
        by,
    }
}

use Access::{Read as R, Write as W};
use Phase::*;
use Target::*;

/// Every device-state access of the stock Linux driver, in the order it makes them.
pub const STOCK_ACCESSES: &[StockAccess] = &[
    a(Nic(ptnet::PTFEAT), W, Probe, "ptnet_probe"),
    a(Nic(ptnet::PTFEAT), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::NUM_TX_RINGS), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::NUM_RX_RINGS), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::CSB_GH_BAH), W, Probe, "ptnet_probe"),
    a(Nic(ptnet::CSB_GH_BAL), W, Probe, "ptnet_probe"),
    a(Nic(ptnet::CSB_HG_BAH), W, Probe, "ptnet_probe"),
    a(Nic(ptnet::CSB_HG_BAL), W, Probe, "ptnet_probe"),
    a(Nic(ptnet::MAC_HI), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::MAC_LO), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::NIFP_OFS), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::NUM_TX_SLOTS), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::NUM_RX_SLOTS), R, Probe, "ptnet_probe"),
    a(Nic(ptnet::HOSTMEMID), R, Probe, "ptnet_probe"),
    a(Memdev(memdev::MEMSIZE_HI), R, Probe, "ptnet_memdev probe"),
    a(Memdev(memdev::MEMSIZE_LO), R, Probe, "ptnet_memdev probe"),
    a(Memdev(memdev::MEMID), R, Probe, "nm_os_pt_memdev_iomap"),
    a(
        Memdev(memdev::BUF_POOL_OBJSZ),
        R,
        Create,
        "netmap_mem_pt_guest_finalize",
    ),
    a(
        Memdev(memdev::BUF_POOL_OBJNUM),
        R,
        Create,
        "netmap_mem_pt_guest_finalize",
    ),
    a(
        Memdev(memdev::BUF_POOL_OFS),
        R,
        Create,
        "netmap_mem_pt_guest_finalize",
    ),
    a(
        NetmapIf(crate::netmap::nif::RING_OFS),
        R,
        Create,
        "netmap_mem_pt_guest_rings_create",
    ),
    a(
        Atok(csb::atok::APPL_NEED_KICK),
        W,
        Create,
        "ptnet_nm_register",
    ),
    a(
        Ktoa(csb::ktoa::KERN_NEED_KICK),
        W,
        Create,
        "ptnet_nm_register",
    ),
    a(Nic(ptnet::VNET_HDR_LEN), W, Create, "ptnet_update_vnet_hdr"),
    a(Nic(ptnet::VNET_HDR_LEN), R, Create, "ptnet_update_vnet_hdr"),
    a(Nic(ptnet::PTCTL), W, Create, "ptnet_nm_ptctl"),
    a(Nic(ptnet::PTCTL), R, Create, "ptnet_nm_ptctl"),
    a(Atok(csb::atok::HEAD), R, Create, "ptnet_sync_from_csb"),
    a(Atok(csb::atok::CUR), R, Create, "ptnet_sync_from_csb"),
    a(Ktoa(csb::ktoa::HWCUR), R, Create, "ptnet_sync_from_csb"),
    a(Ktoa(csb::ktoa::HWTAIL), R, Create, "ptnet_sync_from_csb"),
    a(
        Ring(crate::netmap::ring::HEAD),
        W,
        Create,
        "ptnet_sync_from_csb",
    ),
    a(
        Ring(crate::netmap::ring::CUR),
        W,
        Create,
        "ptnet_sync_from_csb",
    ),
    a(
        Ring(crate::netmap::ring::TAIL),
        W,
        Create,
        "ptnet_sync_from_csb",
    ),
    a(Atok(csb::atok::HEAD), W, Sync, "netmap_pt_guest_txsync"),
    a(Atok(csb::atok::CUR), W, Sync, "netmap_pt_guest_txsync"),
    a(
        Atok(csb::atok::APPL_NEED_KICK),
        W,
        Sync,
        "netmap_pt_guest_txsync",
    ),
    a(
        Atok(csb::atok::SYNC_FLAGS),
        W,
        Sync,
        "netmap_pt_guest_txsync",
    ),
    a(
        Ktoa(csb::ktoa::KERN_NEED_KICK),
        R,
        Sync,
        "netmap_pt_guest_txsync",
    ),
    a(Ktoa(csb::ktoa::HWCUR), R, Sync, "netmap_pt_guest_rxsync"),
    a(Ktoa(csb::ktoa::HWTAIL), R, Sync, "netmap_pt_guest_rxsync"),
    a(
        Ring(crate::netmap::ring::TAIL),
        W,
        Sync,
        "nm_rxsync_finalize",
    ),
    a(Nic(ptnet::PTCTL), W, Delete, "ptnet_nm_ptctl"),
    a(Nic(ptnet::PTCTL), R, Delete, "ptnet_nm_ptctl"),
    a(Nic(ptnet::CSB_GH_BAH), W, Detach, "ptnet_remove"),
    a(Nic(ptnet::CSB_GH_BAL), W, Detach, "ptnet_remove"),
    a(Nic(ptnet::CSB_HG_BAH), W, Detach, "ptnet_remove"),
    a(Nic(ptnet::CSB_HG_BAL), W, Detach, "ptnet_remove"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::is_writable_register;

    /// Every register the stock driver writes is one our device takes; every one it reads
    /// lies in the register block.
    #[test]
    fn every_register_access_is_in_the_contract() {
        for s in STOCK_ACCESSES {
            match (s.target, s.access) {
                (Nic(off), W) => assert!(is_writable_register(off), "{s:?}"),
                (Nic(off), R) => assert!(off < ptnet::END, "{s:?}"),
                (Memdev(off), _) => assert!(off < memdev::END && s.access == R, "{s:?}"),
                (Atok(off), _) => assert!(off < csb::atok::PAD, "{s:?}"),
                (Ktoa(off), _) => assert!(off < csb::ktoa::PAD, "{s:?}"),
                (NetmapIf(off), _) => assert!(off <= crate::netmap::nif::RING_OFS, "{s:?}"),
                (Ring(off), _) => assert!(off < crate::netmap::ring::SLOTS, "{s:?}"),
            }
        }
    }
}
