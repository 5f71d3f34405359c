//! Fuzz target bodies (issue 10): everything a frontend or a guest controls, driven from raw
//! bytes. The cargo-fuzz crate in `fuzz/` calls these under libFuzzer (nightly, `cargo xtask
//! fuzz`); `tests/fuzz_corpus.rs` runs every file of `fuzz/corpus/` through them on stable, so
//! CI replays the corpus on every run.
//!
//! Inputs are decoded by [`Input`], a byte reader in the style of `arbitrary::Unstructured`
//! (this crate takes no fuzzing dependency): a short input simply reads as zeros, so every byte
//! string is a valid input. Each target asserts what must hold whatever the input: no panic, no
//! fault, ring indexes in range, and no buffer index outside the pool reaching a peer.
//!
//! | target | what the input controls |
//! |---|---|
//! | [`device`](fn@device) | a sequence of vhost-user requests to one or two `PtnetDevice`s over a real pipe or VALE pair: memory tables of memfds of any size, offset and seal, kick/call fds (eventfds or not, saturated), register writes and SET_CONFIG, PTCTL CREATE/DELETE/RESUME, GET_CONFIG, guest writes into the CSB and the port memory while the rings run, truncation |
//! | [`device_state`](fn@device_state) | the device's state machine alone (`PtnetState`) over a port that runs nothing: memory tables, descriptors, register writes, SET_CONFIG and GET_CONFIG of any offset and size, PTCTL, features, disconnects; each answer checked against what the request predicts (fast: no ring threads) |
//! | [`sync`](fn@sync) | `HostKring::tx_pass`/`rx_pass` over a ring in memory, with the CSB and the ring written between passes and, by a second thread, during them |
//! | [`slots`](fn@slots) | TX syncs of pipes, VALE and null ports over any slot contents (and hostile receivers' RX slots) |
//! | [`vale_frames`](fn@vale_frames) | frames and virtio-net headers through a 3-port VALE switch whose ports use different header lengths |
//! | [`vnet`](fn@vnet) | `VnetHeader::parse`, `complete_checksum` and `Gso` segmentation on any bytes |

mod device;
mod slots;
mod state;
mod sync;
mod vale;
mod vnet;

pub use device::device;
pub use slots::slots;
pub use state::device_state;
pub use sync::sync;
pub use vale::vale_frames;
pub use vnet::vnet;

use ptnet_protocol::sync::HostKring;

/// A target body.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("device", device),
    ("device_state", device_state),
    ("sync", sync),
    ("slots", slots),
    ("vale_frames", vale_frames),
    ("vnet", vnet),
];

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
fn check_kring(k: &HostKring) {
    let n = k.num_slots;
    assert!(
        k.hwcur < n && k.hwtail < n && k.rhead < n && k.rcur < n && k.rtail < n,
        "kring index out of range: {k:?}"
    );
}
