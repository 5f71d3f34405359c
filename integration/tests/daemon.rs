//! `ptnet-backend` end to end, without QEMU: the daemon as a process, drivers attached through the
//! `vhost-user` transport (as `ptnet-pkt-gen` processes, or in this process through the driver
//! library), and a hostile "raw guest" that writes whatever it likes into its CSB and rings.

use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_driver::transport::{CsbArrays, Transport};
use ptnet_driver::{Port, RingId};
use ptnet_integration::host::{finish, pkt_gen, spawn_pkt_gen};
use ptnet_integration::{json_num, Backend, TempDir};
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::netmap::{ring, BufPool, IfView, RingView};
use ptnet_protocol::regs::{memdev, ptnet, ENXIO, PTCTL_CREATE};
use std::time::{Duration, Instant};

fn field(json: &str, key: &str) -> u64 {
    json_num(json, key).unwrap_or_else(|| panic!("no '{key}' in {json}")) as u64
}

/// Runs an rx pkt-gen and a tx pkt-gen and returns the rx JSON summary.
fn rx_tx(
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

fn assert_all_received(rx: &str, count: u64) {
    assert_eq!(field(rx, "packets"), count, "{rx}");
    assert_eq!(field(rx, "errors"), 0, "{rx}");
    assert_eq!(field(rx, "out_of_order"), 0, "{rx}");
    assert_eq!(field(rx, "lost"), 0, "{rx}");
}

#[test]
fn pipe_delivers_a_million_packets_in_order() {
    let (_d, b) = Backend::in_temp_dir("pipe1m", &["netmap:p{1", "netmap:p}1"]);
    let (rx, tx) = rx_tx(&b, "netmap:p}1", "netmap:p{1", 1_000_000, &[]);
    assert_all_received(&rx, 1_000_000);
    assert_eq!(field(&rx, "bytes"), 60_000_000);
    eprintln!("pipe: tx {tx}\npipe: rx {rx}");
}

#[test]
fn vale_two_ports_lossless_below_the_drain_rate() {
    let (_d, b) = Backend::in_temp_dir(
        "vale2",
        &["vale0:1@conf:slots=4096", "vale0:2@conf:slots=4096"],
    );
    let (rx, _) = rx_tx(&b, "vale0:2", "vale0:1", 200_000, &["-R", "100000"]);
    assert_all_received(&rx, 200_000);
}

#[test]
fn null_port_takes_everything() {
    let (_d, mut b) = Backend::in_temp_dir("null", &["null:sink"]);
    let sock = b.interface("null:sink");
    let tx = pkt_gen(
        &["-i", &sock, "-f", "tx", "-n", "2000000", "--json"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(tx.success(), "{}", tx.stderr);
    assert_eq!(field(tx.last_line().unwrap(), "packets"), 2_000_000);
    b.stop();
    assert!(
        b.log_text().contains("tx_packets=2000000"),
        "{}",
        b.log_text()
    );
}

/// Receives on `port` until `want` frames came or `quiet` passes without any.
fn receive(port: &mut Port, want: usize, quiet: Duration) -> Vec<Vec<u8>> {
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

fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14] = tag;
    f
}

fn send(port: &mut Port, ring: u32, frames: &[Vec<u8>]) {
    let mut tx = port.tx_ring(ring);
    for f in frames {
        assert!(tx.send(f), "room for the frame");
    }
    tx.txsync().unwrap();
}

/// Sends `frames` on TX ring 0, waiting for room as the host completes slots.
fn send_waiting(port: &mut Port, frames: &[Vec<u8>]) {
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

#[test]
fn vale_learns_macs_and_floods_unknown_and_broadcast() {
    let (_d, b) = Backend::in_temp_dir("vale3", &["vale1:a", "vale1:b", "vale1:c"]);
    let open = |p: &str| Port::open(&b.interface(p)).expect("attach");
    let (mut a, mut bb, mut c) = (open("vale1:a"), open("vale1:b"), open("vale1:c"));
    let (ma, mb) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    // Broadcast from b: a and c get it, b does not get its own frame back.
    send(&mut bb, 0, &[frame([0xff; 6], mb, 1)]);
    let q = Duration::from_millis(500);
    assert_eq!(receive(&mut a, 1, q).len(), 1);
    assert_eq!(receive(&mut c, 1, q).len(), 1);
    assert!(receive(&mut bb, 1, Duration::from_millis(200)).is_empty());
    // b's MAC is learnt: unicast from a to b reaches b only.
    send(&mut a, 0, &[frame(mb, ma, 2), frame(mb, ma, 3)]);
    let got = receive(&mut bb, 2, q);
    assert_eq!(got.iter().map(|f| f[14]).collect::<Vec<_>>(), vec![2, 3]);
    assert!(
        receive(&mut c, 1, Duration::from_millis(200)).is_empty(),
        "c must not see unicast to b"
    );
    // An unknown unicast destination is flooded.
    send(
        &mut c,
        0,
        &[frame([2, 0, 0, 0, 0, 0x77], [2, 0, 0, 0, 0, 0xc], 4)],
    );
    assert_eq!(receive(&mut a, 1, q)[0][14], 4);
    assert_eq!(receive(&mut bb, 1, q)[0][14], 4);
    // a was learnt from its unicast: c reaches it alone.
    send(&mut c, 0, &[frame(ma, [2, 0, 0, 0, 0, 0xc], 5)]);
    assert_eq!(receive(&mut a, 1, q)[0][14], 5);
    assert!(receive(&mut bb, 1, Duration::from_millis(200)).is_empty());
}

/// A hostile VALE port sends from the victim's own MAC and floods random source addresses: the
/// victim's unicast stream still reaches the victim alone (nothing hijacked, nothing flooded to
/// the attacker), and the attacker's refused frames are counted on it.
#[test]
fn vale_ports_cannot_spoof_or_evict_each_others_addresses() {
    let ports = ["vale8:s", "vale8:v", "vale8:x"];
    let (_d, mut b) = Backend::in_temp_dir("spoof", &ports);
    let open = |p: &str| Port::open(&b.interface(p)).expect("attach");
    let (mut s, mut v, mut x) = (open(ports[0]), open(ports[1]), open(ports[2]));
    let (ms, mv) = (s.mac(), v.mac());
    // The attacker claims the victim's address, then floods 2000 random ones.
    let spoofed: Vec<Vec<u8>> = (0..100).map(|i| frame([0xff; 6], mv, i as u8)).collect();
    for chunk in spoofed.chunks(50) {
        send_waiting(&mut x, chunk);
    }
    let mut seed = 0x9e37_79b9_u32;
    for _ in 0..40 {
        let flood: Vec<Vec<u8>> = (0..50)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let b = seed.to_le_bytes();
                frame([0xff; 6], [2, 0x55, b[0], b[1], b[2], b[3]], 0xee)
            })
            .collect();
        send_waiting(&mut x, &flood);
        std::thread::sleep(Duration::from_millis(2));
    }
    // The one flood frame the attacker may claim a source for reaches the others as a
    // broadcast; drain it before the victim's stream.
    let q = Duration::from_millis(300);
    let _ = receive(&mut v, 2, q);
    let _ = receive(&mut s, 2, q);
    // The sender's unicast stream to the victim, which has sent nothing yet.
    for round in 0..10u8 {
        let burst: Vec<Vec<u8>> = (0..50).map(|_| frame(mv, ms, round)).collect();
        send_waiting(&mut s, &burst);
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = receive(&mut v, 500, Duration::from_secs(2));
    assert_eq!(
        got.iter().filter(|f| f[6..12] == ms).count(),
        500,
        "{}",
        b.log_text()
    );
    let sniffed = receive(&mut x, usize::MAX, Duration::from_millis(300));
    assert!(
        sniffed.iter().all(|f| f[6..12] != ms),
        "the attacker saw {} of the victim's frames",
        sniffed.iter().filter(|f| f[6..12] == ms).count()
    );
    b.stop();
    let log = b.log_text();
    let line = log
        .lines()
        .rfind(|l| l.contains("port=\"vale8:x\"") && l.contains("src_refused="))
        .unwrap_or_else(|| panic!("no counters for vale8:x\n{log}"));
    let refused: u64 = line
        .split("src_refused=")
        .nth(1)
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(refused >= 100 + 1999, "{line}");
}

#[test]
fn multi_ring_pipe_keeps_each_ring_in_order() {
    let (_d, b) = Backend::in_temp_dir(
        "mring",
        &["netmap:m{2@conf:rings=4,slots=256", "netmap:m}2"],
    );
    let mut tx = Port::open(&b.interface("netmap:m{2")).unwrap();
    let mut rx = Port::open(&b.interface("netmap:m}2")).unwrap();
    assert_eq!(
        (tx.num_tx_rings(), rx.num_rx_rings(), rx.num_rx_slots()),
        (4, 4, 256)
    );
    let per_ring = 2000u32;
    let mut sent = [0u32; 4];
    let mut next = [0u32; 4];
    let deadline = Instant::now() + Duration::from_secs(60);
    while next.iter().any(|&n| n < per_ring) {
        assert!(
            Instant::now() < deadline,
            "stuck: sent {sent:?} received {next:?}"
        );
        for r in 0..4u32 {
            let mut t = tx.tx_ring(r);
            while sent[r as usize] < per_ring {
                let mut f = frame([2; 6], [4; 6], r as u8);
                f[16..20].copy_from_slice(&sent[r as usize].to_le_bytes());
                if !t.send(&f) {
                    break;
                }
                sent[r as usize] += 1;
            }
            t.txsync().unwrap();
        }
        for r in 0..4u32 {
            let mut x = rx.rx_ring(r);
            x.rxsync().unwrap();
            let mut buf = [0u8; 64];
            while x.recv(&mut buf).is_some() {
                assert_eq!(buf[14], r as u8, "frame of another ring on rx ring {r}");
                let seq = u32::from_le_bytes(buf[16..20].try_into().unwrap());
                assert_eq!(seq, next[r as usize], "ring {r} out of order");
                next[r as usize] += 1;
            }
            x.rxsync().unwrap();
        }
    }
}

/// A guest that follows no rules: it programs registers and writes CSB entries and slots itself.
struct RawGuest {
    t: VhostUserTransport,
    csb: CsbArrays,
    rings: Vec<RingView>,
    bufs: BufPool,
    tx_rings: u32,
}

impl RawGuest {
    fn attach(sock: &std::path::Path) -> Self {
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

    fn program_csb(&mut self, gh: u64, hg: u64) {
        for (reg, v) in [
            (ptnet::CSB_GH_BAH, gh >> 32),
            (ptnet::CSB_GH_BAL, gh & 0xffff_ffff),
            (ptnet::CSB_HG_BAH, hg >> 32),
            (ptnet::CSB_HG_BAL, hg & 0xffff_ffff),
        ] {
            self.t.write_reg(reg, v as u32).unwrap();
        }
    }

    fn create(&mut self) -> u32 {
        self.t.write_reg(ptnet::PTCTL, PTCTL_CREATE).unwrap();
        self.t.read_reg(ptnet::PTCTL).unwrap()
    }

    fn entries(&self, ring: u32) -> (Atok, Ktoa) {
        (
            Atok::new(&self.csb.atok, ring).unwrap(),
            Ktoa::new(&self.csb.ktoa, ring).unwrap(),
        )
    }

    /// Fills TX slot `s` of ring 0 with a broadcast frame tagged `tag`.
    fn fill(&self, s: u32, tag: u8) {
        let r = &self.rings[0];
        assert!(self.bufs.write(
            r.buf_idx(s),
            0,
            &frame([0xff; 6], [2, 0, 0, 0, 0, 0x99], tag)
        ));
        r.set_len(s, 60);
    }
}

/// A counter from the daemon's "rings stopped" line for `port` (the last one logged).
fn stopped_counter(log: &str, port: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("rings stopped") && l.contains(&format!("port=\"{port}\"")))
        .unwrap_or_else(|| panic!("no 'rings stopped' line for {port}:\n{log}"));
    let pat = format!("{key}=");
    let v = &line[line.find(&pat).expect("counter in line") + pat.len()..];
    v.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn csb_outside_guest_memory_is_refused() {
    let (_d, b) = Backend::in_temp_dir("csbout", &["vale2:a"]);
    let mut g = RawGuest::attach(&b.socket("vale2:a"));
    // Far beyond the frontend's memory table, then straddling its end, then zero.
    g.program_csb(0xdead_0000_0000, g.csb.ktoa_gpa);
    assert_eq!(g.create(), ENXIO);
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa + 64 * 1024 * 1024 - 64);
    assert_eq!(g.create(), ENXIO);
    g.program_csb(0, 0);
    assert_eq!(g.create(), ENXIO);
    // The same device works once the addresses are sane.
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
}

#[test]
fn refused_requests_are_logged_at_most_once_a_second() {
    let (_d, mut b) = Backend::in_temp_dir("refusals", &["vale4:a"]);
    let mut g = RawGuest::attach(&b.socket("vale4:a"));
    let started = Instant::now();
    for _ in 0..300 {
        assert!(
            g.t.write_reg(ptnet::NUM_TX_RINGS, 7).is_err(),
            "a write to a read-only register is NACKed"
        );
    }
    let burst = started.elapsed();
    // The connection goes on: the device still works.
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(g.t.write_reg(ptnet::NUM_TX_RINGS, 7).is_err());
    b.stop();
    let log = b.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("; refused")).collect();
    let windows = burst.as_secs() as usize + 1;
    assert!(
        lines.len() >= 2 && lines.len() <= windows + 1,
        "{} lines for 301 refusals over {burst:?}: {log}",
        lines.len()
    );
    assert!(lines[0].contains("not a writable register"), "{}", lines[0]);
    // The line after the pause accounts for what was not logged.
    let unlogged: u64 = lines
        .iter()
        .filter_map(|l| l.split("refused_unlogged=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(unlogged as usize + lines.len(), 301, "{log}");
}

#[test]
fn bad_ring_indexes_reset_the_ring_and_traffic_resumes() {
    let (_d, mut b) = Backend::in_temp_dir("badidx", &["vale3:a", "vale3:b"]);
    let mut recv_port = Port::open(&b.interface("vale3:b")).unwrap();
    let mut g = RawGuest::attach(&b.socket("vale3:a"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let (atok, ktoa) = g.entries(0);
    let n = g.rings[0].num_slots();
    assert_eq!(ktoa.appl_read(), (n - 1, 0));
    for (head, cur) in [(n + 5, 0), (0, n), (u32::MAX, u32::MAX)] {
        atok.appl_write(head, cur);
        g.t.kick(0);
        wait_for("the reset to be logged", || {
            b.log_text().matches("ring reset").count() > 0
        });
        assert_eq!(
            ktoa.appl_read(),
            (n - 1, 0),
            "host state unchanged by bad indexes"
        );
        assert!(
            ktoa.kern_need_kick(),
            "host listens for kicks after a reset"
        );
    }
    // A sane update after the resets is served.
    g.fill(0, 7);
    g.fill(1, 8);
    atok.appl_write(2, 2);
    g.t.kick(0);
    let got = receive(&mut recv_port, 2, Duration::from_secs(2));
    assert_eq!(got.iter().map(|f| f[14]).collect::<Vec<_>>(), vec![7, 8]);
    drop(g);
    b.stop();
    let resets = stopped_counter(&b.log_text(), "vale3:a", "resets");
    assert!(resets >= 1, "{}", b.log_text());
}

#[test]
fn bad_buffer_indexes_and_lengths_are_dropped() {
    let (_d, mut b) = Backend::in_temp_dir("badslot", &["vale4:a", "vale4:b"]);
    let mut recv_port = Port::open(&b.interface("vale4:b")).unwrap();
    let mut g = RawGuest::attach(&b.socket("vale4:a"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let (atok, ktoa) = g.entries(0);
    for s in 0..5 {
        g.fill(s, s as u8);
    }
    let r = &g.rings[0];
    r.set_buf_idx(1, g.bufs.num() + 1000); // outside the pool
    r.set_buf_idx(2, 0); // the reserved "no buffer" index
    r.set_len(3, 4000); // longer than a buffer
    atok.appl_write(5, 5);
    g.t.kick(0);
    let got = receive(&mut recv_port, 5, Duration::from_secs(1));
    assert_eq!(
        got.iter().map(|f| f[14]).collect::<Vec<_>>(),
        vec![0, 4],
        "only the sane slots travel"
    );
    wait_for("completion", || ktoa.appl_read().1 == 5);
    drop(g);
    b.stop();
    assert_eq!(
        stopped_counter(&b.log_text(), "vale4:a", "bad_slots"),
        3,
        "{}",
        b.log_text()
    );
    assert!(
        b.log_text()
            .lines()
            .any(|l| l.contains("were dropped") && l.contains("vale4:a")),
        "bad slots are logged with the port name:\n{}",
        b.log_text()
    );
}

#[test]
fn bad_slots_on_a_pipe_never_reach_the_peer_as_bad_indexes() {
    let (_d, b) = Backend::in_temp_dir("badpipe", &["netmap:bp{1", "netmap:bp}1"]);
    let mut rx = Port::open(&b.interface("netmap:bp}1")).unwrap();
    let mut g = RawGuest::attach(&b.socket("netmap:bp{1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let (atok, _) = g.entries(0);
    g.fill(0, 1);
    g.fill(1, 2);
    g.rings[0].set_buf_idx(1, u32::MAX);
    g.fill(2, 3);
    atok.appl_write(3, 3);
    g.t.kick(0);
    // The bad slot arrives as an empty packet; the good ones intact, in order.
    let got = receive(&mut rx, 3, Duration::from_secs(2));
    assert_eq!(got.len(), 3);
    assert_eq!(got[0][14], 1);
    assert!(got[1].is_empty());
    assert_eq!(got[2][14], 3);
}

/// A hostile pipe receiver that puts bad buffer indexes in its own RX slots loses only its own
/// traffic, and the loss counts on it: the sender's packets all count as sent, none as its bad
/// slots.
#[test]
fn a_pipe_receivers_corrupt_slots_count_on_the_receiver() {
    let (_d, mut b) = Backend::in_temp_dir("rxbad", &["netmap:rb{1", "netmap:rb}1"]);
    let mut g = RawGuest::attach(&b.socket("netmap:rb}1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let rx = g.rings[g.tx_rings as usize];
    for s in 0..rx.num_slots() {
        rx.set_buf_idx(s, u32::MAX);
    }
    let tx = pkt_gen(
        &["-i", &b.interface("netmap:rb{1"), "-f", "tx", "-n", "10"],
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(tx.success(), "{}\n{}", tx.stdout, tx.stderr);
    b.stop();
    let log = b.log_text();
    let last = |port: &str, key: &str| {
        let line = log
            .lines()
            .rfind(|l| l.contains(&format!("port=\"{port}\"")) && l.contains("tx_packets="))
            .unwrap_or_else(|| panic!("no counters for {port}\n{log}"));
        let v = line.split(&format!("{key}=")).nth(1).unwrap();
        v.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(last("netmap:rb{1", "tx_packets"), 10, "{log}");
    assert_eq!(last("netmap:rb{1", "bad_slots"), 0, "{log}");
    assert_eq!(last("netmap:rb}1", "bad_slots"), 10, "{log}");
}

#[test]
fn frontend_disconnect_mid_traffic_then_reconnect() {
    let (_d, b) = Backend::in_temp_dir("reconn", &["netmap:r{1", "netmap:r}1"]);
    let (txs, rxs) = (b.interface("netmap:r{1"), b.interface("netmap:r}1"));
    let rx = spawn_pkt_gen(&["-i", &rxs, "-f", "rx", "-n", "0", "--json"]).unwrap();
    let tx = spawn_pkt_gen(&["-i", &txs, "-f", "tx", "-n", "0", "--json"]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Both frontends vanish without a word (SIGKILL on drop).
    drop(tx);
    drop(rx);
    wait_for("both disconnects", || {
        b.log_text().matches("frontend disconnected").count() >= 2
    });
    // New frontends: whatever the old receiver left in its ring is flushed, then fresh traffic
    // flows complete and in order.
    let mut r = Port::open(&rxs).unwrap();
    receive(&mut r, usize::MAX, Duration::from_millis(300));
    let mut t = Port::open(&txs).unwrap();
    let mut next = 0u32;
    let mut sent = 0u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < 50_000 {
        assert!(Instant::now() < deadline, "stuck after reconnect at {next}");
        let mut tr = t.tx_ring(0);
        while sent < 50_000 {
            let mut f = frame([2; 6], [4; 6], 9);
            f[16..20].copy_from_slice(&sent.to_le_bytes());
            if !tr.send(&f) {
                break;
            }
            sent += 1;
        }
        tr.txsync().unwrap();
        let mut rr = r.rx_ring(0);
        rr.rxsync().unwrap();
        let mut buf = [0u8; 64];
        while rr.recv(&mut buf).is_some() {
            assert_eq!(u32::from_le_bytes(buf[16..20].try_into().unwrap()), next);
            next += 1;
        }
        rr.rxsync().unwrap();
    }
}

#[test]
fn bad_port_string_is_named_and_exits_2() {
    let bins = ptnet_integration::bins().unwrap();
    for bad in ["eth0", "vale0:1@conf:rings=99", "netmap:p{x"] {
        let out = std::process::Command::new(&bins.backend)
            .args(["--socket-dir", "/tmp", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
    }
    let out = std::process::Command::new(&bins.backend)
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn netmap_choice_is_checked() {
    let bins = ptnet_integration::bins().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&bins.backend)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--netmap", "bogus", "vale0:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel, user"));
    if std::path::Path::new("/dev/netmap").exists() {
        return; // the rest needs a machine without the netmap module
    }
    let out = run(&["--socket-dir", "/tmp", "--netmap", "kernel", "vale0:1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/netmap") && err.contains("netmap.ko"),
        "{err}"
    );
}

#[test]
fn counters_are_logged_on_sigusr1_and_periodically() {
    let bins = ptnet_integration::bins().unwrap();
    let dir = TempDir::new("stats").expect("temp dir");
    let log = dir.path().join("log");
    let mut child = std::process::Command::new(&bins.backend)
        .arg("--socket-dir")
        .arg(dir.path())
        .args(["--stats-every", "1", "netmap:st{0", "netmap:st}0"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sock = |end: &str| dir.path().join(format!("netmap:st{end}0.sock"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(sock("{").exists() && sock("}").exists()) {
        assert!(Instant::now() < deadline, "sockets did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rx = spawn_pkt_gen(&[
        "-i",
        &format!("vhost-user:{}", sock("}").display()),
        "-f",
        "rx",
        "-n",
        "5000",
        "--json",
    ])
    .unwrap();
    let tx = pkt_gen(
        &[
            "-i",
            &format!("vhost-user:{}", sock("{").display()),
            "-f",
            "tx",
            "-n",
            "5000",
            "-l",
            "60",
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(tx.success(), "tx failed");
    assert!(finish(rx, Duration::from_secs(60)).success(), "rx failed");
    let kill = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    kill("-USR1");
    std::thread::sleep(Duration::from_millis(1500));
    kill("-TERM");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    // SIGUSR1: the totals, the daemon still running after it.
    assert!(
        text.contains("tx_packets=5000 tx_bytes=300000 rx_packets=0"),
        "{text}"
    );
    assert!(
        text.contains("tx_packets=0 tx_bytes=0 rx_packets=5000"),
        "{text}"
    );
    // --stats-every 1: lines with rates.
    assert!(
        text.contains("tx_mpps=") && text.contains("rx_mpps="),
        "{text}"
    );
    assert!(text.contains("shutting down"), "{text}");
}

#[test]
fn sigterm_removes_the_sockets() {
    let (d, mut b) = Backend::in_temp_dir("sigterm", &["vale5:a", "null:x"]);
    assert!(b.socket("vale5:a").exists());
    b.stop();
    assert!(!d.path().join("vale5:a.sock").exists());
    assert!(!d.path().join("null:x.sock").exists());
    assert!(b.log_text().contains("shutting down"));
}

#[test]
fn slots_released_just_before_a_disconnect_are_not_delivered_again() {
    let (_d, b) = Backend::in_temp_dir("release", &["netmap:st{1", "netmap:st}1"]);
    let mut tx = Port::open(&b.interface("netmap:st{1")).unwrap();
    let mut g = RawGuest::attach(&b.socket("netmap:st}1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let rx_ring = g.tx_rings;
    let (atok, ktoa) = g.entries(rx_ring);
    send(
        &mut tx,
        0,
        &(0..10)
            .map(|i| frame([2; 6], [4; 6], i))
            .collect::<Vec<_>>(),
    );
    wait_for("ten packets", || ktoa.appl_read().0 == 10);
    // Release all ten without kicking (the host asked for no kick), then vanish.
    atok.appl_write(10, 10);
    drop(g);
    wait_for("the disconnect", || {
        b.log_text().contains("frontend disconnected")
    });
    let mut rx = Port::open(&b.interface("netmap:st}1")).unwrap();
    assert!(
        receive(&mut rx, 1, Duration::from_millis(300)).is_empty(),
        "released slots came back"
    );
    send(&mut tx, 0, &[frame([2; 6], [4; 6], 42)]);
    assert_eq!(receive(&mut rx, 1, Duration::from_secs(2))[0][14], 42);
}

#[test]
fn a_reset_ring_waits_for_the_guest_instead_of_spinning() {
    let (_d, mut b) = Backend::in_temp_dir("resetspin", &["netmap:rs{1", "netmap:rs}1"]);
    let mut tx = Port::open(&b.interface("netmap:rs{1")).unwrap();
    let mut g = RawGuest::attach(&b.socket("netmap:rs}1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let rx_ring = g.tx_rings;
    let (atok, ktoa) = g.entries(rx_ring);
    // The receiver publishes nonsense, then packets arrive for it: the port has news, but the
    // ring cannot take it in until the guest repairs its indexes.
    atok.appl_write(5000, 5000);
    g.t.kick(rx_ring);
    send(
        &mut tx,
        0,
        &(0..10)
            .map(|i| frame([2; 6], [4; 6], i))
            .collect::<Vec<_>>(),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Repaired, the ring delivers what waited.
    atok.appl_write(0, 0);
    g.t.kick(rx_ring);
    wait_for("the waiting packets", || ktoa.appl_read().0 == 10);
    drop(g);
    b.stop();
    let resets = stopped_counter(&b.log_text(), "netmap:rs}1", "resets");
    assert!(
        (1..100).contains(&resets),
        "{resets} resets: the ring spun\n{}",
        b.log_text()
    );
}
