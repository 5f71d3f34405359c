//! A kernel TX queue that fills (`packet:` and `xdp:`).

use super::*;

/// [`veth_pair`] plus macvlan `mv0` on va0 (in `a`), and a token bucket on va0 letting 100 kbit/s
/// through (about 200 60-byte frames a second). A `packet:` or `xdp:` port on mv0 hands its frames
/// to mv0 (no qdisc: AF_PACKET bypasses it anyway), which queues them on va0's bucket: the kernel
/// holds the port's frames (packet ring frames, AF_XDP chunks) until they leave, so its TX queue
/// fills.
fn slow_macvlan() -> (Netns, Netns) {
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
fn tx_waits_for_room(kind: &str) {
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
    let log = d.stop();
    assert_eq!(stats_field(&log, "drops"), 0, "{log}");
}

#[test]
fn nic_packet_tx_waits_for_room_in_the_kernel_ring() {
    tx_waits_for_room("packet");
}

#[test]
fn nic_xdp_tx_waits_for_room_in_the_kernel_ring() {
    tx_waits_for_room("xdp");
}
