//! Frames, and the driver side: what the guest sends and receives.

use ptnet_driver::{Port, RingId};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Frames

pub(crate) fn csum(h: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet + IPv4 + UDP (no UDP checksum) carrying `payload`.
pub(crate) fn udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ips: ([u8; 4], [u8; 4]),
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&ips.0);
    ip[16..20].copy_from_slice(&ips.1);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// The UDP payload of `f` if it is IPv4/UDP to `dport`.
pub(crate) fn udp_payload(f: &[u8], dport: u16) -> Option<Vec<u8>> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let ihl = usize::from(f[14] & 0xf) * 4;
    let u = 14 + ihl;
    if f.len() < u + 8 || u16::from_be_bytes([f[u + 2], f[u + 3]]) != dport {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([f[u + 4], f[u + 5]]));
    let seg = f.get(u..u + len)?;
    // The port hands the guest complete frames: a UDP checksum, when present, is right.
    if seg[6..8] != [0, 0] {
        let mut ph = Vec::with_capacity(12 + seg.len());
        ph.extend_from_slice(&f[26..34]);
        ph.extend_from_slice(&[0, 17]);
        ph.extend_from_slice(&(len as u16).to_be_bytes());
        ph.extend_from_slice(seg);
        assert_eq!(csum(&ph), 0, "bad UDP checksum in {:02x?}", &f[..u + len]);
    }
    Some(seg[8..].to_vec())
}

// ---------------------------------------------------------------------------------------------
// Driver side

/// Transmits `frames` on TX ring `ring` and waits until the daemon took them all.
pub(crate) fn driver_send(port: &mut Port, ring: u32, frames: &[Vec<u8>]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while i < frames.len() {
        let mut tx = port.tx_ring(ring);
        while i < frames.len() && tx.send(&frames[i]) {
            i += 1;
        }
        tx.txsync().unwrap();
        if i < frames.len() {
            assert!(Instant::now() < deadline, "TX ring stuck");
            port.wait(RingId::Tx(ring), Some(Duration::from_millis(50)))
                .unwrap();
        }
    }
    loop {
        let mut tx = port.tx_ring(ring);
        tx.txsync_reclaim().unwrap();
        if tx.pending() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "TX never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Receives frames on every RX ring until `want` of them pass `pick` or `timeout` passes.
/// Returns what `pick` kept, with the ring each came from.
pub(crate) fn driver_recv<T>(
    port: &mut Port,
    want: usize,
    timeout: Duration,
    mut pick: impl FnMut(&[u8]) -> Option<T>,
) -> Vec<(u32, T)> {
    let nrx = port.num_rx_rings();
    let ids: Vec<RingId> = (0..nrx).map(RingId::Rx).collect();
    let mut buf = vec![0u8; 2048];
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        for r in 0..nrx {
            let mut rx = port.rx_ring(r);
            rx.rxsync().unwrap();
            while let Some(len) = rx.recv(&mut buf) {
                if let Some(v) = pick(&buf[..len.min(buf.len())]) {
                    got.push((r, v));
                }
            }
            rx.rxsync().unwrap();
        }
        if got.len() < want {
            port.wait_any(&ids, Some(Duration::from_millis(20)))
                .unwrap();
        }
    }
    got
}

pub(crate) fn recv_all(sock: &UdpSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}
