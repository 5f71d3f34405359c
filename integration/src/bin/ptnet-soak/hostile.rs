//! Hostile connections: silent, half a header, half a message, garbage, register writes at any
//! offset, a handshake and then nothing.

use crate::lanes::Rng;
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE, PTCTL_DELETE};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

/// The kinds, as the summary names them.
pub const HOSTILE_KINDS: [&str; 6] = [
    "silent",
    "half-header",
    "half-message",
    "garbage",
    "register-writes",
    "handshake-then-nothing",
];

/// One hostile connection of `kind` (an index into [`HOSTILE_KINDS`]).
pub fn hostile_connection(sock: &Path, kind: usize, rng: &mut Rng) {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let hold = rng.millis(300, 3000);
    match kind {
        0 => std::thread::sleep(hold),
        1 => {
            let _ = s.write_all(&[1, 0, 0, 0, 1, 0]);
            std::thread::sleep(hold);
        }
        2 => {
            // SET_FEATURES (2), version 1, 8 bytes of payload announced, 3 sent.
            let mut m = Vec::new();
            m.extend_from_slice(&2u32.to_le_bytes());
            m.extend_from_slice(&1u32.to_le_bytes());
            m.extend_from_slice(&8u32.to_le_bytes());
            m.extend_from_slice(&[0xaa; 3]);
            let _ = s.write_all(&m);
            std::thread::sleep(hold);
        }
        3 => {
            let junk: Vec<u8> = (0..64 + rng.below(512)).map(|_| rng.next() as u8).collect();
            let _ = s.write_all(&junk);
            std::thread::sleep(rng.millis(0, 500));
        }
        4 | 5 => {
            let mut fe = Frontend::from_stream(s, 256);
            let offered = fe.get_features().unwrap_or(0);
            let _ = fe.set_owner();
            let _ = fe.set_features(offered);
            let proto = fe
                .get_protocol_features()
                .map(|f| f.bits())
                .unwrap_or_default();
            let _ = fe.set_protocol_features(VhostUserProtocolFeatures::from_bits_retain(
                proto & !(1 << 3),
            ));
            if kind == 5 {
                std::thread::sleep(hold);
                return;
            }
            for _ in 0..4 + rng.below(28) {
                let off = match rng.below(3) {
                    0 => ptnet::PTCTL,
                    1 => [
                        ptnet::CSB_GH_BAH,
                        ptnet::CSB_GH_BAL,
                        ptnet::CSB_HG_BAH,
                        ptnet::CSB_HG_BAL,
                    ][rng.below(4) as usize],
                    _ => rng.below(300) as u32,
                };
                let val = match rng.below(3) {
                    0 => PTCTL_CREATE,
                    1 => PTCTL_DELETE,
                    _ => rng.next() as u32,
                };
                let len = if rng.below(4) == 0 {
                    rng.below(10) as usize
                } else {
                    4
                };
                let mut buf = val.to_le_bytes().to_vec();
                buf.resize(len, 0xa5);
                if fe
                    .set_config(off, VhostUserConfigFlags::empty(), &buf)
                    .is_err()
                    && rng.below(2) == 0
                {
                    break;
                }
            }
        }
        _ => unreachable!(),
    }
}
