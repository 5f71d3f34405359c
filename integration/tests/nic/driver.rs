//! The driver side (`ptnet_driver::Port`, the guest's stand-in) and kernel sockets' receive loop.

use ptnet_driver::{Port, RingId};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Transmits `frames` on TX ring `ring` and waits until the daemon took them all.
pub fn driver_send(port: &mut Port, ring: u32, frames: &[Vec<u8>]) {
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
pub fn driver_recv<T>(
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

pub fn recv_all(sock: &UdpSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
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
