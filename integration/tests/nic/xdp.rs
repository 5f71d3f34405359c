//! `xdp:` ports (AF_XDP) on a veth end.

use crate::netns::{daemon_refuses_in, Daemon};
use crate::scenarios::{link_down_and_up, two_rings_both_ways, udp_both_ways_and_ping};
use crate::veth::{has_xdp_program, tx_waits_for_room, veth_pair, xdp_veth_pair, VETH};

#[test]
fn nic_xdp_udp_both_ways_and_ping() {
    let (a, b) = xdp_veth_pair(1);
    let d = Daemon::start(&a, "xdp:va0");
    assert!(has_xdp_program(&a, "va0"), "no XDP program on va0");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &VETH(&b));
    drop(port);
    let (c, log) = d.stop();
    assert_eq!(c.bad_slots, 0, "{log}");
    assert!(
        !has_xdp_program(&a, "va0"),
        "the XDP program outlived the daemon"
    );
}

#[test]
fn nic_xdp_multi_queue() {
    let (a, b) = xdp_veth_pair(2);
    let d = Daemon::start(&a, "xdp:va0@conf:rings=2");
    // 16 flows over 2 queues: both get some (all on one: a 1 in 32768 chance).
    two_rings_both_ways(&mut d.open(), &VETH(&b), "a ring got nothing");
}

#[test]
fn nic_xdp_queue_beyond_the_interface_is_refused() {
    let (a, _b) = veth_pair();
    daemon_refuses_in(&a, "xdp:va0@3", &["queue 3"]);
    assert!(!has_xdp_program(&a, "va0"));
}

#[test]
fn nic_xdp_link_down_and_up() {
    let (a, b) = xdp_veth_pair(1);
    let d = Daemon::start(&a, "xdp:va0");
    let mut port = d.open();
    // More than the socket's TX ring holds while the link is down: the rest must be dropped, not
    // stuck.
    let link = (&a, "va0", "link");
    link_down_and_up(&d, &mut port, &VETH(&b), link, b.mac("vb0"), 3000);
    drop(port);
    let (c, log) = d.stop();
    assert!(c.drops > 0, "{log}");
}

#[test]
fn nic_xdp_tx_waits_for_room_in_the_kernel_ring() {
    tx_waits_for_room("xdp");
}
