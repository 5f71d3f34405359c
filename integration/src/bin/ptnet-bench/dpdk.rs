//! DPDK runs: `dpdk-testpmd` with virtio-user (the guest side) against `dpdk-testpmd` with the
//! vhost PMD (the host side), over vhost-user sockets, on hugepages.

use super::proc::{Line, Proc};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The testpmd binary.
pub const TESTPMD: &str = "dpdk-testpmd";

/// How DPDK is configured (the same for every DPDK run).
#[derive(Clone, Debug)]
pub struct Config {
    /// testpmd `--burst` (at most 512).
    pub burst: u32,
    /// Descriptors per queue (`--rxd`/`--txd`, virtio-user `queue_size`).
    pub ring: u32,
    /// Extra virtio-user devargs (e.g. `packed_vq=1,in_order=1,mrg_rxbuf=0`).
    pub virtio_opts: String,
    /// Hugepage memory per process (MB).
    pub mem_mb: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            burst: 64,
            ring: 1024,
            virtio_opts: "packed_vq=1,in_order=1,mrg_rxbuf=0".into(),
            mem_mb: 256,
        }
    }
}

/// One testpmd process.
pub struct Testpmd {
    /// The process.
    pub proc: Proc,
    prefix: String,
}

/// One testpmd to start: where, which devices, which forwarding mode.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Name, also the EAL `--file-prefix`.
    pub name: String,
    /// The CPU both its lcores (main, forwarding) run on.
    pub cpu: usize,
    /// `--vdev` arguments.
    pub vdevs: Vec<String>,
    /// `--forward-mode`.
    pub fwd: String,
}

impl Spec {
    /// A virtio-user port (vhost-user client) on `sock`.
    pub fn virtio_user(cfg: &Config, idx: usize, sock: &Path) -> String {
        let mut s = format!(
            "net_virtio_user{idx},path={},queues=1,queue_size={}",
            sock.display(),
            cfg.ring
        );
        if !cfg.virtio_opts.is_empty() {
            s.push(',');
            s.push_str(&cfg.virtio_opts);
        }
        s
    }

    /// A vhost port (vhost-user server) on `sock`.
    pub fn vhost(idx: usize, sock: &Path) -> String {
        format!("net_vhost{idx},iface={},queues=1", sock.display())
    }
}

/// The EAL `--file-prefix` of the bench's DPDK process `name`: the name and this bench's pid, so
/// two benches on one machine neither share a DPDK runtime nor remove each other's hugepages.
pub fn file_prefix(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Removes what earlier benches' DPDK processes left behind when they were killed (hugepage
/// files and runtime directories of `ptb-*-PID` prefixes whose bench PID is gone).
pub fn cleanup_stale() {
    let dead = |prefix: &str| {
        prefix.strip_prefix("ptb-").is_some()
            && prefix
                .rsplit('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut prefixes: Vec<String> = Vec::new();
    for dir in ["/dev/hugepages", "/var/run/dpdk"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let p = n.split("map_").next().unwrap_or(&n).to_string();
                if dead(&p) && !prefixes.contains(&p) {
                    prefixes.push(p);
                }
            }
        }
    }
    for p in prefixes {
        cleanup_prefix(&p);
    }
}

/// Removes what a DPDK process with EAL `--file-prefix=prefix` left (hugepage files, runtime dir).
pub fn cleanup_prefix(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir("/dev/hugepages") {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}map_"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(PathBuf::from("/var/run/dpdk").join(prefix));
}

/// The EAL arguments of every DPDK process of the bench: both lcores (main, forwarding) on `cpu`,
/// no PCI, its own `--file-prefix`, hugepage memory, the `vdevs`.
pub fn eal_args(cfg: &Config, name: &str, cpu: usize, vdevs: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        format!("--lcores=0@{cpu},1@{cpu}"),
        "--main-lcore=0".into(),
        "--no-pci".into(),
        format!("--file-prefix={}", file_prefix(name)),
        "--single-file-segments".into(),
        "--iova-mode=va".into(),
        "-m".into(),
        cfg.mem_mb.to_string(),
    ];
    for v in vdevs {
        a.push(format!("--vdev={v}"));
    }
    a
}

impl Testpmd {
    /// Starts it; `len` is the txonly frame length.
    pub fn start(cfg: &Config, spec: &Spec, len: usize) -> Result<Self, String> {
        let prefix = file_prefix(&spec.name);
        cleanup_prefix(&prefix);
        let mut a: Vec<String> = vec!["-oL".into(), TESTPMD.into()];
        a.extend(eal_args(cfg, &spec.name, spec.cpu, &spec.vdevs));
        a.extend([
            "--".into(),
            format!("--forward-mode={}", spec.fwd),
            "--stats-period=1".into(),
            "--nb-cores=1".into(),
            format!("--rxd={}", cfg.ring),
            format!("--txd={}", cfg.ring),
            format!("--burst={}", cfg.burst),
            format!("--txpkts={len}"),
            "--total-num-mbufs=8192".into(),
        ]);
        let mut proc = Proc::spawn(&spec.name, None, Path::new("stdbuf"), &a)?;
        // Forwarding has started once the first statistics block shows up.
        proc.wait_line(Duration::from_secs(60), |l| l.contains("Port statistics"))?;
        Ok(Self { proc, prefix })
    }

    /// Stops it (SIGINT, as Ctrl-C) and removes its hugepage files.
    pub fn stop(&mut self) {
        self.proc.stop(Signal::SIGINT, Duration::from_secs(5));
        cleanup_prefix(&self.prefix);
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One statistics sample of one port.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When it was printed.
    pub at: Instant,
    /// Port id.
    pub port: u32,
    /// Rx-pps.
    pub rx_pps: f64,
    /// Tx-pps.
    pub tx_pps: f64,
}

/// Parses testpmd's periodic port statistics.
pub fn samples(lines: &[Line]) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut port = None;
    let mut rx = None;
    let num_after = |t: &str, key: &str| -> Option<f64> {
        let s = &t[t.find(key)? + key.len()..];
        s.split_whitespace().next()?.parse().ok()
    };
    for l in lines {
        let t = &l.text;
        if let Some(i) = t.find("NIC statistics for port") {
            port = t[i + "NIC statistics for port".len()..]
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
            rx = None;
        } else if t.contains("Rx-pps:") {
            rx = num_after(t, "Rx-pps:");
        } else if t.contains("Tx-pps:") {
            if let (Some(p), Some(r), Some(tx)) = (port, rx, num_after(t, "Tx-pps:")) {
                out.push(Sample {
                    at: l.at,
                    port: p,
                    rx_pps: r,
                    tx_pps: tx,
                });
            }
            rx = None;
        }
    }
    out
}

/// Mean Rx-pps (or Tx-pps) of `port` over samples printed in `[from, to]`, in Mpps.
pub fn window_mpps(lines: &[Line], port: u32, rx: bool, from: Instant, to: Instant) -> Option<f64> {
    let v: Vec<f64> = samples(lines)
        .into_iter()
        .filter(|s| s.port == port && s.at >= from && s.at <= to)
        .map(|s| if rx { s.rx_pps } else { s.tx_pps })
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64 / 1e6)
}

/// The sum over `ports` of [`window_mpps`].
pub fn window_mpps_sum(lines: &[Line], ports: &[u32], from: Instant, to: Instant) -> Option<f64> {
    ports
        .iter()
        .map(|&p| window_mpps(lines, p, true, from, to))
        .sum()
}

/// Waits (up to `max`) until `p` printed a statistics sample after `t`: on a loaded machine
/// testpmd's printing thread can lag, and the window's samples are only all there once a later
/// one arrived.
pub fn wait_sample_after(p: &Proc, t: Instant, max: Duration) {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if p.stdout()
            .iter()
            .rev()
            .any(|l| l.at > t && l.text.contains("Tx-pps:"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `path` exists (a vhost socket).
pub fn wait_socket(path: &Path, owner: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if !owner.running() {
            return Err(format!("{} exited:\n{}", owner.name, owner.tail(30)));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not appear", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// DPDK's version (the Debian package's, else unknown).
pub fn version() -> String {
    super::proc::sh("dpkg-query", &["-W", "-f", "${Version}", "dpdk"])
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats() {
        let now = Instant::now();
        let text = "\
  ######################## NIC statistics for port 0  ########################
  RX-packets: 10         RX-missed: 0          RX-bytes:  600
  TX-packets: 0          TX-errors: 0          TX-bytes:  0
  Throughput (since last show)
  Rx-pps:      1234567          Rx-bps:    182211496
  Tx-pps:            7          Tx-bps:            0
  ######################## NIC statistics for port 1  ########################
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:      2000000          Tx-bps:            0";
        let lines: Vec<Line> = text
            .lines()
            .map(|t| Line {
                at: now,
                text: t.to_string(),
            })
            .collect();
        let s = samples(&lines);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].port, s[0].rx_pps, s[0].tx_pps), (0, 1234567.0, 7.0));
        assert_eq!((s[1].port, s[1].tx_pps), (1, 2000000.0));
        let m = window_mpps(&lines, 0, true, now, now).unwrap();
        assert!((m - 1.234567).abs() < 1e-9);
    }
}
