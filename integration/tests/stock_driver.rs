//! The stock ptnet guest driver's accesses (`ptnet_protocol::conformance::STOCK_ACCESSES`)
//! modelled against a real daemon: a "stock guest" that attaches through the vhost-user
//! transport and then touches the device only as netmap's Linux driver does (its probe order,
//! its ring lookup, its CSB writes before CREATE, `ptnet_sync_from_csb` after it, its rxsync),
//! with none of our driver's own logic. What it finds is checked at every step, and at the end
//! the port's `netmap_if` must be byte for byte what the daemon wrote.

use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_driver::transport::{CsbArrays, Transport};
use ptnet_integration::host::{finish, spawn_pkt_gen};
use ptnet_integration::Backend;
use ptnet_protocol::conformance::{Access, Phase, Target, STOCK_ACCESSES};
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::netmap::{ring, IfView, RingView};
use ptnet_protocol::regs::{memdev, ptnet, PTCTL_CREATE, PTCTL_DELETE, PTNETMAP_F_VNET_HDR};
use ptnet_protocol::shmem::SharedMem;
use std::time::{Duration, Instant};

/// What the stock driver learnt at probe and CREATE.
struct StockGuest {
    t: VhostUserTransport,
    ntx: u32,
    nrx: u32,
    slots: [u32; 2],
    csb: CsbArrays,
    mem: SharedMem,
    nifp: usize,
    rings: Vec<RingView>,
    vnet_hdr_len: u32,
}

impl StockGuest {
    /// `ptnet_probe` and the memdev probe, in the stock driver's order.
    fn probe(sock: &std::path::Path) -> Self {
        let mut t = VhostUserTransport::open(sock).expect("vhost-user attach");
        t.write_reg(ptnet::PTFEAT, PTNETMAP_F_VNET_HDR).unwrap();
        let feat = t.read_reg(ptnet::PTFEAT).unwrap();
        assert_eq!(
            feat, PTNETMAP_F_VNET_HDR,
            "VALE and pipe ports offer VNET_HDR"
        );
        let ntx = t.read_reg(ptnet::NUM_TX_RINGS).unwrap();
        let nrx = t.read_reg(ptnet::NUM_RX_RINGS).unwrap();
        let csb = t.alloc_csb(ntx + nrx).unwrap();
        for (reg, v) in [
            (ptnet::CSB_GH_BAH, csb.atok_gpa >> 32),
            (ptnet::CSB_GH_BAL, csb.atok_gpa & 0xffff_ffff),
            (ptnet::CSB_HG_BAH, csb.ktoa_gpa >> 32),
            (ptnet::CSB_HG_BAL, csb.ktoa_gpa & 0xffff_ffff),
        ] {
            t.write_reg(reg, v as u32).unwrap();
        }
        let mac = (
            t.read_reg(ptnet::MAC_HI).unwrap(),
            t.read_reg(ptnet::MAC_LO).unwrap(),
        );
        assert_eq!(mac.0 >> 16, 0, "MAC_HI carries two bytes");
        let nifp = t.read_reg(ptnet::NIFP_OFS).unwrap() as usize;
        let slots = [
            t.read_reg(ptnet::NUM_TX_SLOTS).unwrap(),
            t.read_reg(ptnet::NUM_RX_SLOTS).unwrap(),
        ];
        let memid = t.read_reg(ptnet::HOSTMEMID).unwrap();
        let size = u64::from(t.read_memdev(memdev::MEMSIZE_HI).unwrap()) << 32
            | u64::from(t.read_memdev(memdev::MEMSIZE_LO).unwrap());
        assert_eq!(t.read_memdev(memdev::MEMID).unwrap(), memid);
        let mem = t.netmap_mem().unwrap();
        assert!(mem.len() as u64 >= size);
        Self {
            t,
            ntx,
            nrx,
            slots,
            csb,
            mem,
            nifp,
            rings: Vec::new(),
            vnet_hdr_len: 0,
        }
    }

    fn atok(&self, r: u32) -> Atok {
        Atok::new(&self.csb.atok, r).unwrap()
    }
    fn ktoa(&self, r: u32) -> Ktoa {
        Ktoa::new(&self.csb.ktoa, r).unwrap()
    }

    /// `netmap_mem_pt_guest_finalize` and `_rings_create`: the buffer pool from the memdev and
    /// every ring through the guest kernel's formula.
    fn find_rings(&mut self) {
        let pool = self.t.read_memdev(memdev::BUF_POOL_OFS).unwrap() as usize;
        let bufsz = self.t.read_memdev(memdev::BUF_POOL_OBJSZ).unwrap();
        let nbufs = self.t.read_memdev(memdev::BUF_POOL_OBJNUM).unwrap() as usize;
        assert!(pool + nbufs * bufsz as usize <= self.mem.len());
        let nif = IfView::new(self.mem.sub(self.nifp, 4096).unwrap()).unwrap();
        for r in 0..self.ntx + self.nrx {
            let (is_tx, i) = (r < self.ntx, r.checked_sub(self.ntx).unwrap_or(r));
            // ring_ofs[i] for TX, ring_ofs[netmap_all_rings(NR_TX) + i] for RX.
            let k = if is_tx { i } else { self.ntx + 1 + i };
            let ofs = nif.ring_ofs(k).unwrap();
            assert!(
                ofs > 0,
                "ring_ofs[{k}] = {ofs}: a stock guest would use the netmap_if"
            );
            let at = (self.nifp as i64 + ofs) as usize;
            let n = self.slots[usize::from(!is_tx)];
            let v = RingView::new(self.mem.sub(at, ring::size(n)).unwrap(), n).unwrap();
            assert_eq!(v.num_slots_field(), n, "ring {r}");
            assert_eq!(v.nr_buf_size(), bufsz, "ring {r}");
            let want_dir = if is_tx { 1 } else { 0 };
            assert_eq!(v.dir(), want_dir, "ring {r}: netmap's kring->tx");
            assert_eq!(at as i64 + v.buf_ofs(), pool as i64, "ring {r}: buf_ofs");
            self.rings.push(v);
        }
    }

    /// `ptnet_nm_register` (on): notifications, the header length, CREATE, then
    /// `ptnet_sync_from_csb`.
    fn create(&mut self) {
        for r in 0..self.ntx + self.nrx {
            self.atok(r).set_appl_need_kick(r >= self.ntx);
            self.ktoa(r).set_kern_need_kick(true);
        }
        self.t.write_reg(ptnet::VNET_HDR_LEN, 12).unwrap();
        self.vnet_hdr_len = self.t.read_reg(ptnet::VNET_HDR_LEN).unwrap();
        assert_eq!(
            self.vnet_hdr_len, 12,
            "a VALE/pipe port takes the 12-byte header"
        );
        self.t.write_reg(ptnet::PTCTL, PTCTL_CREATE).unwrap();
        assert_eq!(self.t.read_reg(ptnet::PTCTL).unwrap(), 0, "CREATE");
        for r in 0..self.ntx + self.nrx {
            let (a, k) = (self.atok(r), self.ktoa(r));
            let (head, cur) = a.kernel_read();
            let (hwtail, hwcur) = k.appl_read();
            // netmap_csb_validate: appl_need_kick 1 and sync_flags 1 whatever the guest wrote.
            assert!(a.appl_need_kick(), "ring {r}: appl_need_kick after CREATE");
            assert_eq!(a.sync_flags(), 1, "ring {r}: sync_flags after CREATE");
            // (kern_need_kick is 1 too, until the ring's host loop decides it needs no kicks.)
            assert_eq!((head, cur), (hwcur, hwcur), "ring {r}");
            let want_tail = if r < self.ntx { self.slots[0] - 1 } else { 0 };
            assert_eq!((hwcur, hwtail), (0, want_tail), "ring {r}");
            let v = &self.rings[r as usize];
            v.set_head(head);
            v.set_cur(cur);
            v.set_tail(hwtail);
        }
    }

    /// One `netmap_pt_guest_rxsync` on RX ring `i` that releases everything received, after
    /// reading the frames' lengths. Returns the lengths.
    fn rx_all(&mut self, i: u32) -> Vec<u16> {
        let r = self.ntx + i;
        let (a, k) = (self.atok(r), self.ktoa(r));
        let v = &self.rings[r as usize];
        let n = v.num_slots();
        let (hwtail, _) = k.appl_read();
        v.set_tail(hwtail);
        let mut lens = Vec::new();
        let mut j = v.head();
        while j != hwtail {
            lens.push(v.len(j));
            j = (j + 1) % n;
        }
        v.set_head(hwtail);
        v.set_cur(hwtail);
        a.set_appl_need_kick(false);
        a.appl_write(hwtail, hwtail);
        if k.kern_need_kick() {
            self.t.kick(r);
        }
        lens
    }

    fn nif_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        self.mem.read(self.nifp, &mut b);
        b
    }

    /// `ptnet_nm_register` (off) and `ptnet_remove`.
    fn delete_and_detach(&mut self) {
        self.t.write_reg(ptnet::PTCTL, PTCTL_DELETE).unwrap();
        assert_eq!(self.t.read_reg(ptnet::PTCTL).unwrap(), 0, "DELETE");
        for reg in [
            ptnet::CSB_GH_BAH,
            ptnet::CSB_GH_BAL,
            ptnet::CSB_HG_BAH,
            ptnet::CSB_HG_BAL,
        ] {
            self.t.write_reg(reg, 0).unwrap();
        }
    }
}

/// The model above makes every access the conformance table lists (and no register access the
/// table does not list): if netmap's driver gains one, the table and this model change together.
#[test]
fn the_model_covers_the_conformance_table() {
    let nic_writes: Vec<u32> = STOCK_ACCESSES
        .iter()
        .filter_map(|s| match (s.target, s.access) {
            (Target::Nic(off), Access::Write) => Some(off),
            _ => None,
        })
        .collect();
    for off in [
        ptnet::PTFEAT,
        ptnet::CSB_GH_BAH,
        ptnet::CSB_GH_BAL,
        ptnet::CSB_HG_BAH,
        ptnet::CSB_HG_BAL,
        ptnet::VNET_HDR_LEN,
        ptnet::PTCTL,
    ] {
        assert!(nic_writes.contains(&off), "register {off}");
    }
    assert!(nic_writes
        .iter()
        .all(|o| [0, 4, 44, 52, 56, 60, 64].contains(o)));
    assert!(STOCK_ACCESSES
        .iter()
        .any(|s| s.phase == Phase::Create && s.target == Target::Ring(ring::TAIL)));
}

/// A host sender on `ports[1]` sends `count` frames to the stock guest on `ports[0]`, which
/// receives them all (a pipe: more than its ring holds, so the slots it releases must come back).
fn stock_guest_receives(ports: [&str; 2], rings: u32, count: u32) {
    let (_dir, b) = Backend::in_temp_dir("stock", &ports);
    let mut g = StockGuest::probe(&b.socket(ports[0]));
    assert_eq!((g.ntx, g.nrx), (rings, rings));
    g.find_rings();
    let nif_before = g.nif_bytes();
    g.create();
    // A header-less host sender on the other port: 60-byte frames arrive behind a 12-byte
    // virtio-net header the switch or pipe inserted.
    // (In the background: a pipe holds the sender until the guest releases slots.)
    let sender = spawn_pkt_gen(&[
        "-i",
        &b.interface(ports[1]),
        "-f",
        "tx",
        "-n",
        &count.to_string(),
        "-l",
        "60",
        "--rate",
        "20000",
    ])
    .unwrap();
    let mut lens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lens.len() < count as usize && Instant::now() < deadline {
        for i in 0..g.nrx {
            lens.extend(g.rx_all(i));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = finish(sender, Duration::from_secs(10));
    assert!(
        out.success(),
        "{}\n{}\n--- daemon ---\n{}",
        out.stdout,
        out.stderr,
        b.log_text()
    );
    assert_eq!(lens.len(), count as usize, "{}", b.log_text());
    assert!(
        lens.iter().all(|&l| u32::from(l) == 60 + g.vnet_hdr_len),
        "{lens:?}"
    );
    g.delete_and_detach();
    assert_eq!(
        g.nif_bytes(),
        nif_before,
        "the netmap_if changed under a stock guest"
    );
}

#[test]
fn stock_guest_receives_over_vale() {
    // 200 frames into a 1024-slot ring: a switch drops nothing that fits.
    stock_guest_receives(["vale7:1", "vale7:2"], 1, 200);
}

#[test]
fn stock_guest_receives_over_a_pipe_with_two_rings() {
    stock_guest_receives(
        [
            "netmap:sd{1@conf:rings=2,slots=64",
            "netmap:sd}1@conf:rings=2,slots=64",
        ],
        2,
        1000,
    );
}
