//! A ptnet device in plain memory for the port's unit tests: registers from
//! `ptnet_protocol::device::PtnetConfig`, a netmap memory laid out as a daemon would, a CSB, and a
//! host that does nothing unless the test acts for it.

use crate::transport::{CsbArrays, Transport};
use crate::Error;
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::device::{PortGeometry, PtnetConfig};
use ptnet_protocol::netmap::{ring, BufPool, IfView, RingView};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE};
use ptnet_protocol::shmem::{OwnedMem, SharedMem};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const SLOTS: u32 = 8;
pub(crate) const BUF: u32 = 2048;
const CSB_GPA: u64 = 0x1_0000_2000;

/// What the mock device records and lets a test change.
pub(crate) struct MockState {
    pub(crate) cfg: PtnetConfig,
    pub(crate) writes: Vec<(u32, u32)>,
    pub(crate) ptctl_errno: u32,
}

/// A ptnet device in plain memory, with a host that does nothing unless the test acts.
#[derive(Clone)]
pub(crate) struct Mock {
    pub(crate) state: Arc<Mutex<MockState>>,
    pub(crate) mem: Arc<OwnedMem>,
    /// Where this device's netmap_if is in `mem`.
    pub(crate) nifp: usize,
    pub(crate) csb: Arc<OwnedMem>,
    pub(crate) kicks: Arc<AtomicU32>,
    pub(crate) rings: u32,
}

impl Mock {
    /// One TX and one RX ring of SLOTS slots; nifp at 0, rings after it, then the buffers.
    pub(crate) fn new() -> Self {
        Self::sharing_memory(1).remove(0)
    }

    /// `ports` devices (one TX and one RX ring of SLOTS slots each) in one netmap memory,
    /// as the two ends of a netmap pipe: netmap_ifs every 512 bytes from 0, then the rings
    /// (port after port), then the buffers.
    pub(crate) fn sharing_memory(ports: u32) -> Vec<Self> {
        let (tx, rx) = (1, 1);
        let ring_pool = (ports as usize * 512).max(1024);
        let ring_size = ring::size(SLOTS).next_multiple_of(64);
        let nrings = 2 * ports;
        let buf_pool = (ring_pool + nrings as usize * ring_size).next_multiple_of(4096);
        let nbufs = 2 + nrings * SLOTS + 4;
        let mem_size = buf_pool + (nbufs * BUF) as usize;
        let mem = Arc::new(OwnedMem::new(mem_size));
        let m = mem.mem();
        let mut mocks = Vec::new();
        for p in 0..ports {
            let nifp = if ports == 1 { 0 } else { p as usize * 512 };
            let mut ofs = Vec::new();
            for r in 0..2u32 {
                let k = 2 * p + r;
                let addr = ring_pool + k as usize * ring_size;
                let view = RingView::new(m.sub(addr, ring::size(SLOTS)).unwrap(), SLOTS).unwrap();
                let (dir, tail) = if r == 0 {
                    (ring::DIR_TX, SLOTS - 1)
                } else {
                    (ring::DIR_RX, 0)
                };
                view.init_header(buf_pool as i64 - addr as i64, BUF, 0, dir, tail);
                for i in 0..SLOTS {
                    view.set_buf_idx(i, 2 + k * SLOTS + i);
                }
                ofs.push(addr as i64 - nifp as i64);
            }
            let if_len = if ports == 1 { 1024 } else { 512 };
            IfView::new(m.sub(nifp, if_len).unwrap()).unwrap().init(
                "mock",
                1,
                &ofs[..tx as usize],
                &ofs[tx as usize..],
            );
            let geo = PortGeometry {
                features: 1,
                mac: [2, 0, 0, 0, 0, 9 + p as u8],
                nifp_offset: nifp as u32,
                num_tx_rings: tx,
                num_rx_rings: rx,
                num_tx_slots: SLOTS,
                num_rx_slots: SLOTS,
                mem_id: 7,
                mem_size: mem_size as u64,
                if_pool: (0, ports, if_len as u32),
                ring_pool: (ring_pool as u32, nrings, ring_size as u32),
                buf_pool: (buf_pool as u32, nbufs, BUF),
            };
            mocks.push(Mock {
                state: Arc::new(Mutex::new(MockState {
                    cfg: PtnetConfig::new(&geo),
                    writes: Vec::new(),
                    ptctl_errno: 0,
                })),
                mem: mem.clone(),
                nifp,
                csb: Arc::new(OwnedMem::new(8192)),
                kicks: Arc::new(AtomicU32::new(0)),
                rings: tx + rx,
            });
        }
        mocks
    }

    pub(crate) fn set_memdev(&self, reg: u32, v: u32) {
        let mut st = self.state.lock().unwrap();
        st.cfg
            .set(ptnet_protocol::device::MEMDEV_CONFIG_BASE + reg, v);
    }

    pub(crate) fn ring_view(&self, k: u32) -> RingView {
        let m = self.mem.mem();
        let nif = IfView::new(m.sub(self.nifp, m.len() - self.nifp).unwrap()).unwrap();
        // Ring `k` of the port, TX rings first (not a `ring_ofs` index).
        let ofs = if k < nif.tx_rings() {
            nif.ring_ofs(k)
        } else {
            nif.rx_ring_ofs_libnetmap(k - nif.tx_rings())
        };
        let ofs = self.nifp + ofs.unwrap() as usize;
        RingView::new(self.mem.mem().sub(ofs, ring::size(SLOTS)).unwrap(), SLOTS).unwrap()
    }

    pub(crate) fn bufs(&self) -> BufPool {
        let st = self.state.lock().unwrap();
        let (ofs, num, sz) = st.cfg.geometry().buf_pool;
        BufPool::new(
            self.mem
                .mem()
                .sub(ofs as usize, (num * sz) as usize)
                .unwrap(),
            num,
            sz,
        )
        .unwrap()
    }

    pub(crate) fn atok(&self, ring: u32) -> Atok {
        Atok::new(&self.csb.mem(), ring).unwrap()
    }

    pub(crate) fn ktoa(&self, ring: u32) -> Ktoa {
        Ktoa::new(&self.csb.mem().sub(4096, 4096).unwrap(), ring).unwrap()
    }

    pub(crate) fn writes(&self) -> Vec<(u32, u32)> {
        self.state.lock().unwrap().writes.clone()
    }
}

impl Transport for Mock {
    fn read_reg(&mut self, off: u32) -> Result<u32, Error> {
        Ok(self.state.lock().unwrap().cfg.get(off))
    }

    fn write_reg(&mut self, off: u32, val: u32) -> Result<(), Error> {
        let mut st = self.state.lock().unwrap();
        st.writes.push((off, val));
        match off {
            ptnet::PTFEAT => {
                let offered = st.cfg.get(ptnet::PTFEAT);
                st.cfg.set(off, offered & val);
            }
            ptnet::PTCTL => {
                let errno = st.ptctl_errno;
                if val == PTCTL_CREATE && errno == 0 {
                    // Host-to-guest entries from the ring state; the host wants kicks.
                    self.ktoa(0).kernel_write(0, SLOTS - 1);
                    self.ktoa(1).kernel_write(0, 0);
                    self.ktoa(0).set_kern_need_kick(true);
                    self.ktoa(1).set_kern_need_kick(true);
                }
                st.cfg.set(off, errno);
            }
            _ => st.cfg.set(off, val),
        }
        Ok(())
    }

    fn read_memdev(&mut self, off: u32) -> Result<u32, Error> {
        Ok(self.state.lock().unwrap().cfg.memdev(off))
    }

    fn netmap_mem(&mut self) -> Result<SharedMem, Error> {
        Ok(self.mem.mem())
    }

    fn alloc_csb(&mut self, rings: u32) -> Result<CsbArrays, Error> {
        assert_eq!(rings, self.rings);
        let m = self.csb.mem();
        Ok(CsbArrays {
            atok: m.sub(0, 4096).unwrap(),
            atok_gpa: CSB_GPA,
            ktoa: m.sub(4096, 4096).unwrap(),
            ktoa_gpa: CSB_GPA + 4096,
        })
    }

    fn kick(&self, _ring: u32) {
        self.kicks.fetch_add(1, Ordering::Relaxed);
    }

    fn wait(&self, _ring: u32, timeout: Option<Duration>) -> Result<bool, Error> {
        std::thread::sleep(
            timeout
                .unwrap_or(Duration::from_millis(1))
                .min(Duration::from_millis(1)),
        );
        Ok(false)
    }

    fn name(&self) -> &str {
        "mock"
    }
}

/// The host side of a mock puts `frames` into RX ring 0 (slots from 0) and publishes them.
pub(crate) fn host_receives(mock: &Mock, frames: &[&[u8]]) {
    let view = mock.ring_view(1);
    let bufs = mock.bufs();
    for (i, f) in frames.iter().enumerate() {
        bufs.write(view.buf_idx(i as u32), 0, f);
        view.set_len(i as u32, f.len() as u16);
    }
    mock.ktoa(1).kernel_write(0, frames.len() as u32);
}

/// The frame in TX slot `i` of a mock, as the host would transmit it.
pub(crate) fn host_sees(mock: &Mock, i: u32) -> Vec<u8> {
    let view = mock.ring_view(0);
    let mut out = vec![0u8; view.len(i) as usize];
    assert!(mock.bufs().read(view.buf_idx(i), 0, &mut out));
    out
}
