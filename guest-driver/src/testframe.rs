//! The test-frame format `ptnet-pkt-gen` sends and verifies, for any program (or test) that wants
//! to produce or check the same frames in-process.
//!
//! A frame is Ethernet + IPv4 (10.0.0.1 to 10.0.0.2, header checksum set) + UDP (1234 to 4321, no
//! checksum), then, from byte [`MAGIC_OFS`]:
//!
//! | offset          | size | field                                   |
//! |-----------------|------|-----------------------------------------|
//! | [`MAGIC_OFS`]   | 4    | [`MAGIC`] ("PTNT"), little-endian        |
//! | [`STREAM_OFS`]  | 4    | stream number (the TX ring), LE          |
//! | [`SEQ_OFS`]     | 8    | per-stream sequence number, LE           |
//! | [`PAYLOAD_OFS`] | rest | byte `k` is `base(seq) + k` (wrapping)   |
//!
//! where `base(seq)` is the top byte of `seq * 0x9e37_79b9_7f4a_7c15`. [`verify`] checks the
//! magic, the stream number and the whole payload; [`SeqTracker`] counts losses, reordering and
//! sender restarts per stream.
//!
//! ```
//! use ptnet_driver::testframe::{verify, FrameBuilder, Verdict};
//! let mut fb = FrameBuilder::new(64, [0xff; 6], [2, 0, 0, 0, 0, 1]);
//! let frame = fb.frame(3, 41).to_vec();
//! assert_eq!(verify(&frame), Verdict::Good { stream: 3, seq: 41 });
//! ```

use ptnet_protocol::vnet::{checksum_add, checksum_finish};

/// Offset of the magic number in a frame (after Ethernet, IPv4 and UDP headers).
pub const MAGIC_OFS: usize = 42;
/// Offset of the stream number (u32, little-endian).
pub const STREAM_OFS: usize = 46;
/// Offset of the sequence number (u64, little-endian).
pub const SEQ_OFS: usize = 50;
/// Where the payload pattern starts.
pub const PAYLOAD_OFS: usize = 58;
/// The magic, "PTNT" in memory order.
pub const MAGIC: u32 = 0x544e_5450;
/// Smallest frame (Ethernet minimum without CRC).
pub const MIN_LEN: usize = 60;
/// Most streams a receiver tracks (the kick space limits a port to 32 rings); frames of higher
/// stream numbers do not verify.
pub const MAX_STREAMS: usize = 32;

/// The Internet checksum (RFC 1071) of the concatenation of `parts`: the value a checksum field
/// holds, so a header whose checksum field is filled in sums to 0. Parts may have odd lengths.
#[must_use]
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u64;
    let mut odd: Option<u8> = None;
    for &part in parts {
        let mut p = part;
        if let Some(hi) = odd {
            // The odd byte left by the previous part pairs with this part's first.
            let Some((&lo, rest)) = p.split_first() else {
                continue;
            };
            sum = checksum_add(sum, &[hi, lo]);
            p = rest;
        }
        let even = p.len() & !1;
        sum = checksum_add(sum, &p[..even]);
        odd = p.get(even).copied();
    }
    if let Some(hi) = odd {
        sum = checksum_add(sum, &[hi]);
    }
    checksum_finish(sum)
}

/// First payload byte of the frame with sequence number `seq`.
#[inline]
fn pattern_base(seq: u64) -> u8 {
    (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Builds frames of one length: the headers are fixed, the stream, sequence number and payload
/// change per frame (no allocation per frame).
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// Frames of `len` bytes from `src` to `dst`. Panics if `len` is below [`MIN_LEN`] or above
    /// 65535.
    #[must_use]
    pub fn new(len: usize, dst: [u8; 6], src: [u8; 6]) -> Self {
        assert!(
            (MIN_LEN..=usize::from(u16::MAX)).contains(&len),
            "frame length {len}"
        );
        let mut b = vec![0u8; len];
        b[0..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: 10.0.0.1 -> 10.0.0.2, UDP.
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let csum = inet_checksum(&[ip]);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        // UDP 1234 -> 4321, no checksum.
        let udp = &mut b[34..42];
        udp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        udp[2..4].copy_from_slice(&4321u16.to_be_bytes());
        udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        b[MAGIC_OFS..MAGIC_OFS + 4].copy_from_slice(&MAGIC.to_le_bytes());
        Self { buf: b }
    }

    /// The frame for (`stream`, `seq`).
    #[inline]
    #[must_use]
    pub fn frame(&mut self, stream: u32, seq: u64) -> &[u8] {
        let b = &mut self.buf;
        b[STREAM_OFS..STREAM_OFS + 4].copy_from_slice(&stream.to_le_bytes());
        b[SEQ_OFS..SEQ_OFS + 8].copy_from_slice(&seq.to_le_bytes());
        let base = pattern_base(seq);
        for (k, x) in b[PAYLOAD_OFS..].iter_mut().enumerate() {
            *x = base.wrapping_add(k as u8);
        }
        &self.buf
    }

    /// The length of the frames built.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: a frame has at least [`MIN_LEN`] bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// What a received frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well-formed: its stream and sequence number.
    Good {
        /// Stream number (the sender's TX ring).
        stream: u32,
        /// Sequence number within the stream.
        seq: u64,
    },
    /// Not a test frame, or corrupted.
    Bad,
}

/// Checks a received frame: length, magic, stream number and payload pattern.
#[must_use]
pub fn verify(frame: &[u8]) -> Verdict {
    if frame.len() < MIN_LEN {
        return Verdict::Bad;
    }
    let le32 = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
    if le32(MAGIC_OFS) != MAGIC {
        return Verdict::Bad;
    }
    let stream = le32(STREAM_OFS);
    let seq = u64::from_le_bytes(frame[SEQ_OFS..SEQ_OFS + 8].try_into().expect("8 bytes"));
    let base = pattern_base(seq);
    let ok = frame[PAYLOAD_OFS..]
        .iter()
        .enumerate()
        .all(|(k, &x)| x == base.wrapping_add(k as u8));
    if ok && (stream as usize) < MAX_STREAMS {
        Verdict::Good { stream, seq }
    } else {
        Verdict::Bad
    }
}

/// Per-stream sequence tracking on the receiving side.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    next: [u64; MAX_STREAMS],
    /// Frames older than the newest seen on their stream.
    pub out_of_order: u64,
    /// Sequence numbers skipped.
    pub lost: u64,
    /// Streams that started again from sequence 0: a new sender (after a restart, say).
    pub restarts: u64,
}

impl SeqTracker {
    /// Notes frame `seq` of `stream` (a [`Verdict::Good`]'s fields). Panics if `stream` is not
    /// below [`MAX_STREAMS`] (which [`verify`] guarantees).
    #[inline]
    pub fn see(&mut self, stream: u32, seq: u64) {
        let next = &mut self.next[stream as usize];
        if seq == *next {
            *next += 1;
        } else if seq > *next {
            self.lost += seq - *next;
            *next = seq + 1;
        } else if seq == 0 {
            self.restarts += 1;
            *next = 1;
        } else {
            self.out_of_order += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 60-byte frame (stream 1, sequence 2) from 02:00:00:00:00:01 to broadcast, byte for
    /// byte: the format other implementations (and old captures) rely on.
    const GOLDEN_60: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08,
        0x00, // eth
        0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x66, 0xbd, // ipv4 ...
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // ... addresses
        0x04, 0xd2, 0x10, 0xe1, 0x00, 0x1a, 0x00, 0x00, // udp
        0x50, 0x54, 0x4e, 0x54, // magic
        0x01, 0x00, 0x00, 0x00, // stream
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // seq
        0x3c, 0x3d, // payload: base(2) = 0x3c
    ];

    #[test]
    fn golden_bytes() {
        let mut fb = FrameBuilder::new(60, [0xff; 6], [2, 0, 0, 0, 0, 1]);
        assert_eq!(fb.frame(1, 2), &GOLDEN_60[..]);
        assert_eq!(verify(&GOLDEN_60), Verdict::Good { stream: 1, seq: 2 });
        // Sequence 0: the payload counts up from 0.
        let f = fb.frame(0, 0);
        assert_eq!(f[PAYLOAD_OFS..], [0, 1]);
        assert_eq!(fb.len(), 60);
    }

    #[test]
    fn checksum_matches_rfc1071() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2: checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&[&data]), 0x220d);
        // However the bytes are split, odd parts included.
        assert_eq!(
            inet_checksum(&[&data[..3], &data[3..5], &[], &data[5..]]),
            0x220d
        );
        // An odd total pads the last byte with zero.
        assert_eq!(inet_checksum(&[&[0x12]]), !0x1200);
        assert_eq!(inet_checksum(&[]), 0xffff);
    }

    #[test]
    fn frames_verify() {
        for len in [60, 61, 64, 128, 1514, 2048] {
            let mut fb = FrameBuilder::new(len, [0xff; 6], [2, 0, 0, 0, 0, 1]);
            for (stream, seq) in [(0, 0), (3, 1), (31, u64::MAX), (7, 123_456_789)] {
                let f = fb.frame(stream, seq).to_vec();
                assert_eq!(f.len(), len);
                assert_eq!(verify(&f), Verdict::Good { stream, seq });
                assert_eq!(&f[12..14], &[0x08, 0x00]);
                // IPv4 header checksum verifies to zero.
                assert_eq!(inet_checksum(&[&f[14..34]]), 0);
                // Any flipped payload or header byte after the MACs is caught.
                for k in [MAGIC_OFS, SEQ_OFS, PAYLOAD_OFS, len - 1] {
                    let mut g = f.clone();
                    g[k] ^= 0x10;
                    assert_ne!(verify(&g), Verdict::Good { stream, seq }, "byte {k}");
                }
            }
        }
        assert_eq!(verify(&[0u8; 59]), Verdict::Bad);
        assert_eq!(verify(&[0u8; 60]), Verdict::Bad);
        // Stream numbers beyond what the receiver tracks are refused.
        let mut fb = FrameBuilder::new(60, [0xff; 6], [0; 6]);
        assert_eq!(verify(fb.frame(MAX_STREAMS as u32, 0)), Verdict::Bad);
    }

    #[test]
    fn payload_depends_on_seq() {
        let mut fb = FrameBuilder::new(128, [0xff; 6], [0; 6]);
        let a = fb.frame(0, 1).to_vec();
        let b = fb.frame(0, 2).to_vec();
        assert_ne!(a[PAYLOAD_OFS..], b[PAYLOAD_OFS..]);
        // A frame whose sequence number was rewritten no longer verifies.
        let mut c = a.clone();
        c[SEQ_OFS..SEQ_OFS + 8].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(verify(&c), Verdict::Bad);
    }

    #[test]
    fn sequence_tracking() {
        let mut t = SeqTracker::default();
        for s in 0..10 {
            t.see(0, s);
        }
        assert_eq!((t.lost, t.out_of_order), (0, 0));
        t.see(0, 15); // 10..14 lost
        assert_eq!(t.lost, 5);
        t.see(0, 12); // late
        assert_eq!(t.out_of_order, 1);
        t.see(1, 0);
        t.see(1, 1);
        assert_eq!((t.lost, t.out_of_order), (5, 1));
        // A sender that starts over at 0 is a new stream, not 16 packets out of order.
        t.see(0, 0);
        t.see(0, 1);
        assert_eq!((t.lost, t.out_of_order, t.restarts), (5, 1, 1));
    }
}
