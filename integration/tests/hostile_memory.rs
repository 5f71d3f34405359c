//! A hostile frontend's shared memory (issue 10, rows 1, 2, 3 and 8): memory tables whose regions
//! reach past their files, guest memory truncated under running rings, the port memory SHMEM_MAP
//! hands out truncated, and regions of many TiB. Each used to kill the whole daemon with SIGBUS or
//! fill its address space; now each is refused (or cannot happen: the seals give EPERM), the
//! daemon stays up, and another port, or the very pipe attacked, carries 20 000 verified packets.
//!
//! The attacker is a raw vhost-user frontend built from the `vhost` crate, doing what our QEMU
//! patch does (handshake, SET_MEM_TABLE, kick and call eventfds, CSB registers, PTCTL CREATE,
//! kicks) with memory files it chooses.

use ptnet_integration::host::{bins, finish, pkt_gen, run_with_timeout, spawn_pkt_gen};
use ptnet_integration::{json_num, Backend, TempDir};
use ptnet_protocol::csb;
use ptnet_protocol::device::{protocol_features, VHOST_USER_F_PROTOCOL_FEATURES};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserMMap, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{
    Frontend, FrontendReqHandler, VhostUserFrontend, VhostUserFrontendReqHandlerMut,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Sealed memfds come from the integration crate's `sys` module (its only `unsafe`).
mod sys {
    use nix::libc;
    use std::fs::File;

    pub fn memfd(size: u64, seals: libc::c_int) -> File {
        ptnet_integration::sys::guest_memfd(size, seals)
    }

    pub const SHRINK: libc::c_int = libc::F_SEAL_SHRINK;
    pub const EPERM: i32 = libc::EPERM;
}

/// Guest-physical address of the attacker's memory.
const GPA: u64 = 0x4000_0000;
/// Rings of every port here (1 TX + 1 RX).
const RINGS: usize = 2;
const PORTS: [&str; 5] = [
    "netmap:ok{0",
    "netmap:ok}0",
    "vale5:e1",
    "vale5:e2",
    "vale5:e3",
];

/// Keeps the fd of the daemon's SHMEM_MAP (reopened through /proc, so it is ours).
#[derive(Default)]
struct Grab {
    file: Option<File>,
}

impl VhostUserFrontendReqHandlerMut for Grab {
    fn shmem_map(&mut self, _req: &VhostUserMMap, fd: &dyn AsRawFd) -> io::Result<u64> {
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        self.file = Some(File::options().read(true).write(true).open(path)?);
        Ok(0)
    }
}

/// A raw frontend attached to one port.
struct Raw {
    fe: Frontend,
    kicks: Vec<EventFd>,
    _calls: Vec<EventFd>,
    _channel: Option<FrontendReqHandler<Mutex<Grab>>>,
    /// The port memory SHMEM_MAP sent (asked with `shmem`).
    port_mem: Option<File>,
}

impl Raw {
    /// Connects to `sock` and shakes hands as QEMU does; with `shmem`, also sets up the backend
    /// channel and takes the SHMEM_MAP.
    fn connect(sock: &Path, shmem: bool) -> Raw {
        let s = UnixStream::connect(sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut fe = Frontend::from_stream(s, RINGS as u64);
        fe.set_owner().expect("SET_OWNER");
        fe.get_features().expect("GET_FEATURES");
        fe.set_features(VHOST_USER_F_PROTOCOL_FEATURES)
            .expect("SET_FEATURES");
        let offered = fe
            .get_protocol_features()
            .expect("protocol features")
            .bits();
        let mut want =
            protocol_features::MQ | protocol_features::REPLY_ACK | protocol_features::CONFIG;
        if shmem {
            want |= protocol_features::BACKEND_REQ | protocol_features::SHMEM;
        }
        fe.set_protocol_features(VhostUserProtocolFeatures::from_bits_retain(offered & want))
            .expect("SET_PROTOCOL_FEATURES");
        // Every request is acknowledged: a refusal shows as an error.
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        let (mut channel, mut port_mem) = (None, None);
        if shmem {
            let grab = Arc::new(Mutex::new(Grab::default()));
            let mut ch = FrontendReqHandler::new(grab.clone()).expect("backend channel");
            ch.set_reply_ack_flag(true);
            fe.set_backend_request_fd(&ch.get_tx_raw_fd())
                .expect("SET_BACKEND_REQ_FD");
            ch.handle_request().expect("SHMEM_MAP");
            port_mem = grab.lock().unwrap().file.take();
            assert!(port_mem.is_some(), "no SHMEM_MAP");
            channel = Some(ch);
        }
        let ev = || EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let kicks: Vec<EventFd> = (0..RINGS).map(|_| ev()).collect();
        let calls: Vec<EventFd> = (0..RINGS).map(|_| ev()).collect();
        for i in 0..RINGS {
            fe.set_vring_kick(i, &kicks[i]).expect("SET_VRING_KICK");
            fe.set_vring_call(i, &calls[i]).expect("SET_VRING_CALL");
        }
        Raw {
            fe,
            kicks,
            _calls: calls,
            _channel: channel,
            port_mem,
        }
    }

    /// SET_MEM_TABLE of one region `[GPA, GPA + size)` at `offset` in `file`: accepted?
    fn set_mem(&mut self, file: &File, size: u64, offset: u64) -> bool {
        self.fe
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: GPA,
                memory_size: size,
                userspace_addr: 0x7000_0000_0000,
                mmap_offset: offset,
                mmap_handle: file.as_raw_fd(),
            }])
            .is_ok()
    }

    /// Programs the CSB at `GPA + csb_offset` (host-to-guest array one page on) and writes
    /// PTCTL CREATE; the PTCTL result, `None` if the connection is gone.
    fn create(&mut self, csb_offset: u64) -> Option<u32> {
        let gh = GPA + csb_offset;
        let hg = gh + 4096;
        assert!(csb::array_size(RINGS as u32) <= 4096);
        for (off, val) in [
            (ptnet::CSB_GH_BAH, (gh >> 32) as u32),
            (ptnet::CSB_GH_BAL, gh as u32),
            (ptnet::CSB_HG_BAH, (hg >> 32) as u32),
            (ptnet::CSB_HG_BAL, hg as u32),
            (ptnet::PTCTL, PTCTL_CREATE),
        ] {
            self.fe
                .set_config(off, VhostUserConfigFlags::empty(), &val.to_le_bytes())
                .ok()?;
        }
        let (_, r) = self
            .fe
            .get_config(ptnet::PTCTL, 4, VhostUserConfigFlags::empty(), &[0; 4])
            .ok()?;
        Some(u32::from_le_bytes(r.try_into().ok()?))
    }

    /// Kicks every ring (what makes a ring thread read the CSB and the rings).
    fn kick(&self) {
        for k in &self.kicks {
            let _ = k.write(1);
        }
        // Time for a ring thread to fault, if it is going to.
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn start(tag: &str, extra: &[&str]) -> (TempDir, Backend) {
    let dir = TempDir::new(tag).expect("temp dir");
    let b = Backend::start(dir.path(), &PORTS, extra).expect("ptnet-backend starts");
    (dir, b)
}

fn assert_alive(b: &mut Backend) {
    assert!(b.running(), "the daemon died (SIGBUS?):\n{}", b.log_text());
}

/// Waits up to 2 s for the daemon's log to hold every one of `needles`.
fn assert_logged(b: &Backend, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let log = b.log_text();
        if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return;
        }
        if Instant::now() > deadline {
            panic!("no log line with all of {needles:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 20 000 packets through the pipe `ok{0` -> `ok}0`, every one verified, and the daemon alive.
fn assert_pipe_carries_traffic(b: &mut Backend) {
    assert_alive(b);
    let rx = spawn_pkt_gen(&[
        "-i",
        &b.interface("netmap:ok}0"),
        "-f",
        "rx",
        "-n",
        "20000",
        "--timeout",
        "10",
        "--json",
    ])
    .expect("rx starts");
    std::thread::sleep(Duration::from_millis(300));
    let tx = pkt_gen(
        &[
            "-i",
            &b.interface("netmap:ok{0"),
            "-f",
            "tx",
            "-n",
            "20000",
            "-l",
            "60",
        ],
        Duration::from_secs(60),
    )
    .expect("tx runs");
    assert!(tx.success(), "tx: {}\n{}", tx.stderr, b.log_text());
    let rx = finish(rx, Duration::from_secs(60));
    assert!(rx.success(), "rx: {}\n{}", rx.stderr, b.log_text());
    let line = rx.last_line().expect("rx summary").to_string();
    let field = |k: &str| json_num(&line, k).unwrap_or_else(|| panic!("no {k} in {line}")) as u64;
    assert_eq!(field("packets"), 20000, "{line}");
    assert_eq!(
        (field("errors"), field("out_of_order"), field("lost")),
        (0, 0, 0),
        "{line}"
    );
    assert_alive(b);
}

/// Row 1: a region larger than its memfd (and one whose offset + size passes the end), with the
/// CSB past EOF, then CREATE and kicks. Was: SIGBUS, the whole daemon down.
#[test]
fn regions_past_the_end_of_their_memfd_are_refused() {
    let (_d, mut b) = start("hmem-eof", &[]);
    // 64 KiB region over a 4 KiB (sealed) memfd, CSB at 8 KiB: past EOF.
    let small = sys::memfd(4096, sys::SHRINK);
    let mut a = Raw::connect(&b.socket("vale5:e1"), false);
    let accepted = a.set_mem(&small, 64 << 10, 0);
    let _ = a.create(8192);
    a.kick();
    assert_alive(&mut b);
    assert!(!accepted, "a 64 KiB region over a 4 KiB memfd was accepted");
    assert_logged(
        &b,
        &[
            "vale5:e1",
            "65536 bytes at file offset 0",
            "file of 4096 bytes",
        ],
    );
    // 4 KiB at offset 4 KiB of a 4 KiB memfd: offset + size past EOF.
    let mut a2 = Raw::connect(&b.socket("vale5:e2"), false);
    let accepted = a2.set_mem(&small, 4096, 4096);
    let _ = a2.create(0);
    a2.kick();
    assert_alive(&mut b);
    assert!(
        !accepted,
        "a region at offset 4096 of a 4 KiB memfd was accepted"
    );
    assert_logged(&b, &["vale5:e2", "4096 bytes at file offset 4096"]);
    drop((a, a2));
    assert_pipe_carries_traffic(&mut b);
}

/// Row 2: the guest memory truncated after CREATE, then kicks. Was: SIGBUS. An unsealed memfd
/// (or a file that cannot be sealed) is refused at SET_MEM_TABLE; a sealed one cannot shrink.
#[test]
fn guest_memory_truncated_under_running_rings_cannot_fault() {
    let (_d, mut b) = start("hmem-trunc", &[]);
    let size = 64 << 10;
    // Unsealed: refused, with a message saying what to use.
    let unsealed = sys::memfd(size, 0);
    let mut a = Raw::connect(&b.socket("vale5:e1"), false);
    let accepted = a.set_mem(&unsealed, size, 0);
    let created = a.create(0);
    unsealed.set_len(0).expect("an unsealed memfd shrinks");
    a.kick();
    assert_alive(&mut b);
    assert!(!accepted && created.is_none(), "an unsealed memfd was used");
    assert_logged(&b, &["vale5:e1", "not sealed against shrinking", "seal=on"]);

    // Sealed with F_SEAL_SHRINK: accepted, the rings run, and truncating fails.
    let sealed = sys::memfd(size, sys::SHRINK);
    let mut a2 = Raw::connect(&b.socket("vale5:e2"), false);
    assert!(a2.set_mem(&sealed, size, 0), "{}", b.log_text());
    assert_eq!(a2.create(0), Some(0), "CREATE:\n{}", b.log_text());
    let e = sealed.set_len(0).expect_err("a sealed memfd shrank");
    assert_eq!(e.raw_os_error(), Some(sys::EPERM));
    a2.kick();
    assert_alive(&mut b);

    // A plain file (what memory-backend-file gives) cannot be sealed: refused.
    let path = std::env::temp_dir().join(format!("ptnet-hmem-{}", std::process::id()));
    let plain = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("plain file");
    let _ = std::fs::remove_file(&path);
    plain.set_len(size).expect("size");
    let mut a3 = Raw::connect(&b.socket("vale5:e3"), false);
    let accepted = a3.set_mem(&plain, size, 0);
    let _ = a3.create(0);
    plain.set_len(0).expect("truncate");
    a3.kick();
    assert_alive(&mut b);
    assert!(!accepted, "a file that cannot be sealed was accepted");
    assert_logged(&b, &["vale5:e3", "cannot be sealed"]);
    drop((a, a2, a3));
    assert_pipe_carries_traffic(&mut b);
}

/// Row 3: the port memory SHMEM_MAP hands out, truncated by the frontend, then CREATE, a slot
/// transmitted and kicks.
/// Was: SIGBUS (the memfd was not sealed; either end of a pipe could shrink it). Now: EPERM, and
/// the very pipe attacked carries verified traffic.
#[test]
fn port_memory_from_shmem_map_cannot_be_resized() {
    let (_d, mut b) = start("hmem-port", &[]);
    // The receiving end of the pipe: both ends share one memory, so either could shrink it.
    let mut a = Raw::connect(&b.socket("netmap:ok}0"), true);
    let port_mem = a.port_mem.take().expect("SHMEM_MAP fd");
    let size = port_mem.metadata().expect("fstat").len();
    let shrink = port_mem.set_len(0);
    let guest = sys::memfd(64 << 10, sys::SHRINK);
    assert!(a.set_mem(&guest, 64 << 10, 0));
    let created = a.create(0);
    // Transmit one slot (TX ring 0: head = cur = 1 in its CSB entry), so that the kick makes
    // the daemon read the ring and the slot in the port memory. The frame lands in the other
    // end's RX ring, which the transmitter below never reads.
    let mut hc = [0u8; 8];
    hc[0] = 1;
    hc[4] = 1;
    guest.write_at(&hc, 0).expect("CSB write");
    a.kick();
    drop(a);
    assert_alive(&mut b);
    let e = shrink.expect_err("the port memfd shrank");
    assert_eq!(e.raw_os_error(), Some(sys::EPERM), "{e}");
    assert!(port_mem.set_len(size * 2).is_err(), "the port memfd grew");
    assert_eq!(port_mem.metadata().expect("fstat").len(), size);
    assert_eq!(created, Some(0));
    assert_pipe_carries_traffic(&mut b);
}

/// Row 8, first half: regions of 64 TiB over 4 KiB memfds on three ports, the connections held
/// open. Refused by the fstat check (the cap is raised out of the way here), so the address space
/// stays free and the pipe's CREATE works.
#[test]
fn huge_regions_over_small_memfds_are_refused() {
    let (_d, mut b) = start("hmem-huge", &["--max-guest-memory", "1024T"]);
    let mut held = Vec::new();
    for p in ["vale5:e1", "vale5:e2", "vale5:e3"] {
        let small = sys::memfd(4096, sys::SHRINK);
        let mut a = Raw::connect(&b.socket(p), false);
        assert!(!a.set_mem(&small, 64 << 40, 0), "64 TiB over 4 KiB on {p}");
        assert_logged(&b, &[p, "70368744177664 bytes", "file of 4096 bytes"]);
        held.push((a, small));
    }
    assert_pipe_carries_traffic(&mut b);
}

/// Row 8, second half: the per-connection cap. 64 TiB sparse memfds (fstat agrees with the
/// region) on three ports held open: refused by the default 64 GiB cap (they used to be mapped;
/// enough of them fill the daemon's 128 TiB of address space, and other ports' CREATE then fails
/// with EAGAIN: filling it exactly takes probing the daemon's gaps, left out here). Then
/// `--max-guest-memory 1M` takes 1 MiB and refuses 2 MiB, and a bad value is named, exit 2.
#[test]
fn guest_memory_per_connection_is_capped() {
    let (_d, mut b) = start("hmem-cap", &[]);
    let mut held = Vec::new();
    for p in ["vale5:e1", "vale5:e2", "vale5:e3"] {
        let sparse = sys::memfd(64 << 40, sys::SHRINK);
        let mut a = Raw::connect(&b.socket(p), false);
        let accepted = a.set_mem(&sparse, 64 << 40, 0);
        held.push((a, sparse, accepted));
    }
    assert_pipe_carries_traffic(&mut b);
    for (p, (_, _, accepted)) in ["vale5:e1", "vale5:e2", "vale5:e3"].iter().zip(&held) {
        assert!(!accepted, "64 TiB accepted on {p}");
        assert_logged(
            &b,
            &[p, "over the 68719476736-byte cap", "--max-guest-memory"],
        );
    }
    drop(held);
    b.stop();

    let (_d2, mut b) = start("hmem-cap1m", &["--max-guest-memory", "1M"]);
    let two = sys::memfd(2 << 20, sys::SHRINK);
    let mut a = Raw::connect(&b.socket("vale5:e1"), false);
    assert!(
        !a.set_mem(&two, 2 << 20, 0),
        "2 MiB accepted under a 1 MiB cap"
    );
    assert_logged(&b, &["vale5:e1", "over the 1048576-byte cap"]);
    let mut a2 = Raw::connect(&b.socket("vale5:e2"), false);
    assert!(
        a2.set_mem(&two, 1 << 20, 0),
        "1 MiB refused:\n{}",
        b.log_text()
    );
    assert_eq!(a2.create(0), Some(0));
    drop((a, a2));
    assert_pipe_carries_traffic(&mut b);
    b.stop();

    let bin = bins().expect("binaries").backend;
    for bad in ["lots", "0", "12Q"] {
        let out = run_with_timeout(
            std::process::Command::new(&bin).args(["--max-guest-memory", bad, "null:x"]),
            Duration::from_secs(10),
        )
        .expect("runs");
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(2),
            "{bad}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("--max-guest-memory") && out.stderr.contains(bad),
            "{bad}: {}",
            out.stderr
        );
    }
}
