//! `ptnet-bridge` as a host process (vhost-user transport) between two ports of one
//! `ptnet-backend`, with host `ptnet-pkt-gen`s on the far side of each: every packet sent on one
//! side arrives on the other, in order and intact (pkt-gen rx verifies magic, stream, sequence
//! number and payload), in both directions, and the bridge's own counts agree.
//!
//! The daemon's userspace netmap gives every pipe and every VALE port its own memory, so these
//! runs take the bridge's copy path; its zero-copy path (buffer swaps between ports of one memory)
//! is checked against the real daemon by `buffer_swaps_through_a_real_pipe_keep_packets_intact`
//! (the library call the bridge makes, in this process: a bridge between the two ends of one
//! pipe would be a loop with no way in) and `bridge_sees_which_ports_share_a_memory`.

use ptnet_driver::port::{ForwardMode, Forwarded};
use ptnet_driver::{Port, RingId};
use ptnet_integration::host::{
    cpu_time, finish, pkt_gen, spawn_bridge, spawn_pkt_gen, wait_for_text, RunOutput, Spawned,
};
use ptnet_integration::{json_bool, json_num, json_str, Backend};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn field(json: &str, key: &str) -> u64 {
    json_num(json, key).unwrap_or_else(|| panic!("no '{key}' in {json}")) as u64
}

/// Does the daemon run its own userspace netmap (where no two pipes or VALE ports share a
/// memory)? Only kernel netmap (/dev/netmap) could make the bridges below zero-copy.
fn userspace_netmap() -> bool {
    !Path::new("/dev/netmap").exists()
}

/// A bridge between `a` and `b` with `extra` options, started and ready (both ports open).
fn start_bridge(be: &Backend, dir: &Path, a: &str, b: &str, extra: &[&str]) -> (Spawned, PathBuf) {
    let log = dir.join("bridge.err");
    let (sa, sb) = (be.interface(a), be.interface(b));
    let mut args = vec!["-i", sa.as_str(), "-i", sb.as_str(), "--json"];
    args.extend_from_slice(extra);
    let br = spawn_bridge(&args, &log).expect("ptnet-bridge starts");
    assert!(
        wait_for_text(&log, "ptnet-bridge: ready", Duration::from_secs(20)),
        "bridge not ready\n{}\n--- backend ---\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        be.log_text()
    );
    (br, log)
}

/// One leg: a receiver on `rx_port`, then `n` packets from `tx_port` (at `rate` pps, 0: as fast
/// as possible); asserts that all of them arrived in order and intact. Returns the rx summary.
fn leg(be: &Backend, bridge_log: &Path, tx_port: &str, rx_port: &str, n: u64, rate: u64) -> String {
    let (ns, rs) = (n.to_string(), rate.to_string());
    let rx_sock = be.interface(rx_port);
    let rx = spawn_pkt_gen(&[
        "-i",
        &rx_sock,
        "-f",
        "rx",
        "-n",
        &ns,
        "--timeout",
        "20",
        "-T",
        "0",
        "--json",
    ])
    .expect("rx starts");
    // Let the receiver attach before anything is sent.
    std::thread::sleep(Duration::from_millis(500));
    let tx_sock = be.interface(tx_port);
    let tx = pkt_gen(
        &[
            "-i", &tx_sock, "-f", "tx", "-n", &ns, "-R", &rs, "-T", "0", "--json",
        ],
        Duration::from_secs(120),
    )
    .expect("tx runs");
    let rx = finish(rx, Duration::from_secs(120));
    let ctx = |what: &str, o: &RunOutput| {
        format!(
            "{what} {tx_port} -> {rx_port}: {:?}\n{}\n{}\n--- bridge ---\n{}\n--- backend ---\n{}",
            o.status,
            o.stdout,
            o.stderr,
            std::fs::read_to_string(bridge_log).unwrap_or_default(),
            be.log_text()
        )
    };
    assert!(tx.success(), "{}", ctx("tx", &tx));
    assert!(rx.success(), "{}", ctx("rx", &rx));
    let s = rx.last_line().expect("rx summary").to_string();
    assert_eq!(field(&s, "packets"), n, "{}", ctx("rx", &rx));
    assert_eq!(field(&s, "bytes"), 60 * n, "{s}");
    assert_eq!(field(&s, "errors"), 0, "payload errors: {s}");
    assert_eq!(field(&s, "out_of_order"), 0, "{s}");
    assert_eq!(field(&s, "lost"), 0, "{s}");
    s
}

/// The bridge's JSON summary, after checking it exited cleanly.
fn bridge_summary(o: &RunOutput, log: &Path) -> String {
    let ctx = format!(
        "{:?}\n{}\n--- bridge stderr ---\n{}",
        o.status,
        o.stdout,
        std::fs::read_to_string(log).unwrap_or_default()
    );
    assert!(o.success(), "bridge failed: {ctx}");
    let s = o
        .last_line()
        .unwrap_or_else(|| panic!("no bridge summary: {ctx}"));
    assert_eq!(json_str(s, "mode"), Some("bridge"), "{ctx}");
    s.to_string()
}

fn zero_copy(summary: &str) -> bool {
    json_bool(summary, "zero_copy").unwrap_or_else(|| panic!("no zero_copy in {summary}"))
}

/// Two netmap pipes, the bridge on a}0 and b{0: a{0 -> bridge -> b}0 at full speed, then back.
/// Pipes are lossless (backpressure all the way), so nothing may be missing. The bridge stops
/// by itself after --count packets.
#[test]
fn bridge_forwards_between_two_pipes_both_ways() {
    let ports = ["netmap:a{0", "netmap:a}0", "netmap:b{0", "netmap:b}0"];
    let (dir, be) = Backend::in_temp_dir("bridge-pipes", &ports);
    let n = 1_000_000u64;
    let count = (2 * n).to_string();
    let (br, log) = start_bridge(
        &be,
        dir.path(),
        "netmap:a}0",
        "netmap:b{0",
        &["--count", &count, "--timeout-ms", "60000"],
    );
    let ab = leg(&be, &log, "netmap:a{0", "netmap:b}0", n, 0);
    let ba = leg(&be, &log, "netmap:b}0", "netmap:a{0", n, 0);
    let s = bridge_summary(&finish(br, Duration::from_secs(30)), &log);
    assert_eq!(field(&s, "a_to_b_packets"), n, "{s}");
    assert_eq!(field(&s, "b_to_a_packets"), n, "{s}");
    assert_eq!(field(&s, "a_to_b_bytes"), 60 * n, "{s}");
    assert_eq!(field(&s, "dropped"), 0, "{s}");
    if userspace_netmap() {
        assert!(!zero_copy(&s), "separate memories: {s}");
    }
    eprintln!(
        "pipes through the bridge (zero copy: {}): a->b {:.3} Mpps, b->a {:.3} Mpps (at the receivers)",
        zero_copy(&s),
        json_num(&ab, "mpps").unwrap_or(0.0),
        json_num(&ba, "mpps").unwrap_or(0.0)
    );
}

/// An idle bridge sleeps: one poll over both ports' interrupt eventfds, no timed wake-ups (0 ms
/// of CPU in 2 s here; the earlier wait, one port at a time in 1 ms slices, used 50 ms).
/// Traffic after the idle second still goes through at once.
#[test]
fn idle_bridge_sleeps_on_both_ports() {
    let ports = ["netmap:i{0", "netmap:i}0", "netmap:j{0", "netmap:j}0"];
    let (dir, be) = Backend::in_temp_dir("bridge-idle", &ports);
    let (br, log) = start_bridge(&be, dir.path(), "netmap:i}0", "netmap:j{0", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_time(br.id()).expect("bridge cpu time");
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(br.id()).expect("bridge cpu time") - before;
    assert!(
        used <= Duration::from_millis(20),
        "an idle bridge used {used:?} of CPU in 2 s"
    );
    eprintln!("idle bridge: {used:?} of CPU in 2 s");
    leg(&be, &log, "netmap:j}0", "netmap:i{0", 1000, 0);
    leg(&be, &log, "netmap:i{0", "netmap:j}0", 1000, 0);
    br.terminate();
}

/// Two VALE switches joined by the bridge (vale1:2 <-> vale2:1), senders and receivers on the
/// other ports: one copy per packet in the bridge, plus the switches' own. VALE drops what a full
/// ring cannot take, so the senders are paced below what the path drains. The bridge runs
/// until SIGTERM, then prints its counts.
#[test]
fn bridge_joins_two_vale_switches_both_ways() {
    let ports = [
        "vale1:1@conf:slots=4096",
        "vale1:2@conf:slots=4096",
        "vale2:1@conf:slots=4096",
        "vale2:2@conf:slots=4096",
    ];
    let (dir, be) = Backend::in_temp_dir("bridge-vale", &ports);
    let n = 200_000u64;
    let (br, log) = start_bridge(&be, dir.path(), ports[1], ports[2], &[]);
    let ab = leg(&be, &log, ports[0], ports[3], n, 100_000);
    let ba = leg(&be, &log, ports[3], ports[0], n, 100_000);
    br.terminate();
    let s = bridge_summary(&finish(br, Duration::from_secs(30)), &log);
    assert_eq!(field(&s, "a_to_b_packets"), n, "{s}");
    assert_eq!(field(&s, "b_to_a_packets"), n, "{s}");
    assert_eq!(field(&s, "dropped"), 0, "{s}");
    if userspace_netmap() {
        assert!(!zero_copy(&s), "separate memories: {s}");
    }
    eprintln!(
        "vale: a->b rx {:.3} Mpps, b->a rx {:.3} Mpps (paced at 0.1 Mpps)",
        json_num(&ab, "mpps").unwrap_or(0.0),
        json_num(&ba, "mpps").unwrap_or(0.0)
    );
}

/// Ports with two TX and two RX rings: each of pkt-gen's two streams (one per TX ring) keeps its
/// order through the bridge (RX ring i goes to TX ring i). The bridge busy-polls, in small
/// batches, and stops after an idle --timeout-ms.
#[test]
fn bridge_keeps_per_ring_order_with_two_rings() {
    let ports = [
        "netmap:c{0@conf:rings=2",
        "netmap:c}0@conf:rings=2",
        "netmap:d{0@conf:rings=2",
        "netmap:d}0@conf:rings=2",
    ];
    let (dir, be) = Backend::in_temp_dir("bridge-rings", &ports);
    let n = 400_000u64;
    let (br, log) = start_bridge(
        &be,
        dir.path(),
        "netmap:c}0",
        "netmap:d{0",
        &["--timeout-ms", "3000", "-b", "64", "--busy-poll"],
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("rings 2/2"));
    leg(&be, &log, "netmap:c{0", "netmap:d}0", n, 0);
    let s = bridge_summary(&finish(br, Duration::from_secs(30)), &log);
    assert_eq!(field(&s, "a_to_b_packets"), n, "{s}");
    assert_eq!(field(&s, "b_to_a_packets"), 0, "{s}");
}

/// The bridge decides between buffer swaps and copies by the memory the ports live in: the two
/// ends of one pipe share a memory (zero copy), two VALE ports do not (copy), and `--copy`
/// forces copies.
#[test]
fn bridge_sees_which_ports_share_a_memory() {
    let ports = ["netmap:p{0", "netmap:p}0", "vale3:1", "vale3:2"];
    let (dir, be) = Backend::in_temp_dir("bridge-mem", &ports);
    let once = |a: &str, b: &str, extra: &[&str]| {
        let mut args = vec!["--timeout-ms", "200"];
        args.extend_from_slice(extra);
        let (br, log) = start_bridge(&be, dir.path(), a, b, &args);
        let s = bridge_summary(&finish(br, Duration::from_secs(30)), &log);
        assert_eq!(field(&s, "packets"), 0, "{s}");
        zero_copy(&s)
    };
    if userspace_netmap() {
        assert!(once(ports[0], ports[1], &[]), "one pipe, one memory");
        assert!(!once(ports[0], ports[1], &["--copy"]));
        assert!(!once(ports[2], ports[3], &[]), "VALE ports: two memories");
    }
}

/// The zero-copy path against the real daemon. The two ends of one pipe share a memory; packets
/// sent on p{0 arrive on p}0 (the daemon swaps buffers), and `forward_from` with buffer swaps
/// sends them from p}0's RX ring back into p{0's TX ring, round after round: the same buffers
/// circulate between the rings of two ports without a copy. After 200 rounds every packet is
/// still there, in order, with its bytes intact (a swap across memories would hand out indexes
/// of other buffers: garbage).
#[test]
fn buffer_swaps_through_a_real_pipe_keep_packets_intact() {
    let (_d, be) = Backend::in_temp_dir("bridge-swap", &["netmap:s{0", "netmap:s}0"]);
    let mut a = Port::open(&be.interface("netmap:s{0")).expect("open s{0");
    let mut b = Port::open(&be.interface("netmap:s}0")).expect("open s}0");
    assert!(b.shares_memory_with(&a));
    const K: u32 = 500;
    const ROUNDS: u32 = 200;
    let frame = |seq: u32| {
        let mut f = [0u8; 60];
        f[..4].copy_from_slice(&seq.to_le_bytes());
        for (i, x) in f[4..].iter_mut().enumerate() {
            *x = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
        }
        f
    };
    {
        let mut tx = a.tx_ring(0);
        for seq in 0..K {
            assert!(tx.send(&frame(seq)));
        }
        tx.txsync().unwrap();
    }
    // Waits until p}0 has received K packets.
    let arrive = |b: &mut Port, round: u32| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            b.rx_ring(0).rxsync().unwrap();
            if b.rx_ring(0).avail() >= K {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {K} packets arrived\n{}",
                b.rx_ring(0).avail(),
                be.log_text()
            );
            b.wait(RingId::Rx(0), Some(Duration::from_millis(100)))
                .unwrap();
        }
    };
    for round in 0..ROUNDS {
        arrive(&mut b, round);
        // Room for all of them in p{0's TX ring.
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.tx_ring(0).space() < K {
            a.tx_ring(0).txsync_reclaim().unwrap();
            assert!(
                Instant::now() < deadline,
                "round {round}: TX ring stays full"
            );
            a.wait(RingId::Tx(0), Some(Duration::from_millis(10)))
                .unwrap();
        }
        let mut rx = b.rx_ring(0);
        let mut tx = a.tx_ring(0);
        let f = tx.forward_from(&mut rx, K, ForwardMode::SwapBuffers);
        assert_eq!(
            f,
            Forwarded {
                packets: K,
                bytes: 60 * u64::from(K),
                dropped: 0
            },
            "round {round}"
        );
        tx.txsync().unwrap();
        rx.rxsync().unwrap();
    }
    arrive(&mut b, ROUNDS);
    let mut rx = b.rx_ring(0);
    for seq in 0..K {
        let mut got = [0u8; 60];
        assert_eq!(rx.recv(&mut got), Some(60), "packet {seq}");
        assert_eq!(
            got,
            frame(seq),
            "packet {seq} after {ROUNDS} rounds of buffer swaps"
        );
    }
    rx.rxsync().unwrap();
}
