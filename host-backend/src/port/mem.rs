//! The userspace netmap memory allocator: one memfd per memory, laid out as netmap lays out its
//! own: the interface pool at offset 0, the ring pool after it, the buffer pool after that
//! (page-aligned), buffers 0 and 1 reserved. Offsets inside are relative to each object, so the
//! same bytes make sense to the daemon, to QEMU and to the guest, wherever each maps them.

use crate::sys::MappedFile;
use ptnet_protocol::device::PortGeometry;
use ptnet_protocol::netmap::{
    nif, ring, BufPool, IfView, RingView, DEFAULT_BUF_SIZE, RESERVED_BUFS,
};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Largest netmap memory we build: it must fit a 32-bit BAR with room to spare.
pub const MAX_MEM_SIZE: usize = 1 << 30;

const PAGE: usize = 4096;

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Allocator ids: netmap's global allocator is 1; every private memory gets its own.
static NEXT_MEM_ID: AtomicU32 = AtomicU32::new(2);

/// One interface (netmap_if) to lay out in a memory.
#[derive(Clone, Debug)]
pub struct IfSpec {
    /// Name written into `ni_name`.
    pub name: String,
    /// TX rings.
    pub tx_rings: u32,
    /// RX rings.
    pub rx_rings: u32,
    /// Slots per TX ring.
    pub tx_slots: u32,
    /// Slots per RX ring.
    pub rx_slots: u32,
}

/// Where one interface's objects are.
#[derive(Clone, Debug)]
pub struct IfLayout {
    /// Offset of the netmap_if.
    pub nifp_offset: usize,
    /// Spec it was built from.
    pub spec: IfSpec,
    /// Offset of each ring, TX rings first.
    pub ring_offsets: Vec<usize>,
}

/// A netmap memory region with its layout.
#[derive(Debug)]
pub struct NetmapMemory {
    id: u32,
    map: MappedFile,
    ifs: Vec<IfLayout>,
    if_pool: (u32, u32, u32),
    ring_pool: (u32, u32, u32),
    buf_pool: (u32, u32, u32),
    bufs: BufPool,
    /// A port of this memory started its rings, or an old memory was copied in: from then on the
    /// memory is live and is never overwritten by [`NetmapMemory::restore_from`].
    live: AtomicBool,
    /// The contents came from a previous daemon (see [`NetmapMemory::restore_from`]).
    restored: AtomicBool,
}

impl NetmapMemory {
    /// Builds a memory holding `ifs`, every ring filled with its own buffers.
    pub fn new(label: &str, ifs: &[IfSpec]) -> io::Result<Self> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        // Every netmap_if also holds the offsets of one placeholder host ring per direction.
        let max_ring_ofs = ifs
            .iter()
            .map(|i| nif::ring_ofs_count(i.tx_rings, i.rx_rings))
            .max()
            .unwrap_or(0);
        let max_slots = ifs
            .iter()
            .map(|i| i.tx_slots.max(i.rx_slots))
            .max()
            .unwrap_or(0);
        let if_objsz = round_up(nif::size(max_ring_ofs), 64);
        let ring_objsz = round_up(ring::size(max_slots), 64);
        let nrings: usize = ifs.iter().map(|i| (i.tx_rings + i.rx_rings) as usize).sum();
        let nslots: usize = ifs
            .iter()
            .map(|i| (i.tx_rings * i.tx_slots + i.rx_rings * i.rx_slots) as usize)
            .sum();
        let if_pool_size = if_objsz * ifs.len();
        let ring_pool_ofs = if_pool_size;
        let buf_pool_ofs = round_up(ring_pool_ofs + ring_objsz * nrings, PAGE);
        let nbufs = RESERVED_BUFS as usize + nslots;
        let buf_size = DEFAULT_BUF_SIZE as usize;
        let size = round_up(buf_pool_ofs + nbufs * buf_size, PAGE);
        if size > MAX_MEM_SIZE {
            return Err(invalid(format!(
                "{label}: netmap memory of {size} bytes is over the {MAX_MEM_SIZE}-byte limit; use fewer rings or slots"
            )));
        }
        let map = MappedFile::memfd(&format!("netmap:{label}"), size)?;
        let mem = map.mem();
        let bufs = BufPool::new(
            mem.sub(buf_pool_ofs, nbufs * buf_size)
                .expect("pool inside memory"),
            nbufs as u32,
            buf_size as u32,
        )
        .expect("pool geometry");
        let mut layouts = Vec::with_capacity(ifs.len());
        let mut next_ring = 0usize;
        let mut next_buf = RESERVED_BUFS;
        for (k, spec) in ifs.iter().enumerate() {
            let nifp_offset = k * if_objsz;
            let mut ring_offsets = Vec::new();
            let rings = (0..spec.tx_rings)
                .map(|r| (r, ring::DIR_TX, spec.tx_slots))
                .chain((0..spec.rx_rings).map(|r| (r, ring::DIR_RX, spec.rx_slots)));
            for (r, dir, slots) in rings {
                let off = ring_pool_ofs + next_ring * ring_objsz;
                next_ring += 1;
                let view =
                    RingView::new(mem.sub(off, ring::size(slots)).expect("ring inside"), slots)
                        .expect("ring geometry");
                // TX rings start with every slot but one free for the application; RX rings empty.
                let tail = if dir == ring::DIR_TX { slots - 1 } else { 0 };
                view.init_header(
                    (buf_pool_ofs - off) as i64,
                    buf_size as u32,
                    r as u16,
                    dir,
                    tail,
                );
                for s in 0..slots {
                    view.set_buf_idx(s, next_buf);
                    view.set_len(s, 0);
                    view.set_flags(s, 0);
                    next_buf += 1;
                }
                ring_offsets.push(off);
            }
            let ofs: Vec<i64> = ring_offsets
                .iter()
                .map(|&o| o as i64 - nifp_offset as i64)
                .collect();
            let ifv =
                IfView::new(mem.sub(nifp_offset, if_objsz).expect("if inside")).expect("if fits");
            let (tx_ofs, rx_ofs) = ofs.split_at(spec.tx_rings as usize);
            ifv.init(&spec.name, nif::FLAG_PRIVATE_MEM, tx_ofs, rx_ofs);
            layouts.push(IfLayout {
                nifp_offset,
                spec: spec.clone(),
                ring_offsets,
            });
        }
        Ok(Self {
            id: NEXT_MEM_ID.fetch_add(1, Ordering::Relaxed),
            map,
            ifs: layouts,
            if_pool: (0, ifs.len() as u32, if_objsz as u32),
            ring_pool: (ring_pool_ofs as u32, nrings as u32, ring_objsz as u32),
            buf_pool: (buf_pool_ofs as u32, nbufs as u32, buf_size as u32),
            bufs,
            live: AtomicBool::new(false),
            restored: AtomicBool::new(false),
        })
    }

    /// A port of this memory starts its rings: the memory is live.
    pub fn mark_live(&self) {
        self.live.store(true, Ordering::SeqCst);
    }

    /// Did the contents come from a previous daemon?
    pub fn restored(&self) -> bool {
        self.restored.load(Ordering::SeqCst)
    }

    /// After a daemon restart, a frontend hands back the memory the previous daemon gave it
    /// (vhost-user SET_INFLIGHT_FD): the guest's buffers, slots and ring headers. If this memory
    /// has not gone live yet and `old` has exactly its layout (every netmap_if and every ring
    /// header field the allocator writes), its bytes are copied over ours, and the guest finds
    /// its packets where it left them (netmap's pkt-gen, for one, writes its frames once and only
    /// moves the ring afterwards). Returns whether it copied; `Err` names the first difference.
    /// The contents are the guest's own (its port memory); nothing of another port's can come
    /// this way, as only this port's frontends ever received this memory.
    pub fn restore_from(&self, old: &ptnet_protocol::shmem::SharedMem) -> Result<bool, String> {
        let mem = self.map.mem();
        if old.len() < mem.len() {
            return Err(format!(
                "{} bytes, the port's memory has {}",
                old.len(),
                mem.len()
            ));
        }
        if self.live.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let old = old.sub(0, mem.len()).expect("checked above");
        for (k, l) in self.ifs.iter().enumerate() {
            let (mine, theirs) = (
                IfView::new(
                    mem.sub(l.nifp_offset, self.if_pool.2 as usize)
                        .expect("inside"),
                )
                .expect("fits"),
                IfView::new(
                    old.sub(l.nifp_offset, self.if_pool.2 as usize)
                        .expect("inside"),
                )
                .expect("fits"),
            );
            let n = nif::ring_ofs_count(l.spec.tx_rings, l.spec.rx_rings);
            let same_if = mine.name() == theirs.name()
                && (mine.tx_rings(), mine.rx_rings()) == (theirs.tx_rings(), theirs.rx_rings())
                && (0..n).all(|i| mine.ring_ofs(i) == theirs.ring_ofs(i));
            if !same_if {
                return Err(format!(
                    "interface {k} ('{}') is laid out otherwise",
                    mine.name()
                ));
            }
            for r in 0..l.spec.tx_rings + l.spec.rx_rings {
                let a = self.ring(k, r);
                let off = l.ring_offsets[r as usize];
                let b = RingView::new(
                    old.sub(off, ring::size(a.num_slots())).expect("inside"),
                    a.num_slots(),
                )
                .expect("fits");
                let fields =
                    |v: &RingView| (v.num_slots_field(), v.nr_buf_size(), v.buf_ofs(), v.dir());
                if fields(&a) != fields(&b) {
                    return Err(format!(
                        "ring {r} of '{}' is laid out otherwise",
                        mine.name()
                    ));
                }
            }
        }
        if self
            .live
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(false);
        }
        let copied = mem.copy_from(0, &old, 0, mem.len());
        self.restored.store(copied, Ordering::SeqCst);
        Ok(copied)
    }

    /// Allocator id (HOSTMEMID / MEMID).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.map.mem().len()
    }

    /// The memfd, for SHMEM_MAP.
    pub fn file(&self) -> &std::fs::File {
        self.map.file()
    }

    /// The buffer pool.
    pub fn bufs(&self) -> &BufPool {
        &self.bufs
    }

    /// Layout of interface `k`.
    pub fn interface(&self, k: usize) -> &IfLayout {
        &self.ifs[k]
    }

    /// Ring `r` (TX first) of interface `k`.
    pub fn ring(&self, k: usize, r: u32) -> RingView {
        let l = &self.ifs[k];
        let slots = if r < l.spec.tx_rings {
            l.spec.tx_slots
        } else {
            l.spec.rx_slots
        };
        let off = l.ring_offsets[r as usize];
        RingView::new(
            self.map
                .mem()
                .sub(off, ring::size(slots))
                .expect("ring inside"),
            slots,
        )
        .expect("ring geometry")
    }

    /// What the config space tells a frontend about interface `k`.
    pub fn geometry(&self, k: usize, features: u32, mac: [u8; 6]) -> PortGeometry {
        let l = &self.ifs[k];
        PortGeometry {
            features,
            mac,
            nifp_offset: l.nifp_offset as u32,
            num_tx_rings: l.spec.tx_rings,
            num_rx_rings: l.spec.rx_rings,
            num_tx_slots: l.spec.tx_slots,
            num_rx_slots: l.spec.rx_slots,
            mem_id: self.id,
            mem_size: self.size() as u64,
            if_pool: self.if_pool,
            ring_pool: self.ring_pool,
            buf_pool: self.buf_pool,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(name: &str, t: u32, r: u32, slots: u32) -> IfSpec {
        IfSpec {
            name: name.into(),
            tx_rings: t,
            rx_rings: r,
            tx_slots: slots,
            rx_slots: slots,
        }
    }

    #[test]
    fn layout_matches_netmap() {
        let m = NetmapMemory::new("t", &[spec("a", 2, 1, 64), spec("b", 1, 1, 32)]).unwrap();
        let g = m.geometry(1, 0, [0; 6]);
        assert_eq!(g.if_pool.0, 0, "interface pool first");
        assert!(
            g.ring_pool.0 >= g.if_pool.1 * g.if_pool.2,
            "ring pool after interfaces"
        );
        assert!(g.buf_pool.0 >= g.ring_pool.0 + g.ring_pool.1 * g.ring_pool.2);
        assert_eq!(g.buf_pool.0 % 4096, 0);
        assert_eq!(g.buf_pool.1, 2 + 3 * 64 + 2 * 32);
        assert_eq!(g.buf_pool.2, 2048);
        assert_eq!(g.mem_size as usize, m.size());
        assert!(g.buf_pool.0 as u64 + g.buf_pool.1 as u64 * 2048 <= g.mem_size);
        assert_eq!(g.nifp_offset, m.interface(1).nifp_offset as u32);
        assert_eq!((g.num_tx_rings, g.num_rx_rings, g.num_tx_slots), (1, 1, 32));
    }

    /// Every NIC ring of a netmap_if, found as libnetmap finds it and as a ptnet guest kernel
    /// does (`netmap_mem_pt_guest_rings_create`), TX rings first.
    fn rings_both_ways(m: &NetmapMemory, k: usize) -> Vec<(usize, usize)> {
        let l = m.interface(k);
        let mem = m.map.mem();
        let ifv = IfView::new(mem.sub(l.nifp_offset, 4096).unwrap()).unwrap();
        let (t, r) = (l.spec.tx_rings, l.spec.rx_rings);
        let at = |ofs: Option<i64>| (l.nifp_offset as i64 + ofs.unwrap()) as usize;
        (0..t)
            .map(|i| (at(ifv.ring_ofs(i)), at(ifv.ring_ofs(i))))
            .chain((0..r).map(|i| {
                (
                    at(ifv.rx_ring_ofs_libnetmap(i)),
                    at(ifv.rx_ring_ofs_kernel(t, i)),
                )
            }))
            .collect()
    }

    #[test]
    fn rings_are_reachable_from_the_netmap_if_and_own_distinct_buffers() {
        let m = NetmapMemory::new("t", &[spec("a", 2, 2, 16)]).unwrap();
        let mem = m.map.mem();
        let ifv = IfView::new(mem.sub(0, 1024).unwrap()).unwrap();
        assert_eq!(ifv.name(), "a");
        assert_eq!(
            (ifv.tx_rings(), ifv.rx_rings(), ifv.flags()),
            (2, 2, nif::FLAG_PRIVATE_MEM)
        );
        assert_eq!((ifv.host_tx_rings(), ifv.host_rx_rings()), (1, 1));
        let mut seen = HashSet::new();
        for (r, (off, _)) in rings_both_ways(&m, 0).into_iter().enumerate() {
            let ring = RingView::new(mem.sub(off, ring::size(16)).unwrap(), 16).unwrap();
            assert_eq!(ring.num_slots_field(), 16);
            assert_eq!(ring.dir(), if r < 2 { ring::DIR_TX } else { ring::DIR_RX });
            assert_eq!(ring.tail(), if r < 2 { 15 } else { 0 });
            // buf_ofs leads from the ring to the buffer pool.
            assert_eq!(
                off as i64 + ring.buf_ofs(),
                m.geometry(0, 0, [0; 6]).buf_pool.0 as i64
            );
            for s in 0..16 {
                let b = ring.buf_idx(s);
                assert!(m.bufs().valid(b));
                assert!(seen.insert(b), "buffer {b} in two slots");
            }
        }
    }

    /// The stock guest kernel and libnetmap must land on the same rings, every ring its own,
    /// none of them the netmap_if, for every geometry (two interfaces in one memory, as a pipe).
    #[test]
    fn stock_guest_and_libnetmap_find_the_same_rings() {
        for tx in 1..=16 {
            for rx in [1, tx, 17 - tx] {
                let m =
                    NetmapMemory::new("g", &[spec("a", tx, rx, 8), spec("b", tx, rx, 8)]).unwrap();
                for k in 0..2 {
                    let l = m.interface(k);
                    let found = rings_both_ways(&m, k);
                    let want: Vec<_> = l.ring_offsets.iter().map(|&o| (o, o)).collect();
                    assert_eq!(found, want, "{tx}+{rx} rings, interface {k}");
                    let ring_pool = m.geometry(k, 0, [0; 6]).ring_pool.0 as usize;
                    assert!(found.iter().all(|&(o, _)| o >= ring_pool));
                }
            }
        }
    }

    /// A guest that moves its RX rings' head, cur and tail where the stock formula finds them
    /// leaves every netmap_if byte as the allocator wrote it.
    #[test]
    fn a_stock_guest_writing_its_rx_rings_never_touches_the_netmap_if() {
        for (tx, rx) in [(1, 1), (2, 2), (4, 1), (1, 4)] {
            let m = NetmapMemory::new("w", &[spec("a", tx, rx, 8)]).unwrap();
            let mem = m.map.mem();
            let if_len = m.geometry(0, 0, [0; 6]).if_pool.2 as usize;
            let mut before = vec![0u8; if_len];
            mem.read(0, &mut before);
            let ifv = IfView::new(mem.sub(0, if_len).unwrap()).unwrap();
            for i in 0..rx {
                let off = ifv.rx_ring_ofs_kernel(tx, i).unwrap() as usize;
                let ring = RingView::new(mem.sub(off, ring::size(8)).unwrap(), 8).unwrap();
                ring.set_head(5);
                ring.set_cur(6);
                ring.set_tail(7);
            }
            let mut after = vec![0u8; if_len];
            mem.read(0, &mut after);
            assert_eq!(before, after, "{tx}+{rx} rings");
        }
    }

    #[test]
    fn ids_are_distinct_and_size_is_bounded() {
        let a = NetmapMemory::new("a", &[spec("a", 1, 1, 8)]).unwrap();
        let b = NetmapMemory::new("b", &[spec("b", 1, 1, 8)]).unwrap();
        assert_ne!(a.id(), b.id());
        let big = spec("x", 16, 16, 8192);
        let err = NetmapMemory::new("big", &[big.clone(), big]).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
