//! Golden bytes of the header, and the offloads checked against an independent checksum.

use super::*;

/// RFC 1071 written out independently of [`checksum_add`]: bytes paired by index, the carry
/// folded after every word.
fn rfc1071(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u32 = 0;
    for i in (0..bytes.len()).step_by(2) {
        let hi = u32::from(bytes[i]) << 8;
        let lo = bytes.get(i + 1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header of an IPv4 or IPv6 packet starting at `l3`, for an L4 part of `len`.
fn pseudo(pkt: &[u8], l3: usize, v6: bool, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&pkt[l3 + 8..l3 + 40]);
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        p.extend_from_slice(&pkt[l3 + 12..l3 + 20]);
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    }
    p
}

/// An Ethernet + IPv4/IPv6 + TCP (options: 12 bytes) or UDP frame with `payload` bytes.
fn frame(v6: bool, tcp: bool, payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    let l4_hdr = if tcp { 32 } else { 8 };
    let l4_len = l4_hdr + payload;
    let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend((0..32).map(|i| 0x20 + i as u8));
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&[
            0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
    }
    let l4 = f.len();
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    if tcp {
        // seq 0xfffffe00 (wraps), ack, data offset 8 words, CWR|PSH|ACK|FIN, window.
        f.extend_from_slice(&[
            0xff, 0xff, 0xfe, 0x00, 0, 0, 0, 7, 0x80, 0x99, 1, 0, 0, 0, 0, 0,
        ]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    } else {
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend((0..payload).map(|i| (i * 7 + 3) as u8));
    // As a sender with checksum offload leaves it: the folded pseudo-header sum, uncomplemented.
    let at = l4 + if tcp { 16 } else { 6 };
    let seed = !rfc1071(&[&pseudo(&f, 14, v6, proto, l4_len)]);
    f[at..at + 2].copy_from_slice(&seed.to_be_bytes());
    f
}

fn gso_header(v6: bool, tcp: bool, mss: u16) -> VnetHeader {
    let l4 = if v6 { 54 } else { 34 };
    VnetHeader {
        flags: flags::NEEDS_CSUM,
        gso_type: match (tcp, v6) {
            (false, _) => gso::UDP,
            (true, false) => gso::TCPV4 | gso::ECN,
            (true, true) => gso::TCPV6,
        },
        hdr_len: l4 + if tcp { 32 } else { 8 },
        gso_size: mss,
        csum_start: l4,
        csum_offset: if tcp { 16 } else { 6 },
        num_buffers: 0,
    }
}

#[test]
fn header_bytes_are_virtio_little_endian() {
    let golden = [1, 0x81, 0x42, 0, 0xa8, 0x05, 0x22, 0, 0x10, 0, 1, 0];
    let h = VnetHeader::parse(&golden, 12).unwrap();
    let want = VnetHeader {
        flags: flags::NEEDS_CSUM,
        gso_type: gso::TCPV4 | gso::ECN,
        hdr_len: 0x42,
        gso_size: 1448,
        csum_start: 0x22,
        csum_offset: 16,
        num_buffers: 1,
    };
    assert_eq!(h, want);
    let mut out = [0xee; 12];
    h.emit(&mut out, 12).unwrap();
    assert_eq!(out, golden);
    let short = VnetHeader::parse(&golden, 10).unwrap();
    assert_eq!(short.num_buffers, 0);
    let mut out = [0xee; 12];
    short.emit(&mut out, 10).unwrap();
    assert_eq!((&out[..10], &out[10..]), (&golden[..10], &[0xee, 0xee][..]));
    assert_eq!(VnetHeader::parse(&[], 0).unwrap(), VnetHeader::default());
}

#[test]
fn malformed_headers_are_refused_by_name() {
    let ok = [0u8; 12];
    assert_eq!(
        VnetHeader::parse(&ok, 11),
        Err(VnetError::BadHeaderLength(11))
    );
    assert_eq!(
        VnetHeader::parse(&ok[..9], 10),
        Err(VnetError::Truncated { need: 10, have: 9 })
    );
    let mut b = ok;
    b[0] = 4;
    assert_eq!(VnetHeader::parse(&b, 10), Err(VnetError::UnknownFlags(4)));
    b[0] = 0;
    b[1] = 2;
    assert_eq!(VnetHeader::parse(&b, 10), Err(VnetError::UnknownGsoType(2)));
    assert_eq!(
        VnetHeader::default().emit(&mut [0; 8], 10),
        Err(VnetError::Truncated { need: 10, have: 8 })
    );
}

#[test]
fn partial_checksums_are_completed_and_checked_against_the_frame() {
    for (v6, tcp) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut f = frame(v6, tcp, 301);
        let h = gso_header(v6, tcp, 0);
        complete_checksum(&h, &mut f).unwrap();
        let l4 = usize::from(h.csum_start);
        let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let ph = pseudo(&f, 14, v6, proto, f.len() - l4);
        assert_eq!(rfc1071(&[&ph, &f[l4..]]), 0, "v6 {v6} tcp {tcp}: verifies");
    }
    let mut f = frame(false, true, 10);
    let mut h = gso_header(false, true, 0);
    h.csum_offset = (f.len() - 34 - 1) as u16;
    assert!(matches!(
        complete_checksum(&h, &mut f),
        Err(VnetError::ChecksumOutsideFrame { .. })
    ));
    h.flags = 0;
    assert_eq!(
        complete_checksum(&h, &mut f),
        Ok(()),
        "nothing asked: nothing done"
    );
}

/// Segments a frame and checks each segment byte for byte.
fn check_segmentation(v6: bool, tcp: bool, payload: usize, mss: u16) {
    let f = frame(v6, tcp, payload);
    let h = gso_header(v6, tcp, mss);
    let g = Gso::new(&h, &f).unwrap();
    let (l3, l4) = (14, usize::from(h.csum_start));
    let hl = usize::from(h.hdr_len);
    assert_eq!(g.count(), payload.div_ceil(usize::from(mss)));
    let mut joined = Vec::new();
    for i in 0..g.count() {
        let mut out = [0u8; 2048];
        let n = g.write_segment(&f, i, &mut out).unwrap();
        let s = &out[..n];
        let last = i + 1 == g.count();
        assert_eq!(
            n - hl,
            if last {
                payload - i * usize::from(mss)
            } else {
                usize::from(mss)
            }
        );
        assert_eq!(s[..12], f[..12], "MACs");
        if v6 {
            assert_eq!(usize::from(be16(s, l3 + 4)), n - l3 - 40);
        } else {
            assert_eq!(usize::from(be16(s, l3 + 2)), n - l3);
            assert_eq!(be16(s, l3 + 4), 0x1234 + i as u16, "IP id");
            assert_eq!(rfc1071(&[&s[l3..l4]]), 0, "IP header checksum");
        }
        let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let ph = pseudo(s, l3, v6, proto, n - l4);
        assert_eq!(rfc1071(&[&ph, &s[l4..]]), 0, "segment {i}: L4 checksum");
        if tcp {
            let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
            assert_eq!(seq, 0xffff_fe00u32.wrapping_add(i as u32 * u32::from(mss)));
            let want = 0x10 | if last { 0x09 } else { 0 } | if i == 0 { 0x80 } else { 0 };
            assert_eq!(s[l4 + 13], want, "segment {i}: flags");
            assert_eq!(s[l4 + 20..l4 + 32], f[l4 + 20..l4 + 32], "options");
        } else {
            assert_eq!(usize::from(be16(s, l4 + 4)), n - l4, "UDP length");
        }
        joined.extend_from_slice(&s[hl..]);
    }
    assert_eq!(joined, f[hl..], "payload cut, nothing lost or reordered");
}

#[test]
fn tcp_gso_frames_are_segmented_with_valid_checksums() {
    check_segmentation(false, true, 1000, 300);
    check_segmentation(true, true, 1000, 300);
    check_segmentation(false, true, 900, 300);
    check_segmentation(true, true, 1, 1448);
    check_segmentation(false, true, 1999, 999);
}

#[test]
fn udp_gso_frames_become_datagrams_with_valid_checksums() {
    check_segmentation(false, false, 1000, 256);
    check_segmentation(true, false, 777, 100);
}

#[test]
fn inconsistent_gso_frames_are_refused() {
    let f = frame(false, true, 600);
    let h = gso_header(false, true, 200);
    let bad = |h: VnetHeader, f: &[u8]| Gso::new(&h, f).unwrap_err();
    assert_eq!(
        bad(VnetHeader { flags: 0, ..h }, &f),
        VnetError::GsoWithoutChecksum
    );
    assert_eq!(
        bad(VnetHeader { gso_size: 0, ..h }, &f),
        VnetError::BadGsoSize(0)
    );
    assert_eq!(
        bad(VnetHeader { gso_size: 2, ..h }, &f),
        VnetError::BadGsoSize(2)
    );
    assert_eq!(
        bad(
            VnetHeader {
                gso_type: gso::TCPV6,
                ..h
            },
            &f
        ),
        VnetError::GsoTypeMismatch
    );
    assert_eq!(
        bad(
            VnetHeader {
                gso_type: gso::UDP,
                ..h
            },
            &f
        ),
        VnetError::GsoTypeMismatch
    );
    assert_eq!(
        bad(
            VnetHeader {
                csum_start: 33,
                ..h
            },
            &f
        ),
        VnetError::ChecksumFieldsMismatch
    );
    assert_eq!(
        bad(h, &f[..f.len() - 1]),
        VnetError::BadIpHeader,
        "IP length"
    );
    assert_eq!(
        bad(h, &f[..30]),
        VnetError::Truncated { need: 34, have: 30 }
    );
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(bad(h, &arp), VnetError::UnsupportedEthertype(0x0806));
    let mut frag = f.clone();
    frag[20] = 0x20;
    assert_eq!(bad(h, &frag), VnetError::BadIpHeader, "a fragment");
    let mut doff = f.clone();
    doff[34 + 12] = 0x40;
    assert_eq!(bad(h, &doff), VnetError::BadL4Header);
    let g = Gso::new(&h, &f).unwrap();
    assert_eq!(
        g.write_segment(&f, 0, &mut [0; 100]),
        Err(VnetError::OutputTooSmall {
            need: 266,
            have: 100
        })
    );
}
