//! Ethernet/IPv4/UDP frames: built for the driver to send, taken apart when it receives.

use ptnet_protocol::vnet::{checksum_add, checksum_finish};

/// The Internet checksum of `h`.
pub fn csum(h: &[u8]) -> u16 {
    checksum_finish(checksum_add(0, h))
}

/// Ethernet + IPv4 + UDP (no UDP checksum) carrying `payload`.
pub fn udp_frame(
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
pub fn udp_payload(f: &[u8], dport: u16) -> Option<Vec<u8>> {
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

/// `a.b.c.d`.
pub fn ip_str(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The UDP payload of `f` if it is IPv4/UDP to `dport`, whatever its checksum holds (a frame
/// behind a header may carry a partial one, with NEEDS_CSUM in the header).
pub fn udp_payload_any_csum(f: &[u8], dport: u16) -> Option<Vec<u8>> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let u = 14 + usize::from(f[14] & 0xf) * 4;
    if f.len() < u + 8 || u16::from_be_bytes([f[u + 2], f[u + 3]]) != dport {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([f[u + 4], f[u + 5]]));
    f.get(u + 8..u + len).map(<[u8]>::to_vec)
}
