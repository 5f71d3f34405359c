//! The vhost-user device contract between a ptnet frontend (our QEMU patch, or the driver's
//! `vhost-user` transport) and `ptnet-backend`.
//!
//! Only standard vhost-user messages are used:
//!
//! | need | message |
//! |---|---|
//! | features | GET/SET_FEATURES (only `VHOST_USER_F_PROTOCOL_FEATURES`), GET/SET_PROTOCOL_FEATURES ([`PROTOCOL_FEATURES`]) |
//! | ring count | GET_QUEUE_NUM = TX rings + RX rings; queue `i` is netmap ring `i` (TX rings first) |
//! | registers the guest reads | GET_CONFIG of the [`PtnetConfig`] image ([`CONFIG_SIZE`] bytes) |
//! | registers the guest writes | SET_CONFIG of 4 bytes at the register's offset, with REPLY_ACK |
//! | guest memory (the CSB lives there) | SET_MEM_TABLE; CSB addresses are guest-physical |
//! | netmap memory into the guest | GET_SHMEM_CONFIG (one region, id 0) and, after SET_BACKEND_REQ_FD is acked, one SHMEM_MAP from the daemon (shmid 0, offsets 0, the port's memory fd, read-write, no reply requested) |
//! | kicks and interrupts | SET_VRING_KICK / SET_VRING_CALL for queue `i` = ring `i` |
//! | start and stop | PTCTL CREATE / DELETE written through SET_CONFIG; a disconnect is an implicit DELETE |
//! | a restart under a running guest | SET_INFLIGHT_FD with the port memory a previous daemon gave (see below), then PTCTL RESUME ([`crate::regs::PTCTL_RESUME`]) |
//!
//! ## The config space
//!
//! The config space is an image of both register blocks, so a frontend forwards guest register
//! accesses without interpreting them:
//!
//! * bytes `0..68`: the ptnet NIC registers at their BAR0 offsets ([`crate::regs::ptnet`]).
//!   Reads of PTFEAT return the offered features until the guest writes PTFEAT, the accepted ones
//!   after. PTCTL returns the result of the last command. MAC_LO/MAC_HI carry a MAC the daemon
//!   chose; a frontend with its own MAC (QEMU's `mac=`) answers those two itself.
//! * bytes `128..228`: the memdev registers, at `MEMDEV_CONFIG_BASE + offset`
//!   ([`crate::regs::memdev`]).
//! * everything else reads 0.
//!
//! Writes go through SET_CONFIG with exactly 4 bytes at a writable register offset: PTFEAT, PTCTL,
//! VNET_HDR_LEN, CSB_GH_BAH, CSB_GH_BAL, CSB_HG_BAH, CSB_HG_BAL. Other offsets are refused. A PTCTL
//! write runs the command before the SET_CONFIG is acknowledged; its result is then read at offset
//! PTCTL with GET_CONFIG.
//!
//! ## Reconnection
//!
//! The daemon keeps each port's rings across connections. A frontend that reconnects replays
//! SET_MEM_TABLE, the kick and call fds, the CSB addresses, PTFEAT and VNET_HDR_LEN, then RESUME
//! if its guest had the port running.
//!
//! A daemon that restarted has a fresh port memory and no ring state, while the guest kept both
//! (and a stock guest never reloads its positions). So with INFLIGHT_SHMFD negotiated, the
//! "inflight" region of a ptnet device is its port memory: GET_INFLIGHT_FD returns the port's
//! memory fd, and a frontend that reconnects sends the memory it has been mapping (the previous
//! daemon's, sealed) with SET_INFLIGHT_FD before RESUME. A daemon whose copy of that memory has
//! not gone live copies it in when the layout is the same, and RESUME then takes the positions
//! from the CSB over the guest's own buffers and rings; without it, RESUME starts the rings at
//! the CSB's positions over empty buffers.

use crate::regs::{memdev, ptnet};

/// Size of the config space exchanged with GET_CONFIG (QEMU's limit is 256 bytes).
pub const CONFIG_SIZE: usize = 256;
/// Where the memdev register block starts inside the config space.
pub const MEMDEV_CONFIG_BASE: u32 = 128;
/// `VHOST_USER_F_PROTOCOL_FEATURES`, the only virtio feature bit the device uses.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// vhost-user protocol feature bits the daemon offers.
pub mod protocol_features {
    /// VHOST_USER_PROTOCOL_F_MQ.
    pub const MQ: u64 = 1 << 0;
    /// VHOST_USER_PROTOCOL_F_REPLY_ACK.
    pub const REPLY_ACK: u64 = 1 << 3;
    /// VHOST_USER_PROTOCOL_F_BACKEND_REQ.
    pub const BACKEND_REQ: u64 = 1 << 5;
    /// VHOST_USER_PROTOCOL_F_CONFIG.
    pub const CONFIG: u64 = 1 << 9;
    /// VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD: for ptnet, the "inflight" region is the port's
    /// netmap memory (GET_INFLIGHT_FD hands it out, SET_INFLIGHT_FD gives it back to a
    /// restarted daemon; see the crate's `device` docs).
    pub const INFLIGHT_SHMFD: u64 = 1 << 12;
    /// VHOST_USER_PROTOCOL_F_RESET_DEVICE.
    pub const RESET_DEVICE: u64 = 1 << 13;
    /// VHOST_USER_PROTOCOL_F_SHMEM.
    pub const SHMEM: u64 = 1 << 22;
}

/// Everything the daemon offers and a frontend must accept.
pub const PROTOCOL_FEATURES: u64 = protocol_features::MQ
    | protocol_features::REPLY_ACK
    | protocol_features::BACKEND_REQ
    | protocol_features::CONFIG
    | protocol_features::RESET_DEVICE
    | protocol_features::SHMEM
    | protocol_features::INFLIGHT_SHMFD;

/// Shared memory region id of the netmap memory in GET_SHMEM_CONFIG and SHMEM_MAP.
pub const NETMAP_SHMEM_ID: u8 = 0;

// The NIC block ends before the memdev block starts, and the memdev block inside the space.
const _: () = assert!(ptnet::END <= MEMDEV_CONFIG_BASE);
const _: () = assert!(MEMDEV_CONFIG_BASE + memdev::END <= CONFIG_SIZE as u32);

/// Offsets (in the config space) a frontend may write with SET_CONFIG.
pub const WRITABLE_REGISTERS: [u32; 7] = [
    ptnet::PTFEAT,
    ptnet::PTCTL,
    ptnet::VNET_HDR_LEN,
    ptnet::CSB_GH_BAH,
    ptnet::CSB_GH_BAL,
    ptnet::CSB_HG_BAH,
    ptnet::CSB_HG_BAL,
];

/// The device's config space: an image of the ptnet and memdev register blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PtnetConfig {
    bytes: [u8; CONFIG_SIZE],
}

impl Default for PtnetConfig {
    fn default() -> Self {
        Self {
            bytes: [0; CONFIG_SIZE],
        }
    }
}

/// Static description of a port, as the config space tells it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PortGeometry {
    /// Features the port offers (PTFEAT bits).
    pub features: u32,
    /// MAC address the daemon suggests.
    pub mac: [u8; 6],
    /// Offset of the port's `netmap_if` in the netmap memory.
    pub nifp_offset: u32,
    /// Number of TX rings.
    pub num_tx_rings: u32,
    /// Number of RX rings.
    pub num_rx_rings: u32,
    /// Slots per TX ring.
    pub num_tx_slots: u32,
    /// Slots per RX ring.
    pub num_rx_slots: u32,
    /// Memory allocator id.
    pub mem_id: u32,
    /// Netmap memory size in bytes.
    pub mem_size: u64,
    /// Interface pool (offset, object count, object size).
    pub if_pool: (u32, u32, u32),
    /// Ring pool (offset, object count, object size).
    pub ring_pool: (u32, u32, u32),
    /// Buffer pool (offset, object count, object size).
    pub buf_pool: (u32, u32, u32),
}

impl PortGeometry {
    /// Total number of rings (TX + RX), i.e. the vhost-user queue count.
    pub fn num_rings(&self) -> u32 {
        self.num_tx_rings + self.num_rx_rings
    }
}

impl PtnetConfig {
    /// Builds the config space of a port that nobody has configured yet.
    pub fn new(geo: &PortGeometry) -> Self {
        let mut c = Self::default();
        let (mac_lo, mac_hi) = crate::regs::mac_to_regs(geo.mac);
        c.set(ptnet::PTFEAT, geo.features);
        c.set(ptnet::MAC_LO, mac_lo);
        c.set(ptnet::MAC_HI, mac_hi);
        c.set(ptnet::NIFP_OFS, geo.nifp_offset);
        c.set(ptnet::NUM_TX_RINGS, geo.num_tx_rings);
        c.set(ptnet::NUM_RX_RINGS, geo.num_rx_rings);
        c.set(ptnet::NUM_TX_SLOTS, geo.num_tx_slots);
        c.set(ptnet::NUM_RX_SLOTS, geo.num_rx_slots);
        c.set(ptnet::HOSTMEMID, geo.mem_id);
        let m = |r: u32| MEMDEV_CONFIG_BASE + r;
        c.set(m(memdev::MEMSIZE_LO), geo.mem_size as u32);
        c.set(m(memdev::MEMSIZE_HI), (geo.mem_size >> 32) as u32);
        c.set(m(memdev::MEMID), geo.mem_id);
        let pools = [
            (memdev::IF_POOL_OFS, geo.if_pool),
            (memdev::RING_POOL_OFS, geo.ring_pool),
            (memdev::BUF_POOL_OFS, geo.buf_pool),
        ];
        for (reg, (ofs, num, sz)) in pools {
            c.set(m(reg), ofs);
            c.set(m(reg + 4), num);
            c.set(m(reg + 8), sz);
        }
        c
    }

    /// Parses a config space read with GET_CONFIG. Short input is zero-extended.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut c = Self::default();
        let n = bytes.len().min(CONFIG_SIZE);
        c.bytes[..n].copy_from_slice(&bytes[..n]);
        c
    }

    /// The raw bytes, as sent in a GET_CONFIG reply.
    pub fn as_bytes(&self) -> &[u8; CONFIG_SIZE] {
        &self.bytes
    }

    /// Reads the 32-bit register at config offset `off` (0 outside the config space or unaligned).
    pub fn get(&self, off: u32) -> u32 {
        let off = off as usize;
        if !off.is_multiple_of(4) || off + 4 > CONFIG_SIZE {
            return 0;
        }
        u32::from_le_bytes(self.bytes[off..off + 4].try_into().expect("4 bytes"))
    }

    /// Stores the 32-bit register at config offset `off`. Offsets outside the space are ignored.
    pub fn set(&mut self, off: u32, value: u32) {
        let off = off as usize;
        if off.is_multiple_of(4) && off + 4 <= CONFIG_SIZE {
            self.bytes[off..off + 4].copy_from_slice(&value.to_le_bytes());
        }
    }

    /// The memdev register `reg` ([`crate::regs::memdev`]).
    pub fn memdev(&self, reg: u32) -> u32 {
        self.get(MEMDEV_CONFIG_BASE + reg)
    }

    /// The geometry this config space describes.
    pub fn geometry(&self) -> PortGeometry {
        let m = |r: u32| self.memdev(r);
        PortGeometry {
            features: self.get(ptnet::PTFEAT),
            mac: crate::regs::mac_from_regs(self.get(ptnet::MAC_LO), self.get(ptnet::MAC_HI)),
            nifp_offset: self.get(ptnet::NIFP_OFS),
            num_tx_rings: self.get(ptnet::NUM_TX_RINGS),
            num_rx_rings: self.get(ptnet::NUM_RX_RINGS),
            num_tx_slots: self.get(ptnet::NUM_TX_SLOTS),
            num_rx_slots: self.get(ptnet::NUM_RX_SLOTS),
            mem_id: self.get(ptnet::HOSTMEMID),
            mem_size: u64::from(m(memdev::MEMSIZE_HI)) << 32 | u64::from(m(memdev::MEMSIZE_LO)),
            if_pool: (
                m(memdev::IF_POOL_OFS),
                m(memdev::IF_POOL_OBJNUM),
                m(memdev::IF_POOL_OBJSZ),
            ),
            ring_pool: (
                m(memdev::RING_POOL_OFS),
                m(memdev::RING_POOL_OBJNUM),
                m(memdev::RING_POOL_OBJSZ),
            ),
            buf_pool: (
                m(memdev::BUF_POOL_OFS),
                m(memdev::BUF_POOL_OBJNUM),
                m(memdev::BUF_POOL_OBJSZ),
            ),
        }
    }

    /// The CSB addresses the guest programmed: (guest-to-host, host-to-guest).
    pub fn csb_addresses(&self) -> (u64, u64) {
        let join = |hi: u32, lo: u32| u64::from(self.get(hi)) << 32 | u64::from(self.get(lo));
        (
            join(ptnet::CSB_GH_BAH, ptnet::CSB_GH_BAL),
            join(ptnet::CSB_HG_BAH, ptnet::CSB_HG_BAL),
        )
    }
}

/// Is `off` a register a frontend may write?
pub fn is_writable_register(off: u32) -> bool {
    WRITABLE_REGISTERS.contains(&off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> PortGeometry {
        PortGeometry {
            features: 1,
            mac: [2, 0, 0, 0, 0, 7],
            nifp_offset: 0x100,
            num_tx_rings: 2,
            num_rx_rings: 3,
            num_tx_slots: 1024,
            num_rx_slots: 512,
            mem_id: 9,
            mem_size: 0x1_2345_6000,
            if_pool: (0, 2, 1024),
            ring_pool: (2048, 10, 16640),
            buf_pool: (168448, 4096, 2048),
        }
    }

    #[test]
    fn config_round_trips_geometry() {
        let g = geometry();
        let c = PtnetConfig::new(&g);
        assert_eq!(c.geometry(), g);
        assert_eq!(PtnetConfig::from_bytes(c.as_bytes()), c);
        assert_eq!(g.num_rings(), 5);
    }

    #[test]
    fn config_places_registers_at_their_bar_offsets() {
        let c = PtnetConfig::new(&geometry());
        assert_eq!(c.as_bytes()[28..32], 2u32.to_le_bytes());
        assert_eq!(c.as_bytes()[32..36], 3u32.to_le_bytes());
        assert_eq!(c.as_bytes()[48..52], 9u32.to_le_bytes());
        assert_eq!(c.as_bytes()[128..132], 0x2345_6000u32.to_le_bytes());
        assert_eq!(c.as_bytes()[132..136], 1u32.to_le_bytes());
        assert_eq!(c.as_bytes()[128 + 92..128 + 96], 4096u32.to_le_bytes());
        assert_eq!(c.as_bytes()[128 + 96..128 + 100], 2048u32.to_le_bytes());
        // Nothing is stored past the register blocks.
        assert!(c.as_bytes()[ptnet::END as usize..128]
            .iter()
            .all(|&b| b == 0));
        assert!(c.as_bytes()[228..].iter().all(|&b| b == 0));
    }

    #[test]
    fn get_and_set_ignore_out_of_range_and_unaligned() {
        let mut c = PtnetConfig::default();
        c.set(254, 7);
        c.set(256, 7);
        c.set(3, 7);
        assert_eq!(c, PtnetConfig::default());
        assert_eq!(c.get(256), 0);
        assert_eq!(c.get(u32::MAX), 0);
        assert_eq!(c.get(2), 0);
    }

    #[test]
    fn csb_addresses_join_halves() {
        let mut c = PtnetConfig::default();
        c.set(ptnet::CSB_GH_BAH, 1);
        c.set(ptnet::CSB_GH_BAL, 0x1000);
        c.set(ptnet::CSB_HG_BAH, 0);
        c.set(ptnet::CSB_HG_BAL, 0x2000);
        assert_eq!(c.csb_addresses(), (0x1_0000_1000, 0x2000));
    }

    #[test]
    fn writable_registers() {
        for off in [0, 4, 44, 52, 56, 60, 64] {
            assert!(is_writable_register(off), "{off}");
        }
        for off in [8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 68, 128, 132] {
            assert!(!is_writable_register(off), "{off}");
        }
        assert_eq!(PROTOCOL_FEATURES, 0x0040_3229);
    }
}
