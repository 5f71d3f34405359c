//! veth pairs between two namespaces (the kernel in `b`, the daemon's port in `a`), and the
//! kernel TX queue that fills.

use crate::driver::{driver_send, recv_all};
use crate::frames::udp_frame;
use crate::netns::{cpu_over_a_second, sh, Daemon, Netns, IDLE_CPU};
use crate::scenarios::Peer;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// Namespaces `a` (daemon, veth end va0) and `b` (kernel, vb0 10.0.0.2/24).
pub fn veth_pair() -> (Netns, Netns) {
    veth_pair_queues(1)
}

/// The same with `q` queues each way on both ends.
pub fn veth_pair_queues(q: u32) -> (Netns, Netns) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    let q = q.to_string();
    sh(&[
        "ip",
        "link",
        "add",
        "va0",
        "netns",
        &a.name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        "vb0",
        "netns",
        &b.name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ]);
    a.ip("link set va0 up");
    b.ip("link set vb0 up");
    b.ip("addr add 10.0.0.2/24 dev vb0");
    // No IPv6 chatter (router solicitations, DAD) on the link.
    let _ = Command::new("ip")
        .args(["netns", "exec", &b.name, "sysctl", "-qw"])
        .arg("net.ipv6.conf.all.disable_ipv6=1")
        .status();
    (a, b)
}

pub const VETH: fn(&Netns) -> Peer<'_> = |b| Peer {
    kns: b,
    kdev: "vb0",
    kip: [10, 0, 0, 2],
    pip: [10, 0, 0, 1],
};

/// AF_XDP sees frames as they are: over veth, the local stack's TCP/UDP checksums are left
/// partial (for a NIC to finish) unless the sender's checksum offload is off, as for kernel
/// netmap on veth. The README says so; the xdp tests do it.
pub fn xdp_veth_pair(q: u32) -> (Netns, Netns) {
    let (a, b) = veth_pair_queues(q);
    sh(&[
        "ip", "netns", "exec", &b.name, "ethtool", "-K", "vb0", "tx", "off",
    ]);
    (a, b)
}

pub fn has_xdp_program(ns: &Netns, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", dev])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains(" xdp")
}

/// [`veth_pair`] plus macvlan `mv0` on va0 (in `a`), and a token bucket on va0 letting 100 kbit/s
/// through (about 200 60-byte frames a second). A `packet:` or `xdp:` port on mv0 hands its frames
/// to mv0 (no qdisc: AF_PACKET bypasses it anyway), which queues them on va0's bucket: the kernel
/// holds the port's frames (packet ring frames, AF_XDP chunks) until they leave, so its TX queue
/// fills.
pub fn slow_macvlan() -> (Netns, Netns) {
    let (a, b) = veth_pair();
    a.ip("link add link va0 name mv0 type macvlan mode private");
    a.ip("link set mv0 up");
    sh(&[
        "ip", "netns", "exec", &a.name, "tc", "qdisc", "replace", "dev", "va0", "root", "tbf",
        "rate", "100kbit", "burst", "1600", "limit", "1000000",
    ]);
    (a, b)
}

/// The guest sends four times what the port's 64-slot ring and the kernel's 64-frame queue hold,
/// through a link that takes about 4 s to carry it: the TX ring waits for the kernel most of that
/// time. Its thread sleeps meanwhile (CPU over a second while blocked), and every frame arrives,
/// in order.
pub fn tx_waits_for_room(kind: &str) {
    let (a, b) = slow_macvlan();
    let d = Daemon::start(&a, &format!("{kind}:mv0@conf:slots=64"));
    let mut port = d.open();
    let thread = format!("{kind}:mv0-tx0");
    let n = 800;
    let sock = b.run(|| UdpSocket::bind("10.0.0.2:4444").expect("bind kernel socket"));
    let kmac = b.mac("vb0");
    let want: Vec<Vec<u8>> = (0..n).map(|i| format!("slow {i}").into_bytes()).collect();
    let frames: Vec<Vec<u8>> = want
        .iter()
        .map(|pl| {
            udp_frame(
                kmac,
                port.mac(),
                ([10, 0, 0, 1], [10, 0, 0, 2]),
                (1000, 4444),
                pl,
            )
        })
        .collect();
    std::thread::scope(|s| {
        let rx = s.spawn(|| recv_all(&sock, n, Duration::from_secs(30)));
        let meter = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            cpu_over_a_second(&d, Some(&thread))
        });
        let start = Instant::now();
        driver_send(&mut port, 0, &frames);
        let sending = start.elapsed();
        let cpu = meter.join().expect("meter");
        let got = rx.join().expect("receiver");
        // The last slots were taken after the measured second: the ring was blocked all of it.
        assert!(
            sending > Duration::from_millis(1700),
            "the kernel queue never filled: all sent in {sending:?}"
        );
        assert!(
            cpu < IDLE_CPU,
            "{thread} used {cpu:?} of a second while waiting for the kernel"
        );
        assert_eq!(got.len(), n, "kernel received {} of {n}", got.len());
        assert_eq!(got, want);
        eprintln!("{kind}: {n} frames in {sending:?}; TX thread CPU while blocked: {cpu:?}/s");
    });
    drop(port);
    let (c, log) = d.stop();
    assert_eq!(c.drops, 0, "{log}");
}
