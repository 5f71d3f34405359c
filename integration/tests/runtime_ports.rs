//! Ports added and removed while the daemon runs (`ptnet-ctl add` / `remove`), under traffic on
//! other ports: a VALE pair and a pipe carry sequence-numbered frames from `ptnet-pkt-gen` the
//! whole time, verified by the receivers (none corrupted, none out of order, none lost beyond
//! what the daemon counted as ring-full drops), while rounds of new ports (two VALE ports on the
//! same running switch, a pipe, a null port) are added, carry verified frames of their own between
//! in-process drivers, are counted by `ptnet-ctl stats` exactly as the test moved them, and are
//! removed with their drivers still attached (which then see the daemon hang up, and find no
//! socket to reconnect to). Refused requests exit 2 naming the culprit.

use ptnet_driver::{Port, RingId};
use ptnet_integration::host::{finish, run_with_timeout, spawn_pkt_gen, RunOutput};
use ptnet_integration::{bins, json_num, Backend};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn ctl(dir: &Path, args: &[&str]) -> RunOutput {
    let bin: PathBuf = bins().unwrap().backend.with_file_name("ptnet-ctl");
    run_with_timeout(
        Command::new(bin).arg("--socket-dir").arg(dir).args(args),
        Duration::from_secs(30),
    )
    .expect("ptnet-ctl runs")
}

fn code(o: &RunOutput) -> Option<i32> {
    o.status.and_then(|s| s.code())
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A frame from `src` to `dst` carrying `tag` and sequence number `seq`.
fn frame(dst: [u8; 6], src: [u8; 6], tag: u32, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x88b6u16.to_be_bytes());
    f.extend_from_slice(&tag.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    // A body that depends on both: corruption anywhere shows.
    f.extend((0..42u32).map(|i| (i ^ seq ^ tag) as u8));
    f
}

/// Frames a sender may have in flight ahead of its receiver's count: a switch drops what finds
/// the receiver's ring full (1024 slots), so the test's own frames are paced by what came.
const WINDOW: u32 = 512;

/// Sends `n` frames `src -> dst` (tag `tag`), at most [`WINDOW`] ahead of `got` (what the
/// receiver counted), and waits until the daemon took them all.
fn send(p: &mut Port, dst: [u8; 6], tag: u32, n: u32, got: &AtomicU32) {
    let src = p.mac();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while i < n {
        let mut tx = p.tx_ring(0);
        while i < n && i < got.load(Ordering::Acquire) + WINDOW && tx.send(&frame(dst, src, tag, i))
        {
            i += 1;
        }
        tx.txsync().unwrap();
        if i < n {
            assert!(Instant::now() < deadline, "TX stuck at {i}");
            p.wait(RingId::Tx(0), Some(Duration::from_millis(5)))
                .unwrap();
        }
    }
}

/// Receives until `n` frames of tag `tag` came (in order, intact) or 20 s passed, counting them
/// in `count`; returns how many. Other frames are not expected.
fn recv(p: &mut Port, src: [u8; 6], tag: u32, n: u32, count: &AtomicU32) -> u32 {
    let me = p.mac();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 2048];
    let mut got = 0;
    while got < n && Instant::now() < deadline {
        let mut rx = p.rx_ring(0);
        rx.rxsync().unwrap();
        while let Some(len) = rx.recv(&mut buf) {
            assert_eq!(
                buf[..len],
                frame(me, src, tag, got)[..],
                "frame {got} of tag {tag}"
            );
            got += 1;
        }
        count.store(got, Ordering::Release);
        rx.rxsync().unwrap();
        if got < n {
            p.wait(RingId::Rx(0), Some(Duration::from_millis(50)))
                .unwrap();
        }
    }
    got
}

fn stats_num(dir: &Path, port: &str, key: &str) -> u64 {
    let o = ctl(dir, &["stats", port, "--json"]);
    assert_eq!(code(&o), Some(0), "{o:?}");
    json_num(o.stdout.trim(), key).unwrap_or_else(|| panic!("{key} in {}", o.stdout)) as u64
}

/// A driver whose port was removed sees the daemon hang up; its socket is gone.
fn sees_hang_up(mut p: Port, socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match p.wait(RingId::Rx(0), Some(Duration::from_millis(100))) {
            Err(e) if e.is_disconnected() => break,
            Err(e) => panic!("expected a disconnect, got {e}"),
            Ok(_) => assert!(Instant::now() < deadline, "no disconnect"),
        }
        // Something to send makes the driver talk to the daemon too.
        let _ = p.tx_ring(0).txsync();
    }
    assert!(!socket.exists(), "{} still there", socket.display());
    let again = Port::open(&format!("vhost-user:{}", socket.display()));
    assert!(again.is_err(), "reconnected to a removed port");
}

#[test]
fn ports_come_and_go_under_traffic_on_others() {
    const N: u64 = 400_000;
    let (_t, b) = Backend::in_temp_dir(
        "rt-ports",
        &["vale0:a", "vale0:b", "netmap:p{1", "netmap:p}1"],
    );
    let dir = b.socket("x").parent().unwrap().to_path_buf();
    let n = N.to_string();
    let b_mac = mac_str(ptnet_backend::port::built::mac_for("vale0:b"));
    let rx = |port: &str| {
        spawn_pkt_gen(&[
            "-i",
            &b.interface(port),
            "-f",
            "rx",
            "-n",
            &n,
            "--timeout",
            "5",
            "--json",
        ])
        .expect("pkt-gen rx")
    };
    let (rx_v, rx_p) = (rx("vale0:b"), rx("netmap:p}1"));
    std::thread::sleep(Duration::from_millis(500));
    // Paced so that the run spans the rounds below (about 4 s at 100 kpps).
    let tx = |port: &str, extra: &[&str]| {
        let mut a = vec!["-i", port, "-f", "tx", "-n", &n, "-R", "100000", "--json"];
        a.extend_from_slice(extra);
        spawn_pkt_gen(&a).expect("pkt-gen tx")
    };
    let (ia, ip) = (b.interface("vale0:a"), b.interface("netmap:p{1"));
    let tx_v = tx(&ia, &["-D", &b_mac]);
    let tx_p = tx(&ip, &[]);

    // Refused requests, while the traffic runs: exit 2, the culprit named, nothing changed.
    for (args, needle) in [
        (&["add", "vale0:a"][..], "exists"),
        (&["add", "netmap:p}1"], "exists"),
        (&["add", "bogus:x"], "bogus:x"),
        (&["add", "vale0:x@conf:rings=999"], "rings"),
        (&["add", "vale0:x", "vale0:x"], "twice"),
        (&["add", "vale0:ok", "vale0:a"], "vale0:a"),
        (&["remove", "nope"], "nope"),
        (&["remove", "netmap:p{1"], "netmap:p}1"),
        (&["remove", "vale0:b", "vale0:b"], "twice"),
    ] {
        let o = ctl(&dir, args);
        assert_eq!(code(&o), Some(2), "{args:?}: {o:?}");
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
    }
    assert!(
        !dir.join("vale0:ok.sock").exists(),
        "a refused add left a port"
    );

    let mut rounds = 0;
    let t0 = Instant::now();
    while rounds < 3 || (rounds < 20 && t0.elapsed() < Duration::from_secs(3)) {
        let (c, d) = (format!("vale0:c{rounds}"), format!("vale0:d{rounds}"));
        let (q0, q1) = (format!("netmap:q{{{rounds}"), format!("netmap:q}}{rounds}"));
        let nl = format!("null:n{rounds}");
        // One end of the pipe brings the other.
        let o = ctl(&dir, &["add", &c, &d, &q0, &format!("{nl}@conf:slots=256")]);
        assert_eq!(code(&o), Some(0), "{o:?}");
        assert!(o.stdout.contains(&q1), "{}", o.stdout);
        let open = |name: &str| {
            Port::open(&format!(
                "vhost-user:{}",
                dir.join(format!("{name}.sock")).display()
            ))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let (mut pc, mut pd) = (open(&c), open(&d));
        let (mut pq0, mut pq1, mut pn) = (open(&q0), open(&q1), open(&nl));
        assert_eq!(pn.num_tx_slots(), 256);
        let m = 3000 + 100 * rounds;
        let (cm, dm, q0m, q1m) = (pc.mac(), pd.mac(), pq0.mac(), pq1.mac());
        let tag = 0x1000 + rounds;
        let (got_d, got_q) = (AtomicU32::new(0), AtomicU32::new(0));
        std::thread::scope(|s| {
            let got = &got_d;
            let r = s.spawn(|| recv(&mut pd, cm, tag, m, got));
            send(&mut pc, dm, tag, m, got);
            assert_eq!(r.join().unwrap(), m, "round {rounds}: VALE c -> d");
            let got = &got_q;
            let r = s.spawn(|| recv(&mut pq1, q0m, tag, m, got));
            send(&mut pq0, q1m, tag, m, got);
            assert_eq!(r.join().unwrap(), m, "round {rounds}: pipe");
        });
        send(&mut pn, [2; 6], tag, m, &AtomicU32::new(u32::MAX - WINDOW));
        let m = u64::from(m);
        assert_eq!(stats_num(&dir, &c, "tx_packets"), m);
        assert_eq!(stats_num(&dir, &d, "rx_packets"), m);
        assert_eq!(stats_num(&dir, &d, "drops"), 0);
        assert_eq!(stats_num(&dir, &q1, "rx_packets"), m);
        assert_eq!(stats_num(&dir, &nl, "tx_packets"), m);
        assert_eq!(stats_num(&dir, &nl, "tx_bytes"), m * 64);
        // Removed with their drivers attached.
        let o = ctl(&dir, &["remove", &c, &d, &q0, &q1, &nl]);
        assert_eq!(code(&o), Some(0), "{o:?}");
        for (p, name) in [(pc, &c), (pd, &d), (pq0, &q0), (pq1, &q1), (pn, &nl)] {
            sees_hang_up(p, &dir.join(format!("{name}.sock")));
        }
        rounds += 1;
    }
    let list = ctl(&dir, &["list"]);
    assert_eq!(list.stdout.lines().count(), 5, "{}", list.stdout);

    let (tx_v, tx_p) = (
        finish(tx_v, Duration::from_secs(60)),
        finish(tx_p, Duration::from_secs(60)),
    );
    let (rx_v, rx_p) = (
        finish(rx_v, Duration::from_secs(60)),
        finish(rx_p, Duration::from_secs(60)),
    );
    let num = |o: &RunOutput, k: &str| {
        o.last_line()
            .and_then(|l| json_num(l, k))
            .unwrap_or_else(|| panic!("{k} in {o:?}")) as u64
    };
    assert_eq!(num(&tx_v, "packets"), N, "{tx_v:?}");
    assert_eq!(num(&tx_p, "packets"), N, "{tx_p:?}");
    for rx in [&rx_v, &rx_p] {
        assert_eq!(num(rx, "errors"), 0, "{rx:?}");
        assert_eq!(num(rx, "out_of_order"), 0, "{rx:?}");
    }
    // The pipe loses nothing; the switch drops only what found b's ring full, and counts it.
    assert_eq!(num(&rx_p, "packets"), N, "{rx_p:?}");
    let drops = stats_num(&dir, "vale0:a", "drops");
    assert_eq!(num(&rx_v, "packets") + drops, N, "{rx_v:?} drops {drops}");
    // (A gap before the last frame received counts as lost; drops at the very end do not.)
    assert!(num(&rx_v, "lost") <= drops, "{rx_v:?} drops {drops}");
    eprintln!("{rounds} rounds of add/remove; VALE drops {drops}");
}
