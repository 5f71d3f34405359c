//! The request ABI of kernel netmap (NETMAP_API 14: `NIOCCTRL` and `struct nmreq_header`), as
//! `sys/net/netmap.h` in luigirizzo/netmap lays it out (the version with
//! `NETMAP_REQ_OPT_SYNC_KLOOP_MODE` and host ring counts in `nmreq_register`). Plain `repr(C)`
//! data; the tests pin every size and offset to the header's numbers on x86-64. The calls that
//! hand these to the kernel are in `kernel/sys.rs`.

/// The netmap device.
pub const DEV_NETMAP: &str = "/dev/netmap";
/// The API version this code speaks.
pub const NETMAP_API: u16 = 14;
/// Size of `nmreq_header.nr_name`.
pub const NETMAP_REQ_IFNAMSIZ: usize = 64;

/// Request types (`nr_reqtype`).
pub mod req {
    /// Register a port (bind it to the control device).
    pub const REGISTER: u16 = 1;
    /// Port information.
    pub const PORT_INFO_GET: u16 = 2;
    /// Attach to a VALE switch.
    pub const VALE_ATTACH: u16 = 3;
    /// Detach from a VALE switch.
    pub const VALE_DETACH: u16 = 4;
    /// List a VALE switch.
    pub const VALE_LIST: u16 = 5;
    /// Set the port header length.
    pub const PORT_HDR_SET: u16 = 6;
    /// Get the port header length.
    pub const PORT_HDR_GET: u16 = 7;
    /// New persistent VALE port.
    pub const VALE_NEWIF: u16 = 8;
    /// Delete a persistent VALE port.
    pub const VALE_DELIF: u16 = 9;
    /// Enable VALE polling.
    pub const VALE_POLLING_ENABLE: u16 = 10;
    /// Disable VALE polling.
    pub const VALE_POLLING_DISABLE: u16 = 11;
    /// Memory pools information.
    pub const POOLS_INFO_GET: u16 = 12;
    /// Start the in-kernel sync loop (blocks until STOP).
    pub const SYNC_KLOOP_START: u16 = 13;
    /// Stop the in-kernel sync loop.
    pub const SYNC_KLOOP_STOP: u16 = 14;
    /// Enable CSB mode on a registered control device.
    pub const CSB_ENABLE: u16 = 15;
}

/// Option types (`nro_reqtype`).
pub mod opt {
    /// User-allocated memory.
    pub const EXTMEM: u32 = 1;
    /// Per-ring eventfds for the in-kernel loop.
    pub const SYNC_KLOOP_EVENTFDS: u32 = 2;
    /// CSB mode.
    pub const CSB: u32 = 3;
    /// Direct TX/RX mode of the in-kernel loop.
    pub const SYNC_KLOOP_MODE: u32 = 4;
}

/// `nr_mode` values.
pub mod mode {
    /// All hardware rings.
    pub const NR_REG_ALL_NIC: u32 = 1;
    /// Host rings only.
    pub const NR_REG_SW: u32 = 2;
    /// Hardware and host rings.
    pub const NR_REG_NIC_SW: u32 = 3;
    /// One hardware ring pair.
    pub const NR_REG_ONE_NIC: u32 = 4;
}

/// `nr_flags`: the application handles virtio-net headers.
pub const NR_ACCEPT_VNET_HDR: u64 = 0x8000;
/// `nmreq_opt_sync_kloop_mode.mode`: sync TX in the kick's context.
pub const NM_OPT_SYNC_KLOOP_DIRECT_TX: u32 = 1;
/// ... and RX.
pub const NM_OPT_SYNC_KLOOP_DIRECT_RX: u32 = 2;

/// `_IOWR('i', 151, struct nmreq_header)`.
pub const NIOCCTRL: libc::c_ulong = ioc(3, b'i', 151, std::mem::size_of::<NmreqHeader>());
/// `_IO('i', 148)`.
pub const NIOCTXSYNC: libc::c_ulong = ioc(0, b'i', 148, 0);
/// `_IO('i', 149)`.
pub const NIOCRXSYNC: libc::c_ulong = ioc(0, b'i', 149, 0);

/// Linux's `_IOC(dir, type, nr, size)`.
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}

/// `struct nmreq_header` (88 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NmreqHeader {
    /// API version.
    pub nr_version: u16,
    /// Request type.
    pub nr_reqtype: u16,
    /// Must be zero.
    pub nr_reserved: u32,
    /// Port name.
    pub nr_name: [u8; NETMAP_REQ_IFNAMSIZ],
    /// User pointer to the first option (`NmreqOption` header), 0 for none.
    pub nr_options: u64,
    /// User pointer to the request body.
    pub nr_body: u64,
}

impl NmreqHeader {
    /// A header for request `reqtype` on port `name` (truncated to 63 bytes).
    pub fn new(reqtype: u16, name: &str) -> Self {
        let mut nr_name = [0u8; NETMAP_REQ_IFNAMSIZ];
        let b = name.as_bytes();
        let n = b.len().min(NETMAP_REQ_IFNAMSIZ - 1);
        nr_name[..n].copy_from_slice(&b[..n]);
        Self {
            nr_version: NETMAP_API,
            nr_reqtype: reqtype,
            nr_reserved: 0,
            nr_name,
            nr_options: 0,
            nr_body: 0,
        }
    }
}

/// `struct nmreq_option` (24 bytes): the header of every option.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqOption {
    /// User pointer to the next option, 0 at the end.
    pub nro_next: u64,
    /// Option type.
    pub nro_reqtype: u32,
    /// Out: 0 if processed, else an errno.
    pub nro_status: u32,
    /// Size of variable-size options (whole option), 0 otherwise.
    pub nro_size: u64,
}

/// `struct nmreq_register` (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqRegister {
    /// Out: offset of the netmap_if in the memory.
    pub nr_offset: u64,
    /// Out: memory size.
    pub nr_memsize: u64,
    /// Slots per TX ring.
    pub nr_tx_slots: u32,
    /// Slots per RX ring.
    pub nr_rx_slots: u32,
    /// TX rings.
    pub nr_tx_rings: u16,
    /// RX rings.
    pub nr_rx_rings: u16,
    /// Host TX rings.
    pub nr_host_tx_rings: u16,
    /// Host RX rings.
    pub nr_host_rx_rings: u16,
    /// Memory allocator id.
    pub nr_mem_id: u16,
    /// Ring id (with NR_REG_ONE_NIC).
    pub nr_ringid: u16,
    /// NR_REG_* mode.
    pub nr_mode: u32,
    /// Extra buffers wanted.
    pub nr_extra_bufs: u32,
    /// NR_* flags.
    pub nr_flags: u64,
}

/// `struct nmreq_opt_csb` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqOptCsb {
    /// Option header (type CSB).
    pub nro_opt: NmreqOption,
    /// User pointer to the application-to-kernel array (`nm_csb_atok`, 64 bytes per ring).
    pub csb_atok: u64,
    /// User pointer to the kernel-to-application array (`nm_csb_ktoa`).
    pub csb_ktoa: u64,
}

/// One entry of `nmreq_opt_sync_kloop_eventfds.eventfds[]` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KloopEventfds {
    /// Application-to-kernel notifier (the guest's kick), or -1.
    pub ioeventfd: i32,
    /// Kernel-to-application notifier (the guest's interrupt), or -1.
    pub irqfd: i32,
}

/// `struct nmreq_opt_sync_kloop_mode` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqOptSyncKloopMode {
    /// Option header (type SYNC_KLOOP_MODE).
    pub nro_opt: NmreqOption,
    /// NM_OPT_SYNC_KLOOP_DIRECT_* bits.
    pub mode: u32,
}

/// `struct nmreq_sync_kloop_start` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqSyncKloopStart {
    /// Sleep between iterations when there is no work (0: sleep on the eventfds).
    pub sleep_us: u32,
    /// Padding.
    pub pad1: u32,
}

/// `nmreq_opt_sync_kloop_eventfds` with its array: the option header followed by one
/// [`KloopEventfds`] per ring, in one buffer (`nro_size` = the whole size).
pub fn kloop_eventfds_option(fds: &[KloopEventfds]) -> Vec<u64> {
    let bytes = std::mem::size_of::<NmreqOption>() + fds.len() * 8;
    let mut words = vec![0u64; bytes / 8];
    words[1] = u64::from(opt::SYNC_KLOOP_EVENTFDS); // nro_reqtype (low half), nro_status 0
    words[2] = bytes as u64; // nro_size
    for (i, e) in fds.iter().enumerate() {
        words[3 + i] = u64::from(e.ioeventfd as u32) | (u64::from(e.irqfd as u32) << 32);
    }
    words
}

/// `struct nmreq_pools_info` (64 bytes): where the pools lie in the port's memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NmreqPoolsInfo {
    /// Out: memory size.
    pub nr_memsize: u64,
    /// In/out: memory allocator id.
    pub nr_mem_id: u16,
    /// Padding.
    pub pad1: [u16; 3],
    /// Interface pool offset.
    pub nr_if_pool_offset: u64,
    /// Interface pool object count.
    pub nr_if_pool_objtotal: u32,
    /// Interface pool object size.
    pub nr_if_pool_objsize: u32,
    /// Ring pool offset.
    pub nr_ring_pool_offset: u64,
    /// Ring pool object count.
    pub nr_ring_pool_objtotal: u32,
    /// Ring pool object size.
    pub nr_ring_pool_objsize: u32,
    /// Buffer pool offset.
    pub nr_buf_pool_offset: u64,
    /// Buffer pool object count.
    pub nr_buf_pool_objtotal: u32,
    /// Buffer pool object size.
    pub nr_buf_pool_objsize: u32,
}

/// `nr_flags`: exclusive use of the bound rings (CSB mode requires it).
pub const NR_EXCLUSIVE: u64 = 0x800;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_netmap_h() {
        assert_eq!(size_of::<NmreqHeader>(), 88);
        assert_eq!(offset_of!(NmreqHeader, nr_version), 0);
        assert_eq!(offset_of!(NmreqHeader, nr_reqtype), 2);
        assert_eq!(offset_of!(NmreqHeader, nr_reserved), 4);
        assert_eq!(offset_of!(NmreqHeader, nr_name), 8);
        assert_eq!(offset_of!(NmreqHeader, nr_options), 72);
        assert_eq!(offset_of!(NmreqHeader, nr_body), 80);

        assert_eq!(size_of::<NmreqOption>(), 24);
        assert_eq!(offset_of!(NmreqOption, nro_reqtype), 8);
        assert_eq!(offset_of!(NmreqOption, nro_status), 12);
        assert_eq!(offset_of!(NmreqOption, nro_size), 16);

        assert_eq!(size_of::<NmreqRegister>(), 56);
        assert_eq!(offset_of!(NmreqRegister, nr_offset), 0);
        assert_eq!(offset_of!(NmreqRegister, nr_memsize), 8);
        assert_eq!(offset_of!(NmreqRegister, nr_tx_slots), 16);
        assert_eq!(offset_of!(NmreqRegister, nr_rx_slots), 20);
        assert_eq!(offset_of!(NmreqRegister, nr_tx_rings), 24);
        assert_eq!(offset_of!(NmreqRegister, nr_rx_rings), 26);
        assert_eq!(offset_of!(NmreqRegister, nr_host_tx_rings), 28);
        assert_eq!(offset_of!(NmreqRegister, nr_host_rx_rings), 30);
        assert_eq!(offset_of!(NmreqRegister, nr_mem_id), 32);
        assert_eq!(offset_of!(NmreqRegister, nr_ringid), 34);
        assert_eq!(offset_of!(NmreqRegister, nr_mode), 36);
        assert_eq!(offset_of!(NmreqRegister, nr_extra_bufs), 40);
        assert_eq!(offset_of!(NmreqRegister, nr_flags), 48);

        assert_eq!(size_of::<NmreqOptCsb>(), 40);
        assert_eq!(offset_of!(NmreqOptCsb, csb_atok), 24);
        assert_eq!(offset_of!(NmreqOptCsb, csb_ktoa), 32);

        assert_eq!(size_of::<NmreqOptSyncKloopMode>(), 32);
        assert_eq!(offset_of!(NmreqOptSyncKloopMode, mode), 24);
        assert_eq!(size_of::<NmreqSyncKloopStart>(), 8);
        assert_eq!(size_of::<KloopEventfds>(), 8);

        assert_eq!(size_of::<NmreqPoolsInfo>(), 64);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_memsize), 0);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_mem_id), 8);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_if_pool_offset), 16);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_if_pool_objtotal), 24);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_if_pool_objsize), 28);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_ring_pool_offset), 32);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_ring_pool_objtotal), 40);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_ring_pool_objsize), 44);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_buf_pool_offset), 48);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_buf_pool_objtotal), 56);
        assert_eq!(offset_of!(NmreqPoolsInfo, nr_buf_pool_objsize), 60);
    }

    #[test]
    fn ioctl_numbers_and_request_types() {
        assert_eq!(NIOCCTRL, 0xc058_6997);
        assert_eq!(NIOCTXSYNC, 0x6994);
        assert_eq!(NIOCRXSYNC, 0x6995);
        assert_eq!(
            (req::REGISTER, req::POOLS_INFO_GET, req::SYNC_KLOOP_START),
            (1, 12, 13)
        );
        assert_eq!((req::SYNC_KLOOP_STOP, req::CSB_ENABLE), (14, 15));
        assert_eq!(
            (
                opt::EXTMEM,
                opt::SYNC_KLOOP_EVENTFDS,
                opt::CSB,
                opt::SYNC_KLOOP_MODE
            ),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn header_and_eventfds_encode_as_netmap_reads_them() {
        let h = NmreqHeader::new(req::REGISTER, "netmap:eth0");
        assert_eq!(h.nr_version, 14);
        assert_eq!(&h.nr_name[..12], b"netmap:eth0\0");
        let long = "x".repeat(100);
        assert_eq!(NmreqHeader::new(1, &long).nr_name[63], 0, "NUL-terminated");

        let o = kloop_eventfds_option(&[
            KloopEventfds {
                ioeventfd: 5,
                irqfd: 6,
            },
            KloopEventfds {
                ioeventfd: -1,
                irqfd: 7,
            },
        ]);
        let bytes: Vec<u8> = o.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(bytes.len(), 24 + 16);
        assert_eq!(&bytes[0..8], &[0; 8], "nro_next");
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(bytes[16..24].try_into().unwrap()), 40);
        let i32_at = |o: usize| i32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        assert_eq!(
            (i32_at(24), i32_at(28), i32_at(32), i32_at(36)),
            (5, 6, -1, 7)
        );
    }
}
