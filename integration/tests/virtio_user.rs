//! DPDK's `net_virtio_user` (testpmd, DPDK 22.11 from Debian) as a frontend of the virtio-net
//! device: one testpmd in `txonly` into port `tx` of a VALE switch, a second in `rxonly` on
//! port `rx` of the same switch, both `PORT@conf:frontend=virtio-net` ports of the daemon. Split
//! and packed rings (`packed_vq=0|1`, and each with `in_order=1`), one and two queue pairs (`queues=N`, `rings=N`).
//!
//! The counts are compared, not just seen to move: what the sender's testpmd enqueued against
//! what the daemon took from its TX queues (every queue pair carrying traffic), the switch's
//! conservation (taken = delivered + dropped for want of room), and what the daemon delivered
//! into the receiver's RX queues against what the receiving testpmd counted. At most a ring of
//! descriptors per queue may be in flight when a testpmd stops.
//!
//! DPDK's memory is hugetlbfs files, which cannot be sealed against shrinking, so the daemon runs
//! with `--allow-unsealed-memory`. Needs root (hugepages), `dpdk-testpmd` (`cargo xtask deps`)
//! and two CPUs: `#[ignore]`d, run by `cargo xtask test` (`-- --include-ignored`).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ptnet_integration::host::{Backend, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One test at a time: they share the hugepages and the two CPUs.
static SERIAL: Mutex<()> = Mutex::new(());

/// Descriptors per virtqueue (virtio-user `queue_size`, testpmd `--rxd/--txd`).
const RING: u64 = 256;

fn hugepages() {
    let nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let cur: u64 = std::fs::read_to_string(nr)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    if cur < 512 {
        std::fs::write(nr, "512").unwrap_or_else(|e| panic!("{nr}: {e} (root needed)"));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    {
        std::fs::create_dir_all("/dev/hugepages").expect("/dev/hugepages");
        let st = Command::new("mount")
            .args(["-t", "hugetlbfs", "nodev", "/dev/hugepages"])
            .status()
            .expect("mount");
        assert!(st.success(), "mounting hugetlbfs failed");
    }
}

/// A testpmd process, its output in a file; SIGINT on drop.
struct Testpmd {
    child: Child,
    out: PathBuf,
    prefix: String,
}

fn cleanup(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir("/dev/hugepages") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

impl Testpmd {
    fn start(
        dir: &Path,
        name: &str,
        cpu: usize,
        sock: &Path,
        queues: u32,
        rings: &str,
        fwd: &str,
    ) -> Self {
        let prefix = format!("ptnet-vu-{}-{name}", std::process::id());
        cleanup(&prefix);
        let out = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&out).expect("testpmd log");
        let vdev = format!(
            "net_virtio_user0,path={},queues={queues},queue_size={RING},{rings}",
            sock.display(),
        );
        let child = Command::new("stdbuf")
            .args(["-oL", "dpdk-testpmd"])
            .arg(format!("--lcores=0@{cpu},1@{cpu}"))
            .args([
                "--main-lcore=0",
                "--no-pci",
                "--single-file-segments",
                "--iova-mode=va",
            ])
            .arg(format!("--file-prefix={prefix}"))
            .args(["-m", "256"])
            .arg(format!("--vdev={vdev}"))
            .arg("--")
            .arg(format!("--forward-mode={fwd}"))
            .args(["--stats-period=1", "--nb-cores=1", "--total-num-mbufs=8192"])
            .arg(format!("--rxq={queues}"))
            .arg(format!("--txq={queues}"))
            .arg(format!("--rxd={RING}"))
            .arg(format!("--txd={RING}"))
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("dpdk-testpmd (cargo xtask deps installs DPDK)");
        let mut t = Self { child, out, prefix };
        t.wait_for("Port statistics", Duration::from_secs(60));
        t
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.text().contains(needle) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("testpmd exited ({st}) before {needle:?}:\n{}", self.text());
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} from testpmd:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGINT) and returns its final (RX-packets, TX-packets) over all ports.
    fn stop(&mut self) -> (u64, u64) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("testpmd did not stop:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cleanup(&self.prefix);
        let text = self.text();
        let acc = text
            .rfind("Accumulated forward statistics")
            .unwrap_or_else(|| panic!("no final statistics:\n{text}"));
        let num = |key: &str| -> u64 {
            let s = &text[acc..];
            let i = s.find(key).unwrap_or_else(|| panic!("no {key}:\n{text}"));
            s[i + key.len()..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad {key}:\n{text}"))
        };
        (num("RX-packets:"), num("TX-packets:"))
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        cleanup(&self.prefix);
    }
}

/// The value after `key` (`packets=` style) in the part of `line` starting at `from`.
fn after(line: &str, from: &str, key: &str) -> u64 {
    let s = &line[line
        .find(from)
        .unwrap_or_else(|| panic!("no {from} in {line}"))..];
    let s = &s[s.find(key).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len()..];
    s.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {line}"))
}

/// The daemon's "frontend gone" line of `port` (its counters at the frontend's disconnect).
fn gone_line(b: &Backend, port: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let tag = format!("port=\"{port}\"");
        if let Some(l) = b
            .log_text()
            .lines()
            .rfind(|l| l.contains("virtio-net frontend gone") && l.contains(&tag))
        {
            return l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no frontend-gone line for {port}:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One case: `rings` are the virtio-user ring options (`packed_vq=..`, `in_order=..`).
fn run(rings: &str, queues: u32) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    hugepages();
    let dir = TempDir::new("virtio-user").expect("temp dir");
    // A switch of its own per case (`valepackedvq1inorder1q1`).
    let tag: String = rings.chars().filter(char::is_ascii_alphanumeric).collect();
    let sw = format!("vale{tag}q{queues}");
    let conf = format!("@conf:frontend=virtio-net,rings={queues}");
    let (txp, rxp) = (format!("{sw}:tx{conf}"), format!("{sw}:rx{conf}"));
    let b = Backend::start(
        dir.path(),
        &[&txp, &rxp],
        &["--allow-unsealed-memory", "--control-socket", "none"],
    )
    .expect("daemon");
    let mut rx = Testpmd::start(
        dir.path(),
        "rx",
        1,
        &b.socket(&rxp),
        queues,
        rings,
        "rxonly",
    );
    let mut tx = Testpmd::start(
        dir.path(),
        "tx",
        0,
        &b.socket(&txp),
        queues,
        rings,
        "txonly",
    );
    let want = format!("pairs={queues}");
    let end = Instant::now() + Duration::from_secs(10);
    while b.log_text().matches(&want).count() < 2 {
        assert!(
            Instant::now() < end,
            "queue pairs not running:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (_, sent) = tx.stop();
    std::thread::sleep(Duration::from_millis(500));
    let (received, _) = rx.stop();
    let (tl, rl) = (
        gone_line(&b, &format!("{sw}:tx")),
        gone_line(&b, &format!("{sw}:rx")),
    );
    let taken = after(&tl, "(", "tx_packets=");
    let dropped = after(&tl, "(", "drops=");
    let delivered = after(&rl, "(", "rx_packets=");
    let per_queue: Vec<u64> = (0..queues)
        .map(|q| after(&tl, &format!("tx{q}: "), "packets="))
        .collect();
    let rx_queues: u64 = (0..queues)
        .map(|q| after(&rl, &format!("rx{q}: "), "packets="))
        .sum();
    let ctx = format!(
        "{rings} queues={queues}: testpmd sent {sent}, daemon took {taken} \
         ({per_queue:?}), dropped {dropped}, delivered {delivered}, testpmd received {received}\n\
         {tl}\n{rl}"
    );
    eprintln!("{ctx}");
    let in_flight = RING * u64::from(queues);
    assert!(sent > 10_000, "too little traffic: {ctx}");
    assert!(
        taken <= sent && sent - taken <= in_flight,
        "sent vs taken: {ctx}"
    );
    assert_eq!(per_queue.iter().sum::<u64>(), taken, "{ctx}");
    assert!(per_queue.iter().all(|&n| n > 0), "a TX queue idle: {ctx}");
    assert_eq!(taken, delivered + dropped, "the switch lost frames: {ctx}");
    assert_eq!(rx_queues, delivered, "{ctx}");
    assert!(
        received <= delivered && delivered - received <= in_flight,
        "delivered vs received: {ctx}"
    );
    assert!(received > 1000, "nothing received: {ctx}");
    for l in [&tl, &rl] {
        for k in [
            "bad_chains=",
            "bad_addresses=",
            "too_long=",
            "too_short=",
            "bad_headers=",
        ] {
            assert!(all_zero(l, k), "{k} counted: {ctx}");
        }
        assert!(all_zero(l, "broken="), "a queue broke: {ctx}");
    }
}

/// Is every `key` in `line` followed by 0?
fn all_zero(line: &str, key: &str) -> bool {
    line.match_indices(key).all(|(i, _)| {
        line[i + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            == Some("0")
    })
}

#[test]
#[ignore = "needs root, hugepages and DPDK: run by `cargo xtask test`"]
fn split_one_queue_pair() {
    run("packed_vq=0", 1);
}

#[test]
#[ignore = "needs root, hugepages and DPDK: run by `cargo xtask test`"]
fn packed_one_queue_pair() {
    run("packed_vq=1", 1);
}

#[test]
#[ignore = "needs root, hugepages and DPDK: run by `cargo xtask test`"]
fn split_two_queue_pairs() {
    run("packed_vq=0", 2);
}

#[test]
#[ignore = "needs root, hugepages and DPDK: run by `cargo xtask test`"]
fn packed_two_queue_pairs() {
    run("packed_vq=1", 2);
}

#[test]
#[ignore = "needs root, hugepages and DPDK: run by `cargo xtask test`"]
fn packed_in_order_one_queue_pair() {
    // VIRTIO_F_IN_ORDER negotiated: the device writes one used descriptor per batch of TX
    // chains (virtio 1.2, 2.8.20), and DPDK takes its in-order paths.
    run("packed_vq=1,in_order=1", 1);
}

#[test]
#[ignore = "needs root, hugepages and DPDK: run by `cargo xtask test`"]
fn split_in_order_one_queue_pair() {
    run("packed_vq=0,in_order=1", 1);
}
