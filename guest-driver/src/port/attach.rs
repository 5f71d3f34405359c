//! Bring-up: opening a port string, attaching to the device behind a transport in the order the
//! ptnet guest drivers use, and validating everything the device reports before trusting it.

use super::ring::RingState;
use super::{detach, Port, RingId};
use crate::error::RingProblem;
use crate::ring_id::Direction;
use crate::transport::{CsbArrays, Transport};
use crate::{Error, PortSpec};
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::netmap::{nif, ring, BufPool, IfView, RingView};
use ptnet_protocol::regs::{memdev, ptnet, PTCTL_CREATE, PTNETMAP_F_VNET_HDR};
use ptnet_protocol::shmem::SharedMem;

/// Largest slot count per ring we accept from a device (netmap's own limit is 16384... we allow
/// more, but keep indexes far from overflow).
const MAX_SLOTS: u32 = 1 << 20;

/// The port's shape as the registers give it.
struct Geometry {
    tx_rings: u32,
    rx_rings: u32,
    tx_slots: u32,
    rx_slots: u32,
}

impl Geometry {
    fn read(t: &mut dyn Transport) -> Result<Self, Error> {
        let g = Geometry {
            tx_rings: t.read_reg(ptnet::NUM_TX_RINGS)?,
            rx_rings: t.read_reg(ptnet::NUM_RX_RINGS)?,
            tx_slots: t.read_reg(ptnet::NUM_TX_SLOTS)?,
            rx_slots: t.read_reg(ptnet::NUM_RX_SLOTS)?,
        };
        let rings = g.tx_rings.checked_add(g.rx_rings);
        if g.tx_rings == 0 || g.rx_rings == 0 || rings.is_none_or(|n| n > ptnet::MAX_RINGS) {
            return Err(Error::RingCount {
                tx: g.tx_rings,
                rx: g.rx_rings,
                max: ptnet::MAX_RINGS,
            });
        }
        for (dir, slots) in [(Direction::Tx, g.tx_slots), (Direction::Rx, g.rx_slots)] {
            if !(2..=MAX_SLOTS).contains(&slots) {
                return Err(Error::SlotCount {
                    dir,
                    slots,
                    max: MAX_SLOTS,
                });
            }
        }
        Ok(g)
    }

    fn rings(&self) -> u32 {
        self.tx_rings + self.rx_rings
    }
}

/// The netmap memory as far as the memdev describes it, checked: the memory itself (MEMSIZE
/// bytes of what is mapped), the buffer pool in it, and the pool's offset.
struct Memory {
    mem: SharedMem,
    bufs: BufPool,
    buf_ofs: usize,
}

impl Memory {
    fn map(t: &mut dyn Transport) -> Result<Self, Error> {
        let mem_size = u64::from(t.read_memdev(memdev::MEMSIZE_HI)?) << 32
            | u64::from(t.read_memdev(memdev::MEMSIZE_LO)?);
        let buf_ofs = t.read_memdev(memdev::BUF_POOL_OFS)? as usize;
        let buf_num = t.read_memdev(memdev::BUF_POOL_OBJNUM)?;
        let buf_size = t.read_memdev(memdev::BUF_POOL_OBJSZ)?;
        let mapped = t.netmap_mem()?;
        let size = usize::try_from(mem_size)
            .ok()
            .filter(|&s| s > 0 && s <= mapped.len())
            .ok_or(Error::MemorySize {
                size: mem_size,
                available: mapped.len() as u64,
            })?;
        let mem = mapped.sub(0, size).expect("checked above");
        let bad_pool = Error::BufferPool {
            num: buf_num,
            size: buf_size,
            offset: buf_ofs,
            mem_size: size,
        };
        if buf_size < 64 || buf_num <= ptnet_protocol::netmap::RESERVED_BUFS {
            return Err(bad_pool);
        }
        let bufs = (buf_num as usize)
            .checked_mul(buf_size as usize)
            .and_then(|bytes| mem.sub(buf_ofs, bytes))
            .and_then(|m| BufPool::new(m, buf_num, buf_size))
            .ok_or(bad_pool)?;
        Ok(Memory { mem, bufs, buf_ofs })
    }
}

/// The view of ring `index` (TX rings first) of the netmap_if at `nifp_ofs`, checked against the
/// registers and the memdev.
fn ring_view(
    m: &Memory,
    nif_view: &IfView,
    nifp_ofs: usize,
    g: &Geometry,
    index: u32,
) -> Result<RingView, Error> {
    let host_tx = nif_view.host_tx_rings();
    let (is_tx, i, slots) = if index < g.tx_rings {
        (true, index, g.tx_slots)
    } else {
        (false, index - g.tx_rings, g.rx_slots)
    };
    let id = if is_tx { RingId::Tx(i) } else { RingId::Rx(i) };
    let bad = |problem| Error::BadRing { ring: id, problem };
    // ring_ofs order: NIC TX, host TX, NIC RX, host RX.
    let k = if is_tx { i } else { g.tx_rings + host_tx + i };
    let ofs = nif_view
        .ring_ofs(k)
        .ok_or(bad(RingProblem::OffsetOutside { index: k }))?;
    // A ptnet guest kernel finds RX ring i at ring_ofs[NUM_TX_RINGS + 1 + i] whatever
    // ni_host_tx_rings says: refuse a layout where the stock driver and we would use different
    // rings (it would write into whatever it found there).
    if !is_tx && nif_view.rx_ring_ofs_kernel(g.tx_rings, i) != Some(ofs) {
        return Err(bad(RingProblem::KernelLayout {
            libnetmap: k,
            kernel: g.tx_rings + 1 + i,
        }));
    }
    let addr = i64::try_from(nifp_ofs)
        .ok()
        .and_then(|n| n.checked_add(ofs))
        .and_then(|a| usize::try_from(a).ok())
        .ok_or(bad(RingProblem::Offset(ofs)))?;
    let view = m
        .mem
        .sub(addr, ring::size(slots))
        .and_then(|mem| RingView::new(mem, slots))
        .ok_or(bad(RingProblem::DoesNotFit { slots, addr }))?;
    let field = view.num_slots_field();
    if field != slots {
        return Err(bad(RingProblem::NumSlots {
            ring: field,
            regs: slots,
        }));
    }
    let want_dir = if is_tx { ring::DIR_TX } else { ring::DIR_RX };
    if view.dir() != want_dir {
        return Err(bad(RingProblem::Direction(view.dir())));
    }
    if view.nr_buf_size() != m.bufs.buf_size() {
        return Err(bad(RingProblem::BufSize {
            ring: view.nr_buf_size(),
            memdev: m.bufs.buf_size(),
        }));
    }
    if (addr as i64).checked_add(view.buf_ofs()) != Some(m.buf_ofs as i64) {
        return Err(bad(RingProblem::BufOfs {
            buf_ofs: view.buf_ofs(),
            pool: m.buf_ofs,
        }));
    }
    Ok(view)
}

/// PTFEAT, and VNET_HDR_LEN when the device offers the header: the header length the port uses.
fn negotiate_vnet_hdr(t: &mut dyn Transport, want: u32) -> Result<u32, Error> {
    let ask = if want == 0 { 0 } else { PTNETMAP_F_VNET_HDR };
    t.write_reg(ptnet::PTFEAT, ask)?;
    let feat = t.read_reg(ptnet::PTFEAT)?;
    if feat & !ask != 0 {
        return Err(Error::Features {
            wrote: ask,
            read: feat,
        });
    }
    if feat & PTNETMAP_F_VNET_HDR == 0 {
        return Ok(0);
    }
    t.write_reg(ptnet::VNET_HDR_LEN, want)?;
    match t.read_reg(ptnet::VNET_HDR_LEN)? {
        l @ (0 | 10 | 12) => Ok(l),
        l => Err(Error::VnetHdrLen(l)),
    }
}

/// The transport a port string designates.
fn transport_for(spec: &str) -> Result<Box<dyn Transport>, Error> {
    Ok(match PortSpec::parse(spec)? {
        PortSpec::VhostUser(path) => Box::new(
            crate::transport::vhost_user::VhostUserTransport::open(&path)?,
        ),
        PortSpec::Pci(sel) => crate::transport::pci::open(&sel)?,
        PortSpec::Packet(ifname) => {
            Box::new(crate::transport::packet::PacketTransport::open(&ifname)?)
        }
    })
}

impl Port {
    /// Opens a port: `vhost-user:PATH` (a `ptnet-backend` socket) or `ptnetN` /
    /// `ptnet:DDDD:BB:DD.F` (a ptnet PCI device inside a Linux guest). See [`PortSpec`] for the
    /// grammar.
    pub fn open(spec: &str) -> Result<Port, Error> {
        Port::attach(transport_for(spec)?)
    }

    /// Attaches to the device behind `transport`, in the order the ptnet guest drivers use, and
    /// starts the host sync loops (PTCTL CREATE). Frames carry no virtio-net header.
    pub fn attach(transport: Box<dyn Transport>) -> Result<Port, Error> {
        Self::attach_with_vnet_hdr(transport, 0)
    }

    /// Opens `spec` as [`Port::open`] does, asking for a virtio-net header of `want` bytes (see
    /// [`Port::attach_with_vnet_hdr`]).
    pub fn open_with_vnet_hdr(spec: &str, want: u32) -> Result<Port, Error> {
        Port::attach_with_vnet_hdr(transport_for(spec)?, want)
    }

    /// Attaches as [`Port::attach`], asking for a virtio-net header of `want` bytes (0, 10 or
    /// 12) in front of every frame, as netmap's stock driver does: PTFEAT `VNET_HDR` when the
    /// device offers it, then VNET_HDR_LEN, keeping what the device read back
    /// ([`Port::vnet_hdr_len`]: 0 on a port that carries no header).
    pub fn attach_with_vnet_hdr(
        mut transport: Box<dyn Transport>,
        want: u32,
    ) -> Result<Port, Error> {
        let t = transport.as_mut();
        let vnet_hdr_len = negotiate_vnet_hdr(t, want)?;
        let g = Geometry::read(t)?;

        // The CSB.
        let csb = t.alloc_csb(g.rings())?;
        program_csb(t, &csb)?;
        // From here on, failures unprogram the CSB.
        let mut guard = CsbGuard(Some(transport));
        let t = guard.0.as_mut().expect("set").as_mut();

        let mac = ptnet_protocol::regs::mac_from_regs(
            t.read_reg(ptnet::MAC_LO)?,
            t.read_reg(ptnet::MAC_HI)?,
        );
        let nifp_ofs = t.read_reg(ptnet::NIFP_OFS)? as usize;
        let host_mem_id = t.read_reg(ptnet::HOSTMEMID)?;

        // The memdev: identity, size and pools.
        let mem_id = t.read_memdev(memdev::MEMID)?;
        if mem_id != host_mem_id {
            return Err(Error::MemIdMismatch {
                memdev: mem_id,
                port: host_mem_id,
            });
        }
        let m = Memory::map(t)?;

        // The netmap_if and the rings.
        let mem_size = m.mem.len();
        let nif_view = m
            .mem
            .sub(nifp_ofs, nif::RING_OFS)
            .and_then(|_| m.mem.sub(nifp_ofs, mem_size - nifp_ofs))
            .and_then(IfView::new)
            .ok_or(Error::NifpOffset {
                offset: nifp_ofs,
                mem_size,
            })?;
        let (if_tx, if_rx) = (nif_view.tx_rings(), nif_view.rx_rings());
        if if_tx != g.tx_rings || if_rx != g.rx_rings {
            return Err(Error::IfRingCount {
                if_tx,
                if_rx,
                tx: g.tx_rings,
                rx: g.rx_rings,
            });
        }
        let host_tx = nif_view.host_tx_rings();
        if host_tx > ptnet::MAX_RINGS {
            return Err(Error::HostRings(host_tx));
        }
        let views = (0..g.rings())
            .map(|index| ring_view(&m, &nif_view, nifp_ofs, &g, index))
            .collect::<Result<Vec<_>, _>>()?;

        // Start the host.
        t.write_reg(ptnet::PTCTL, PTCTL_CREATE)?;
        let errno = t.read_reg(ptnet::PTCTL)?;
        if errno != 0 {
            return Err(Error::Ptctl {
                cmd: PTCTL_CREATE,
                errno,
            });
        }
        let rings = views
            .into_iter()
            .zip(0..)
            .map(|(view, index)| {
                let atok = Atok::new(&csb.atok, index).expect("CSB sized for every ring");
                let ktoa = Ktoa::new(&csb.ktoa, index).expect("CSB sized for every ring");
                RingState::attach(view, atok, ktoa, index)
            })
            .collect();
        let transport = guard.0.take().expect("set");
        Ok(Port {
            transport,
            mac,
            num_tx_rings: g.tx_rings,
            num_rx_rings: g.rx_rings,
            num_tx_slots: g.tx_slots,
            num_rx_slots: g.rx_slots,
            mem_id,
            bufs: m.bufs,
            rings,
            busy_poll: false,
            vnet_hdr_len,
            _csb: csb,
        })
    }
}

/// Writes the CSB arrays' guest-physical addresses into the four CSB registers.
fn program_csb(t: &mut dyn Transport, csb: &CsbArrays) -> Result<(), Error> {
    t.write_reg(ptnet::CSB_GH_BAH, (csb.atok_gpa >> 32) as u32)?;
    t.write_reg(ptnet::CSB_GH_BAL, csb.atok_gpa as u32)?;
    t.write_reg(ptnet::CSB_HG_BAH, (csb.ktoa_gpa >> 32) as u32)?;
    t.write_reg(ptnet::CSB_HG_BAL, csb.ktoa_gpa as u32)
}

/// Unprograms the CSB if attaching fails after it was programmed.
struct CsbGuard(Option<Box<dyn Transport>>);

impl Drop for CsbGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.as_mut() {
            detach(t.as_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mock::{Mock, BUF, SLOTS};
    use ptnet_protocol::regs::{mac_from_regs, PTCTL_DELETE};

    #[test]
    fn attach_follows_the_driver_order_and_detach_undoes_it() {
        let mock = Mock::new();
        let port = Port::attach(Box::new(mock.clone())).unwrap();
        assert_eq!(port.mac(), [2, 0, 0, 0, 0, 9]);
        assert_eq!((port.num_tx_rings(), port.num_rx_rings()), (1, 1));
        assert_eq!((port.num_tx_slots(), port.num_rx_slots()), (SLOTS, SLOTS));
        assert_eq!((port.buf_size(), port.mem_id()), (BUF, 7));
        assert_eq!(
            mock.writes(),
            vec![
                (ptnet::PTFEAT, 0),
                (ptnet::CSB_GH_BAH, 1),
                (ptnet::CSB_GH_BAL, 0x2000),
                (ptnet::CSB_HG_BAH, 1),
                (ptnet::CSB_HG_BAL, 0x3000),
                (ptnet::PTCTL, PTCTL_CREATE),
            ]
        );
        // The guest-to-host entries start aligned with the host's hwcur.
        assert_eq!(mock.atok(0).kernel_read(), (0, 0));
        // The netmap ring headers carry the application's view.
        assert_eq!(
            (mock.ring_view(0).head(), mock.ring_view(0).tail()),
            (0, SLOTS - 1)
        );
        drop(port);
        let w = mock.writes();
        assert_eq!(
            w[6..],
            [
                (ptnet::PTCTL, PTCTL_DELETE),
                (ptnet::CSB_GH_BAH, 0),
                (ptnet::CSB_GH_BAL, 0),
                (ptnet::CSB_HG_BAH, 0),
                (ptnet::CSB_HG_BAL, 0),
            ]
        );
        let st = mock.state.lock().unwrap();
        assert_eq!(
            mac_from_regs(st.cfg.get(8), st.cfg.get(12)),
            [2, 0, 0, 0, 0, 9]
        );
    }

    /// Attaching to `mock` fails with an error `check` accepts, and leaves the CSB unprogrammed.
    fn refused(mock: Mock, check: impl FnOnce(&Error) -> bool) {
        match Port::attach(Box::new(mock.clone())) {
            Err(e) => assert!(check(&e), "unexpected error: {e:?}"),
            Ok(p) => panic!("attached: {p:?}"),
        }
        let w = mock.writes();
        assert_eq!(w[w.len() - 4..], [(52, 0), (56, 0), (60, 0), (64, 0)]);
    }

    #[test]
    fn attach_refuses_bad_devices() {
        let m = Mock::new();
        m.set_memdev(memdev::MEMID, 8);
        refused(m, |e| {
            matches!(e, Error::MemIdMismatch { memdev: 8, port: 7 })
        });
        let m = Mock::new();
        let size = m.state.lock().unwrap().cfg.geometry().mem_size;
        m.set_memdev(memdev::MEMSIZE_LO, size as u32 + 4096);
        refused(
            m,
            |e| matches!(e, Error::MemorySize { size: s, available } if *s == size + 4096 && *available == size),
        );
        let m = Mock::new();
        m.set_memdev(memdev::BUF_POOL_OBJNUM, 100_000);
        refused(m, |e| {
            matches!(
                e,
                Error::BufferPool {
                    num: 100_000,
                    size: BUF,
                    ..
                }
            )
        });
        let m = Mock::new();
        let v = m.ring_view(0);
        v.init_header(v.buf_ofs() + 2048, BUF, 0, ring::DIR_TX, SLOTS - 1);
        refused(m, |e| {
            matches!(
                e,
                Error::BadRing {
                    ring: RingId::Tx(0),
                    problem: RingProblem::BufOfs { .. }
                }
            )
        });
        let m = Mock::new();
        m.ring_view(1).init_header(0, BUF, 0, ring::DIR_TX, 0);
        refused(
            m,
            |e| matches!(e, Error::BadRing { ring: RingId::Rx(0), problem: RingProblem::Direction(d) } if *d == ring::DIR_TX),
        );
        let m = Mock::new();
        m.state.lock().unwrap().cfg.set(ptnet::NIFP_OFS, 1 << 30);
        refused(
            m,
            |e| matches!(e, Error::NifpOffset { offset, .. } if *offset == 1 << 30),
        );
        // The layout this daemon had before: no host rings, [TX 0, RX 0]. libnetmap's formula
        // finds RX 0, a stock guest kernel's would find the netmap_if itself.
        let m = Mock::new();
        let nif_mem = m.mem.mem().sub(m.nifp, nif::size(4)).unwrap();
        let rx_ofs = nif_mem.load_u64(nif::RING_OFS + 16);
        nif_mem.store_u64(nif::RING_OFS + 8, rx_ofs);
        nif_mem.store_u64(nif::RING_OFS + 16, 0);
        for at in [nif::HOST_TX_RINGS, nif::HOST_RX_RINGS] {
            nif_mem.store_u32(at, 0, std::sync::atomic::Ordering::Relaxed);
        }
        refused(m, |e| {
            matches!(
                e,
                Error::BadRing {
                    ring: RingId::Rx(0),
                    problem: RingProblem::KernelLayout {
                        libnetmap: 1,
                        kernel: 2
                    }
                }
            )
        });

        // Before the CSB is programmed: nothing to undo.
        let m = Mock::new();
        m.state.lock().unwrap().cfg.set(ptnet::NUM_RX_RINGS, 40);
        assert!(matches!(
            Port::attach(Box::new(m.clone())),
            Err(Error::RingCount {
                tx: 1,
                rx: 40,
                max: ptnet::MAX_RINGS
            })
        ));
        assert_eq!(m.writes(), vec![(ptnet::PTFEAT, 0)]);

        // PTCTL CREATE failing.
        let m = Mock::new();
        m.state.lock().unwrap().ptctl_errno = 6;
        match Port::attach(Box::new(m.clone())) {
            Err(Error::Ptctl { cmd: 1, errno: 6 }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = Error::BadRing {
            ring: RingId::Rx(3),
            problem: RingProblem::NumSlots { ring: 4, regs: 8 },
        };
        assert_eq!(e.to_string(), "RX ring 3: num_slots 4, registers say 8");
        let e = Error::SlotCount {
            dir: Direction::Tx,
            slots: 1,
            max: MAX_SLOTS,
        };
        assert_eq!(e.to_string(), "1 slots per TX ring (2..=1048576 supported)");
    }
}
