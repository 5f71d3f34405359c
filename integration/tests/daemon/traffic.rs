//! Traffic through pipes, VALE switches and `null:` ports, from pkt-gen processes and in-process
//! drivers; frontends that vanish and come back.

use crate::common::{
    assert_all_received, field, frame, receive, rx_tx, send, send_waiting, wait_for,
};
use ptnet_driver::Port;
use ptnet_integration::host::{pkt_gen, spawn_pkt_gen};
use ptnet_integration::{Backend, PortCounters};
use std::time::{Duration, Instant};

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
    let log = b.log_text();
    let c = PortCounters::last(&log, Some("null:sink"));
    assert_eq!(c.map(|c| c.tx_packets), Some(2_000_000), "{log}");
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
    let refused = PortCounters::last(&log, Some("vale8:x"))
        .unwrap_or_else(|| panic!("no counters for vale8:x\n{log}"))
        .src_refused;
    assert!(refused >= 100 + 1999, "{refused}: {log}");
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

/// `--fast` (netmap pkt-gen's way): the sender writes its frame into each buffer once, so over
/// a pipe, whose swaps hand the sender the receiver's buffers, every buffer must still carry it
/// when it goes out: a checking receiver finds no bad frame among them (all have sequence 0:
/// one restart per frame after the first). Then a counting receiver gets them all.
#[test]
fn fast_pkt_gen_prepares_every_buffer_and_counts_everything() {
    let (_d, b) = Backend::in_temp_dir("fast", &["netmap:f{1", "netmap:f}1"]);
    let n: u64 = 300_000;
    let (rx_sock, tx_sock) = (b.interface("netmap:f}1"), b.interface("netmap:f{1"));
    for rx_fast in [false, true] {
        let ns = n.to_string();
        let mut rx_args = vec!["-i", &rx_sock, "-f", "rx", "-n", &ns, "--timeout", "10"];
        rx_args.push("--json");
        if rx_fast {
            rx_args.push("--fast");
        }
        let rx = spawn_pkt_gen(&rx_args).expect("rx starts");
        std::thread::sleep(Duration::from_millis(500));
        let tx = pkt_gen(
            &["-i", &tx_sock, "-f", "tx", "-n", &ns, "--fast", "--json"],
            Duration::from_secs(120),
        )
        .expect("tx runs");
        assert!(tx.success(), "tx failed: {}\n{}", tx.stderr, b.log_text());
        let rx = ptnet_integration::host::finish(rx, Duration::from_secs(120));
        assert!(rx.success(), "rx failed: {}", rx.stderr);
        let s = rx.last_line().expect("a summary").to_string();
        assert_eq!(field(&s, "packets"), n, "{s}");
        assert_eq!(field(&s, "bytes"), 60 * n, "{s}");
        if !rx_fast {
            assert_eq!(field(&s, "errors"), 0, "a buffer went out unprepared: {s}");
            assert_eq!(field(&s, "sender_restarts"), n - 1, "{s}");
        }
    }
}
