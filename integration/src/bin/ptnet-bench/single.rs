//! The workloads measured on ptnet alone: P4 (idle CPU), P5 (ping-pong against this machine's
//! eventfd floor) and the host-interface ports (`nic`).

use crate::cases::{pl, s, PT_P1};
use crate::opts::Opts;
use crate::report::{Json, Runs};
use crate::workloads::{met_text, ratio_text, yes, Report, Workload};
use crate::{proc, ptnet};
use ptnet_integration::Bins;

/// P5's round trip p50, at most this times the eventfd floor's p50.
pub const P5_OVER_FLOOR: f64 = 1.3;

pub fn idle_cpu(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    let (attached, bare) = ptnet::idle_cpu(bins, "1", "0", 64, o.secs)?;
    eprintln!("bench: p4 {attached:.3}% with idle receivers attached, {bare:.3}% unattached");
    rep.res.set("p4_idle_cpu_pct", attached);
    let mut p4 = Json::obj();
    p4.set("idle_cpu_pct_attached", attached)
        .set("idle_cpu_pct_unattached", bare)
        .set("ports", 64u64)
        .set("seconds", o.secs)
        .set(
            "what",
            "64 VALE ports, each with an idle ptnet-pkt-gen -f rx attached (it re-checks every 200 ms); \
             also measured before any frontend attached",
        )
        .set("target_pct", 1.0)
        .set("met", attached < 1.0)
        .set(
            "placement",
            pl(&[("ptnet-backend", "cpu 1"), ("64 idle pkt-gen rx", "cpu 0")]).json(),
        );
    rep.res.set("p4", p4);
    rep.table.push([
        w.name.into(),
        format!("{attached:.3}% ({bare:.3}% unattached)"),
        "-".into(),
        "-".into(),
        "< 1%".into(),
        yes(attached < 1.0),
    ]);
    Ok(())
}

pub fn ping_pong(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    let count: u64 = if o.quick { 20_000 } else { 300_000 };
    let (mut p50, mut p99, mut p999) = (Runs::default(), Runs::default(), Runs::default());
    for i in 0..o.reps {
        let (a, b, c) = ptnet::ping_pong(bins, "0,1", &o.daemon_args, ("0", "1"), count, &[])?;
        eprintln!(
            "bench: p5 run {} rtt p50 {a:.1} us p99 {b:.1} us p99.9 {c:.1} us",
            i + 1
        );
        p50.0.push(a);
        p99.0.push(b);
        p999.0.push(c);
    }
    let floor = crate::floors::eventfd_floor(if o.quick { 5_000 } else { 50_000 });
    eprintln!(
        "bench: p5 floor (eventfd ping-pong, cpu 0 <-> cpu 1) p50 {:.1} us p99 {:.1} us p99.9 {:.1} us",
        floor.0, floor.1, floor.2
    );
    let mut fl = Json::obj();
    fl.set("p50", floor.0)
        .set("p99", floor.1)
        .set("p999", floor.2)
        .set(
            "what",
            "two threads (cpu 0, cpu 1) bouncing a token through two blocking eventfds, measured \
             in the same run: 2 cross-CPU sleeping wake-ups per round trip on this machine",
        );
    rep.res.set("p5_floor_us", fl.clone());
    let mut rtt = Json::obj();
    rtt.set("p50", p50.median())
        .set("p99", p99.median())
        .set("p999", p999.median());
    rep.res.set("p5_rtt_us", rtt);
    let over = p50.median() / floor.0;
    let met = over <= P5_OVER_FLOOR;
    let mut p5 = Json::obj();
    p5.set("pings_per_run", count)
        .set("p50", p50.json())
        .set("p99", p99.json())
        .set("p999", p999.json())
        .set("floor_eventfd_rtt_us", fl)
        .set("p50_over_floor_p50", over)
        .set("target_p50_over_floor_p50", P5_OVER_FLOOR)
        .set("met", met)
        .set("spec_target_p99_us", 20.0)
        .set("spec_p99_met", p99.median() < 20.0)
        .set(
            "placement",
            pl(&[
                ("ptnet-pkt-gen ping", "cpu 0"),
                ("ptnet-pkt-gen pong", "cpu 1"),
                ("ptnet-backend", "cpus 0-1"),
            ])
            .json(),
        );
    rep.res.set("p5", p5);
    rep.table.push([
        w.name.into(),
        format!(
            "p50 {:.1} p99 {:.1} p99.9 {:.1}",
            p50.median(),
            p99.median(),
            p999.median()
        ),
        format!("eventfd floor p50 {:.1} p99 {:.1}", floor.0, floor.1),
        format!("RTT p50 / floor p50 = {}", ratio_text(over)),
        format!("p50 <= {P5_OVER_FLOOR}x floor"),
        met_text(met, over),
    ]);
    Ok(())
}

/// The host-interface port kinds of the `nic` workload, over the interfaces of [`NicIfs`].
pub const NIC_PORTS: [&str; 3] = ["tap", "packet", "xdp"];

/// The `nic` workload's interfaces, named after this bench's pid (`ptb<PID>v0`/`v1`, a veth
/// pair, and the tap `ptb<PID>t`) so that two benches on one machine do not delete each other's.
struct NicIfs {
    veth: String,
    peer: String,
    tap: String,
}

impl NicIfs {
    fn new() -> Self {
        let pid = std::process::id();
        Self {
            veth: format!("ptb{pid}v0"),
            peer: format!("ptb{pid}v1"),
            tap: format!("ptb{pid}t"),
        }
    }

    /// The port of `kind` on these interfaces.
    fn port(&self, kind: &str) -> String {
        match kind {
            "tap" => format!("tap:{}", self.tap),
            _ => format!("{kind}:{}", self.veth),
        }
    }

    fn cleanup(&self) {
        let _ = proc::sh("ip", &["link", "del", &self.veth]);
        let _ = proc::sh("ip", &["link", "del", &self.tap]);
    }

    fn setup(&self) -> Result<(), String> {
        proc::sh(
            "ip",
            &[
                "link", "add", &self.veth, "type", "veth", "peer", "name", &self.peer,
            ],
        )?;
        proc::sh("ip", &["tuntap", "add", "dev", &self.tap, "mode", "tap"])?;
        for dev in [&self.veth, &self.peer, &self.tap] {
            proc::sh("ip", &["link", "set", dev, "up"])?;
        }
        Ok(())
    }
}

/// Removes the interfaces earlier benches left when they were killed (`ptb<PID>v0`, `ptb<PID>t`
/// of a PID that is gone).
fn cleanup_stale_ifs() {
    let Ok(rd) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("ptb") else {
            continue;
        };
        let Some(pid) = rest
            .strip_suffix("v0")
            .or_else(|| rest.strip_suffix('t'))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = proc::sh("ip", &["link", "del", &name]);
        }
    }
}

/// Mpps per host-interface port kind: pkt-gen tx into `tap:`, `packet:` and `xdp:` ports over a
/// veth pair and a tap made here (and removed after). The copies into the kernel are the cost.
/// A kind that cannot run is recorded as failed; the others still run.
pub fn nic_ports(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    cleanup_stale_ifs();
    let ifs = NicIfs::new();
    let cleanup = || ifs.cleanup();
    cleanup();
    if let Err(e) = ifs.setup() {
        cleanup();
        return Err(format!("nic workload setup: {e}"));
    }
    let mut out = Json::obj();
    let mut failed = Vec::new();
    for kind in NIC_PORTS {
        let port = ifs.port(kind);
        let port = port.as_str();
        let case = ptnet::Case {
            ports: vec![port.into()],
            daemon_cpus: PT_P1.1.into(),
            daemon_args: o.daemon_args.clone(),
            tx: ptnet::Gen {
                port: port.into(),
                cpus: PT_P1.0.into(),
                args: s(&["-f", "tx", "-l", "60", "-b", "512"]),
            },
            rx: None,
            thread_pins: Vec::new(),
        };
        let mut r = Runs::default();
        let mut error = None;
        for i in 0..o.reps {
            match ptnet::throughput(bins, &case, o.warm, o.secs) {
                Ok(m) => {
                    eprintln!("bench: nic {kind} run {} ptnet {m:.3} Mpps", i + 1);
                    r.0.push(m);
                }
                Err(e) => {
                    eprintln!("bench: nic {kind} run {} failed: {e}", i + 1);
                    error = Some(e);
                    break;
                }
            }
        }
        let mut e = Json::obj();
        e.set("port", port)
            .set("mpps", r.median())
            .set("ptnet", r.json())
            .set(
                "placement",
                pl(&[("ptnet-pkt-gen tx", "cpu 0"), ("ptnet-backend", "cpu 1")]).json(),
            );
        let row = format!("{} {kind}: tx -> daemon -> kernel", w.name);
        match &error {
            Some(err) => {
                e.set("failed", true).set("error", err.as_str());
                failed.push(format!("nic {kind}: {err}"));
                let first = err.lines().next().unwrap_or("");
                rep.figure(row, format!("FAILED: {first}"));
            }
            None => rep.figure(row, format!("{:.3}", r.median())),
        }
        out.set(kind, e);
    }
    cleanup();
    rep.res.set("nic", out);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}
