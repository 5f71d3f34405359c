//! `packet:` ports.

use super::*;

#[test]
fn nic_packet_udp_both_ways_and_ping() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &VETH(&b));
    drop(port);
    let log = d.stop();
    assert_eq!(stats_field(&log, "bad_slots"), 0, "{log}");
}

#[test]
fn nic_packet_survives_frontend_reconnects() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0");
    let p = VETH(&b);
    for round in 0..3u16 {
        let mut port = d.open();
        port_to_kernel(&mut port, &p, 0, 50, 4400 + round);
        kernel_to_port(&mut port, &p, 50, 2, 5500 + round);
        drop(port);
    }
}

#[test]
fn nic_packet_multi_queue() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0@conf:rings=2");
    two_rings_both_ways(&mut d.open(), &VETH(&b), "fanout left a ring empty");
}

#[test]
fn nic_packet_link_down_and_up() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0");
    let mut port = d.open();
    // Frames sent while the link is down are dropped (and counted), never stuck; a link that is
    // down (the RX socket has ENETDOWN pending) does not spin the rings.
    let link = (&a, "va0", "link");
    link_down_and_up(&d, &mut port, &VETH(&b), link, b.mac("vb0"), 50);
    drop(port);
    let log = d.stop();
    assert!(stats_field(&log, "drops") >= 50, "{log}");
}
