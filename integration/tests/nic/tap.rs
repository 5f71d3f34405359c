//! `tap:` ports: taps the daemon creates, and persistent ones it attaches to.

use crate::backend::host_side_mac;
use crate::driver::{driver_recv, driver_send, recv_all};
use crate::frames::{csum, ip_str, mac_str, udp_frame, udp_payload_any_csum};
use crate::netns::{daemon_refuses_in, Daemon, Netns};
use crate::scenarios::{
    kernel_to_port, link_down_and_up, port_to_kernel, two_rings_both_ways, udp_both_ways_and_ping,
    Peer,
};
use ptnet_driver::Port;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Namespace `a` with the daemon, which creates tap `name`; the kernel side is the tap itself
/// (10.0.1.2/24).
fn tap_setup(conf: &str) -> (Netns, Daemon, String) {
    let a = Netns::new("tap");
    let name = "pttap0".to_string();
    let d = Daemon::start(&a, &format!("tap:{name}{conf}"));
    a.wait_for_link(&name);
    let _ = Command::new("ip")
        .args(["netns", "exec", &a.name, "sysctl", "-qw"])
        .arg("net.ipv6.conf.all.disable_ipv6=1")
        .status();
    a.ip(&format!("addr add 10.0.1.2/24 dev {name}"));
    a.ip(&format!("link set {name} up"));
    (a, d, name)
}

fn tap_peer<'a>(a: &'a Netns, name: &'a str) -> Peer<'a> {
    Peer {
        kns: a,
        kdev: name,
        kip: [10, 0, 1, 2],
        pip: [10, 0, 1, 1],
    }
}

#[test]
fn nic_tap_udp_both_ways_and_ping() {
    let (a, d, name) = tap_setup("");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &tap_peer(&a, &name));
}

#[test]
fn nic_tap_multi_queue() {
    let (a, d, name) = tap_setup("@conf:rings=2");
    // 16 flows over 2 queues: both get some (all on one: a 1 in 32768 chance).
    two_rings_both_ways(&mut d.open(), &tap_peer(&a, &name), "a ring got nothing");
}

#[test]
fn nic_tap_link_down_and_up() {
    let (a, d, name) = tap_setup("");
    let mut port = d.open();
    let link = (&a, name.as_str(), "tap");
    link_down_and_up(&d, &mut port, &tap_peer(&a, &name), link, [0xff; 6], 50);
}

#[test]
fn nic_tap_attaches_to_existing_taps() {
    // A persistent single-queue tap, then a persistent multi-queue one served with two rings.
    for (flags, conf) in [("", ""), ("multi_queue", "@conf:rings=2")] {
        let a = Netns::new("ptap");
        let mut cmd = format!("tuntap add dev ptper0 mode tap {flags}");
        cmd = cmd.trim().to_string();
        a.ip(&cmd);
        a.ip("addr add 10.0.1.2/24 dev ptper0");
        a.ip("link set ptper0 up");
        let d = Daemon::start(&a, &format!("tap:ptper0{conf}"));
        let mut port = d.open();
        let p = tap_peer(&a, "ptper0");
        port_to_kernel(&mut port, &p, 0, 20, 4321);
        kernel_to_port(&mut port, &p, 20, 2, 5555);
        drop(port);
        drop(d);
        // The tap outlives the daemon: it was not ours.
        a.wait_for_link("ptper0");
    }
}

#[test]
fn nic_tap_with_other_flags_is_refused() {
    // A multi-queue port on a single-queue persistent tap: refused with a hint.
    let a = Netns::new("ptapbad");
    a.ip("tuntap add dev ptper1 mode tap");
    daemon_refuses_in(&a, "tap:ptper1@conf:rings=2", &["ptper1", "multi-queue"]);
}

#[test]
fn nic_tap_keeps_its_mac_across_daemon_restarts() {
    let (a, d, name) = tap_setup("");
    let first = a.mac(&name);
    assert_eq!(first, host_side_mac(&name));
    drop(d);
    // The tap was the daemon's: it goes, and the next daemon creates it again, same address.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new("ip")
        .args(["-n", &a.name, "link", "show", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "the daemon's tap outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Daemon::start(&a, &format!("tap:{name}"));
    a.wait_for_link(&name);
    assert_eq!(a.mac(&name), first);
    // And the port still carries traffic to the kernel stack behind it.
    a.ip(&format!("addr add 10.0.1.2/24 dev {name}"));
    a.ip(&format!("link set {name} up"));
    let mut port = d.open();
    port_to_kernel(&mut port, &tap_peer(&a, &name), 0, 10, 4322);
}

/// A guest that takes the 12-byte virtio-net header on a `tap:` port (as the stock ptnet driver
/// does) hands its checksum offload to the host kernel and gets frames with a header back; one
/// with a 10-byte header gets the same, converted; one without gets plain frames.
#[test]
fn nic_tap_carries_the_virtio_net_header() {
    let (a, d, name) = tap_setup("");
    let p = tap_peer(&a, &name);
    let sock = a.run(|| UdpSocket::bind("10.0.1.2:4400").expect("bind kernel socket"));
    let kmac = a.mac(&name);
    // A UDP datagram whose checksum field holds only the pseudo-header sum, as a guest that
    // offloads leaves it.
    let partial = |pl: &[u8]| {
        let mut f = udp_frame(kmac, [0; 6], (p.pip, p.kip), (1000, 4400), pl);
        let mut ph = Vec::new();
        ph.extend_from_slice(&f[26..34]);
        ph.extend_from_slice(&[0, 17]);
        ph.extend_from_slice(&((8 + pl.len()) as u16).to_be_bytes());
        let c = !csum(&ph);
        f[40..42].copy_from_slice(&c.to_be_bytes());
        f
    };
    for len in [12u32, 10] {
        let spec = d.interface();
        let mut port = Port::open_with_vnet_hdr(&spec, len).expect("attach");
        assert_eq!(
            port.vnet_hdr_len(),
            len,
            "the tap port takes a {len}-byte header"
        );
        let mut needs_csum = vec![0u8; len as usize];
        needs_csum[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        needs_csum[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the UDP header
        needs_csum[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset: its checksum
        let mut f = partial(format!("offloaded {len}").as_bytes());
        f[6..12].copy_from_slice(&port.mac());
        driver_send(&mut port, 0, &[[&needs_csum[..], &f[..]].concat()]);
        // Without the header's NEEDS_CSUM the same bytes carry a wrong checksum: dropped.
        let mut wrong = partial(b"not offloaded");
        wrong[6..12].copy_from_slice(&port.mac());
        driver_send(
            &mut port,
            0,
            &[[&vec![0u8; len as usize][..], &wrong[..]].concat()],
        );
        let got = recv_all(&sock, 2, Duration::from_secs(2));
        assert_eq!(
            got,
            vec![format!("offloaded {len}").into_bytes()],
            "{len}-byte header"
        );
        // Kernel -> guest: every frame behind a header of the guest's length.
        let n = 20;
        let pmac = mac_str(port.mac());
        let _ = Command::new("ip")
            .args(["-n", &a.name, "neigh", "replace", &ip_str(p.pip)])
            .args(["lladdr", &pmac, "dev", &name, "nud", "permanent"])
            .status();
        let tx = a.run(|| UdpSocket::bind("10.0.1.2:4401").unwrap());
        for i in 0..n {
            tx.send_to(
                format!("hdr {i}").as_bytes(),
                (ip_str(p.pip).as_str(), 4402),
            )
            .unwrap();
        }
        let l = len as usize;
        let got = driver_recv(&mut port, n, Duration::from_secs(5), |fr| {
            fr.get(l..).and_then(|f| udp_payload_any_csum(f, 4402))
        });
        assert_eq!(
            got.len(),
            n,
            "{len}-byte header: received {} of {n}",
            got.len()
        );
        drop(port);
    }
    // No header: plain frames both ways (the existing tests), and the tap's offloads are off so
    // nothing arrives unfinished.
    let mut port = d.open();
    assert_eq!(port.vnet_hdr_len(), 0);
    port_to_kernel(&mut port, &p, 0, 5, 4403);
    kernel_to_port(&mut port, &p, 20, 2, 4404);
}

/// A frame longer than a buffer, sent as a chain of slots (NS_MOREFRAG on all but the last, as
/// the stock ptnet driver sends its TSO frames), reaches the kernel as one frame: a 5000-byte
/// UDP datagram in three slots behind a 12-byte header asking for its checksum.
#[test]
fn nic_tap_writes_a_chain_of_slots_as_one_frame() {
    let (a, d, name) = tap_setup("");
    let p = tap_peer(&a, &name);
    let sock = a.run(|| UdpSocket::bind("10.0.1.2:4410").expect("bind kernel socket"));
    let kmac = a.mac(&name);
    let mut port = Port::open_with_vnet_hdr(&d.interface(), 12).expect("attach");
    assert_eq!(port.vnet_hdr_len(), 12);
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = udp_frame(kmac, port.mac(), (p.pip, p.kip), (1000, 4410), &payload);
    // The checksum field holds only the pseudo-header sum, as an offloading guest leaves it.
    let mut ph = f[26..34].to_vec();
    ph.extend_from_slice(&[0, 17]);
    ph.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    let c = !csum(&ph);
    f[40..42].copy_from_slice(&c.to_be_bytes());
    let mut hdr = [0u8; 12];
    hdr[0] = 1; // NEEDS_CSUM
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    let frame = [&hdr[..], &f[..]].concat();
    assert!(frame.len() > 2 * 2048, "three slots");
    {
        let mut tx = port.tx_ring(0);
        assert!(tx.send_chain(&frame));
        tx.txsync().unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0u8; 9000];
    let n = sock.recv(&mut buf).expect("the datagram");
    assert_eq!(n, payload.len(), "the datagram, whole");
    assert!(buf[..n] == payload[..], "the datagram's bytes");
}
