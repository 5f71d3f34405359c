//! Guest-visible registers of the two PCI devices: the ptnet NIC (BAR0, I/O space) and its netmap
//! memory device ("memdev", BAR0, I/O space). All registers are 32 bits wide, little-endian.
//!
//! Offsets and values are those of netmap's `netmap_virt.h`; stock FreeBSD and Linux ptnet drivers
//! depend on every one of them.

/// PCI vendor id shared by both devices (Red Hat, Inc., QEMU's own range).
pub const PCI_VENDOR_ID: u16 = 0x1b36;
/// PCI device id of the ptnet NIC.
pub const PTNET_PCI_DEVICE_ID: u16 = 0x000d;
/// PCI device id of the netmap memory device.
pub const MEMDEV_PCI_DEVICE_ID: u16 = 0x000c;
/// PCI class code of the ptnet NIC (network controller, Ethernet).
pub const PTNET_PCI_CLASS: u32 = 0x0200;
/// Size of the ptnet NIC's I/O BAR0.
pub const PTNET_IO_BAR_SIZE: u32 = 256;
/// Size of the memdev's I/O BAR0.
pub const MEMDEV_IO_BAR_SIZE: u32 = 128;
/// BAR index of the ptnet NIC's MSI-X table and PBA.
pub const PTNET_MSIX_BAR: u8 = 2;
/// Size of the MSI-X BAR.
pub const PTNET_MSIX_BAR_SIZE: u32 = 4096;
/// BAR index of the memdev's netmap memory.
pub const MEMDEV_MEM_BAR: u8 = 1;

/// Registers of the ptnet NIC (offsets in BAR0).
pub mod ptnet {
    /// Features: the guest writes what it wants, then reads back `offered & wanted`.
    pub const PTFEAT: u32 = 0;
    /// Control: the guest writes a command ([`super::PTCTL_CREATE`], [`super::PTCTL_DELETE`]),
    /// then reads back 0 or a positive errno.
    pub const PTCTL: u32 = 4;
    /// MAC address bytes 2..5 (byte 2 in bits 31..24).
    pub const MAC_LO: u32 = 8;
    /// MAC address bytes 0..1 (byte 0 in bits 15..8).
    pub const MAC_HI: u32 = 12;
    /// Deprecated single-CSB address, high half. Ignored.
    pub const CSBBAH: u32 = 16;
    /// Deprecated single-CSB address, low half. Ignored.
    pub const CSBBAL: u32 = 20;
    /// Offset of this port's `netmap_if` inside the netmap memory.
    pub const NIFP_OFS: u32 = 24;
    /// Number of TX rings.
    pub const NUM_TX_RINGS: u32 = 28;
    /// Number of RX rings.
    pub const NUM_RX_RINGS: u32 = 32;
    /// Slots per TX ring.
    pub const NUM_TX_SLOTS: u32 = 36;
    /// Slots per RX ring.
    pub const NUM_RX_SLOTS: u32 = 40;
    /// virtio-net header length: the guest writes what it wants (0, 10 or 12), reads what holds.
    pub const VNET_HDR_LEN: u32 = 44;
    /// Host memory allocator id; equals the memdev's MEMID.
    pub const HOSTMEMID: u32 = 48;
    /// Guest-to-host CSB array address, high 32 bits (written first).
    pub const CSB_GH_BAH: u32 = 52;
    /// Guest-to-host CSB array address, low 32 bits (written second; (un)maps, implies DELETE).
    pub const CSB_GH_BAL: u32 = 56;
    /// Host-to-guest CSB array address, high 32 bits.
    pub const CSB_HG_BAH: u32 = 60;
    /// Host-to-guest CSB array address, low 32 bits.
    pub const CSB_HG_BAL: u32 = 64;
    /// End of the register block; 68..127 read as 0.
    pub const END: u32 = 68;
    /// First kick register; ring `i` is kicked by any write to `KICK_BASE + 4 * i`.
    pub const KICK_BASE: u32 = 128;
    /// Kick registers fit in 128..252: at most 32 rings (TX + RX) per port.
    pub const MAX_RINGS: u32 = 32;

    /// Offset of the kick register of ring `ring` (TX rings first, then RX rings).
    pub const fn kick(ring: u32) -> u32 {
        KICK_BASE + 4 * ring
    }
}

/// Registers of the netmap memory device (offsets in its BAR0). All read-only.
pub mod memdev {
    /// Netmap memory size, low 32 bits.
    pub const MEMSIZE_LO: u32 = 0;
    /// Netmap memory size, high 32 bits (guests read this one first).
    pub const MEMSIZE_HI: u32 = 4;
    /// Memory allocator id.
    pub const MEMID: u32 = 8;
    /// Interface pool offset (informational).
    pub const IF_POOL_OFS: u32 = 64;
    /// Interface pool object count (informational).
    pub const IF_POOL_OBJNUM: u32 = 68;
    /// Interface pool object size (informational).
    pub const IF_POOL_OBJSZ: u32 = 72;
    /// Ring pool offset (informational).
    pub const RING_POOL_OFS: u32 = 76;
    /// Ring pool object count (informational).
    pub const RING_POOL_OBJNUM: u32 = 80;
    /// Ring pool object size (informational).
    pub const RING_POOL_OBJSZ: u32 = 84;
    /// Buffer pool offset: buffer `i` lives at `BUF_POOL_OFS + i * BUF_POOL_OBJSZ`.
    pub const BUF_POOL_OFS: u32 = 88;
    /// Number of buffers.
    pub const BUF_POOL_OBJNUM: u32 = 92;
    /// Buffer size.
    pub const BUF_POOL_OBJSZ: u32 = 96;
    /// End of the register block.
    pub const END: u32 = 100;
}

// Every kick register and the memdev block fit their BARs.
const _: () = assert!(ptnet::kick(ptnet::MAX_RINGS - 1) + 4 <= PTNET_IO_BAR_SIZE);
const _: () = assert!(memdev::END <= MEMDEV_IO_BAR_SIZE);

/// PTFEAT bit: the port accepts a virtio-net header in front of every packet.
pub const PTNETMAP_F_VNET_HDR: u32 = 1;
/// PTCTL command: start the host sync loops.
pub const PTCTL_CREATE: u32 = 1;
/// PTCTL command: stop the host sync loops.
pub const PTCTL_DELETE: u32 = 2;
/// PTCTL command of the vhost-user frontend, not of the guest ABI: CREATE on behalf of a guest
/// that was running before the frontend reconnected (a restarted daemon). A daemon that never
/// ran the port adopts the ring positions in the guest's CSB ([`crate::sync::HostKring::resume`]);
/// otherwise it is CREATE. Outside netmap's command range (1, 2) on purpose.
pub const PTCTL_RESUME: u32 = 0x8000_0001;
/// errno for an unknown PTCTL command.
pub const EINVAL: u32 = 22;
/// errno for CREATE without both CSB arrays mapped.
pub const ENXIO: u32 = 6;

/// Splits a MAC address into the (MAC_LO, MAC_HI) register values.
pub const fn mac_to_regs(mac: [u8; 6]) -> (u32, u32) {
    let lo = (mac[2] as u32) << 24 | (mac[3] as u32) << 16 | (mac[4] as u32) << 8 | mac[5] as u32;
    let hi = (mac[0] as u32) << 8 | mac[1] as u32;
    (lo, hi)
}

/// Joins (MAC_LO, MAC_HI) register values into a MAC address.
pub const fn mac_from_regs(lo: u32, hi: u32) -> [u8; 6] {
    [
        (hi >> 8) as u8,
        hi as u8,
        (lo >> 24) as u8,
        (lo >> 16) as u8,
        (lo >> 8) as u8,
        lo as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ptnet register file in the order of netmap's `PTNET_IO_*` list, one 32-bit register
    /// each (the stock drivers read them with 32-bit I/O accesses): the compiler computes each
    /// register's offset from the order alone.
    #[repr(C)]
    struct PtnetIo {
        ptfeat: u32,
        ptctl: u32,
        mac_lo: u32,
        mac_hi: u32,
        csbbah: u32,
        csbbal: u32,
        nifp_ofs: u32,
        num_tx_rings: u32,
        num_rx_rings: u32,
        num_tx_slots: u32,
        num_rx_slots: u32,
        vnet_hdr_len: u32,
        hostmemid: u32,
        csb_gh_bah: u32,
        csb_gh_bal: u32,
        csb_hg_bah: u32,
        csb_hg_bal: u32,
        end: [u32; 0],
    }

    /// The ptnetmap-memdev registers (`PTNET_MDEV_IO_*`): three 32-bit registers, then the pool
    /// descriptions from byte 64.
    #[repr(C)]
    struct MemdevIo {
        memsize_lo: u32,
        memsize_hi: u32,
        memid: u32,
        reserved: [u32; 13],
        if_pool_ofs: u32,
        if_pool_objnum: u32,
        if_pool_objsz: u32,
        ring_pool_ofs: u32,
        ring_pool_objnum: u32,
        ring_pool_objsz: u32,
        buf_pool_ofs: u32,
        buf_pool_objnum: u32,
        buf_pool_objsz: u32,
        end: [u32; 0],
    }

    #[test]
    fn ptnet_register_offsets() {
        use ptnet::*;
        use std::mem::offset_of;
        let expected = [
            (PTFEAT, offset_of!(PtnetIo, ptfeat)),
            (PTCTL, offset_of!(PtnetIo, ptctl)),
            (MAC_LO, offset_of!(PtnetIo, mac_lo)),
            (MAC_HI, offset_of!(PtnetIo, mac_hi)),
            (CSBBAH, offset_of!(PtnetIo, csbbah)),
            (CSBBAL, offset_of!(PtnetIo, csbbal)),
            (NIFP_OFS, offset_of!(PtnetIo, nifp_ofs)),
            (NUM_TX_RINGS, offset_of!(PtnetIo, num_tx_rings)),
            (NUM_RX_RINGS, offset_of!(PtnetIo, num_rx_rings)),
            (NUM_TX_SLOTS, offset_of!(PtnetIo, num_tx_slots)),
            (NUM_RX_SLOTS, offset_of!(PtnetIo, num_rx_slots)),
            (VNET_HDR_LEN, offset_of!(PtnetIo, vnet_hdr_len)),
            (HOSTMEMID, offset_of!(PtnetIo, hostmemid)),
            (CSB_GH_BAH, offset_of!(PtnetIo, csb_gh_bah)),
            (CSB_GH_BAL, offset_of!(PtnetIo, csb_gh_bal)),
            (CSB_HG_BAH, offset_of!(PtnetIo, csb_hg_bah)),
            (CSB_HG_BAL, offset_of!(PtnetIo, csb_hg_bal)),
            (END, offset_of!(PtnetIo, end)),
        ];
        for (ours, c) in expected {
            assert_eq!(ours as usize, c);
        }
        // Kick registers: one 32-bit register per ring after the first 128 bytes.
        assert_eq!(kick(0), KICK_BASE);
        assert_eq!(kick(31) - kick(0), 31 * 4);
        const { assert!(END <= KICK_BASE) };
    }

    #[test]
    fn memdev_register_offsets() {
        use memdev::*;
        use std::mem::offset_of;
        let expected = [
            (MEMSIZE_LO, offset_of!(MemdevIo, memsize_lo)),
            (MEMSIZE_HI, offset_of!(MemdevIo, memsize_hi)),
            (MEMID, offset_of!(MemdevIo, memid)),
            (IF_POOL_OFS, offset_of!(MemdevIo, if_pool_ofs)),
            (IF_POOL_OBJNUM, offset_of!(MemdevIo, if_pool_objnum)),
            (IF_POOL_OBJSZ, offset_of!(MemdevIo, if_pool_objsz)),
            (RING_POOL_OFS, offset_of!(MemdevIo, ring_pool_ofs)),
            (RING_POOL_OBJNUM, offset_of!(MemdevIo, ring_pool_objnum)),
            (RING_POOL_OBJSZ, offset_of!(MemdevIo, ring_pool_objsz)),
            (BUF_POOL_OFS, offset_of!(MemdevIo, buf_pool_ofs)),
            (BUF_POOL_OBJNUM, offset_of!(MemdevIo, buf_pool_objnum)),
            (BUF_POOL_OBJSZ, offset_of!(MemdevIo, buf_pool_objsz)),
            (END, offset_of!(MemdevIo, end)),
        ];
        for (ours, c) in expected {
            assert_eq!(ours as usize, c);
        }
    }

    #[test]
    fn mac_registers_round_trip() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let (lo, hi) = mac_to_regs(mac);
        assert_eq!(lo, 0x0012_3456);
        assert_eq!(hi, 0x5254);
        assert_eq!(mac_from_regs(lo, hi), mac);
    }
}
