//! What every target shares: the input reader and the ring invariants.

use ptnet_protocol::sync::HostKring;

/// A reader of structured values from fuzzer bytes; past the end every value is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// No bytes left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    fn le(&mut self, n: usize) -> u64 {
        self.bytes(n)
            .iter()
            .rev()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b))
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.le(1) as u8
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }
    /// One byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    /// A value below `n` (0 when `n` is 0), from as few bytes as `n` needs.
    pub fn below(&mut self, n: u32) -> u32 {
        match n {
            0 => 0,
            1..=256 => u32::from(self.u8()) % n,
            257..=65536 => u32::from(self.u16()) % n,
            _ => self.u32() % n,
        }
    }
}

/// The kring's indexes are inside the ring.
pub(super) fn check_kring(k: &HostKring) {
    let n = k.num_slots;
    assert!(
        k.hwcur < n && k.hwtail < n && k.rhead < n && k.rcur < n && k.rtail < n,
        "kring index out of range: {k:?}"
    );
}
