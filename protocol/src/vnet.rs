//! The virtio-net header that a port with PTFEAT `PTNETMAP_F_VNET_HDR` carries in front of every
//! frame (`struct virtio_net_hdr`, 10 bytes, or `virtio_net_hdr_mrg_rxbuf`, 12), and the two
//! offloads a switch must perform itself for a receiver that has no header: completing a partial
//! checksum (`NEEDS_CSUM`) and segmenting a GSO frame into MSS-sized frames.
//!
//! Everything in the header comes from a guest: [`VnetHeader::parse`], [`complete_checksum`] and
//! [`Gso::new`] check every field against the frame before anything is written, and say what was
//! wrong with a [`VnetError`] (the caller drops the frame and counts it). No allocation: frames are
//! plain byte slices, segments go into buffers the caller provides.

use std::fmt;

/// `struct virtio_net_hdr`.
pub const HDR_LEN: usize = 10;
/// `struct virtio_net_hdr_mrg_rxbuf`: the 10 bytes and `num_buffers`.
pub const HDR_LEN_MRG: usize = 12;
/// The most segments one GSO frame may produce: a tiny `gso_size` must not turn one slot into
/// a flood.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Header lengths a port accepts (as netmap's `NETMAP_REQ_PORT_HDR_SET`): none, 10 or 12.
pub fn is_valid_len(len: usize) -> bool {
    matches!(len, 0 | HDR_LEN | HDR_LEN_MRG)
}

/// `flags` bits.
pub mod flags {
    /// The checksum from `csum_start` is partial: whoever takes the header off completes it.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was verified.
    pub const DATA_VALID: u8 = 2;
}

/// `gso_type` values.
pub mod gso {
    /// Not a GSO frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP (segmented into datagrams with their own UDP headers, as netmap's VALE does).
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// Flag: the TCP stream uses ECN (CWR stays on the first segment only).
    pub const ECN: u8 = 0x80;
}

/// Why a header or the frame behind it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VnetError {
    /// A header length other than 0, 10 or 12.
    BadHeaderLength(usize),
    /// Fewer bytes than the header or protocol header needs.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// `flags` bits beyond NEEDS_CSUM and DATA_VALID.
    UnknownFlags(u8),
    /// A `gso_type` other than NONE, TCPV4, UDP, TCPV6 (ECN aside).
    UnknownGsoType(u8),
    /// `csum_start` + `csum_offset` + 2 bytes do not fit the frame.
    ChecksumOutsideFrame {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
    },
    /// A GSO frame without NEEDS_CSUM (the virtio spec requires it).
    GsoWithoutChecksum,
    /// `gso_size` 0, or so small the frame would exceed [`MAX_GSO_SEGMENTS`].
    BadGsoSize(u16),
    /// A GSO frame that is not IPv4 or IPv6 over Ethernet (the ethertype).
    UnsupportedEthertype(u16),
    /// An IP header that is inconsistent (version, length, fragment, extension headers).
    BadIpHeader,
    /// The IP version or L4 protocol does not match `gso_type`.
    GsoTypeMismatch,
    /// The checksum fields do not point at the L4 checksum the frame has.
    ChecksumFieldsMismatch,
    /// A TCP data offset or UDP length that does not fit.
    BadL4Header,
    /// An output buffer too small for its segment.
    OutputTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
}

impl fmt::Display for VnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadHeaderLength(l) => write!(f, "virtio-net header length {l} (0, 10 or 12)"),
            Self::Truncated { need, have } => write!(f, "{have} bytes, {need} needed"),
            Self::UnknownFlags(v) => write!(f, "unknown virtio-net header flags {v:#x}"),
            Self::UnknownGsoType(v) => write!(f, "unknown gso_type {v:#x}"),
            Self::ChecksumOutsideFrame { start, offset } => {
                write!(
                    f,
                    "csum_start {start} + csum_offset {offset} outside the frame"
                )
            }
            Self::GsoWithoutChecksum => write!(f, "GSO frame without NEEDS_CSUM"),
            Self::BadGsoSize(s) => write!(f, "gso_size {s}"),
            Self::UnsupportedEthertype(t) => write!(f, "GSO frame with ethertype {t:#06x}"),
            Self::BadIpHeader => write!(f, "inconsistent IP header"),
            Self::GsoTypeMismatch => write!(f, "gso_type does not match the frame"),
            Self::ChecksumFieldsMismatch => write!(f, "checksum fields do not match the frame"),
            Self::BadL4Header => write!(f, "inconsistent TCP/UDP header"),
            Self::OutputTooSmall { need, have } => {
                write!(f, "output buffer of {have} bytes, {need} needed")
            }
        }
    }
}

impl std::error::Error for VnetError {}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn need(len: usize, have: usize) -> Result<(), VnetError> {
    if have < len {
        Err(VnetError::Truncated { need: len, have })
    } else {
        Ok(())
    }
}

/// A virtio-net header, field by field (little-endian on the wire, as virtio 1.0 says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    /// [`flags`] bits.
    pub flags: u8,
    /// [`gso`] type.
    pub gso_type: u8,
    /// Length of the headers before the payload: a hint only, never trusted here.
    pub hdr_len: u16,
    /// The MSS of a GSO frame.
    pub gso_size: u16,
    /// Where the partial checksum starts (from the start of the frame).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Receive buffers the frame spans (12-byte form; 0 in the 10-byte one).
    pub num_buffers: u16,
}

impl VnetHeader {
    /// Parses the `len`-byte header at the start of `buf`; `len` 0 gives the empty header (no
    /// offload asked for). Checks the lengths, the flags and the GSO type.
    pub fn parse(buf: &[u8], len: usize) -> Result<Self, VnetError> {
        if !is_valid_len(len) {
            return Err(VnetError::BadHeaderLength(len));
        }
        need(len, buf.len())?;
        if len == 0 {
            return Ok(Self::default());
        }
        let h = Self {
            flags: buf[0],
            gso_type: buf[1],
            hdr_len: le16(buf, 2),
            gso_size: le16(buf, 4),
            csum_start: le16(buf, 6),
            csum_offset: le16(buf, 8),
            num_buffers: if len == HDR_LEN_MRG { le16(buf, 10) } else { 0 },
        };
        if h.flags & !(flags::NEEDS_CSUM | flags::DATA_VALID) != 0 {
            return Err(VnetError::UnknownFlags(h.flags));
        }
        if !matches!(h.gso_kind(), gso::NONE | gso::TCPV4 | gso::UDP | gso::TCPV6) {
            return Err(VnetError::UnknownGsoType(h.gso_type));
        }
        Ok(h)
    }

    /// Writes the header as `len` bytes (0, 10 or 12) at the start of `out`.
    pub fn emit(&self, out: &mut [u8], len: usize) -> Result<(), VnetError> {
        if !is_valid_len(len) {
            return Err(VnetError::BadHeaderLength(len));
        }
        need(len, out.len())?;
        if len == 0 {
            return Ok(());
        }
        out[0] = self.flags;
        out[1] = self.gso_type;
        for (at, v) in [
            (2, self.hdr_len),
            (4, self.gso_size),
            (6, self.csum_start),
            (8, self.csum_offset),
        ] {
            out[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        if len == HDR_LEN_MRG {
            out[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        }
        Ok(())
    }

    /// The GSO type without the ECN flag.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !gso::ECN
    }

    /// Is this a GSO frame?
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != gso::NONE
    }

    /// Does the frame carry a partial checksum to complete?
    pub fn needs_csum(&self) -> bool {
        self.flags & flags::NEEDS_CSUM != 0
    }
}

/// Adds `data` to a ones'-complement sum as big-endian 16-bit words (an odd last byte padded).
pub fn checksum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the value an Internet checksum field holds.
pub fn checksum_finish(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Completes the partial checksum of `frame` (the frame after its header) if `h` asks for it:
/// the ones'-complement sum from `csum_start` to the end (which covers the pseudo-header sum the
/// sender left in the field), stored at `csum_start + csum_offset`. A zero result is stored as
/// 0xffff, as Linux does (UDP reserves 0 for "no checksum").
pub fn complete_checksum(h: &VnetHeader, frame: &mut [u8]) -> Result<(), VnetError> {
    if !h.needs_csum() {
        return Ok(());
    }
    let (start, at) = checksum_position(h, frame.len())?;
    let c = checksum_finish(checksum_add(0, &frame[start..]));
    put_be16(frame, at, if c == 0 { 0xffff } else { c });
    Ok(())
}

/// `csum_start` and the checksum's position, checked against a frame of `len` bytes.
fn checksum_position(h: &VnetHeader, len: usize) -> Result<(usize, usize), VnetError> {
    let (start, at) = (
        usize::from(h.csum_start),
        usize::from(h.csum_start) + usize::from(h.csum_offset),
    );
    if at + 2 > len {
        return Err(VnetError::ChecksumOutsideFrame {
            start: h.csum_start,
            offset: h.csum_offset,
        });
    }
    Ok((start, at))
}

const ETH_HLEN: usize = 14;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// A GSO frame, checked and measured: how to cut it into [`Gso::count`] segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the TCP/UDP header.
    l4: usize,
    /// Length of all headers (Ethernet to TCP/UDP): what every segment repeats.
    headers: usize,
    mss: usize,
    frame_len: usize,
    ipv4: bool,
    tcp: bool,
}

impl Gso {
    /// Checks the GSO frame `frame` (after its header) against `h`: Ethernet (with up to two
    /// 802.1Q tags), an IPv4 header without fragmentation or an IPv6 header without extension
    /// headers, whose length fields match the frame, the L4 protocol `gso_type` names, the
    /// checksum fields pointing at its checksum, and at most [`MAX_GSO_SEGMENTS`] segments.
    pub fn new(h: &VnetHeader, frame: &[u8]) -> Result<Self, VnetError> {
        let kind = h.gso_kind();
        if !matches!(kind, gso::TCPV4 | gso::UDP | gso::TCPV6) {
            return Err(VnetError::UnknownGsoType(h.gso_type));
        }
        if !h.needs_csum() {
            return Err(VnetError::GsoWithoutChecksum);
        }
        let mut l3 = ETH_HLEN;
        need(l3, frame.len())?;
        let mut ethertype = be16(frame, 12);
        for _ in 0..2 {
            if ethertype != ETHERTYPE_VLAN {
                break;
            }
            l3 += 4;
            need(l3, frame.len())?;
            ethertype = be16(frame, l3 - 2);
        }
        let (ipv4, proto, l4) = match ethertype {
            ETHERTYPE_IPV4 => {
                need(l3 + 20, frame.len())?;
                let ihl = usize::from(frame[l3] & 0x0f) * 4;
                let frag = be16(frame, l3 + 6);
                if frame[l3] >> 4 != 4
                    || ihl < 20
                    || l3 + ihl > frame.len()
                    || usize::from(be16(frame, l3 + 2)) != frame.len() - l3
                    || frag & 0x3fff != 0
                {
                    return Err(VnetError::BadIpHeader);
                }
                (true, frame[l3 + 9], l3 + ihl)
            }
            ETHERTYPE_IPV6 => {
                need(l3 + 40, frame.len())?;
                if frame[l3] >> 4 != 6 || usize::from(be16(frame, l3 + 4)) != frame.len() - l3 - 40
                {
                    return Err(VnetError::BadIpHeader);
                }
                let next = frame[l3 + 6];
                if next != IPPROTO_TCP && next != IPPROTO_UDP {
                    // Extension headers are not walked: such frames are refused.
                    return Err(VnetError::GsoTypeMismatch);
                }
                (false, next, l3 + 40)
            }
            t => return Err(VnetError::UnsupportedEthertype(t)),
        };
        let tcp = kind != gso::UDP;
        let version_ok = match kind {
            gso::TCPV4 => ipv4,
            gso::TCPV6 => !ipv4,
            _ => true,
        };
        if !version_ok || proto != if tcp { IPPROTO_TCP } else { IPPROTO_UDP } {
            return Err(VnetError::GsoTypeMismatch);
        }
        let (l4_len, csum_field) = if tcp {
            need(l4 + 20, frame.len())?;
            (usize::from(frame[l4 + 12] >> 4) * 4, 16)
        } else {
            need(l4 + 8, frame.len())?;
            if usize::from(be16(frame, l4 + 4)) != frame.len() - l4 {
                return Err(VnetError::BadL4Header);
            }
            (8, 6)
        };
        let headers = l4 + l4_len;
        if l4_len < if tcp { 20 } else { 8 } || headers > frame.len() {
            return Err(VnetError::BadL4Header);
        }
        if usize::from(h.csum_start) != l4 || usize::from(h.csum_offset) != csum_field {
            return Err(VnetError::ChecksumFieldsMismatch);
        }
        let mss = usize::from(h.gso_size);
        if mss == 0 || (frame.len() - headers).div_ceil(mss) > MAX_GSO_SEGMENTS {
            return Err(VnetError::BadGsoSize(h.gso_size));
        }
        Ok(Self {
            l3,
            l4,
            headers,
            mss,
            frame_len: frame.len(),
            ipv4,
            tcp,
        })
    }

    /// How many segments the frame makes (one, headers only, if it has no payload).
    pub fn count(&self) -> usize {
        (self.frame_len - self.headers).div_ceil(self.mss).max(1)
    }

    /// Length of segment `i`.
    pub fn segment_len(&self, i: usize) -> usize {
        let payload = self.frame_len - self.headers;
        self.headers + payload.saturating_sub(i * self.mss).min(self.mss)
    }

    /// Writes segment `i` (< [`Self::count`]) of `frame` (the frame [`Self::new`] checked) into
    /// `out`: the headers with the IP length, id and checksum, the TCP sequence number and flags
    /// (FIN and PSH on the last segment only, CWR on the first only) or the UDP length, and a
    /// complete TCP/UDP checksum. Returns the segment's length.
    pub fn write_segment(
        &self,
        frame: &[u8],
        i: usize,
        out: &mut [u8],
    ) -> Result<usize, VnetError> {
        assert!(
            frame.len() == self.frame_len && i < self.count(),
            "segment of another frame"
        );
        let len = self.segment_len(i);
        if out.len() < len {
            return Err(VnetError::OutputTooSmall {
                need: len,
                have: out.len(),
            });
        }
        let (l3, l4, hl) = (self.l3, self.l4, self.headers);
        let from = hl + i * self.mss;
        out[..hl].copy_from_slice(&frame[..hl]);
        out[hl..len].copy_from_slice(&frame[from..from + len - hl]);
        let seg = &mut out[..len];
        let l4_len = len - l4;
        if self.ipv4 {
            put_be16(seg, l3 + 2, (len - l3) as u16);
            put_be16(seg, l3 + 4, be16(seg, l3 + 4).wrapping_add(i as u16));
            put_be16(seg, l3 + 10, 0);
            let c = checksum_finish(checksum_add(0, &seg[l3..l4]));
            put_be16(seg, l3 + 10, c);
        } else {
            put_be16(seg, l3 + 4, (len - l3 - 40) as u16);
        }
        let csum_at = if self.tcp {
            let seq = u32::from_be_bytes(seg[l4 + 4..l4 + 8].try_into().expect("4 bytes"));
            let seq = seq.wrapping_add((i * self.mss) as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < self.count() {
                seg[l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                seg[l4 + 13] &= !TCP_CWR;
            }
            l4 + 16
        } else {
            put_be16(seg, l4 + 4, l4_len as u16);
            l4 + 6
        };
        put_be16(seg, csum_at, 0);
        let proto = if self.tcp { IPPROTO_TCP } else { IPPROTO_UDP };
        let pseudo = if self.ipv4 {
            checksum_add(0, &seg[l3 + 12..l3 + 20])
        } else {
            checksum_add(0, &seg[l3 + 8..l3 + 40])
        } + u64::from(proto)
            + l4_len as u64;
        let c = checksum_finish(checksum_add(pseudo, &seg[l4..]));
        put_be16(seg, csum_at, if c == 0 && !self.tcp { 0xffff } else { c });
        Ok(len)
    }
}

#[cfg(test)]
mod tests;
