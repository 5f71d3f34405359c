//! `xdp:` ports.

use super::*;

/// AF_XDP sees frames as they are: over veth, the local stack's TCP/UDP checksums are left
/// partial (for a NIC to finish) unless the sender's checksum offload is off, as for kernel
/// netmap on veth. The README says so; the xdp tests do it.
fn xdp_veth_pair(q: u32) -> (Netns, Netns) {
    let (a, b) = veth_pair_queues(q);
    sh(&[
        "ip", "netns", "exec", &b.name, "ethtool", "-K", "vb0", "tx", "off",
    ]);
    (a, b)
}

fn has_xdp_program(ns: &Netns, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", dev])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains(" xdp")
}

#[test]
fn nic_xdp_udp_both_ways_and_ping() {
    let (a, b) = xdp_veth_pair(1);
    let d = Daemon::start(&a, "xdp:va0");
    assert!(has_xdp_program(&a, "va0"), "no XDP program on va0");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &VETH(&b));
    drop(port);
    let log = d.stop();
    assert_eq!(stats_field(&log, "bad_slots"), 0, "{log}");
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
    let ns_dir = std::env::temp_dir().join(format!("{}-q", a.name));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.name,
            env!("CARGO_BIN_EXE_ptnet-backend"),
        ])
        .arg("--socket")
        .arg(ns_dir.join("x.sock"))
        .arg("xdp:va0@3")
        .output()
        .expect("run ptnet-backend");
    let _ = std::fs::remove_dir_all(&ns_dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("queue 3"), "{err}");
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
    let log = d.stop();
    assert!(stats_field(&log, "drops") > 0, "{log}");
}
