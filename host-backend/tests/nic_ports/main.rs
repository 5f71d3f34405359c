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

mod frames;
mod packet;
mod refusals;
mod tap;
mod tx_room;
mod xdp;

use frames::*;

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
