//! A hostile vhost-user frontend: well-framed messages with whatever values a seeded generator
//! picks (ring indexes up to 255, register writes at any offset and of any length, memory tables
//! with regions beyond their files, features nobody offered, CREATE and DELETE with whatever CSB
//! addresses were written), on 2000 connections, some dropped mid-way. The daemon must refuse what is wrong and keep serving: after
//! the storm it is still running, nothing panicked, and well-behaved drivers move packets through
//! the same ports.
//!
//! Virtio-net ports take the same storm, and must still answer as virtio-net devices after it.
//!
//! The generator is a fixed-seed xorshift, so a failure replays exactly.

use ptnet_integration::host::{finish, pkt_gen, spawn_pkt_gen};
use ptnet_integration::{json_num, Backend, TempDir};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE, PTCTL_DELETE};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// xorshift64*: small, deterministic, good enough to spread values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Mostly small values, sometimes anything: where the edge cases are.
    fn edgy(&mut self, small: u64) -> u64 {
        match self.below(4) {
            0 => self.next(),
            1 => small.saturating_sub(1 + self.below(2)),
            _ => self.below(small.max(1)),
        }
    }
}

/// A memfd of `size` bytes standing for guest RAM, sealed against shrinking as QEMU's are (an
/// unsealed one is refused outright, and the storm would never reach CREATE).
fn mem_file(size: u64) -> std::fs::File {
    ptnet_integration::sys::guest_memfd(size, nix::libc::F_SEAL_SHRINK)
}

/// One connection's worth of hostile requests. Returns how many requests the daemon answered
/// (an error reply or a refusal counts; a broken connection ends the run).
fn storm(sock: &std::path::Path, rng: &mut Rng, requests: u32) -> u32 {
    let Ok(stream) = UnixStream::connect(sock) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("socket timeout");
    // Let any queue index through the frontend's own checks: the daemon must do them.
    let mut fe = Frontend::from_stream(stream, 256);
    let mem = mem_file(1 << 20);
    let ev = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut answered = 0;
    // Most connections first shake hands as QEMU does, so that the frontend library lets the
    // config and memory requests through to the daemon; the rest start raw.
    if rng.below(4) != 0 {
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
    }
    for _ in 0..requests {
        let ring = rng.edgy(8) as usize % 256;
        // Each request's result is not the point (most are refused); the daemon's survival is.
        let _refused = !match rng.below(14) {
            0 => fe.set_owner().is_ok(),
            1 => fe.get_features().is_ok(),
            2 => fe.set_features(rng.next()).is_ok(),
            3 => fe
                .set_protocol_features(VhostUserProtocolFeatures::from_bits_retain(rng.next()))
                .is_ok(),
            // GET_CONFIG: out-of-range reads are refused with an empty reply (daemon.rs checks
            // one); random ones are left out here because the frontend library we drive stops
            // answering after such a reply.
            4 => fe.get_features().is_ok(),
            5 => {
                // A register write: any offset, 4 bytes or not, any value; CREATE and DELETE
                // often (with whatever CSB addresses are programmed).
                let off = match rng.below(3) {
                    0 => ptnet::PTCTL,
                    1 => [
                        ptnet::CSB_GH_BAH,
                        ptnet::CSB_GH_BAL,
                        ptnet::CSB_HG_BAH,
                        ptnet::CSB_HG_BAL,
                    ][rng.below(4) as usize],
                    _ => rng.edgy(300) as u32,
                };
                let val = match rng.below(3) {
                    0 => PTCTL_CREATE,
                    1 => PTCTL_DELETE,
                    _ => rng.next() as u32,
                };
                let len = if rng.below(4) == 0 {
                    rng.edgy(9).min(9) as usize
                } else {
                    4
                };
                let mut buf = val.to_le_bytes().to_vec();
                buf.resize(len, 0xa5);
                fe.set_config(off, VhostUserConfigFlags::empty(), &buf)
                    .is_ok()
            }
            6 => {
                let gpa = rng.edgy(1 << 32);
                let size = rng.edgy(2 << 20);
                let off = rng.edgy(1 << 20);
                fe.set_mem_table(&[VhostUserMemoryRegionInfo {
                    guest_phys_addr: gpa,
                    memory_size: size,
                    userspace_addr: 0x7000_0000_0000,
                    mmap_offset: off,
                    mmap_handle: mem.as_raw_fd(),
                }])
                .is_ok()
            }
            7 => fe.set_vring_kick(ring, &ev).is_ok(),
            8 => fe.set_vring_call(ring, &ev).is_ok(),
            9 => fe.set_vring_num(ring, rng.next() as u16).is_ok(),
            10 => fe.set_vring_base(ring, rng.next() as u16).is_ok(),
            11 => fe.get_vring_base(ring).is_ok(),
            12 => fe
                .set_vring_addr(
                    ring,
                    &VringConfigData {
                        queue_max_size: 256,
                        queue_size: 256,
                        flags: 0,
                        desc_table_addr: rng.next(),
                        used_ring_addr: rng.next(),
                        avail_ring_addr: rng.next(),
                        log_addr: None,
                    },
                )
                .is_ok(),
            _ => fe.set_vring_enable(ring, rng.below(2) == 0).is_ok(),
        };
        answered += 1;
        // The daemon closes a connection after a refusal it cannot answer: then start over.
        if fe.get_features().is_err() {
            break;
        }
        if rng.below(64) == 0 {
            break; // drop the connection mid-way, without a word
        }
    }
    answered
}

#[test]
fn hostile_frontends_never_take_the_daemon_down() {
    let dir = TempDir::new("hostile").expect("temp dir");
    // Two virtio-net ports take the same storm (their device refuses ptnet's registers, and
    // takes rings and memory tables of its own).
    let ports = [
        "netmap:hz{0",
        "netmap:hz}0",
        "vale7:a",
        "vale7:b",
        "vale7:v@conf:frontend=virtio-net",
        "netmap:hv{0@conf:frontend=virtio-net",
    ];
    let mut b = Backend::start(dir.path(), &ports, &[]).expect("ptnet-backend starts");
    let sockets: Vec<_> = ports.iter().map(|p| b.socket(p)).collect();
    // The storm runs on a thread of its own so that a frontend stuck waiting fails the test at a
    // deadline instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut answered = 0;
        for round in 0..2000 {
            answered += storm(&sockets[round % sockets.len()], &mut rng, 200);
        }
        let _ = done_tx.send(answered);
    });
    let answered = done_rx
        .recv_timeout(Duration::from_secs(40))
        .unwrap_or_else(|_| {
            let log = b.log_text();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            panic!(
                "the storm did not end in 40 s; daemon log ends:\n{}",
                tail.join("\n")
            )
        });
    assert!(b.running(), "the daemon died:\n{}", b.log_text());
    assert!(answered > 2000, "only {answered} requests were exercised");
    eprintln!("{answered} hostile requests on 2000 connections");

    // The same ports still work for well-behaved drivers.
    let (rx_sock, tx_sock) = (b.interface("netmap:hz}0"), b.interface("netmap:hz{0"));
    let rx = spawn_pkt_gen(&["-i", &rx_sock, "-f", "rx", "-n", "20000", "--json"]).unwrap();
    let tx = pkt_gen(
        &["-i", &tx_sock, "-f", "tx", "-n", "20000", "-l", "60"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(tx.success(), "tx after the storm:\n{}", tx.stderr);
    let rx = finish(rx, Duration::from_secs(60));
    assert!(
        rx.success(),
        "rx after the storm:\n{}\n{}",
        rx.stderr,
        b.log_text()
    );
    let received = rx
        .stdout
        .lines()
        .filter_map(|l| json_num(l, "packets"))
        .next_back()
        .unwrap_or(0.0);
    assert_eq!(received as u64, 20000, "{}", rx.stdout);
    // The virtio-net ports still answer a frontend as a virtio-net device.
    for p in &ports[4..] {
        let stream = UnixStream::connect(b.socket(p)).expect("connect after the storm");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("socket timeout");
        let fe = Frontend::from_stream(stream, 2);
        let f = fe.get_features().unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_ne!(f & (1 << 32), 0, "{p}: VERSION_1 not offered: {f:#x}");
    }
    b.stop();
    let log = b.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
