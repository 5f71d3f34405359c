//! ptnet runs: `ptnet-backend` plus host `ptnet-pkt-gen` processes over vhost-user.

use super::proc::{cpu_seconds, sleep_until, window_mean, CpuMeter, CpuUse, Proc};
use nix::sys::signal::Signal;
use ptnet_integration::{json_num, Backend, Bins, TempDir};
use std::path::Path;
use std::time::{Duration, Instant};

/// A running daemon, pinned: the library's [`Backend`] under `taskset` (which execs it, so the
/// pid is the daemon's).
pub struct Daemon {
    b: Backend,
}

impl Daemon {
    /// Starts `ptnet-backend --socket-dir DIR ARGS PORTS` on `cpus` and waits for its sockets.
    /// (A port whose kernel resources the previous run still holds, an AF_XDP queue, is waited
    /// for by the daemon itself: `host-backend/src/port/nic/xdp.rs`.)
    pub fn start(
        dir: &Path,
        cpus: &str,
        args: &[String],
        ports: &[String],
    ) -> Result<Self, String> {
        let wrapper = ["taskset", "-c", cpus];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        Backend::start_under(&wrapper, dir, &ports, &args).map(|b| Self { b })
    }

    /// The `vhost-user:` port string for `port`.
    pub fn port(&self, port: &str) -> String {
        self.b.interface(port)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.b.pid()
    }

    /// The last `n` lines of its log (for error messages).
    pub fn tail(&self, n: usize) -> String {
        let log = self.b.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops it: SIGTERM, then SIGKILL after 3 s.
    pub fn stop(&mut self) {
        self.b.terminate(Duration::from_secs(3));
    }
}

/// One pkt-gen of a run.
#[derive(Clone, Debug)]
pub struct Gen {
    /// Daemon port it attaches to.
    pub port: String,
    /// CPUs (taskset list).
    pub cpus: String,
    /// `-f` and the rest.
    pub args: Vec<String>,
}

/// A throughput case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Daemon ports.
    pub ports: Vec<String>,
    /// Daemon CPUs.
    pub daemon_cpus: String,
    /// Extra daemon flags.
    pub daemon_args: Vec<String>,
    /// The sender.
    pub tx: Gen,
    /// The receiver, if any (its rate is what is measured; else the sender's).
    pub rx: Option<Gen>,
    /// Daemon threads to pin once both sides attached: (thread name contains, CPUs).
    pub thread_pins: Vec<(String, String)>,
}

/// Pins the threads of `pid` whose name contains a rule's pattern; returns "name -> cpus" lines.
pub fn pin_threads(pid: u32, rules: &[(String, String)]) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return done;
    };
    for t in rd.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if let Some((_, cpus)) = rules.iter().find(|(pat, _)| comm.contains(pat.as_str())) {
            let tid = t.file_name().to_string_lossy().into_owned();
            if super::proc::sh("taskset", &["-p", "-c", cpus, &tid]).is_ok() {
                done.push(format!("{comm} -> cpu {cpus}"));
            }
        }
    }
    done
}

/// Report interval of the pkt-gens (ms).
const REPORT_MS: u64 = 500;

/// `[ 1.000s] 12.345 Mpps 5.9 Gbps` -> 12.345.
pub fn parse_report(l: &str) -> Option<f64> {
    let rest = l.trim_start().strip_prefix('[')?;
    let rest = &rest[rest.find("s] ")? + 3..];
    let end = rest.find(" Mpps")?;
    rest[..end].trim().parse().ok()
}

fn spawn_gen(bins: &Bins, d: &Daemon, g: &Gen, name: &str) -> Result<Proc, String> {
    let mut a = vec!["-i".to_string(), d.port(&g.port)];
    a.extend(g.args.iter().cloned());
    a.extend(["-T".to_string(), REPORT_MS.to_string()]);
    let mut p = Proc::spawn(name, Some(&g.cpus), &bins.pkt_gen, &a)?;
    p.wait_line(Duration::from_secs(10), |l| {
        l.contains(" mac ") && l.contains(" rings ")
    })?;
    Ok(p)
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Mpps: the mean of the measured pkt-gen's reports in the window (the receiver's, or the
    /// sender's when there is none).
    pub mpps: f64,
    /// The sender's Mpps over the same window.
    pub sent_mpps: Option<f64>,
    /// CPU of the daemon and of every pkt-gen over the window.
    pub cpu: CpuUse,
}

/// Runs `case` for `warm` + `secs`; the measured Mpps (mean of the periodic reports in the window).
pub fn throughput(bins: &Bins, case: &Case, warm: f64, secs: f64) -> Result<f64, String> {
    measure(bins, case, warm, secs).map(|m| m.mpps)
}

/// [`throughput`], with the CPU every process of the run (daemon, sender, receiver) used in the
/// measured window.
pub fn measure(bins: &Bins, case: &Case, warm: f64, secs: f64) -> Result<Measured, String> {
    let dir = TempDir::new("bench").map_err(|e| e.to_string())?;
    // On the error paths the daemon is killed when dropped (the library's Backend).
    let mut d = Daemon::start(
        dir.path(),
        &case.daemon_cpus,
        &case.daemon_args,
        &case.ports,
    )?;
    let mut rx = match &case.rx {
        Some(g) => Some(spawn_gen(bins, &d, g, "pkt-gen rx")?),
        None => None,
    };
    let mut tx = spawn_gen(bins, &d, &case.tx, "pkt-gen tx")?;
    if !case.thread_pins.is_empty() {
        pin_threads(d.pid(), &case.thread_pins);
    }
    // Traffic has started: the sender attached.
    let t0 = Instant::now();
    let from = t0 + Duration::from_secs_f64(warm);
    let to = from + Duration::from_secs_f64(secs);
    let early = |tx: &mut Proc, d: &Daemon| {
        format!(
            "pkt-gen tx exited early:\n{}\ndaemon:\n{}",
            tx.tail(20),
            d.tail(20)
        )
    };
    sleep_until(from);
    if !tx.running() {
        return Err(early(&mut tx, &d));
    }
    let mut procs = vec![("ptnet-backend", Some(d.pid())), ("pkt-gen tx", tx.pid())];
    if let Some(r) = &rx {
        procs.push(("pkt-gen rx", r.pid()));
    }
    let meter = CpuMeter::start(&procs)?;
    sleep_until(to);
    let cpu = meter.finish();
    if !tx.running() {
        return Err(early(&mut tx, &d));
    }
    sleep_until(to + Duration::from_millis(REPORT_MS / 2));
    let measured = rx.as_ref().unwrap_or(&tx);
    let r = window_mean(&measured.stderr(), from, to, parse_report);
    let sent = window_mean(&tx.stderr(), from, to, parse_report).map(|(m, _)| m);
    let text = measured.tail(20);
    tx.stop(Signal::SIGKILL, Duration::ZERO);
    if let Some(r) = rx.as_mut() {
        r.stop(Signal::SIGKILL, Duration::ZERO);
    }
    d.stop();
    let mpps = r
        .map(|(m, _)| m)
        .ok_or_else(|| format!("no rate reports in the window:\n{text}"))?;
    Ok(Measured {
        mpps,
        sent_mpps: sent,
        cpu: cpu?,
    })
}

/// Ping-pong through a pipe; (p50, p99, p99.9) in microseconds.
pub fn ping_pong(
    bins: &Bins,
    daemon_cpus: &str,
    daemon_args: &[String],
    (ping_cpus, pong_cpus): (&str, &str),
    count: u64,
    gen_args: &[String],
) -> Result<(f64, f64, f64), String> {
    let dir = TempDir::new("bench").map_err(|e| e.to_string())?;
    let ports = ["netmap:lat{1".to_string(), "netmap:lat}1".to_string()];
    let mut d = Daemon::start(dir.path(), daemon_cpus, daemon_args, &ports)?;
    let mut pong_args = vec!["-f".to_string(), "pong".to_string()];
    pong_args.extend(gen_args.iter().cloned());
    let mut pong = spawn_gen(
        bins,
        &d,
        &Gen {
            port: ports[1].clone(),
            cpus: pong_cpus.to_string(),
            args: pong_args,
        },
        "pkt-gen pong",
    )?;
    let mut a = vec![
        "-i".to_string(),
        d.port(&ports[0]),
        "-f".into(),
        "ping".into(),
        "-n".into(),
        count.to_string(),
        "--json".into(),
        "-T".into(),
        "0".into(),
    ];
    a.extend(gen_args.iter().cloned());
    let mut ping = Proc::spawn("pkt-gen ping", Some(ping_cpus), &bins.pkt_gen, &a)?;
    let ok = ping.wait(Duration::from_secs(600));
    let line = ping
        .stdout()
        .iter()
        .rev()
        .find(|l| l.text.contains("\"rtt_us\""))
        .map(|l| l.text.clone());
    pong.stop(Signal::SIGKILL, Duration::ZERO);
    d.stop();
    let line =
        line.ok_or_else(|| format!("ping printed no summary (exited: {ok}):\n{}", ping.tail(20)))?;
    let g = |k| json_num(&line, k).ok_or_else(|| format!("no {k} in {line}"));
    Ok((g("p50")?, g("p99")?, g("p999")?))
}

/// Daemon CPU with `n` idle VALE ports, each with an idle receiver attached: % of one core over
/// `secs`.
pub fn idle_cpu(
    bins: &Bins,
    daemon_cpus: &str,
    gen_cpus: &str,
    n: usize,
    secs: f64,
) -> Result<(f64, f64), String> {
    let dir = TempDir::new("bench").map_err(|e| e.to_string())?;
    let ports: Vec<String> = (0..n).map(|i| format!("vale0:{i}")).collect();
    let mut d = Daemon::start(dir.path(), daemon_cpus, &[], &ports)?;
    // Unattached first.
    std::thread::sleep(Duration::from_millis(500));
    let pid = d.pid();
    let measure = |secs: f64| -> Result<f64, String> {
        let c0 = cpu_seconds(pid).ok_or("cannot read the daemon's /proc stat")?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let c1 = cpu_seconds(pid).ok_or("cannot read the daemon's /proc stat")?;
        Ok((c1 - c0) / t0.elapsed().as_secs_f64() * 100.0)
    };
    let unattached = measure(secs)?;
    let mut gens = Vec::new();
    for p in &ports {
        let g = Gen {
            port: p.clone(),
            cpus: gen_cpus.to_string(),
            args: vec!["-f".into(), "rx".into()],
        };
        let mut a = vec!["-i".to_string(), d.port(&g.port)];
        a.extend(g.args.iter().cloned());
        a.extend(["-T".to_string(), "0".to_string()]);
        gens.push(Proc::spawn(
            "pkt-gen idle rx",
            Some(&g.cpus),
            &bins.pkt_gen,
            &a,
        )?);
    }
    for g in &mut gens {
        g.wait_line(Duration::from_secs(20), |l| {
            l.contains(" mac ") && l.contains(" rings ")
        })?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let attached = measure(secs)?;
    for mut g in gens {
        g.stop(Signal::SIGKILL, Duration::ZERO);
    }
    d.stop();
    Ok((attached, unattached))
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_line() {
        assert_eq!(
            super::parse_report("[ 1.000s] 12.345 Mpps 5.925 Gbps"),
            Some(12.345)
        );
        assert_eq!(
            super::parse_report("[10.500s] 0.000 Mpps 0.000 Gbps"),
            Some(0.0)
        );
        assert_eq!(super::parse_report("ptnet-pkt-gen: x mac"), None);
    }
}
