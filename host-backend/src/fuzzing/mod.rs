//! Fuzz target bodies (issue 10): everything a frontend or a guest controls, driven from raw
//! bytes. The cargo-fuzz crate in `fuzz/` calls these under libFuzzer (nightly, `cargo xtask
//! fuzz`); `tests/fuzz_corpus.rs` runs every file of `fuzz/corpus/` through them on stable, so
//! CI replays the corpus on every run.
//!
//! Inputs are decoded by `Input` (`input.rs`), a byte reader in the style of `arbitrary::Unstructured`
//! (this crate takes no fuzzing dependency): a short input simply reads as zeros, so every byte
//! string is a valid input. Each target asserts what must hold whatever the input: no panic, no
//! fault, ring indexes in range, and no buffer index outside the pool reaching a peer.
//!
//! | target | what the input controls |
//! |---|---|
//! | [`control`](fn@control) | control-socket request lines: raw bytes, and JSON objects of any command with fields of any type (each parses and writes itself back, or is refused with one bounded JSON line) |
//! | [`device`](fn@device) | a sequence of vhost-user requests to one or two `PtnetDevice`s over a real pipe or VALE pair: memory tables of memfds of any size, offset and seal, kick/call fds (eventfds or not, saturated), register writes and SET_CONFIG, PTCTL CREATE/DELETE/RESUME, GET_CONFIG, guest writes into the CSB and the port memory while the rings run, truncation |
//! | [`device_state`](fn@device_state) | the device's state machine alone (`PtnetState`) over a port that runs nothing: memory tables, descriptors, register writes, SET_CONFIG and GET_CONFIG of any offset and size, PTCTL, features, disconnects; each answer checked against what the request predicts (fast: no ring threads) |
//! | [`sync`](fn@sync) | `HostKring::tx_pass`/`rx_pass` over a ring in memory, with the CSB and the ring written between passes and, by a second thread, during them |
//! | [`slots`](fn@slots) | TX syncs of pipes, VALE and null ports over any slot contents (and hostile receivers' RX slots) |
//! | [`vale_frames`](fn@vale_frames) | frames and virtio-net headers through a 3-port VALE switch whose ports use different header lengths |
//! | [`virtq`](fn@virtq) | a virtio-net guest's split or packed virtqueue (descriptor table or ring, indirect tables, avail ring or wrap bits and buffer ids, event suppression, header settings, the delivered frame) through the virtio-net frontend's TX and RX paths |
//! | [`vnet`](fn@vnet) | `VnetHeader::parse`, `complete_checksum` and `Gso` segmentation on any bytes |

mod control;
mod device;
mod input;
mod slots;
mod state;
mod sync;
mod vale;
mod virtq;
mod vnet;

pub use control::control;
pub use device::device;
pub use slots::slots;
pub use state::device_state;
pub use sync::sync;
pub use vale::vale_frames;
pub use virtq::virtq;
pub use vnet::vnet;

/// A target body.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("control", control),
    ("device", device),
    ("device_state", device_state),
    ("sync", sync),
    ("slots", slots),
    ("vale_frames", vale_frames),
    ("virtq", virtq),
    ("vnet", vnet),
];
