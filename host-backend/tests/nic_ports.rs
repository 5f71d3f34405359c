//! NIC ports end to end: the daemon (its binary) serves `packet:` and `tap:` ports inside network
//! namespaces these tests create and delete; a host-process driver (`ptnet_driver`, vhost-user)
//! stands for the guest; the kernel stack on the other side is reached with ordinary sockets
//! opened inside the namespaces (setns in a helper thread).
//!
//! Needs root (namespaces, veth, tap). A missing facility (the `ip` tool, /dev/net/tun, veth)
//! fails the test: nothing is skipped.

use nix::net::if_::if_nametoindex;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};
use nix::unistd::Pid;
use ptnet_backend::port::nic::sys as nic_sys;
use ptnet_driver::{Port, RingId};
use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Namespaces, interfaces, the daemon

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!(
            "ptnet-test-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NS ARGS...`
    fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        sh(&v);
    }

    /// Runs `f` in a thread that entered this namespace (sockets it opens stay in it).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // Changes only this thread's network namespace; the thread ends with the closure.
                if let Err(e) = setns(&ns, CloneFlags::CLONE_NEWNET) {
                    panic!("setns {path}: {}", std::io::Error::from(e));
                }
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    fn mac(&self, dev: &str) -> [u8; 6] {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", dev])
            .output()
            .expect("ip link show");
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let m = s
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC for {dev}: {s}"));
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(m.split(':')) {
            *b = u8::from_str_radix(p, 16).unwrap();
        }
        mac
    }

    fn wait_for_link(&self, dev: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ok = Command::new("ip")
                .args(["-n", &self.name, "link", "show", dev])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "{dev} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The daemon serving one port inside a namespace.
struct Daemon {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(ns: &Netns, port: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-d", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("port.sock");
        let log = dir.join("daemon.log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_ptnet-backend"),
            ])
            .arg("--socket")
            .arg(&sock)
            .arg(port)
            .stderr(File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ptnet-backend");
        let mut d = Self {
            child,
            dir,
            sock,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.sock.exists() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("daemon exited ({st}): {}", d.log_text());
            }
            assert!(Instant::now() < deadline, "no socket: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn open(&self) -> Port {
        Port::open(&format!("vhost-user:{}", self.sock.display())).expect("driver attaches")
    }

    /// Stops the daemon (SIGTERM) and returns its log.
    fn stop(mut self) -> String {
        self.terminate();
        self.log_text()
    }

    fn terminate(&mut self) {
        // Our own child's pid.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

fn csum(h: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet + IPv4 + UDP (no UDP checksum) carrying `payload`.
fn udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ips: ([u8; 4], [u8; 4]),
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&ips.0);
    ip[16..20].copy_from_slice(&ips.1);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// The UDP payload of `f` if it is IPv4/UDP to `dport`.
fn udp_payload(f: &[u8], dport: u16) -> Option<Vec<u8>> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let ihl = usize::from(f[14] & 0xf) * 4;
    let u = 14 + ihl;
    if f.len() < u + 8 || u16::from_be_bytes([f[u + 2], f[u + 3]]) != dport {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([f[u + 4], f[u + 5]]));
    let seg = f.get(u..u + len)?;
    // The port hands the guest complete frames: a UDP checksum, when present, is right.
    if seg[6..8] != [0, 0] {
        let mut ph = Vec::with_capacity(12 + seg.len());
        ph.extend_from_slice(&f[26..34]);
        ph.extend_from_slice(&[0, 17]);
        ph.extend_from_slice(&(len as u16).to_be_bytes());
        ph.extend_from_slice(seg);
        assert_eq!(csum(&ph), 0, "bad UDP checksum in {:02x?}", &f[..u + len]);
    }
    Some(seg[8..].to_vec())
}

// ---------------------------------------------------------------------------------------------
// Driver side

/// Transmits `frames` on TX ring `ring` and waits until the daemon took them all.
fn driver_send(port: &mut Port, ring: u32, frames: &[Vec<u8>]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while i < frames.len() {
        let mut tx = port.tx_ring(ring);
        while i < frames.len() && tx.send(&frames[i]) {
            i += 1;
        }
        tx.txsync().unwrap();
        if i < frames.len() {
            assert!(Instant::now() < deadline, "TX ring stuck");
            port.wait(RingId::Tx(ring), Some(Duration::from_millis(50)))
                .unwrap();
        }
    }
    loop {
        let mut tx = port.tx_ring(ring);
        tx.txsync_reclaim().unwrap();
        if tx.pending() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "TX never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Receives frames on every RX ring until `want` of them pass `pick` or `timeout` passes.
/// Returns what `pick` kept, with the ring each came from.
fn driver_recv<T>(
    port: &mut Port,
    want: usize,
    timeout: Duration,
    mut pick: impl FnMut(&[u8]) -> Option<T>,
) -> Vec<(u32, T)> {
    let nrx = port.num_rx_rings();
    let ids: Vec<RingId> = (0..nrx).map(RingId::Rx).collect();
    let mut buf = vec![0u8; 2048];
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        for r in 0..nrx {
            let mut rx = port.rx_ring(r);
            rx.rxsync().unwrap();
            while let Some(len) = rx.recv(&mut buf) {
                if let Some(v) = pick(&buf[..len.min(buf.len())]) {
                    got.push((r, v));
                }
            }
            rx.rxsync().unwrap();
        }
        if got.len() < want {
            port.wait_any(&ids, Some(Duration::from_millis(20)))
                .unwrap();
        }
    }
    got
}

fn recv_all(sock: &UdpSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Scenarios shared by the port kinds

/// Where the port's traffic meets the kernel: `kns` holds `kdev` with address `kip`; the port
/// speaks as `pip`.
struct Peer<'a> {
    kns: &'a Netns,
    kdev: &'a str,
    kip: [u8; 4],
    pip: [u8; 4],
}

fn ip_str(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Driver -> kernel: `n` UDP datagrams on TX ring `ring` all reach a socket in the kernel's
/// namespace, intact and in order.
fn port_to_kernel(port: &mut Port, p: &Peer, ring: u32, n: usize, dport: u16) {
    let sock = p
        .kns
        .run(|| UdpSocket::bind((ip_str(p.kip).as_str(), dport)).expect("bind kernel socket"));
    let kmac = p.kns.mac(p.kdev);
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            udp_frame(
                kmac,
                port.mac(),
                (p.pip, p.kip),
                (1000, dport),
                format!("to-kernel {ring} {i}").as_bytes(),
            )
        })
        .collect();
    driver_send(port, ring, &frames);
    let got = recv_all(&sock, n, Duration::from_secs(5));
    let want: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("to-kernel {ring} {i}").into_bytes())
        .collect();
    assert_eq!(got.len(), n, "kernel received {} of {n}", got.len());
    assert_eq!(got, want);
}

/// Kernel -> driver: `n` datagrams from a kernel socket (from `flows` source ports) arrive on the
/// port's RX rings, intact. Returns how many came on each ring.
fn kernel_to_port(port: &mut Port, p: &Peer, n: usize, flows: u16, dport: u16) -> Vec<usize> {
    let pmac = mac_str(port.mac());
    let _ = Command::new("ip")
        .args(["-n", &p.kns.name, "neigh", "replace", &ip_str(p.pip)])
        .args(["lladdr", &pmac, "dev", p.kdev, "nud", "permanent"])
        .status();
    let socks: Vec<UdpSocket> = p.kns.run(|| {
        (0..flows)
            .map(|f| UdpSocket::bind((ip_str(p.kip).as_str(), 20000 + f)).unwrap())
            .collect()
    });
    let dst = format!("{}:{dport}", ip_str(p.pip));
    for i in 0..n {
        socks[i % socks.len()]
            .send_to(format!("to-port {i}").as_bytes(), &dst)
            .unwrap();
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = driver_recv(port, n, Duration::from_secs(5), |f| udp_payload(f, dport));
    let mut per_ring = vec![0usize; port.num_rx_rings() as usize];
    let mut seen = vec![false; n];
    for (r, pl) in &got {
        per_ring[*r as usize] += 1;
        let s = String::from_utf8_lossy(pl);
        let i: usize = s
            .strip_prefix("to-port ")
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("bad payload {s:?}"));
        assert!(!seen[i], "datagram {i} twice");
        seen[i] = true;
    }
    assert_eq!(got.len(), n, "port received {} of {n}", got.len());
    per_ring
}

/// The kernel pings (raw frames from an AF_PACKET socket on `kdev`), the driver answers like
/// `ptnet-pkt-gen -f pong` (swaps the MAC addresses): every ping comes back.
fn kernel_pings_pong(port: &mut Port, p: &Peer, count: u32) {
    let kmac = p.kns.mac(p.kdev);
    let pmac = port.mac();
    // 0 (any interface) if it is missing, as if_nametoindex(3) returns.
    let ifindex = p.kns.run(|| if_nametoindex(p.kdev).unwrap_or(0));
    let raw = p.kns.run(|| RawSock::open(ifindex));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            let mut rtts = Vec::new();
            for seq in 0..count {
                let mut f = Vec::new();
                f.extend_from_slice(&pmac);
                f.extend_from_slice(&kmac);
                f.extend_from_slice(&0x88b5u16.to_be_bytes());
                f.extend_from_slice(b"ptnet-ping");
                f.extend_from_slice(&seq.to_be_bytes());
                f.resize(60, 0);
                let t0 = Instant::now();
                raw.send(&f);
                let deadline = t0 + Duration::from_secs(2);
                loop {
                    let r = raw.recv(deadline);
                    let Some(r) = r else {
                        panic!("ping {seq} not answered")
                    };
                    if r.len() >= 28
                        && r[0..6] == kmac
                        && r[6..12] == pmac
                        && r[14..24] == *b"ptnet-ping"
                        && r[24..28] == seq.to_be_bytes()
                    {
                        rtts.push(t0.elapsed());
                        break;
                    }
                }
            }
            rtts
        });
        // Pong.
        let mut buf = vec![0u8; 2048];
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) && answered < count {
            port.rx_ring(0).rxsync().unwrap();
            while let Some(len) = port.rx_ring(0).recv(&mut buf) {
                let f = &mut buf[..len];
                if f.len() < 14 || f[12..14] != [0x88, 0xb5] {
                    continue;
                }
                let (d, s) = f.split_at_mut(6);
                d.copy_from_slice(&s[..6]);
                f[6..12].copy_from_slice(&pmac);
                let mut tx = port.tx_ring(0);
                assert!(tx.send(f));
                tx.txsync().unwrap();
                answered += 1;
            }
            port.rx_ring(0).rxsync().unwrap();
            if pinger.is_finished() {
                break;
            }
            port.wait(RingId::Rx(0), Some(Duration::from_millis(20)))
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let rtts = pinger.join().expect("pinger");
        assert_eq!(rtts.len(), count as usize);
        let mut sorted = rtts.clone();
        sorted.sort();
        eprintln!(
            "kernel -> pong -> kernel: {count} pings, rtt median {:?}, max {:?}",
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    });
}

/// A raw AF_PACKET socket (the kernel side of the ping).
struct RawSock {
    fd: std::os::fd::OwnedFd,
}

impl RawSock {
    fn open(ifindex: u32) -> Self {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::EthAll,
        )
        .unwrap_or_else(|e| panic!("AF_PACKET socket: {}", std::io::Error::from(e)));
        // No safe API in `nix` for these two: the daemon's own wrappers (ptnet_backend::port::nic::sys).
        let one: libc::c_int = 1;
        let _ = nic_sys::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
        );
        if let Err(e) = nic_sys::bind_packet(fd.as_raw_fd(), ifindex, libc::ETH_P_ALL as u16) {
            panic!("bind: {e}");
        }
        Self { fd }
    }

    fn send(&self, f: &[u8]) {
        let r = send(self.fd.as_raw_fd(), f, MsgFlags::empty()).map_err(std::io::Error::from);
        assert!(matches!(r, Ok(n) if n == f.len()), "send: {r:?}");
    }

    fn recv(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ms = left.as_millis().max(1) as i32;
            let mut p = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut p,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            if let Ok(n) = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                if n > 0 {
                    return Some(buf[..n].to_vec());
                }
            }
        }
    }
}

fn stats_field(log: &str, key: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim_end_matches(')').parse().ok())
        })
        .unwrap_or_else(|| panic!("no {key}= in the daemon log:\n{log}"))
}

/// CPU time (user + system, in clock ticks: 100 a second) of the daemon's thread named `thread`,
/// or of the whole daemon.
fn cpu_ticks(d: &Daemon, thread: Option<&str>) -> u64 {
    let pid = d.child.id();
    let stat = match thread {
        None => format!("/proc/{pid}/stat"),
        Some(name) => {
            let task = std::fs::read_dir(format!("/proc/{pid}/task"))
                .expect("daemon tasks")
                .filter_map(|e| e.ok())
                .find(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == name)
                })
                .unwrap_or_else(|| panic!("no daemon thread named {name}"));
            task.path().join("stat").display().to_string()
        }
    };
    let s = std::fs::read_to_string(&stat).unwrap_or_else(|e| panic!("{stat}: {e}"));
    // Fields after the command name (which ends with the last ')'): state is field 3, utime 14,
    // stime 15.
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 1..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU the daemon (or its thread `thread`) uses over the next second: far below a second when
/// its rings sleep, about a whole one when one spins.
fn cpu_over_a_second(d: &Daemon, thread: Option<&str>) -> Duration {
    let t0 = cpu_ticks(d, thread);
    std::thread::sleep(Duration::from_secs(1));
    Duration::from_millis((cpu_ticks(d, thread) - t0) * 10)
}

/// Most CPU a sleeping daemon may use in a second (a spinning ring uses about all of it).
const IDLE_CPU: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Test bodies the packet:, xdp: and tap: tests share

/// UDP from the port to the kernel (200 frames) and back (200 frames, 4 flows), then 50 pings
/// answered by the port.
fn udp_both_ways_and_ping(port: &mut Port, p: &Peer) {
    port_to_kernel(port, p, 0, 200, 4321);
    kernel_to_port(port, p, 200, 4, 5555);
    kernel_pings_pong(port, p, 50);
}

/// A two-ring port: each TX ring reaches the kernel, and 16 kernel flows reach both RX rings
/// (`empty` explains a ring that got nothing).
fn two_rings_both_ways(port: &mut Port, p: &Peer, empty: &str) {
    assert_eq!((port.num_tx_rings(), port.num_rx_rings()), (2, 2));
    port_to_kernel(port, p, 0, 100, 4321);
    port_to_kernel(port, p, 1, 100, 4322);
    let per_ring = kernel_to_port(port, p, 400, 16, 5555);
    assert!(per_ring.iter().all(|&n| n > 0), "{empty}: {per_ring:?}");
}

/// Traffic, then `dev` (in `ns`) down: `n` frames to `dst` sent meanwhile do not spin the daemon
/// (`what` names the link in the message); then `dev` up, and traffic both ways again.
fn link_down_and_up(
    d: &Daemon,
    port: &mut Port,
    p: &Peer,
    (ns, dev, what): (&Netns, &str, &str),
    dst: [u8; 6],
    n: usize,
) {
    port_to_kernel(port, p, 0, 20, 4321);
    ns.ip(&format!("link set {dev} down"));
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(dst, port.mac(), (p.pip, p.kip), (1, 9), &[i as u8; 20]))
        .collect();
    driver_send(port, 0, &frames);
    let cpu = cpu_over_a_second(d, None);
    assert!(
        cpu < IDLE_CPU,
        "the daemon used {cpu:?} of a second with the {what} down"
    );
    ns.ip(&format!("link set {dev} up"));
    std::thread::sleep(Duration::from_millis(200));
    port_to_kernel(port, p, 0, 20, 4323);
    kernel_to_port(port, p, 20, 2, 5555);
}

// ---------------------------------------------------------------------------------------------
// packet:

/// Namespaces `a` (daemon, veth end va0) and `b` (kernel, vb0 10.0.0.2/24).
fn veth_pair() -> (Netns, Netns) {
    veth_pair_queues(1)
}

/// The same with `q` queues each way on both ends.
fn veth_pair_queues(q: u32) -> (Netns, Netns) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    let q = q.to_string();
    sh(&[
        "ip",
        "link",
        "add",
        "va0",
        "netns",
        &a.name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        "vb0",
        "netns",
        &b.name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ]);
    a.ip("link set va0 up");
    b.ip("link set vb0 up");
    b.ip("addr add 10.0.0.2/24 dev vb0");
    // No IPv6 chatter (router solicitations, DAD) on the link.
    let _ = Command::new("ip")
        .args(["netns", "exec", &b.name, "sysctl", "-qw"])
        .arg("net.ipv6.conf.all.disable_ipv6=1")
        .status();
    (a, b)
}

const VETH: fn(&Netns) -> Peer<'_> = |b| Peer {
    kns: b,
    kdev: "vb0",
    kip: [10, 0, 0, 2],
    pip: [10, 0, 0, 1],
};

#[test]
fn nic_packet_udp_both_ways_and_ping() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &VETH(&b));
    drop(port);
    let log = d.stop();
    assert_eq!(stats_field(&log, "bad_slots"), 0, "{log}");
}

#[test]
fn nic_packet_survives_frontend_reconnects() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0");
    let p = VETH(&b);
    for round in 0..3u16 {
        let mut port = d.open();
        port_to_kernel(&mut port, &p, 0, 50, 4400 + round);
        kernel_to_port(&mut port, &p, 50, 2, 5500 + round);
        drop(port);
    }
}

#[test]
fn nic_packet_multi_queue() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0@conf:rings=2");
    two_rings_both_ways(&mut d.open(), &VETH(&b), "fanout left a ring empty");
}

#[test]
fn nic_packet_link_down_and_up() {
    let (a, b) = veth_pair();
    let d = Daemon::start(&a, "packet:va0");
    let mut port = d.open();
    // Frames sent while the link is down are dropped (and counted), never stuck; a link that is
    // down (the RX socket has ENETDOWN pending) does not spin the rings.
    let link = (&a, "va0", "link");
    link_down_and_up(&d, &mut port, &VETH(&b), link, b.mac("vb0"), 50);
    drop(port);
    let log = d.stop();
    assert!(stats_field(&log, "drops") >= 50, "{log}");
}

// ---------------------------------------------------------------------------------------------
// xdp:

/// AF_XDP sees frames as they are: over veth, the local stack's TCP/UDP checksums are left
/// partial (for a NIC to finish) unless the sender's checksum offload is off, as for kernel
/// netmap on veth. The README says so; the xdp tests do it.
fn xdp_veth_pair(q: u32) -> (Netns, Netns) {
    let (a, b) = veth_pair_queues(q);
    sh(&[
        "ip", "netns", "exec", &b.name, "ethtool", "-K", "vb0", "tx", "off",
    ]);
    (a, b)
}

fn has_xdp_program(ns: &Netns, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", dev])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).contains(" xdp")
}

#[test]
fn nic_xdp_udp_both_ways_and_ping() {
    let (a, b) = xdp_veth_pair(1);
    let d = Daemon::start(&a, "xdp:va0");
    assert!(has_xdp_program(&a, "va0"), "no XDP program on va0");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &VETH(&b));
    drop(port);
    let log = d.stop();
    assert_eq!(stats_field(&log, "bad_slots"), 0, "{log}");
    assert!(
        !has_xdp_program(&a, "va0"),
        "the XDP program outlived the daemon"
    );
}

#[test]
fn nic_xdp_multi_queue() {
    let (a, b) = xdp_veth_pair(2);
    let d = Daemon::start(&a, "xdp:va0@conf:rings=2");
    // 16 flows over 2 queues: both get some (all on one: a 1 in 32768 chance).
    two_rings_both_ways(&mut d.open(), &VETH(&b), "a ring got nothing");
}

#[test]
fn nic_xdp_queue_beyond_the_interface_is_refused() {
    let (a, _b) = veth_pair();
    let ns_dir = std::env::temp_dir().join(format!("{}-q", a.name));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.name,
            env!("CARGO_BIN_EXE_ptnet-backend"),
        ])
        .arg("--socket")
        .arg(ns_dir.join("x.sock"))
        .arg("xdp:va0@3")
        .output()
        .expect("run ptnet-backend");
    let _ = std::fs::remove_dir_all(&ns_dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("queue 3"), "{err}");
    assert!(!has_xdp_program(&a, "va0"));
}

#[test]
fn nic_xdp_link_down_and_up() {
    let (a, b) = xdp_veth_pair(1);
    let d = Daemon::start(&a, "xdp:va0");
    let mut port = d.open();
    // More than the socket's TX ring holds while the link is down: the rest must be dropped, not
    // stuck.
    let link = (&a, "va0", "link");
    link_down_and_up(&d, &mut port, &VETH(&b), link, b.mac("vb0"), 3000);
    drop(port);
    let log = d.stop();
    assert!(stats_field(&log, "drops") > 0, "{log}");
}

// ---------------------------------------------------------------------------------------------
// A kernel TX queue that fills

/// [`veth_pair`] plus macvlan `mv0` on va0 (in `a`), and a token bucket on va0 letting 100 kbit/s
/// through (about 200 60-byte frames a second). A `packet:` or `xdp:` port on mv0 hands its frames
/// to mv0 (no qdisc: AF_PACKET bypasses it anyway), which queues them on va0's bucket: the kernel
/// holds the port's frames (packet ring frames, AF_XDP chunks) until they leave, so its TX queue
/// fills.
fn slow_macvlan() -> (Netns, Netns) {
    let (a, b) = veth_pair();
    a.ip("link add link va0 name mv0 type macvlan mode private");
    a.ip("link set mv0 up");
    sh(&[
        "ip", "netns", "exec", &a.name, "tc", "qdisc", "replace", "dev", "va0", "root", "tbf",
        "rate", "100kbit", "burst", "1600", "limit", "1000000",
    ]);
    (a, b)
}

/// The guest sends four times what the port's 64-slot ring and the kernel's 64-frame queue hold,
/// through a link that takes about 4 s to carry it: the TX ring waits for the kernel most of that
/// time. Its thread sleeps meanwhile (CPU over a second while blocked), and every frame arrives,
/// in order.
fn tx_waits_for_room(kind: &str) {
    let (a, b) = slow_macvlan();
    let d = Daemon::start(&a, &format!("{kind}:mv0@conf:slots=64"));
    let mut port = d.open();
    let thread = format!("{kind}:mv0-tx0");
    let n = 800;
    let sock = b.run(|| UdpSocket::bind("10.0.0.2:4444").expect("bind kernel socket"));
    let kmac = b.mac("vb0");
    let want: Vec<Vec<u8>> = (0..n).map(|i| format!("slow {i}").into_bytes()).collect();
    let frames: Vec<Vec<u8>> = want
        .iter()
        .map(|pl| {
            udp_frame(
                kmac,
                port.mac(),
                ([10, 0, 0, 1], [10, 0, 0, 2]),
                (1000, 4444),
                pl,
            )
        })
        .collect();
    std::thread::scope(|s| {
        let rx = s.spawn(|| recv_all(&sock, n, Duration::from_secs(30)));
        let meter = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            cpu_over_a_second(&d, Some(&thread))
        });
        let start = Instant::now();
        driver_send(&mut port, 0, &frames);
        let sending = start.elapsed();
        let cpu = meter.join().expect("meter");
        let got = rx.join().expect("receiver");
        // The last slots were taken after the measured second: the ring was blocked all of it.
        assert!(
            sending > Duration::from_millis(1700),
            "the kernel queue never filled: all sent in {sending:?}"
        );
        assert!(
            cpu < IDLE_CPU,
            "{thread} used {cpu:?} of a second while waiting for the kernel"
        );
        assert_eq!(got.len(), n, "kernel received {} of {n}", got.len());
        assert_eq!(got, want);
        eprintln!("{kind}: {n} frames in {sending:?}; TX thread CPU while blocked: {cpu:?}/s");
    });
    drop(port);
    let log = d.stop();
    assert_eq!(stats_field(&log, "drops"), 0, "{log}");
}

#[test]
fn nic_packet_tx_waits_for_room_in_the_kernel_ring() {
    tx_waits_for_room("packet");
}

#[test]
fn nic_xdp_tx_waits_for_room_in_the_kernel_ring() {
    tx_waits_for_room("xdp");
}

// ---------------------------------------------------------------------------------------------
// tap:

/// Namespace `a` with the daemon, which creates tap `name`; the kernel side is the tap itself
/// (10.0.1.2/24).
fn tap_setup(conf: &str) -> (Netns, Daemon, String) {
    let a = Netns::new("tap");
    let name = "pttap0".to_string();
    let d = Daemon::start(&a, &format!("tap:{name}{conf}"));
    a.wait_for_link(&name);
    let _ = Command::new("ip")
        .args(["netns", "exec", &a.name, "sysctl", "-qw"])
        .arg("net.ipv6.conf.all.disable_ipv6=1")
        .status();
    a.ip(&format!("addr add 10.0.1.2/24 dev {name}"));
    a.ip(&format!("link set {name} up"));
    (a, d, name)
}

fn tap_peer<'a>(a: &'a Netns, name: &'a str) -> Peer<'a> {
    Peer {
        kns: a,
        kdev: name,
        kip: [10, 0, 1, 2],
        pip: [10, 0, 1, 1],
    }
}

#[test]
fn nic_tap_udp_both_ways_and_ping() {
    let (a, d, name) = tap_setup("");
    let mut port = d.open();
    udp_both_ways_and_ping(&mut port, &tap_peer(&a, &name));
}

#[test]
fn nic_tap_multi_queue() {
    let (a, d, name) = tap_setup("@conf:rings=2");
    // 16 flows over 2 queues: both get some (all on one: a 1 in 32768 chance).
    two_rings_both_ways(&mut d.open(), &tap_peer(&a, &name), "a ring got nothing");
}

#[test]
fn nic_tap_link_down_and_up() {
    let (a, d, name) = tap_setup("");
    let mut port = d.open();
    let link = (&a, name.as_str(), "tap");
    link_down_and_up(&d, &mut port, &tap_peer(&a, &name), link, [0xff; 6], 50);
}

#[test]
fn nic_tap_attaches_to_existing_taps() {
    // A persistent single-queue tap, then a persistent multi-queue one served with two rings.
    for (flags, conf) in [("", ""), ("multi_queue", "@conf:rings=2")] {
        let a = Netns::new("ptap");
        let mut cmd = format!("tuntap add dev ptper0 mode tap {flags}");
        cmd = cmd.trim().to_string();
        a.ip(&cmd);
        a.ip("addr add 10.0.1.2/24 dev ptper0");
        a.ip("link set ptper0 up");
        let d = Daemon::start(&a, &format!("tap:ptper0{conf}"));
        let mut port = d.open();
        let p = tap_peer(&a, "ptper0");
        port_to_kernel(&mut port, &p, 0, 20, 4321);
        kernel_to_port(&mut port, &p, 20, 2, 5555);
        drop(port);
        drop(d);
        // The tap outlives the daemon: it was not ours.
        a.wait_for_link("ptper0");
    }
}

#[test]
fn nic_tap_with_other_flags_is_refused() {
    // A multi-queue port on a single-queue persistent tap: refused with a hint.
    let a = Netns::new("ptapbad");
    a.ip("tuntap add dev ptper1 mode tap");
    daemon_refuses_in(&a, "tap:ptper1@conf:rings=2", &["ptper1", "multi-queue"]);
}

// ---------------------------------------------------------------------------------------------
// Refusals

fn daemon_refuses(port: &str, needles: &[&str]) {
    daemon_refuses_in(&Netns::new("bad"), port, needles)
}

fn daemon_refuses_in(ns: &Netns, port: &str, needles: &[&str]) {
    let dir = std::env::temp_dir().join(format!("{}-d", ns.name));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_ptnet-backend"),
        ])
        .arg("--socket")
        .arg(dir.join("x.sock"))
        .arg(port)
        .output()
        .expect("run ptnet-backend");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{port}: {err}");
    for n in needles {
        assert!(err.contains(n), "{port}: '{n}' not in: {err}");
    }
}

#[test]
fn nic_nonexistent_interface_is_named_exit_2() {
    daemon_refuses("packet:nosuch0", &["nosuch0", "does not exist"]);
    daemon_refuses("xdp:nosuch1@0", &["nosuch1", "does not exist"]);
}

#[test]
fn nic_kernel_netmap_without_module_exit_2() {
    if std::path::Path::new("/dev/netmap").exists() {
        // With the module, the port is recognised but not served yet (see the README).
        daemon_refuses("netmap:lo", &["/dev/netmap is present", "not wired"]);
    } else {
        daemon_refuses("netmap:lo", &["/dev/netmap", "netmap kernel module"]);
    }
}

#[test]
fn nic_tap_keeps_its_mac_across_daemon_restarts() {
    let (a, d, name) = tap_setup("");
    let first = a.mac(&name);
    assert_eq!(first, ptnet_backend::port::nic::tap::host_side_mac(&name));
    drop(d);
    // The tap was the daemon's: it goes, and the next daemon creates it again, same address.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new("ip")
        .args(["-n", &a.name, "link", "show", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "the daemon's tap outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Daemon::start(&a, &format!("tap:{name}"));
    a.wait_for_link(&name);
    assert_eq!(a.mac(&name), first);
    // And the port still carries traffic to the kernel stack behind it.
    a.ip(&format!("addr add 10.0.1.2/24 dev {name}"));
    a.ip(&format!("link set {name} up"));
    let mut port = d.open();
    port_to_kernel(&mut port, &tap_peer(&a, &name), 0, 10, 4322);
}

/// A guest that takes the 12-byte virtio-net header on a `tap:` port (as the stock ptnet driver
/// does) hands its checksum offload to the host kernel and gets frames with a header back; one
/// with a 10-byte header gets the same, converted; one without gets plain frames.
#[test]
fn nic_tap_carries_the_virtio_net_header() {
    let (a, d, name) = tap_setup("");
    let p = tap_peer(&a, &name);
    let sock = a.run(|| UdpSocket::bind("10.0.1.2:4400").expect("bind kernel socket"));
    let kmac = a.mac(&name);
    // A UDP datagram whose checksum field holds only the pseudo-header sum, as a guest that
    // offloads leaves it.
    let partial = |pl: &[u8]| {
        let mut f = udp_frame(kmac, [0; 6], (p.pip, p.kip), (1000, 4400), pl);
        let mut ph = Vec::new();
        ph.extend_from_slice(&f[26..34]);
        ph.extend_from_slice(&[0, 17]);
        ph.extend_from_slice(&((8 + pl.len()) as u16).to_be_bytes());
        let c = !csum(&ph);
        f[40..42].copy_from_slice(&c.to_be_bytes());
        f
    };
    for len in [12u32, 10] {
        let spec = format!("vhost-user:{}", d.sock.display());
        let mut port = Port::open_with_vnet_hdr(&spec, len).expect("attach");
        assert_eq!(
            port.vnet_hdr_len(),
            len,
            "the tap port takes a {len}-byte header"
        );
        let mut needs_csum = vec![0u8; len as usize];
        needs_csum[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        needs_csum[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the UDP header
        needs_csum[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset: its checksum
        let mut f = partial(format!("offloaded {len}").as_bytes());
        f[6..12].copy_from_slice(&port.mac());
        driver_send(&mut port, 0, &[[&needs_csum[..], &f[..]].concat()]);
        // Without the header's NEEDS_CSUM the same bytes carry a wrong checksum: dropped.
        let mut wrong = partial(b"not offloaded");
        wrong[6..12].copy_from_slice(&port.mac());
        driver_send(
            &mut port,
            0,
            &[[&vec![0u8; len as usize][..], &wrong[..]].concat()],
        );
        let got = recv_all(&sock, 2, Duration::from_secs(2));
        assert_eq!(
            got,
            vec![format!("offloaded {len}").into_bytes()],
            "{len}-byte header"
        );
        // Kernel -> guest: every frame behind a header of the guest's length.
        let n = 20;
        let pmac = mac_str(port.mac());
        let _ = Command::new("ip")
            .args(["-n", &a.name, "neigh", "replace", &ip_str(p.pip)])
            .args(["lladdr", &pmac, "dev", &name, "nud", "permanent"])
            .status();
        let tx = a.run(|| UdpSocket::bind("10.0.1.2:4401").unwrap());
        for i in 0..n {
            tx.send_to(
                format!("hdr {i}").as_bytes(),
                (ip_str(p.pip).as_str(), 4402),
            )
            .unwrap();
        }
        let l = len as usize;
        let got = driver_recv(&mut port, n, Duration::from_secs(5), |fr| {
            fr.get(l..).and_then(|f| udp_payload_any_csum(f, 4402))
        });
        assert_eq!(
            got.len(),
            n,
            "{len}-byte header: received {} of {n}",
            got.len()
        );
        drop(port);
    }
    // No header: plain frames both ways (the existing tests), and the tap's offloads are off so
    // nothing arrives unfinished.
    let mut port = d.open();
    assert_eq!(port.vnet_hdr_len(), 0);
    port_to_kernel(&mut port, &p, 0, 5, 4403);
    kernel_to_port(&mut port, &p, 20, 2, 4404);
}

/// The UDP payload of `f` if it is IPv4/UDP to `dport`, whatever its checksum holds (a frame
/// behind a header may carry a partial one, with NEEDS_CSUM in the header).
fn udp_payload_any_csum(f: &[u8], dport: u16) -> Option<Vec<u8>> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    let u = 14 + usize::from(f[14] & 0xf) * 4;
    if f.len() < u + 8 || u16::from_be_bytes([f[u + 2], f[u + 3]]) != dport {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([f[u + 4], f[u + 5]]));
    f.get(u + 8..u + len).map(<[u8]>::to_vec)
}
