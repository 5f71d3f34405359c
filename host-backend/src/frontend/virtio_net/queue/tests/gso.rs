//! TX chains carrying GSO frames: where TSO was negotiated they go to the scratch buffer
//! whole, to be cut into segments; elsewhere they are refused.

use super::*;

/// A TCP/IPv4 frame with `payload` bytes after its 54 bytes of headers.
fn tcp4_frame(payload: usize) -> Vec<u8> {
    let mut f = frame(54 + payload);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[20..22].copy_from_slice(&[0, 0]); // no fragmentation
    f[23] = 6; // TCP
    f[46] = 5 << 4; // data offset: 20 bytes
    f
}

fn gso_hdr(kind: u8, mss: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    VnetHeader {
        flags: vnet::flags::NEEDS_CSUM,
        gso_type: kind,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    }
    .emit(&mut h, 12)
    .unwrap();
    h
}

/// Pops the next chain as TX with a GSO scratch buffer.
fn tx_gso(r: &mut Ring, c: &HdrConf, scratch: &mut [u8]) -> Result<TxFrame, TxDrop> {
    let mut buf = vec![0u8; 2048];
    let chain = r.q.pop(&r.mem).expect("a chain");
    tx_chain(
        &r.mem,
        chain,
        c,
        &VolatileSlice::from(&mut buf[..]),
        scratch,
    )
}

/// The header then `f` over three descriptors, made available.
fn push_three(r: &mut Ring, h: &[u8; 12], f: &[u8]) {
    r.write(DATA, h);
    r.write(DATA + 12, f);
    let total = 12 + f.len() as u32;
    let (a, b) = (112u32.min(total), 3000u32.min(total));
    r.desc(0, DATA, a, F_NEXT, 1);
    r.desc(1, DATA + u64::from(a), b - a, F_NEXT, 2);
    r.desc(2, DATA + u64::from(b), total - b, 0, 0);
    r.push(0);
}

#[test]
fn tx_gso_frames_go_to_the_scratch_buffer_where_tso_was_negotiated() {
    let mut r = Ring::new();
    let mut scratch = vec![0u8; 65536 + 256];
    let tso = HdrConf {
        csum: true,
        tso4: true,
        ..conf(12)
    };
    // 5000 bytes of payload over three descriptors: the frame outgrows the 2 KiB buffer and
    // continues in the scratch buffer, whole.
    let big = tcp4_frame(5000);
    push_three(&mut r, &gso_hdr(vnet::gso::TCPV4, 1400), &big);
    let Ok(TxFrame::Gso(h, n)) = tx_gso(&mut r, &tso, &mut scratch) else {
        panic!("a GSO frame");
    };
    assert_eq!(
        (n, h.gso_size, h.gso_kind()),
        (big.len(), 1400, vnet::gso::TCPV4)
    );
    assert_eq!(&scratch[..n], &big[..]);
    let g = vnet::Gso::new(&h, &scratch[..n]).unwrap();
    assert_eq!(g.count(), 4);
    // A GSO frame that fits one buffer goes to the scratch buffer too (it is cut there).
    let small = tcp4_frame(500);
    push_three(&mut r, &gso_hdr(vnet::gso::TCPV4, 1400), &small);
    scratch.fill(0);
    assert_eq!(
        tx_gso(&mut r, &tso, &mut scratch),
        Ok(TxFrame::Gso(
            VnetHeader::parse(&gso_hdr(vnet::gso::TCPV4, 1400), 12).unwrap(),
            small.len()
        ))
    );
    assert_eq!(&scratch[..small.len()], &small[..]);
}

#[test]
fn tx_gso_frames_are_refused_unless_negotiated_and_long_frames_must_be_gso() {
    let mut r = Ring::new();
    let mut scratch = vec![0u8; 65536 + 256];
    let tso = HdrConf {
        csum: true,
        tso4: true,
        ..conf(12)
    };
    let big = tcp4_frame(5000);
    let cases = [
        // TSO4 not negotiated.
        (
            gso_hdr(vnet::gso::TCPV4, 1400),
            HdrConf { tso4: false, ..tso },
            TxDrop::BadHeader,
        ),
        // TSO6 not negotiated (and the frame is IPv4 anyway).
        (gso_hdr(vnet::gso::TCPV6, 1400), tso, TxDrop::BadHeader),
        // UFO and ECN are never offered.
        (gso_hdr(vnet::gso::UDP, 1400), tso, TxDrop::BadHeader),
        (
            gso_hdr(vnet::gso::TCPV4 | vnet::gso::ECN, 1400),
            tso,
            TxDrop::BadHeader,
        ),
        // Longer than a buffer and not GSO.
        (hdr(0, 0, 0, 0), tso, TxDrop::TooLong),
    ];
    for (h, c, want) in cases {
        push_three(&mut r, &h, &big);
        assert_eq!(tx_gso(&mut r, &c, &mut scratch), Err(want), "{h:?}");
    }
    // Longer than the scratch buffer.
    push_three(&mut r, &gso_hdr(vnet::gso::TCPV4, 1400), &big);
    assert_eq!(
        tx_gso(&mut r, &tso, &mut scratch[..4000]),
        Err(TxDrop::TooLong)
    );
    // Without a scratch buffer a long frame is too long, GSO or not.
    push_three(&mut r, &gso_hdr(vnet::gso::TCPV4, 1400), &big);
    assert_eq!(r.tx(&tso).0, Err(TxDrop::TooLong));
}
