//! Traffic between a port and the kernel stack behind it, and the test bodies the `packet:`,
//! `xdp:` and `tap:` tests share.

use crate::backend::RawSock;
use crate::driver::{driver_recv, driver_send, recv_all};
use crate::frames::{ip_str, mac_str, udp_frame, udp_payload};
use crate::netns::{cpu_over_a_second, Daemon, Netns, IDLE_CPU};
use nix::net::if_::if_nametoindex;
use ptnet_driver::{Port, RingId};
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where the port's traffic meets the kernel: `kns` holds `kdev` with address `kip`; the port
/// speaks as `pip`.
pub struct Peer<'a> {
    /// The kernel's namespace.
    pub kns: &'a Netns,
    /// The kernel's interface.
    pub kdev: &'a str,
    /// The kernel's address.
    pub kip: [u8; 4],
    /// The port's address.
    pub pip: [u8; 4],
}

/// Driver -> kernel: `n` UDP datagrams on TX ring `ring` all reach a socket in the kernel's
/// namespace, intact and in order.
pub fn port_to_kernel(port: &mut Port, p: &Peer, ring: u32, n: usize, dport: u16) {
    let sock = p
        .kns
        .run(|| UdpSocket::bind((ip_str(p.kip).as_str(), dport)).expect("bind kernel socket"));
    let kmac = p.kns.mac(p.kdev);
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            udp_frame(
                kmac,
                port.mac(),
                (p.pip, p.kip),
                (1000, dport),
                format!("to-kernel {ring} {i}").as_bytes(),
            )
        })
        .collect();
    driver_send(port, ring, &frames);
    let got = recv_all(&sock, n, Duration::from_secs(5));
    let want: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("to-kernel {ring} {i}").into_bytes())
        .collect();
    assert_eq!(got.len(), n, "kernel received {} of {n}", got.len());
    assert_eq!(got, want);
}

/// Kernel -> driver: `n` datagrams from a kernel socket (from `flows` source ports) arrive on the
/// port's RX rings, intact. Returns how many came on each ring.
pub fn kernel_to_port(port: &mut Port, p: &Peer, n: usize, flows: u16, dport: u16) -> Vec<usize> {
    let pmac = mac_str(port.mac());
    let _ = Command::new("ip")
        .args(["-n", &p.kns.name, "neigh", "replace", &ip_str(p.pip)])
        .args(["lladdr", &pmac, "dev", p.kdev, "nud", "permanent"])
        .status();
    let socks: Vec<UdpSocket> = p.kns.run(|| {
        (0..flows)
            .map(|f| UdpSocket::bind((ip_str(p.kip).as_str(), 20000 + f)).unwrap())
            .collect()
    });
    let dst = format!("{}:{dport}", ip_str(p.pip));
    for i in 0..n {
        socks[i % socks.len()]
            .send_to(format!("to-port {i}").as_bytes(), &dst)
            .unwrap();
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = driver_recv(port, n, Duration::from_secs(5), |f| udp_payload(f, dport));
    let mut per_ring = vec![0usize; port.num_rx_rings() as usize];
    let mut seen = vec![false; n];
    for (r, pl) in &got {
        per_ring[*r as usize] += 1;
        let s = String::from_utf8_lossy(pl);
        let i: usize = s
            .strip_prefix("to-port ")
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("bad payload {s:?}"));
        assert!(!seen[i], "datagram {i} twice");
        seen[i] = true;
    }
    assert_eq!(got.len(), n, "port received {} of {n}", got.len());
    per_ring
}

/// The kernel pings (raw frames from an AF_PACKET socket on `kdev`), the driver answers like
/// `ptnet-pkt-gen -f pong` (swaps the MAC addresses): every ping comes back.
pub fn kernel_pings_pong(port: &mut Port, p: &Peer, count: u32) {
    let kmac = p.kns.mac(p.kdev);
    let pmac = port.mac();
    // 0 (any interface) if it is missing, as if_nametoindex(3) returns.
    let ifindex = p.kns.run(|| if_nametoindex(p.kdev).unwrap_or(0));
    let raw = p.kns.run(|| RawSock::open(ifindex));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            let mut rtts = Vec::new();
            for seq in 0..count {
                let mut f = Vec::new();
                f.extend_from_slice(&pmac);
                f.extend_from_slice(&kmac);
                f.extend_from_slice(&0x88b5u16.to_be_bytes());
                f.extend_from_slice(b"ptnet-ping");
                f.extend_from_slice(&seq.to_be_bytes());
                f.resize(60, 0);
                let t0 = Instant::now();
                raw.send(&f);
                let deadline = t0 + Duration::from_secs(2);
                loop {
                    let r = raw.recv(deadline);
                    let Some(r) = r else {
                        panic!("ping {seq} not answered")
                    };
                    if r.len() >= 28
                        && r[0..6] == kmac
                        && r[6..12] == pmac
                        && r[14..24] == *b"ptnet-ping"
                        && r[24..28] == seq.to_be_bytes()
                    {
                        rtts.push(t0.elapsed());
                        break;
                    }
                }
            }
            rtts
        });
        // Pong.
        let mut buf = vec![0u8; 2048];
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) && answered < count {
            port.rx_ring(0).rxsync().unwrap();
            while let Some(len) = port.rx_ring(0).recv(&mut buf) {
                let f = &mut buf[..len];
                if f.len() < 14 || f[12..14] != [0x88, 0xb5] {
                    continue;
                }
                let (d, s) = f.split_at_mut(6);
                d.copy_from_slice(&s[..6]);
                f[6..12].copy_from_slice(&pmac);
                let mut tx = port.tx_ring(0);
                assert!(tx.send(f));
                tx.txsync().unwrap();
                answered += 1;
            }
            port.rx_ring(0).rxsync().unwrap();
            if pinger.is_finished() {
                break;
            }
            port.wait(RingId::Rx(0), Some(Duration::from_millis(20)))
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let rtts = pinger.join().expect("pinger");
        assert_eq!(rtts.len(), count as usize);
        let mut sorted = rtts.clone();
        sorted.sort();
        eprintln!(
            "kernel -> pong -> kernel: {count} pings, rtt median {:?}, max {:?}",
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    });
}

/// UDP from the port to the kernel (200 frames) and back (200 frames, 4 flows), then 50 pings
/// answered by the port.
pub fn udp_both_ways_and_ping(port: &mut Port, p: &Peer) {
    port_to_kernel(port, p, 0, 200, 4321);
    kernel_to_port(port, p, 200, 4, 5555);
    kernel_pings_pong(port, p, 50);
}

/// A two-ring port: each TX ring reaches the kernel, and 16 kernel flows reach both RX rings
/// (`empty` explains a ring that got nothing).
pub fn two_rings_both_ways(port: &mut Port, p: &Peer, empty: &str) {
    assert_eq!((port.num_tx_rings(), port.num_rx_rings()), (2, 2));
    port_to_kernel(port, p, 0, 100, 4321);
    port_to_kernel(port, p, 1, 100, 4322);
    let per_ring = kernel_to_port(port, p, 400, 16, 5555);
    assert!(per_ring.iter().all(|&n| n > 0), "{empty}: {per_ring:?}");
}

/// Traffic, then `dev` (in `ns`) down: `n` frames to `dst` sent meanwhile do not spin the daemon
/// (`what` names the link in the message); then `dev` up, and traffic both ways again.
pub fn link_down_and_up(
    d: &Daemon,
    port: &mut Port,
    p: &Peer,
    (ns, dev, what): (&Netns, &str, &str),
    dst: [u8; 6],
    n: usize,
) {
    port_to_kernel(port, p, 0, 20, 4321);
    ns.ip(&format!("link set {dev} down"));
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(dst, port.mac(), (p.pip, p.kip), (1, 9), &[i as u8; 20]))
        .collect();
    driver_send(port, 0, &frames);
    let cpu = cpu_over_a_second(d, None);
    assert!(
        cpu < IDLE_CPU,
        "the daemon used {cpu:?} of a second with the {what} down"
    );
    ns.ip(&format!("link set {dev} up"));
    std::thread::sleep(Duration::from_millis(200));
    port_to_kernel(port, p, 0, 20, 4323);
    kernel_to_port(port, p, 20, 2, 5555);
}
