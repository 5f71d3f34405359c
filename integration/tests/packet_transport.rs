//! The driver's `packet:IFNAME` transport on real sockets, no VM, no daemon: two ports on the
//! two ends of a veth pair in a network namespace of the test's exchange `ptnet-pkt-gen`'s
//! verified test frames both ways (every sequence number, every payload byte checked), frames
//! the kernel refuses are dropped without wedging the ring, frames longer than a buffer are
//! dropped on receipt among good ones, and bad interface names fail to open with an error naming
//! them. The transport's own counters must agree with what each test sent.
//!
//! Needs root (a namespace, veth): `cargo test -p ptnet-integration --test packet_transport`.

use nix::sched::{setns, CloneFlags};
use ptnet_driver::testframe::{verify, FrameBuilder, SeqTracker, Verdict};
use ptnet_driver::transport::packet::{PacketCounters, PacketTransport};
use ptnet_driver::{Error, Port, RingId};
use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace with a veth pair `pa`/`pb` up (IPv6 off, so the kernel sends nothing of its
/// own on them), deleted on drop.
struct Netns(String);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} (root needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn with_veth() -> Netns {
        let ns = Netns::new();
        ns.ip("link add pa type veth peer name pb");
        ns.ip("link set pa up");
        ns.ip("link set pb up");
        ns
    }

    /// An empty namespace (IPv6 off).
    fn new() -> Netns {
        let name = format!(
            "ptpkt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        for k in ["all", "default"] {
            let key = format!("net.ipv6.conf.{k}.disable_ipv6=1");
            sh(&["ip", "netns", "exec", &ns.0, "sysctl", "-qw", &key]);
        }
        ns
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend(args.split_whitespace());
        sh(&v);
    }

    /// Runs `f` in a thread that entered the namespace (the sockets it opens stay there).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A port on `ifname` and its transport's counters.
fn open(ifname: &str) -> (Port, Arc<PacketCounters>) {
    let t = PacketTransport::open(ifname).unwrap_or_else(|e| panic!("{e}"));
    let c = t.counters();
    (
        Port::attach(Box::new(t)).unwrap_or_else(|e| panic!("{e}")),
        c,
    )
}

/// What a receiver saw.
#[derive(Debug, Default)]
struct Received {
    good: u64,
    bad: u64,
    seq: SeqTracker,
}

/// Sends `n` test frames of `len` bytes (stream 0, sequence 0..n) from `tx` to `rx`, in bursts,
/// receiving as it goes; returns what `rx` got once `n` arrived or 5 s passed without news.
/// `extra` frames (not test frames) go out first, before the first burst.
fn stream(tx: &mut Port, rx: &mut Port, n: u64, len: usize, extra: &[&[u8]]) -> Received {
    let mut fb = FrameBuilder::new(len, rx.mac(), tx.mac());
    let mut buf = vec![0u8; rx.buf_size() as usize];
    let mut got = Received::default();
    let mut sent = 0u64;
    let mut last_news = Instant::now();
    {
        let mut t = tx.tx_ring(0);
        for f in extra {
            assert!(t.send(f));
        }
        t.txsync().unwrap();
    }
    while got.good < n && last_news.elapsed() < Duration::from_secs(5) {
        if sent < n {
            let mut t = tx.tx_ring(0);
            t.txsync().unwrap();
            let burst = u64::from(t.space()).min(n - sent).min(64);
            for _ in 0..burst {
                assert!(t.send(fb.frame(0, sent)));
                sent += 1;
            }
            t.txsync().unwrap();
        }
        let mut r = rx.rx_ring(0);
        r.rxsync().unwrap();
        let mut any = false;
        while let Some(l) = r.recv(&mut buf) {
            any = true;
            match verify(&buf[..l]) {
                Verdict::Good { stream, seq } => {
                    got.good += 1;
                    got.seq.see(stream, seq);
                }
                Verdict::Bad => got.bad += 1,
            }
        }
        r.rxsync().unwrap();
        if any {
            last_news = Instant::now();
        } else if sent == n {
            rx.wait(RingId::Rx(0), Some(Duration::from_millis(100)))
                .unwrap();
        }
    }
    got
}

#[test]
fn two_packet_ports_on_a_veth_pair_exchange_verified_frames_both_ways() {
    let ns = Netns::with_veth();
    ns.run(|| {
        let mut a = Port::open("packet:pa").unwrap_or_else(|e| panic!("{e}"));
        let mut b = Port::open("packet:pb").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.name(), "packet:pa");
        assert_eq!((a.num_tx_rings(), a.num_rx_rings()), (1, 1));
        assert_eq!(a.vnet_hdr_len(), 0);
        assert_ne!(a.mac(), b.mac());
        // Enough frames to wrap the 1024-slot rings many times, short and near-MTU ones.
        for (n, len) in [(20_000, 60), (5_000, 1514)] {
            let ab = stream(&mut a, &mut b, n, len, &[]);
            assert_eq!((ab.good, ab.bad), (n, 0), "a to b, {len} bytes: {ab:?}");
            assert_eq!((ab.seq.lost, ab.seq.out_of_order), (0, 0), "{ab:?}");
            let ba = stream(&mut b, &mut a, n, len, &[]);
            assert_eq!((ba.good, ba.bad), (n, 0), "b to a, {len} bytes: {ba:?}");
            assert_eq!((ba.seq.lost, ba.seq.out_of_order), (0, 0), "{ba:?}");
        }
    });
}

#[test]
fn frames_the_kernel_refuses_are_dropped_and_the_ring_goes_on() {
    let ns = Netns::with_veth();
    ns.run(|| {
        let (mut a, ca) = open("pa");
        let (mut b, cb) = open("pb");
        // Shorter than an Ethernet header, and longer than the MTU: refused by the kernel.
        let short = [0xffu8; 10];
        let long = vec![0xffu8; 2000];
        let got = stream(&mut a, &mut b, 3000, 60, &[&short, &long, &short]);
        assert_eq!((got.good, got.bad), (3000, 0), "{got:?}");
        assert_eq!(got.seq.lost, 0, "{got:?}");
        // A frame pkt-gen would not send reaches the peer and fails verification there.
        let mut junk = vec![0u8; 64];
        junk[..6].copy_from_slice(&b.mac());
        junk[6..12].copy_from_slice(&a.mac());
        let got = stream(&mut a, &mut b, 10, 60, &[&junk]);
        assert_eq!((got.good, got.bad), (10, 1), "{got:?}");
        let (sa, sb) = (ca.snapshot(), cb.snapshot());
        assert_eq!((sa.tx_frames, sa.tx_dropped), (3011, 3), "{sa:?}");
        assert_eq!(
            (sb.rx_frames, sb.rx_truncated, sb.rx_bad_slots),
            (3011, 0, 0),
            "{sb:?}"
        );
    });
}

#[test]
fn bad_interface_names_fail_to_open_naming_the_port() {
    let ns = Netns::with_veth();
    ns.run(|| {
        match Port::open("packet:nosuch0") {
            Err(e @ Error::Io { .. }) => {
                assert!(e.to_string().contains("packet:nosuch0"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        for bad in ["packet:", "packet:a/b", "packet:0123456789abcdef"] {
            assert!(
                matches!(Port::open(bad), Err(Error::BadPort { .. })),
                "{bad}"
            );
        }
    });
}

#[test]
fn frames_longer_than_a_buffer_are_dropped_among_good_ones() {
    // pa in one namespace, pb in another, MTU 4000: ns2's kernel pings pa's address with 3 KB
    // frames, which queue on pa's socket ahead of a verified stream from pb.
    let ns1 = Netns::new();
    let ns2 = Netns::new();
    ns1.ip("link add pa mtu 4000 type veth peer name pb mtu 4000");
    ns1.ip(&format!("link set pb netns {}", ns2.0));
    ns1.ip("addr add 10.9.0.1/24 dev pa");
    ns2.ip("addr add 10.9.0.2/24 dev pb");
    ns1.ip("link set pa up");
    ns2.ip("link set pb up");
    let (mut a, ca) = ns1.run(|| open("pa"));
    let (mut b, cb) = ns2.run(|| open("pb"));
    let out = Command::new("ip")
        .args([
            "netns", "exec", &ns2.0, "ping", "-q", "-c", "10", "-i", "0.01",
        ])
        .args(["-s", "3000", "-M", "dont", "10.9.0.1"])
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = stream(&mut b, &mut a, 3000, 1514, &[]);
    assert_eq!(got.good, 3000, "{got:?}");
    assert_eq!((got.seq.lost, got.seq.out_of_order), (0, 0), "{got:?}");
    let sa = ca.snapshot();
    // The ten echo requests (3042 bytes) did not fit a 2048-byte buffer; what did fit and was
    // not a test frame is ns2's ARP traffic.
    assert_eq!(sa.rx_truncated, 10, "{sa:?}");
    assert_eq!(sa.rx_frames, 3000 + got.bad, "{sa:?} {got:?}");
    assert_eq!(cb.snapshot().tx_frames, 3000);
}

#[test]
fn wait_ports_sleeps_on_the_sockets_and_wakes_for_a_frame() {
    let ns = Netns::with_veth();
    ns.ip("link add pc type veth peer name pd");
    ns.ip("link set pc up");
    ns.ip("link set pd up");
    ns.run(|| {
        let (mut b, _) = open("pb");
        let (mut c, _) = open("pc");
        let rx: &[RingId] = &[RingId::Rx(0)];
        // Nothing comes: the wait lasts its timeout.
        let t0 = Instant::now();
        let woke = Port::wait_ports(
            &mut [(&mut b, rx), (&mut c, rx)],
            Some(Duration::from_millis(300)),
        );
        assert!(!woke.unwrap());
        assert!(t0.elapsed() >= Duration::from_millis(300));
        // A frame for b from another thread (in the namespace too) 200 ms into the wait.
        let dst = b.mac();
        let sender = std::thread::spawn(move || {
            let (mut a, _) = open("pa");
            std::thread::sleep(Duration::from_millis(200));
            let mut fb = FrameBuilder::new(60, dst, a.mac());
            let mut t = a.tx_ring(0);
            assert!(t.send(fb.frame(0, 0)));
            t.txsync().unwrap();
            a
        });
        let t0 = Instant::now();
        let woke = Port::wait_ports(
            &mut [(&mut c, rx), (&mut b, rx)],
            Some(Duration::from_secs(5)),
        );
        let took = t0.elapsed();
        drop(sender.join().unwrap());
        assert!(woke.unwrap());
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(4),
            "{took:?}"
        );
        let mut buf = [0u8; 2048];
        let mut r = b.rx_ring(0);
        let len = r.recv(&mut buf).expect("the frame");
        assert_eq!(verify(&buf[..len]), Verdict::Good { stream: 0, seq: 0 });
    });
}
