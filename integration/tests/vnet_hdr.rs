//! Virtio-net headers end to end: the daemon as a process, drivers attached through the
//! vhost-user transport, each negotiating PTFEAT VNET_HDR and a header length the way netmap's
//! stock ptnet driver does (write PTFEAT, write VNET_HDR_LEN, read back what the device kept).
//! VALE converts between ports of different lengths: GSO frames are segmented and checksums
//! completed for a port without a header (each checked here against a checksum computed
//! independently), 10- and 12-byte headers are converted, a malformed header is a bad slot.

use ptnet_driver::transport::vhost_user::VhostUserTransport;
use ptnet_driver::transport::Transport;
use ptnet_driver::{Port, RingId};
use ptnet_integration::{Backend, PortCounters};
use ptnet_protocol::regs::{ptnet, PTNETMAP_F_VNET_HDR};
use std::time::{Duration, Instant};

fn open(b: &Backend, port: &str, len: u32) -> Port {
    let p = Port::open_with_vnet_hdr(&b.interface(port), len).expect("attach");
    assert_eq!(p.vnet_hdr_len(), len, "{port} kept another header length");
    p
}

fn send(port: &mut Port, frames: &[Vec<u8>]) {
    let mut tx = port.tx_ring(0);
    for f in frames {
        assert!(tx.send(f), "room for the frame");
    }
    tx.txsync().unwrap();
}

/// Receives until `want` frames came or `quiet` passes without any.
fn receive(port: &mut Port, want: usize, quiet: Duration) -> Vec<Vec<u8>> {
    let (mut got, mut last) = (Vec::new(), Instant::now());
    while got.len() < want && last.elapsed() < quiet {
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        let mut buf = [0u8; 4096];
        while let Some(n) = rx.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            last = Instant::now();
        }
        rx.rxsync().unwrap();
        if got.len() < want {
            port.wait_any(&[RingId::Rx(0)], Some(Duration::from_millis(20)))
                .unwrap();
        }
    }
    got
}

/// RFC 1071, one byte pair at a time.
fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The TCP pseudo-header of the IPv4 or IPv6 packet at offset 14, for `len` TCP bytes.
fn pseudo(pkt: &[u8], v6: bool, len: usize) -> Vec<u8> {
    let mut p = if v6 {
        pkt[22..54].to_vec()
    } else {
        pkt[26..34].to_vec()
    };
    p.extend_from_slice(&[0, 0, 0, 6]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

const DST: [u8; 6] = [2, 0, 0, 0, 0, 0x99];

/// A TCP-like Ethernet/IP/TCP frame of `payload` bytes to the unknown MAC `DST` (flooded), its
/// TCP checksum left partial (the pseudo-header sum) as a sender with checksum offload leaves it.
fn tcp_frame(v6: bool, src: u8, payload: usize) -> Vec<u8> {
    let mut f = DST.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, src]);
    let tcp_len = 20 + payload;
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend((0..32u8).map(|i| 0xf0 ^ i));
    } else {
        f.extend_from_slice(&[0x08, 0, 0x45, 0]);
        f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 7, 0x40, 0, 64, 6, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2]);
    }
    // Ports, seq 1000, ack, 5 words, PSH|ACK|FIN, window, checksum, urgent.
    f.extend_from_slice(&[
        0x1f, 0x90, 0xc3, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 1, 0x50, 0x19,
    ]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    let l4 = f.len() - tcp_len;
    let seed = !inet_checksum(&[&pseudo(&f, v6, tcp_len)]);
    f[l4 + 16..l4 + 18].copy_from_slice(&seed.to_be_bytes());
    f
}

/// A 12-byte virtio-net header in front of `frame`: NEEDS_CSUM, GSO of `mss` unless 0.
fn with_header(frame: &[u8], v6: bool, mss: u16) -> Vec<u8> {
    let l4: u16 = if v6 { 54 } else { 34 };
    let gso_type = match (mss, v6) {
        (0, _) => 0,
        (_, false) => 1,
        (_, true) => 4,
    };
    let mut h = vec![1, gso_type];
    for v in [l4 + 20, mss, l4, 16, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(frame);
    h
}

/// Checks that `segs` are `frame` cut into `mss`-byte TCP segments with valid checksums.
fn check_segments(frame: &[u8], v6: bool, mss: usize, segs: &[Vec<u8>]) {
    let l4 = if v6 { 54 } else { 34 };
    let payload = frame.len() - l4 - 20;
    assert_eq!(segs.len(), payload.div_ceil(mss), "segments");
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if v6 {
            assert_eq!(be16(s, 18), s.len() - 54, "IPv6 payload length");
        } else {
            assert_eq!(be16(s, 16), s.len() - 14, "IPv4 total length");
            assert_eq!(be16(s, 18), 7 + i, "IPv4 id");
            assert_eq!(inet_checksum(&[&s[14..34]]), 0, "IPv4 header checksum");
        }
        let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
        assert_eq!(seq as usize, 1000 + i * mss, "sequence number");
        assert_eq!(
            s[l4 + 13],
            if last { 0x19 } else { 0x10 },
            "FIN/PSH on the last"
        );
        let tcp = &s[l4..];
        assert_eq!(
            inet_checksum(&[&pseudo(s, v6, tcp.len()), tcp]),
            0,
            "segment {i}: TCP checksum"
        );
        joined.extend_from_slice(&s[l4 + 20..]);
    }
    assert_eq!(joined, frame[l4 + 20..], "the payload, in order");
}

#[test]
fn vale_gso_frames_reach_ports_with_and_without_a_header() {
    // a sends from three source MACs (one per frame kind): it may claim them.
    let ports = ["vale9:a@conf:macs=3", "vale9:b", "vale9:c"];
    let (_d, b) = Backend::in_temp_dir("vnetgso", &ports);
    let (mut a, mut bb) = (open(&b, "vale9:a", 12), open(&b, "vale9:b", 12));
    let mut c = open(&b, "vale9:c", 0);
    let q = Duration::from_millis(500);
    for (v6, src) in [(false, 1), (true, 2)] {
        let frame = tcp_frame(v6, src, 1800);
        let sent = with_header(&frame, v6, 500);
        send(&mut a, std::slice::from_ref(&sent));
        // Same header length: the GSO frame as it was sent.
        assert_eq!(receive(&mut bb, 1, q), vec![sent.clone()]);
        // No header: segmented by the switch.
        let segs = receive(&mut c, 4, q);
        check_segments(&frame, v6, 500, &segs);
    }
    // A partial checksum without GSO: completed for c, left to b.
    let frame = tcp_frame(false, 3, 300);
    send(&mut a, &[with_header(&frame, false, 0)]);
    assert_eq!(receive(&mut bb, 1, q)[0][12..], frame[..]);
    let got = receive(&mut c, 1, q);
    assert_eq!(got.len(), 1);
    let tcp = &got[0][34..];
    assert_eq!(inet_checksum(&[&pseudo(&got[0], false, tcp.len()), tcp]), 0);
    assert_eq!(got[0][..50], frame[..50], "only the checksum changed");
}

#[test]
fn vale_converts_between_ten_and_twelve_byte_headers() {
    let (_d, b) = Backend::in_temp_dir("vnet1012", &["vale8:m", "vale8:t", "vale8:z"]);
    let (mut m, mut t, mut z) = (
        open(&b, "vale8:m", 12),
        open(&b, "vale8:t", 10),
        open(&b, "vale8:z", 0),
    );
    let q = Duration::from_millis(500);
    let frame = tcp_frame(false, 4, 100);
    let twelve = with_header(&frame, false, 0);
    send(&mut m, std::slice::from_ref(&twelve));
    assert_eq!(
        receive(&mut t, 1, q),
        vec![[&twelve[..10], &frame[..]].concat()],
        "12 -> 10"
    );
    receive(&mut z, 1, q);
    // Each port sends from its own source MAC (the switch refuses another port's).
    let frame_t = tcp_frame(false, 5, 100);
    send(&mut t, &[[&twelve[..10], &frame_t[..]].concat()]);
    let mut want = [&twelve[..12], &frame_t[..]].concat();
    want[10] = 1; // num_buffers
    assert_eq!(receive(&mut m, 1, q), vec![want], "10 -> 12");
    receive(&mut z, 1, q);
    let frame = tcp_frame(false, 6, 100);
    send(&mut z, std::slice::from_ref(&frame));
    let zero12 = [&[0u8; 10][..], &[1, 0], &frame[..]].concat();
    assert_eq!(
        receive(&mut m, 1, q),
        vec![zero12],
        "0 -> 12: a zero header"
    );
    assert_eq!(
        receive(&mut t, 1, q),
        vec![[&[0u8; 10][..], &frame[..]].concat()],
        "0 -> 10"
    );
}

#[test]
fn malformed_headers_are_bad_slots_and_bad_lengths_are_refused() {
    let (_d, mut b) = Backend::in_temp_dir("vnetbad", &["vale7:a", "vale7:c", "null:n"]);
    // The registers: the feature is offered by VALE ports, not by null ports; 11 is refused.
    let mut t = VhostUserTransport::open(&b.socket("vale7:a")).unwrap();
    assert_eq!(t.read_reg(ptnet::PTFEAT).unwrap(), PTNETMAP_F_VNET_HDR);
    t.write_reg(ptnet::VNET_HDR_LEN, 12).unwrap();
    assert_eq!(
        t.read_reg(ptnet::VNET_HDR_LEN).unwrap(),
        0,
        "not negotiated: kept at 0"
    );
    t.write_reg(ptnet::PTFEAT, PTNETMAP_F_VNET_HDR).unwrap();
    t.write_reg(ptnet::VNET_HDR_LEN, 10).unwrap();
    t.write_reg(ptnet::VNET_HDR_LEN, 11).unwrap();
    assert_eq!(
        t.read_reg(ptnet::VNET_HDR_LEN).unwrap(),
        10,
        "11 refused, 10 kept"
    );
    drop(t);
    let mut n = VhostUserTransport::open(&b.socket("null:n")).unwrap();
    assert_eq!(n.read_reg(ptnet::PTFEAT).unwrap(), 0);
    drop(n);

    let (mut a, mut c) = (open(&b, "vale7:a", 12), open(&b, "vale7:c", 0));
    let frame = tcp_frame(false, 5, 1000);
    let mut bad_flags = with_header(&frame, false, 400);
    bad_flags[0] = 0x40;
    let mut bad_gso = with_header(&frame, false, 400);
    bad_gso[1] = 4; // TCPv6 on an IPv4 frame
    let good = with_header(&frame, false, 0);
    send(&mut a, &[bad_flags, bad_gso, good]);
    let got = receive(&mut c, 2, Duration::from_millis(500));
    assert_eq!(got.len(), 1, "only the sane frame travels");
    drop((a, c));
    b.stop();
    let log = b.log_text();
    let c = PortCounters::last_stopped(&log, "vale7:a")
        .unwrap_or_else(|| panic!("no counters for vale7:a:\n{log}"));
    assert_eq!(c.bad_slots, 2, "{log}");
    assert!(
        log.contains("VNET_HDR_LEN 12 (PTFEAT VNET_HDR not accepted)"),
        "the refusal is logged:\n{log}"
    );
}

#[test]
fn pipes_convert_in_place_and_drop_gso_toward_an_end_without_a_header() {
    let (_d, mut b) = Backend::in_temp_dir("vnetpipe", &["netmap:vp{1", "netmap:vp}1"]);
    let (mut m, mut s) = (open(&b, "netmap:vp{1", 12), open(&b, "netmap:vp}1", 0));
    let q = Duration::from_millis(500);
    let frame = tcp_frame(true, 6, 600);
    // GSO toward the end without a header: dropped; a partial checksum: completed in place.
    send(
        &mut m,
        &[with_header(&frame, true, 200), with_header(&frame, true, 0)],
    );
    let got = receive(&mut s, 2, q);
    let sane: Vec<_> = got.iter().filter(|f| !f.is_empty()).collect();
    assert_eq!(sane.len(), 1, "the GSO frame is dropped");
    let tcp = &sane[0][54..];
    assert_eq!(inet_checksum(&[&pseudo(sane[0], true, tcp.len()), tcp]), 0);
    assert_eq!(sane[0][..70], frame[..70], "only the checksum changed");
    // The other way: a zero header is inserted.
    send(&mut s, std::slice::from_ref(&frame));
    let zero12 = [&[0u8; 10][..], &[1, 0], &frame[..]].concat();
    assert_eq!(receive(&mut m, 1, q), vec![zero12]);
    drop((m, s));
    b.stop();
    let log = b.log_text();
    let c = PortCounters::last_stopped(&log, "netmap:vp{1")
        .unwrap_or_else(|| panic!("no counters for the pipe:\n{log}"));
    assert_eq!(c.drops, 1, "{log}");
}

/// Sends `frame` from `port` as a chain of slots (NS_MOREFRAG on all but the last), as netmap's
/// stock Linux ptnet driver sends a TSO frame longer than a buffer.
fn send_chain(port: &mut Port, frame: &[u8]) {
    let mut tx = port.tx_ring(0);
    assert!(tx.send_chain(frame), "room for the chain");
    tx.txsync().unwrap();
}

#[test]
fn vale_assembles_chains_of_slots_and_delivers_their_segments() {
    let ports = ["vale6:a@conf:macs=3", "vale6:b", "vale6:c"];
    let (_d, mut b) = Backend::in_temp_dir("vnetchain", &ports);
    let (mut a, mut bb) = (open(&b, "vale6:a", 12), open(&b, "vale6:b", 12));
    let mut c = open(&b, "vale6:c", 0);
    let q = Duration::from_millis(500);
    for (v6, src) in [(false, 1), (true, 2)] {
        // 6000 bytes of payload in 1448-byte segments: 3 slots of 2048 bytes, 5 segments.
        let frame = tcp_frame(v6, src, 6000);
        send_chain(&mut a, &with_header(&frame, v6, 1448));
        // A port with the same header: the segments, each behind a header asking for nothing.
        let got = receive(&mut bb, 5, q);
        let mut segs = Vec::new();
        for s in &got {
            assert_eq!(
                s[..12],
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                "segment header"
            );
            segs.push(s[12..].to_vec());
        }
        check_segments(&frame, v6, 1448, &segs);
        // A port without a header: the same segments.
        check_segments(&frame, v6, 1448, &receive(&mut c, 5, q));
    }
    // A chain that is no GSO frame and fits no buffer: dropped at each of the two ports.
    let jumbo = with_header(&tcp_frame(false, 3, 3000), false, 0);
    send_chain(&mut a, &jumbo);
    // A malformed header on a chain: its two slots are bad.
    let mut bad = with_header(&tcp_frame(false, 3, 3000), false, 1448);
    bad[1] = 4; // TCPv6 on an IPv4 frame
    send_chain(&mut a, &bad);
    // Frames before and after a chain keep their order around it.
    let small = |n: usize| with_header(&tcp_frame(false, 3, n), false, 0);
    send(&mut a, &[small(100)]);
    send_chain(
        &mut a,
        &with_header(&tcp_frame(false, 3, 3000), false, 1448),
    );
    send(&mut a, &[small(200)]);
    let got = receive(&mut c, 5, q);
    let lens: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(lens, [154, 1502, 1502, 158, 254], "order around the chain");
    drop((a, bb, c));
    b.stop();
    let log = b.log_text();
    let c = PortCounters::last_stopped(&log, "vale6:a")
        .unwrap_or_else(|| panic!("no counters for vale6:a:\n{log}"));
    assert_eq!(c.drops, 2, "{log}");
    assert_eq!(c.bad_slots, 2, "{log}");
}

#[test]
fn pipes_carry_chains_of_slots_to_an_end_with_a_header_only() {
    let ports = ["netmap:vc{1", "netmap:vc}1", "netmap:vd{1", "netmap:vd}1"];
    let (_d, mut b) = Backend::in_temp_dir("vnetpipechain", &ports);
    let (mut m, mut s) = (open(&b, ports[0], 12), open(&b, ports[1], 12));
    let sent = with_header(&tcp_frame(false, 1, 6000), false, 1448);
    send_chain(&mut m, &sent);
    // The chain crosses as it is: the receiver joins its three slots into the frame sent.
    let until = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let slots = loop {
        let mut rx = s.rx_ring(0);
        rx.rxsync().unwrap();
        if let Some(n) = rx.recv_chain(&mut got) {
            rx.rxsync().unwrap();
            break n;
        }
        assert!(Instant::now() < until, "no chain received");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(slots, 3);
    assert_eq!(got, sent, "the frame, joined");
    // Toward an end without a header a chain cannot be finished in place: dropped whole (its
    // slots cross empty), counted once; the frame after it crosses converted.
    let (mut m2, mut s2) = (open(&b, ports[2], 12), open(&b, ports[3], 0));
    send_chain(&mut m2, &sent);
    let frame = tcp_frame(false, 1, 100);
    send(&mut m2, &[with_header(&frame, false, 0)]);
    let got = receive(&mut s2, 4, Duration::from_millis(500));
    let sane: Vec<_> = got.iter().filter(|f| !f.is_empty()).collect();
    assert_eq!(
        sane.len(),
        1,
        "only the single-slot frame: {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(sane[0].len(), frame.len());
    drop((m, s, m2, s2));
    b.stop();
    let log = b.log_text();
    let c = PortCounters::last_stopped(&log, ports[2])
        .unwrap_or_else(|| panic!("no counters for the pipe:\n{log}"));
    assert_eq!(c.drops, 1, "{log}");
}
