//! The classic pcap file format (what tcpdump, Wireshark and every pcap library read), with
//! nanosecond timestamps: a 24-byte file header, then a 16-byte header before each frame. All
//! fields little-endian, as the magic number tells readers.

use super::Record;
use std::io::{self, Write};

/// The magic number of a nanosecond-resolution pcap file.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The file header for frames of at most `snaplen` bytes.
pub fn file_header(snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs: 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Writes one captured frame: its header (seconds, nanoseconds, captured and original
/// lengths), then its bytes.
pub fn write_record(out: &mut impl Write, r: &Record<'_>) -> io::Result<()> {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((r.ts_ns / 1_000_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((r.ts_ns % 1_000_000_000) as u32).to_le_bytes());
    h[8..12].copy_from_slice(&(r.data.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&r.orig_len.to_le_bytes());
    out.write_all(&h)?;
    out.write_all(r.data)
}

/// A frame read back from a pcap file.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadFrame {
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// What was captured of it.
    pub data: Vec<u8>,
}

/// Why a pcap file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    /// Shorter than the file header.
    #[error("no pcap file header")]
    NoHeader,
    /// Not the little-endian nanosecond magic this module writes.
    #[error("magic {0:#010x}: not a little-endian nanosecond pcap file")]
    BadMagic(u32),
    /// A record header or its bytes run past the end.
    #[error("record at byte {0} is cut short")]
    Truncated(usize),
    /// A record captures more than the file's snap length.
    #[error("record at byte {at} has {len} bytes, over the snap length {snaplen}")]
    OverSnaplen {
        /// Its offset.
        at: usize,
        /// Its captured length.
        len: u32,
        /// The file's snap length.
        snaplen: u32,
    },
}

/// Parses a file [`file_header`] and [`write_record`] wrote (the tests' reader, and
/// `ptnet-ctl capture`'s check of what it received).
pub fn read(file: &[u8]) -> Result<Vec<ReadFrame>, PcapError> {
    let word = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    if file.len() < 24 {
        return Err(PcapError::NoHeader);
    }
    if word(0) != MAGIC_NANOS {
        return Err(PcapError::BadMagic(word(0)));
    }
    let snaplen = word(16);
    let mut frames = Vec::new();
    let mut at = 24;
    while at < file.len() {
        if at + 16 > file.len() {
            return Err(PcapError::Truncated(at));
        }
        let (sec, nsec, cap, orig) = (word(at), word(at + 4), word(at + 8), word(at + 12));
        if cap > snaplen {
            return Err(PcapError::OverSnaplen {
                at,
                len: cap,
                snaplen,
            });
        }
        let end = at + 16 + cap as usize;
        if end > file.len() {
            return Err(PcapError::Truncated(at));
        }
        frames.push(ReadFrame {
            ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(nsec),
            orig_len: orig,
            data: file[at + 16..end].to_vec(),
        });
        at = end;
    }
    Ok(frames)
}
