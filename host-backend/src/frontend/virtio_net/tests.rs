//! The device over real ports: two virtio-net devices on one VALE switch, driven through their
//! vhost-user handlers as a frontend would (memory table of sealed memfds, vring set-up, kick and
//! call eventfds), with split rings built by hand in the "guest" memory. Frames go from one
//! device's TX queue through the switch into the other's RX queue; hostile set-ups and rings are
//! refused or stop their own queue without hurting the other port.

mod chains;

use super::*;
use crate::portspec::PortSpec;
use crate::served::{build_ports, NetmapImpl};
use crate::sys::MappedFile;
use ::vhost::vhost_user::message::{VhostUserMemoryRegion, VhostUserVringAddrFlags};
use ::vhost::vhost_user::VhostUserBackendReqHandlerMut;
use ptnet_protocol::vnet::VnetHeader;
use std::os::fd::AsRawFd;
use vm_memory::{Bytes, FileOffset, GuestMemoryMmap};

const QSIZE: u16 = 16;
const MEM: usize = 1 << 20;
/// The "frontend virtual address" of guest address 0.
const VA: u64 = 0x7f00_0000_0000;

/// One device with its guest memory, as a test frontend sees it.
struct Guest {
    dev: VirtioNetDevice,
    mem: GuestMemoryMmap,
    kicks: Vec<File>,
    calls: Vec<File>,
    avail: [u16; 4],
}

/// Rings of queue `q`: descriptors, avail, used; buffers from 0x10000 + q * 0x20000.
fn ring_base(q: u64) -> u64 {
    0x1000 + q * 0x3000
}

impl Guest {
    fn new(port: Arc<Port>) -> Self {
        Self::with_pairs(port, 1)
    }

    /// A guest that sets up `pairs` queue pairs.
    fn with_pairs(port: Arc<Port>, pairs: u32) -> Self {
        let file = MappedFile::memfd("test-guest", MEM).unwrap();
        let f = file.file().try_clone().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            MEM,
            Some(FileOffset::new(f.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let mut dev = VirtioNetDevice::new(port, LoopOptions::default());
        let region = VhostUserMemoryRegion::new(0, MEM as u64, VA, 0);
        dev.set_mem_table(&[region], vec![f], None).unwrap();
        let offered = dev.get_features().unwrap();
        dev.set_features(offered & !config::F_RING_PACKED).unwrap();
        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        for q in 0..2 * pairs {
            let b = VA + ring_base(u64::from(q));
            dev.set_vring_num(q, u32::from(QSIZE)).unwrap();
            dev.set_vring_base(q, 0).unwrap();
            dev.set_vring_addr(
                q,
                VhostUserVringAddrFlags::empty(),
                b,
                b + 0x2000,
                b + 0x1000,
                0,
            )
            .unwrap();
            let (k, c) = (
                crate::sys::eventfd_file(true).unwrap(),
                crate::sys::eventfd_file(true).unwrap(),
            );
            dev.set_vring_call(q as u8, Some(c.try_clone().unwrap()))
                .unwrap();
            dev.set_vring_kick(q as u8, Some(k.try_clone().unwrap()))
                .unwrap();
            dev.set_vring_enable(q, true).unwrap();
            kicks.push(k);
            calls.push(c);
        }
        assert!(dev.running(), "the pair runs once both queues are set up");
        Self {
            dev,
            mem,
            kicks,
            calls,
            avail: [0; 4],
        }
    }

    /// Descriptor `i` of queue `q`.
    fn desc(&self, q: u64, i: u16, addr: u64, len: u32, flags: u16) {
        let at = GuestAddress(ring_base(q) + 16 * u64::from(i));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(0u16, GuestAddress(at.0 + 14)).unwrap();
    }

    fn push(&mut self, q: usize, head: u16) {
        let avail = ring_base(q as u64) + 0x1000;
        let slot = GuestAddress(avail + 4 + 2 * u64::from(self.avail[q] % QSIZE));
        self.mem.write_obj(head, slot).unwrap();
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(avail + 2))
            .unwrap();
        crate::sys::eventfd_signal_nowait(&self.kicks[q]).unwrap();
    }

    fn used_idx(&self, q: u64) -> u16 {
        self.mem
            .read_obj(GuestAddress(ring_base(q) + 0x2000 + 2))
            .unwrap()
    }

    fn used(&self, q: u64, k: u16) -> (u32, u32) {
        let at = ring_base(q) + 0x2000 + 4 + 8 * u64::from(k % QSIZE);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    /// Waits for queue `q`'s used index to reach `n` (the interrupt eventfd says when).
    fn wait_used(&self, q: u64, n: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.used_idx(q) < n {
            if Instant::now() >= deadline {
                return false;
            }
            let _ = crate::sys::poll_fds(&[(self.calls[q as usize].as_raw_fd(), libc::POLLIN)], 50);
            let _ = crate::sys::eventfd_take_nowait(&self.calls[q as usize]);
        }
        true
    }
}

fn switch(names: &[&str]) -> Vec<Arc<Port>> {
    let specs: Vec<PortSpec> = names.iter().map(|n| PortSpec::parse(n).unwrap()).collect();
    build_ports(&specs, NetmapImpl::User, &Default::default()).unwrap()
}

/// A 12-byte zero header and an Ethernet frame from `src` to `dst` of `len` bytes.
fn tx_frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; 12];
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&[0x88, 0xb5]);
    v.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)));
    v
}

#[test]
fn frames_cross_the_switch_between_two_devices() {
    frames_cross(&[
        "valet:a@conf:frontend=virtio-net",
        "valet:b@conf:frontend=virtio-net",
    ]);
}

#[test]
fn frames_cross_a_pipe_between_two_devices() {
    frames_cross(&[
        "netmap:vp{1@conf:frontend=virtio-net",
        "netmap:vp}1@conf:frontend=virtio-net",
    ]);
}

/// Frames from the first port's device to the second's, through whatever joins the ports.
fn frames_cross(names: &[&str]) {
    let ports = switch(names);
    let mut a = Guest::new(ports[0].clone());
    let mut b = Guest::new(ports[1].clone());
    let (ma, mb) = (ports[0].mac(), ports[1].mac());
    // Both ports captured (`crate::capture`): the frames without their virtio-net header.
    for p in &ports {
        p.tap().unwrap().start(Some(8), 2048).unwrap();
    }
    // B posts 8 RX buffers of 2 KiB; A sends 8 frames of different lengths.
    for i in 0..8u16 {
        b.desc(0, i, 0x10000 + 0x800 * u64::from(i), 2048, 2);
        b.push(0, i);
    }
    let lens = [60usize, 61, 100, 333, 1000, 1400, 1514, 64];
    for (i, &len) in lens.iter().enumerate() {
        let f = tx_frame(mb, ma, len, i as u8);
        let at = 0x30000 + 0x800 * i as u64;
        a.mem.write_slice(&f, GuestAddress(at)).unwrap();
        a.desc(1, i as u16, at, f.len() as u32, 0);
        a.push(1, i as u16);
    }
    assert!(a.wait_used(1, 8), "A's TX chains completed");
    assert!(
        b.wait_used(0, 8),
        "B received 8 frames: {}\nA: {} {}\nB port: {}",
        b.dev.stats_line(),
        a.dev.stats_line(),
        ports[0].stats_line(),
        ports[1].stats_line()
    );
    for (i, &len) in lens.iter().enumerate() {
        let (id, used_len) = b.used(0, i as u16);
        assert_eq!((id, used_len as usize), (i as u32, 12 + len), "frame {i}");
        let mut got = vec![0u8; 12 + len];
        b.mem
            .read_slice(&mut got, GuestAddress(0x10000 + 0x800 * i as u64))
            .unwrap();
        let h = VnetHeader::parse(&got[..12], 12).unwrap();
        assert_eq!(h.num_buffers, 1);
        assert_eq!(got[12..], tx_frame(mb, ma, len, i as u8)[12..], "frame {i}");
    }
    use crate::capture::Direction::{FromFrontend, ToFrontend};
    for (p, dir) in [(&ports[0], FromFrontend), (&ports[1], ToFrontend)] {
        let mut buf = Vec::new();
        let c = p.tap().unwrap().stop(&mut buf);
        let mut got = Vec::new();
        crate::capture::for_each_record(&buf, |r| got.push((r.dir, r.data.to_vec())));
        let want: Vec<_> = (lens.iter().enumerate())
            .map(|(i, &len)| (dir, tx_frame(mb, ma, len, i as u8)[12..].to_vec()))
            .collect();
        assert!(got == want && c.missed == 0, "{}: {c:?}", p.name());
    }
    assert_eq!(a.dev.vrings[1].stats.packets.load(Ordering::Relaxed), 8);
    assert_eq!(b.dev.vrings[0].stats.packets.load(Ordering::Relaxed), 8);
    // Per-queue counters as the rings have: kicks (at most one per push: several merge into
    // one read, and a thread still spinning takes the frames without one), rounds that moved
    // frames, and an interrupt decision per round that used chains.
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (atx, brx) = (&a.dev.vrings[1].stats, &b.dev.vrings[0].stats);
    assert!(l(&atx.kicks) <= 8, "{}", atx.line());
    assert!((1..=8).contains(&l(&atx.batches)), "{}", atx.line());
    assert!((1..=8).contains(&l(&brx.batches)), "{}", brx.line());
    // The worker counts a round's interrupt decision after it published the used entries the
    // test waited for: give it a moment to finish the round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let decided = || l(&brx.interrupts) + l(&brx.interrupts_suppressed);
    while decided() != l(&brx.batches) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(decided(), l(&brx.batches), "{}", brx.line());
    // Frames that arrive with no RX buffer wait in the netmap ring, and are delivered when the
    // guest posts buffers (its kick).
    let f = tx_frame(mb, ma, 200, 99);
    a.mem.write_slice(&f, GuestAddress(0x38000)).unwrap();
    a.desc(1, 8, 0x38000, f.len() as u32, 0);
    a.push(1, 8);
    assert!(a.wait_used(1, 9));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(b.used_idx(0), 8, "no buffer: not delivered yet");
    b.desc(0, 8, 0x18000, 2048, 2);
    b.push(0, 8);
    assert!(b.wait_used(0, 9), "delivered once a buffer came");
    assert_eq!(b.used(0, 8).1 as usize, 12 + 200);
    b.dev.disconnect();
    a.dev.disconnect();
    drop((a, b));
    // The next frontends on the same ports (new guest memory, rings from 0): traffic again.
    for round in 0..2u8 {
        let mut a = Guest::new(ports[0].clone());
        let mut b = Guest::new(ports[1].clone());
        b.desc(0, 0, 0x10000, 2048, 2);
        b.push(0, 0);
        let f = tx_frame(mb, ma, 300, 40 + round);
        a.mem.write_slice(&f, GuestAddress(0x30000)).unwrap();
        a.desc(1, 0, 0x30000, f.len() as u32, 0);
        a.push(1, 0);
        assert!(b.wait_used(0, 1), "round {round}: {}", b.dev.stats_line());
        let mut got = vec![0u8; 300];
        b.mem
            .read_slice(&mut got, GuestAddress(0x10000 + 12))
            .unwrap();
        assert_eq!(got, f[12..], "round {round}");
        a.dev.disconnect();
        b.dev.disconnect();
    }
}

#[test]
fn a_broken_queue_stops_alone() {
    let ports = switch(&[
        "valeh:a@conf:frontend=virtio-net",
        "valeh:b@conf:frontend=virtio-net",
        "valeh:c@conf:frontend=virtio-net",
    ]);
    let mut a = Guest::new(ports[0].clone());
    let mut b = Guest::new(ports[1].clone());
    let mut c = Guest::new(ports[2].clone());
    // A's avail index jumps a queue and more ahead: its TX queue stops, counted, for good.
    a.mem
        .write_obj(QSIZE + 5, GuestAddress(ring_base(1) + 0x1000 + 2))
        .unwrap();
    crate::sys::eventfd_signal_nowait(&a.kicks[1]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.dev.vrings[1].stats.broken.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken queue was not noticed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A hostile chain from B (a writable descriptor, then one outside guest memory): dropped and
    // counted, its chains completed.
    b.desc(1, 0, 0x30000, 100, 2);
    b.push(1, 0);
    b.desc(1, 1, MEM as u64 + 0x1000, 100, 0);
    b.push(1, 1);
    assert!(b.wait_used(1, 2));
    let st = &b.dev.vrings[1].stats;
    assert_eq!(st.bad_chains.load(Ordering::Relaxed), 1);
    assert_eq!(st.bad_addresses.load(Ordering::Relaxed), 1);
    // B to C still works.
    c.desc(0, 0, 0x10000, 2048, 2);
    c.push(0, 0);
    let f = tx_frame(ports[2].mac(), ports[1].mac(), 80, 1);
    b.mem.write_slice(&f, GuestAddress(0x30000)).unwrap();
    b.desc(1, 2, 0x30000, f.len() as u32, 0);
    b.push(1, 2);
    assert!(c.wait_used(0, 1), "{}", c.dev.stats_line());
    assert_eq!(c.used(0, 0).1 as usize, 12 + 80);
    // A gets going again only once its frontend sets the queue up anew.
    a.mem
        .write_obj(0u16, GuestAddress(ring_base(1) + 0x1000 + 2))
        .unwrap();
    a.dev.set_vring_base(1, 0).unwrap();
    a.avail[1] = 0;
    let f = tx_frame(ports[2].mac(), ports[0].mac(), 70, 2);
    a.mem.write_slice(&f, GuestAddress(0x30000)).unwrap();
    a.desc(1, 0, 0x30000, f.len() as u32, 0);
    c.desc(0, 1, 0x10800, 2048, 2);
    c.push(0, 1);
    a.push(1, 0);
    assert!(a.wait_used(1, 1), "{}", a.dev.stats_line());
    assert!(c.wait_used(0, 2));
}

#[test]
fn memory_tables_are_checked_before_anything_is_mapped() {
    let ports = switch(&["valem:a@conf:frontend=virtio-net"]);
    let mut dev = VirtioNetDevice::new(ports[0].clone(), LoopOptions::default());
    let region = |size: u64, off: u64| VhostUserMemoryRegion::new(0, size, VA, off);
    // Not sealed against shrinking: a frontend could truncate it under our mapping.
    let unsealed = {
        // SAFETY-free: a plain memfd through libc is not needed; a tmpfile is not a memfd at all.
        let f = tempfile_like();
        f.set_len(MEM as u64).unwrap();
        f
    };
    assert!(dev
        .set_mem_table(&[region(MEM as u64, 0)], vec![unsealed], None)
        .is_err());
    // A sealed memfd, but the region reaches past its end.
    let sealed = MappedFile::memfd("t", MEM)
        .unwrap()
        .file()
        .try_clone()
        .unwrap();
    assert!(dev
        .set_mem_table(&[region(MEM as u64, 4096)], vec![sealed], None)
        .is_err());
    // Sealed: a truncation is refused by the kernel, so the mapping can never fault.
    let sealed = MappedFile::memfd("t", MEM)
        .unwrap()
        .file()
        .try_clone()
        .unwrap();
    let keep = sealed.try_clone().unwrap();
    dev.set_mem_table(&[region(MEM as u64, 0)], vec![sealed], None)
        .unwrap();
    assert!(keep.set_len(0).is_err(), "F_SEAL_SHRINK holds");
    // A ring address outside the table: the pair does not start; the connection goes on.
    let offered = dev.get_features().unwrap();
    dev.set_features(offered & !config::F_RING_PACKED).unwrap();
    for q in 0..2u32 {
        dev.set_vring_num(q, 16).unwrap();
        dev.set_vring_addr(
            q,
            VhostUserVringAddrFlags::empty(),
            0x1000,
            0x2000,
            0x3000,
            0,
        )
        .unwrap();
        dev.set_vring_kick(q as u8, Some(crate::sys::eventfd_file(true).unwrap()))
            .unwrap();
        dev.set_vring_enable(q, true).unwrap();
    }
    assert!(!dev.running());
    // Not an eventfd as a kick: refused.
    assert!(dev.set_vring_kick(0, Some(tempfile_like())).is_err());
    // Sizes and indexes.
    assert!(dev.set_vring_num(0, 3).is_err());
    assert!(dev.set_vring_num(0, 4096).is_err());
    assert!(dev.set_vring_num(7, 16).is_err());
    assert!(dev.set_features(1 << 40).is_err());
}

/// A regular file (not a memfd: cannot be sealed).
fn tempfile_like() -> File {
    let p = std::env::temp_dir().join(format!("ptnet-virtio-test-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let _ = std::fs::remove_file(&p);
    f
}

/// CPU time (ms) of this process's thread named `name`, from /proc.
fn thread_cpu_ms(name: &str) -> Option<u64> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // Fields after the ")" of the command: state is field 3; utime, stime are 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        return Some(ticks * 10);
    }
    None
}

#[test]
fn too_few_rx_buffers_wait_for_the_guest_without_spinning() {
    let ports = switch(&[
        "valen:a@conf:frontend=virtio-net",
        "valen:b@conf:frontend=virtio-net",
    ]);
    let mut a = Guest::new(ports[0].clone());
    let mut b = Guest::new(ports[1].clone());
    // One 256-byte buffer: a 1000-byte frame needs four.
    b.desc(0, 0, 0x10000, 256, 2);
    b.push(0, 0);
    let f = tx_frame(ports[1].mac(), ports[0].mac(), 1000, 5);
    a.mem.write_slice(&f, GuestAddress(0x30000)).unwrap();
    a.desc(1, 0, 0x30000, f.len() as u32, 0);
    a.push(1, 0);
    assert!(a.wait_used(1, 1));
    std::thread::sleep(Duration::from_millis(100));
    let before = thread_cpu_ms("valen:b-vq0").expect("B's pair thread");
    std::thread::sleep(Duration::from_millis(500));
    let spent = thread_cpu_ms("valen:b-vq0").unwrap() - before;
    assert!(
        spent <= 50,
        "B's thread used {spent} ms of CPU in 500 ms waiting for buffers"
    );
    assert_eq!(b.used_idx(0), 0);
    // EVENT_IDX: asked to be kicked past the one chain it has.
    let avail_event: u16 = b
        .mem
        .read_obj(GuestAddress(
            ring_base(0) + 0x2000 + 4 + 8 * u64::from(QSIZE),
        ))
        .unwrap();
    assert_eq!(avail_event, 1);
    for i in 1..4u16 {
        b.desc(0, i, 0x10000 + 0x100 * u64::from(i), 256, 2);
        b.push(0, i);
    }
    assert!(b.wait_used(0, 4), "{}", b.dev.stats_line());
    let h = VnetHeader::parse(
        &b.mem.read_obj::<[u8; 12]>(GuestAddress(0x10000)).unwrap(),
        12,
    )
    .unwrap();
    assert_eq!(h.num_buffers, 4);
    let total: u32 = (0..4).map(|k| b.used(0, k).1).sum();
    assert_eq!(total as usize, 12 + 1000);
}

/// A pipe is lossless: a sender whose peer has no room waits (it stops taking chains once the
/// port holds its frames back) and goes on when the receiver's guest posts buffers. Every frame arrives
/// once, in order.
#[test]
fn a_pipe_holds_the_sender_until_the_receiver_has_room() {
    const TOTAL: u32 = 3000;
    let ports = switch(&[
        "netmap:bp{2@conf:frontend=virtio-net",
        "netmap:bp}2@conf:frontend=virtio-net",
    ]);
    let mut a = Guest::new(ports[0].clone());
    let mut b = Guest::new(ports[1].clone());
    let (ma, mb) = (ports[0].mac(), ports[1].mac());
    let mut sent = 0u32;
    let mut a_pushed = 0u16;
    // A sends batches of QSIZE while its chains complete.
    let send_batch = |a: &mut Guest, sent: &mut u32, a_pushed: &mut u16| {
        for i in 0..QSIZE {
            if *sent == TOTAL {
                break;
            }
            let mut f = tx_frame(mb, ma, 60, 0);
            f[12 + 14..12 + 18].copy_from_slice(&sent.to_le_bytes());
            let at = 0x30000 + 0x100 * u64::from(i);
            a.mem.write_slice(&f, GuestAddress(at)).unwrap();
            a.desc(1, i, at, f.len() as u32, 0);
            a.push(1, i);
            *sent += 1;
            *a_pushed = a_pushed.wrapping_add(1);
        }
    };
    // Phase 1: B posts nothing; A fills the pipe and its own TX ring, then is held.
    let mut stalled = Instant::now();
    while stalled.elapsed() < Duration::from_millis(300) {
        if a.used_idx(1) == a_pushed && sent < TOTAL {
            send_batch(&mut a, &mut sent, &mut a_pushed);
            stalled = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(sent < TOTAL, "never held: {sent} taken");
    // (Held once the peer's 1024-slot RX ring is full: frames the port cannot take stop the
    // chains, rather than fill our own TX ring.)
    assert!(sent >= 1023, "held too early: {sent}");
    // Phase 2: B takes everything, in order; A resumes as room comes.
    let (mut got, mut posted, mut seen) = (0u32, 0u16, 0u16);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < TOTAL {
        assert!(
            Instant::now() < deadline,
            "stuck at {got} of {TOTAL} (sent {sent})\nA: {}\nB: {}",
            a.dev.stats_line(),
            b.dev.stats_line()
        );
        while posted.wrapping_sub(seen) < QSIZE {
            let i = posted % QSIZE;
            b.desc(0, i, 0x10000 + 0x800 * u64::from(i), 2048, 2);
            b.push(0, i);
            posted = posted.wrapping_add(1);
        }
        while b.used_idx(0) != seen {
            let (id, len) = b.used(0, seen);
            assert_eq!(len, 12 + 60);
            let seq: u32 = b
                .mem
                .read_obj(GuestAddress(0x10000 + 0x800 * u64::from(id) + 12 + 14))
                .unwrap();
            assert_eq!(seq, got, "lost, duplicated or reordered");
            got += 1;
            seen = seen.wrapping_add(1);
        }
        if a.used_idx(1) == a_pushed && sent < TOTAL {
            send_batch(&mut a, &mut sent, &mut a_pushed);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(
        a.dev.vrings[1].stats.packets.load(Ordering::Relaxed),
        u64::from(TOTAL)
    );
}

/// `rings=2`: two queue pairs, each on its own netmap ring pair (TX ring i, RX ring i). Frames
/// sent on pair 1 arrive on the receiver's pair 1 (VALE keeps the ring number).
#[test]
fn two_queue_pairs_on_two_ring_pairs() {
    let ports = switch(&[
        "valeq:a@conf:frontend=virtio-net,rings=2",
        "valeq:b@conf:frontend=virtio-net,rings=2",
    ]);
    let mut a = Guest::with_pairs(ports[0].clone(), 2);
    let mut b = Guest::with_pairs(ports[1].clone(), 2);
    assert_eq!(a.dev.get_queue_num().unwrap(), 4);
    assert_ne!(a.dev.get_features().unwrap() & config::F_MQ, 0);
    assert_eq!(a.dev.threads.iter().filter(|t| t.is_some()).count(), 2);
    for (pair, len) in [(1u64, 300usize), (0, 200)] {
        let (rxq, txq) = (2 * pair, 2 * pair + 1);
        b.desc(rxq, 0, 0x10000 + 0x1000 * pair, 2048, 2);
        b.push(rxq as usize, 0);
        let f = tx_frame(ports[1].mac(), ports[0].mac(), len, pair as u8);
        a.mem.write_slice(&f, GuestAddress(0x30000)).unwrap();
        a.desc(txq, 0, 0x30000, f.len() as u32, 0);
        a.push(txq as usize, 0);
        assert!(a.wait_used(txq, 1), "pair {pair}");
        assert!(b.wait_used(rxq, 1), "pair {pair}: {}", b.dev.stats_line());
        assert_eq!(b.used(rxq, 0).1 as usize, 12 + len, "pair {pair}");
    }
    assert_eq!(b.dev.vrings[2].stats.packets.load(Ordering::Relaxed), 1);
    assert_eq!(b.dev.vrings[0].stats.packets.load(Ordering::Relaxed), 1);
    // The guest disables pair 1 (QEMU's SET_VRING_ENABLE after the guest's MQ command): only
    // pair 0 runs.
    a.dev.set_vring_enable(2, false).unwrap();
    assert_eq!(a.dev.threads.iter().filter(|t| t.is_some()).count(), 1);
}

#[test]
fn vring_bases_in_qemus_packed_form_carry_both_positions() {
    let ports = switch(&["valeb:a@conf:frontend=virtio-net"]);
    let mut dev = VirtioNetDevice::new(ports[0].clone(), LoopOptions::default());
    let offered = dev.get_features().unwrap();
    // (The reply is a packed struct: its field copied out.)
    let base = |d: &mut VirtioNetDevice| {
        let st = d.get_vring_base(0).unwrap();
        {
            st.num
        }
    };
    // Packed: QEMU sends (and takes back) the avail position in the low half and the used
    // position in the high half, each with its wrap counter in bit 15; its first is 0x80008000.
    dev.set_features(offered).unwrap();
    dev.set_vring_num(0, u32::from(QSIZE)).unwrap();
    dev.set_vring_base(0, 0x8000_8000).unwrap();
    assert_eq!(base(&mut dev), 0x8000_8000);
    // DPDK's virtio-user sends the low half only: the used position is the avail one.
    dev.set_vring_base(0, 0x8003).unwrap();
    assert_eq!(base(&mut dev), 0x8003_8003);
    // Split: a 16-bit index; a high half is refused.
    let mut dev = VirtioNetDevice::new(ports[0].clone(), LoopOptions::default());
    dev.set_features(offered & !config::F_RING_PACKED).unwrap();
    dev.set_vring_num(0, u32::from(QSIZE)).unwrap();
    dev.set_vring_base(0, 7).unwrap();
    assert_eq!(base(&mut dev), 7);
    assert!(dev.set_vring_base(0, 0x1_0007).is_err());
}
