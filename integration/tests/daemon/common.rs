//! What the daemon tests share: pkt-gen runs, in-process driver helpers, and [`RawGuest`].

use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_driver::transport::{CsbArrays, Transport};
use ptnet_driver::{Port, RingId};
use ptnet_integration::host::{finish, pkt_gen, spawn_pkt_gen};
use ptnet_integration::{json_num, Backend};
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::netmap::{ring, BufPool, IfView, RingView};
use ptnet_protocol::regs::{memdev, ptnet, PTCTL_CREATE};
use std::time::{Duration, Instant};

pub fn field(json: &str, key: &str) -> u64 {
    json_num(json, key).unwrap_or_else(|| panic!("no '{key}' in {json}")) as u64
}

/// Runs an rx pkt-gen and a tx pkt-gen and returns the rx JSON summary.
pub fn rx_tx(
    b: &Backend,
    rx_port: &str,
    tx_port: &str,
    count: u64,
    tx_extra: &[&str],
) -> (String, String) {
    let n = count.to_string();
    let rx_sock = b.interface(rx_port);
    let rx = spawn_pkt_gen(&[
        "-i",
        &rx_sock,
        "-f",
        "rx",
        "-n",
        &n,
        "--timeout",
        "10",
        "--json",
    ])
    .expect("rx starts");
    // Let the receiver attach before anything is sent.
    std::thread::sleep(Duration::from_millis(500));
    let tx_sock = b.interface(tx_port);
    let mut args = vec![
        "-i",
        tx_sock.as_str(),
        "-f",
        "tx",
        "-n",
        n.as_str(),
        "-l",
        "60",
        "--json",
    ];
    args.extend_from_slice(tx_extra);
    let tx = pkt_gen(&args, Duration::from_secs(120)).expect("tx runs");
    assert!(tx.success(), "tx failed: {}\n{}", tx.stderr, b.log_text());
    let rx = finish(rx, Duration::from_secs(120));
    assert!(
        rx.success(),
        "rx failed: {}\n{}\n{}",
        rx.stdout,
        rx.stderr,
        b.log_text()
    );
    (
        rx.last_line().expect("rx summary").to_string(),
        tx.last_line().expect("tx summary").to_string(),
    )
}

pub fn assert_all_received(rx: &str, count: u64) {
    assert_eq!(field(rx, "packets"), count, "{rx}");
    assert_eq!(field(rx, "errors"), 0, "{rx}");
    assert_eq!(field(rx, "out_of_order"), 0, "{rx}");
    assert_eq!(field(rx, "lost"), 0, "{rx}");
}

/// Receives on `port` until `want` frames came or `quiet` passes without any.
pub fn receive(port: &mut Port, want: usize, quiet: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut last = Instant::now();
    while got.len() < want && last.elapsed() < quiet {
        for r in 0..port.num_rx_rings() {
            let mut rx = port.rx_ring(r);
            rx.rxsync().unwrap();
            let mut buf = [0u8; 2048];
            while let Some(n) = rx.recv(&mut buf) {
                got.push(buf[..n.min(2048)].to_vec());
                last = Instant::now();
            }
            rx.rxsync().unwrap();
        }
        if got.len() < want {
            let ids: Vec<RingId> = (0..port.num_rx_rings()).map(RingId::Rx).collect();
            port.wait_any(&ids, Some(Duration::from_millis(20)))
                .unwrap();
        }
    }
    got
}

pub fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14] = tag;
    f
}

pub fn send(port: &mut Port, ring: u32, frames: &[Vec<u8>]) {
    let mut tx = port.tx_ring(ring);
    for f in frames {
        assert!(tx.send(f), "room for the frame");
    }
    tx.txsync().unwrap();
}

/// Sends `frames` on TX ring 0, waiting for room as the host completes slots.
pub fn send_waiting(port: &mut Port, frames: &[Vec<u8>]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tx = port.tx_ring(0);
    for f in frames {
        while !tx.send(f) {
            assert!(Instant::now() < deadline, "no room in 10 s");
            tx.txsync().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    tx.txsync().unwrap();
}

pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A guest that follows no rules: it programs registers and writes CSB entries and slots itself.
pub struct RawGuest {
    /// Its connection.
    pub t: VhostUserTransport,
    /// Its CSB.
    pub csb: CsbArrays,
    /// Its rings, TX then RX.
    pub rings: Vec<RingView>,
    /// The buffers.
    pub bufs: BufPool,
    /// How many of `rings` are TX rings.
    pub tx_rings: u32,
}

impl RawGuest {
    pub fn attach(sock: &std::path::Path) -> Self {
        let mut t = VhostUserTransport::open(sock).expect("vhost-user attach");
        let tx_rings = t.read_reg(ptnet::NUM_TX_RINGS).unwrap();
        let n = tx_rings + t.read_reg(ptnet::NUM_RX_RINGS).unwrap();
        let slots = [
            t.read_reg(ptnet::NUM_TX_SLOTS).unwrap(),
            t.read_reg(ptnet::NUM_RX_SLOTS).unwrap(),
        ];
        let csb = t.alloc_csb(n).unwrap();
        let mem = t.netmap_mem().unwrap();
        let nifp = t.read_reg(ptnet::NIFP_OFS).unwrap() as usize;
        let ifv = IfView::new(mem.sub(nifp, 4096).unwrap()).unwrap();
        let rings = (0..n)
            .map(|r| {
                let s = slots[(r >= tx_rings) as usize];
                let ofs = if r < tx_rings {
                    ifv.ring_ofs(r)
                } else {
                    ifv.rx_ring_ofs_libnetmap(r - tx_rings)
                };
                let off = (nifp as i64 + ofs.unwrap()) as usize;
                RingView::new(mem.sub(off, ring::size(s)).unwrap(), s).unwrap()
            })
            .collect();
        let mut bp = |r: u32| t.read_memdev(r).unwrap();
        let (ofs, num, sz) = (
            bp(memdev::BUF_POOL_OFS),
            bp(memdev::BUF_POOL_OBJNUM),
            bp(memdev::BUF_POOL_OBJSZ),
        );
        let bufs =
            BufPool::new(mem.sub(ofs as usize, (num * sz) as usize).unwrap(), num, sz).unwrap();
        Self {
            t,
            csb,
            rings,
            bufs,
            tx_rings,
        }
    }

    pub fn program_csb(&mut self, gh: u64, hg: u64) {
        for (reg, v) in [
            (ptnet::CSB_GH_BAH, gh >> 32),
            (ptnet::CSB_GH_BAL, gh & 0xffff_ffff),
            (ptnet::CSB_HG_BAH, hg >> 32),
            (ptnet::CSB_HG_BAL, hg & 0xffff_ffff),
        ] {
            self.t.write_reg(reg, v as u32).unwrap();
        }
    }

    pub fn create(&mut self) -> u32 {
        self.t.write_reg(ptnet::PTCTL, PTCTL_CREATE).unwrap();
        self.t.read_reg(ptnet::PTCTL).unwrap()
    }

    pub fn entries(&self, ring: u32) -> (Atok, Ktoa) {
        (
            Atok::new(&self.csb.atok, ring).unwrap(),
            Ktoa::new(&self.csb.ktoa, ring).unwrap(),
        )
    }

    /// Fills TX slot `s` of ring 0 with a broadcast frame tagged `tag`.
    pub fn fill(&self, s: u32, tag: u8) {
        let r = &self.rings[0];
        assert!(self.bufs.write(
            r.buf_idx(s),
            0,
            &frame([0xff; 6], [2, 0, 0, 0, 0, 0x99], tag)
        ));
        r.set_len(s, 60);
    }
}
