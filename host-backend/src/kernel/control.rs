//! [`KernelNetmap`]: a kernel netmap port bound on its own `/dev/netmap` descriptor (REGISTER and
//! POOLS_INFO_GET when the daemon starts), what the ptnet registers say about it, and the CSB
//! arrays the kernel's loop syncs through while a frontend runs it.

use super::abi::{mode, NmreqPoolsInfo, NmreqRegister, NR_EXCLUSIVE};
pub use super::sys::Csb;
use super::sys::NetmapCtrl;
use crate::portspec::RingConf;
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::device::PortGeometry;
use std::fs::File;
use std::io;

/// A control device bound to one kernel netmap port (all its hardware rings, exclusively), whose
/// memory the frontend maps and whose rings the kernel's sync loop serves in CSB mode.
pub struct KernelNetmap {
    ctrl: NetmapCtrl,
    /// What the kernel answered to REGISTER.
    pub reg: NmreqRegister,
    /// Where the pools lie.
    pub pools: NmreqPoolsInfo,
}

impl KernelNetmap {
    /// Opens `/dev/netmap` and binds `nmport` (`netmap:eth0`, `vale0:1`, `netmap:p{1`, ...):
    /// all of its hardware rings, exclusively, with `conf`'s ring counts and sizes as a request
    /// (NICs keep their own). CSB mode is entered later, per frontend, by [`Self::enable_csb`].
    pub fn open(nmport: &str, conf: &RingConf) -> io::Result<Self> {
        let mut reg = register_request(conf);
        let name = kernel_port_name(nmport);
        let ctrl = NetmapCtrl::register(name, &mut reg)?;
        let mut pools = NmreqPoolsInfo {
            nr_mem_id: reg.nr_mem_id,
            ..Default::default()
        };
        ctrl.pools_info(name, &mut pools)?;
        Ok(Self { ctrl, reg, pools })
    }

    /// Per ring (TX first) while the kernel's loop runs: the guest's head and the kernel's
    /// hwcur and hwtail, from the CSB (the kernel keeps no counters we could read).
    pub fn csb_positions(&self) -> Option<Vec<(u32, u32, u32)>> {
        let csb = self.ctrl.csb()?;
        let (atok, ktoa) = (&csb.atok, &csb.ktoa);
        let rings = atok.len() / ptnet_protocol::csb::ENTRY_SIZE;
        Some(
            (0..rings as u32)
                .filter_map(|r| {
                    let (a, k) = (Atok::new(atok, r)?, Ktoa::new(ktoa, r)?);
                    let (hwtail, hwcur) = k.appl_read();
                    Some((a.kernel_read().0, hwcur, hwtail))
                })
                .collect(),
        )
    }

    /// The control device: SHMEM_MAP sends it; mapping it gives the port's memory.
    pub fn file(&self) -> &File {
        self.ctrl.file()
    }

    /// The port as the ptnet registers describe it.
    pub fn geometry(&self, mac: [u8; 6]) -> Result<PortGeometry, String> {
        let (r, p) = (&self.reg, &self.pools);
        let u32_of = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| {
                format!("the kernel's {what} ({v:#x}) does not fit the 32-bit register")
            })
        };
        Ok(PortGeometry {
            features: 0,
            mac,
            nifp_offset: u32_of(r.nr_offset, "netmap_if offset")?,
            num_tx_rings: u32::from(r.nr_tx_rings),
            num_rx_rings: u32::from(r.nr_rx_rings),
            num_tx_slots: r.nr_tx_slots,
            num_rx_slots: r.nr_rx_slots,
            mem_id: u32::from(r.nr_mem_id),
            mem_size: r.nr_memsize,
            if_pool: (
                u32_of(p.nr_if_pool_offset, "interface pool offset")?,
                p.nr_if_pool_objtotal,
                p.nr_if_pool_objsize,
            ),
            ring_pool: (
                u32_of(p.nr_ring_pool_offset, "ring pool offset")?,
                p.nr_ring_pool_objtotal,
                p.nr_ring_pool_objsize,
            ),
            buf_pool: (
                u32_of(p.nr_buf_pool_offset, "buffer pool offset")?,
                p.nr_buf_pool_objtotal,
                p.nr_buf_pool_objsize,
            ),
        })
    }

    /// Puts the bound rings in CSB mode with `csb`'s arrays (windows of guest memory mapped in
    /// the daemon, 64-byte aligned, one entry per ring, TX rings first), held until
    /// [`Self::release_csb`]. The kernel checks it can reach both, then initialises them from its
    /// ring state, as our own CREATE does.
    pub fn enable_csb(&self, csb: Csb) -> io::Result<()> {
        self.ctrl.csb_enable(csb)
    }

    /// Lets the arrays of [`Self::enable_csb`] go (once the loop is stopped, or never started):
    /// [`Self::csb_positions`] has nothing to show, and no loop starts until the next
    /// [`Self::enable_csb`].
    pub fn release_csb(&self) {
        self.ctrl.csb_release();
    }

    /// Runs the kernel's sync loop on the calling thread until [`Self::stop_kloop`]. `fds` has one
    /// entry per ring (TX rings first), matching the CSB arrays.
    pub fn run_kloop(&self, fds: &[super::abi::KloopEventfds], sleep_us: u32) -> io::Result<()> {
        self.ctrl.sync_kloop_start(fds, sleep_us)
    }

    /// Stops the kernel's sync loop (from another thread).
    pub fn stop_kloop(&self) -> io::Result<()> {
        self.ctrl.sync_kloop_stop()
    }
}

/// The name the kernel takes for an nmport name: `netmap:` is the userspace scope and is not
/// passed (`netmap:eth0` is `eth0`, `netmap:p{1` is `p{1`); VALE names go as they are.
pub(super) fn kernel_port_name(nmport: &str) -> &str {
    nmport.strip_prefix("netmap:").unwrap_or(nmport)
}

/// The REGISTER body: all hardware rings, exclusively (CSB mode is refused without
/// `NR_EXCLUSIVE`), asking for `conf`'s geometry (VALE ports and pipes take it; NICs keep theirs).
fn register_request(conf: &RingConf) -> NmreqRegister {
    NmreqRegister {
        nr_mode: mode::NR_REG_ALL_NIC,
        nr_flags: NR_EXCLUSIVE,
        nr_tx_rings: u16::try_from(conf.tx_rings).unwrap_or(u16::MAX),
        nr_rx_rings: u16::try_from(conf.rx_rings).unwrap_or(u16::MAX),
        nr_tx_slots: conf.tx_slots,
        nr_rx_slots: conf.rx_slots,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(reg: NmreqRegister, pools: NmreqPoolsInfo) -> KernelNetmap {
        KernelNetmap {
            ctrl: NetmapCtrl::unregistered(File::open("/dev/null").unwrap()),
            reg,
            pools,
        }
    }

    #[test]
    fn registers_come_from_the_kernel_answers() {
        let reg = NmreqRegister {
            nr_offset: 0x1_2340,
            nr_memsize: 0x1000_0000,
            nr_tx_slots: 512,
            nr_rx_slots: 1024,
            nr_tx_rings: 4,
            nr_rx_rings: 2,
            nr_mem_id: 3,
            ..Default::default()
        };
        let pools = NmreqPoolsInfo {
            nr_memsize: 0x1000_0000,
            nr_mem_id: 3,
            nr_if_pool_offset: 0,
            nr_if_pool_objtotal: 100,
            nr_if_pool_objsize: 1024,
            nr_ring_pool_offset: 0x19000,
            nr_ring_pool_objtotal: 200,
            nr_ring_pool_objsize: 36864,
            nr_buf_pool_offset: 0x71_0000,
            nr_buf_pool_objtotal: 163840,
            nr_buf_pool_objsize: 2048,
            ..Default::default()
        };
        let g = answered(reg, pools).geometry([2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(
            (g.nifp_offset, g.mem_size, g.mem_id),
            (0x1_2340, 0x1000_0000, 3)
        );
        assert_eq!((g.num_tx_rings, g.num_rx_rings), (4, 2));
        assert_eq!((g.num_tx_slots, g.num_rx_slots), (512, 1024));
        assert_eq!(g.if_pool, (0, 100, 1024));
        assert_eq!(g.ring_pool, (0x19000, 200, 36864));
        assert_eq!(g.buf_pool, (0x71_0000, 163840, 2048));
        assert_eq!(g.mac, [2, 0, 0, 0, 0, 1]);

        // Offsets past 4 GiB cannot be told through the 32-bit registers: refused, not cut.
        let far = NmreqPoolsInfo {
            nr_buf_pool_offset: 1 << 32,
            ..pools
        };
        let e = answered(reg, far).geometry([0; 6]).unwrap_err();
        assert!(e.contains("buffer pool offset"), "{e}");
    }

    #[test]
    fn the_kernel_gets_names_without_the_netmap_scope() {
        assert_eq!(kernel_port_name("netmap:eth0"), "eth0");
        assert_eq!(kernel_port_name("netmap:p{1"), "p{1");
        assert_eq!(kernel_port_name("netmap:p}1"), "p}1");
        assert_eq!(kernel_port_name("vale0:vm1"), "vale0:vm1");
    }

    #[test]
    fn register_request_asks_exclusive_access_to_all_hardware_rings() {
        let conf = RingConf {
            tx_rings: 2,
            rx_rings: 3,
            tx_slots: 256,
            rx_slots: 512,
        };
        let r = register_request(&conf);
        assert_eq!(r.nr_flags, 0x800, "NR_EXCLUSIVE and nothing else");
        assert_eq!(r.nr_mode, 1, "NR_REG_ALL_NIC");
        assert_eq!((r.nr_tx_rings, r.nr_rx_rings), (2, 3));
        assert_eq!((r.nr_tx_slots, r.nr_rx_slots), (256, 512));
        assert_eq!(
            (r.nr_offset, r.nr_memsize, r.nr_mem_id),
            (0, 0, 0),
            "outputs start zeroed"
        );
    }
}
