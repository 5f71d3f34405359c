//! P8, the cost at a fixed offered load (what an NFV operator pays): the sender paced at 1 and at
//! 5 Mpps through P1's, P2's and P3's paths, and the CPU seconds every process of each side used
//! per million packets received (utime + stime from `/proc/PID/stat` over the measured window,
//! all threads).
//!
//! * ptnet: `ptnet-pkt-gen -f tx -R RATE` (it sleeps between chunks), the daemon, and for P2/P3
//!   the receiving pkt-gen; placed as in P1-P3.
//! * DPDK: the sender is `ptb-paced-tx` ([`crate::dpdk_paced`]: testpmd's txonly cannot pace),
//!   paced like pkt-gen, on a virtio-user port; the vhost testpmd (rxonly for P1, io between two
//!   vhost ports for P2/P3) and the receiving virtio-user testpmd (rxonly) busy-poll, as DPDK
//!   does. One busy poller per CPU: vhost on CPU 1, the receiver on CPU 0 with the sleeping
//!   sender (DPDK's best 2-CPU layout, as flowgen2 is for P2/P3's throughput).
//!
//! Received rates come from the receiving pkt-gen's reports (the sender's for P1: the null sink
//! takes whatever is in its ring) and from the receiving testpmd's Rx-pps; both sides' sent and
//! received rates are in the results. A side that received less than [`CARRIED`] of the offered
//! load did not run at that load: its cost is shown but the target is not judged ("n/a").

use crate::cases::{pl, pt_case, s, PtParams, Topo};
use crate::dpdk::{self, Spec, Testpmd};
use crate::dpdk_paced::{self, PacedTx};
use crate::opts::Opts;
use crate::proc::{sleep_until, window_mean, CpuMeter, CpuUse};
use crate::ptnet;
use crate::report::{Json, Runs};
use crate::workloads::{Report, Workload};
use ptnet_integration::{Bins, TempDir};
use std::time::{Duration, Instant};

/// The offered loads, Mpps. The first is the target's (results key `p8`); the second's figures go
/// under `p8_5mpps`.
pub const RATES_MPPS: [u64; 2] = [1, 5];

/// ptnet's cost at 1 Mpps, at most this times DPDK's.
pub const TARGET: f64 = 0.25;

/// A side that received less than this share of the offered load did not run at the load the
/// comparison is about (its cost per packet is then not comparable): the target is not judged.
pub const CARRIED: f64 = 0.95;

/// The results key of the figures at `rate` Mpps.
pub fn key(rate: u64) -> String {
    if rate == RATES_MPPS[0] {
        "p8".into()
    } else {
        format!("p8_{rate}mpps")
    }
}

/// One paced run.
struct Sample {
    cpu: CpuUse,
    sent_mpps: Option<f64>,
    rx_mpps: f64,
}

impl Sample {
    /// CPU seconds per million packets received.
    fn cost(&self) -> f64 {
        self.cpu.total() / (self.rx_mpps * self.cpu.window_s)
    }
}

/// The runs of one side at one load.
#[derive(Default)]
struct Side {
    cost: Runs,
    sent: Runs,
    rx: Runs,
    /// Per process: % of one core, per run.
    per_proc: Vec<(String, Runs)>,
    error: Option<String>,
}

impl Side {
    fn add(&mut self, r: Result<Sample, String>) {
        match r {
            Ok(s) => {
                self.cost.0.push(s.cost());
                self.rx.0.push(s.rx_mpps);
                if let Some(m) = s.sent_mpps {
                    self.sent.0.push(m);
                }
                for (name, c) in &s.cpu.per_proc {
                    let pct = c / s.cpu.window_s * 100.0;
                    match self.per_proc.iter_mut().find(|(n, _)| n == name) {
                        Some((_, r)) => r.0.push(pct),
                        None => self.per_proc.push((name.clone(), Runs(vec![pct]))),
                    }
                }
            }
            Err(e) => {
                eprintln!("bench: p8 run failed: {e}");
                self.error.get_or_insert(e);
            }
        }
    }

    fn json(&self, rate: u64) -> Json {
        let mut o = Json::obj();
        o.set("cpu_s_per_mpkt", self.cost.json())
            .set("received_mpps", self.rx.json())
            .set("sent_mpps", self.sent.json())
            .set("received_over_offered", self.rx.median() / rate as f64);
        let mut p = Json::obj();
        for (name, r) in &self.per_proc {
            p.set(name, r.json());
        }
        o.set("cpu_pct_of_one_core", p);
        if let Some(e) = &self.error {
            o.set("failed", true).set("error", e.as_str());
        }
        o
    }

    /// "0.123 (rx 1.000 Mpps)", or the failure.
    fn show(&self) -> String {
        match (&self.error, self.cost.0.is_empty()) {
            (Some(e), true) => format!("FAILED: {}", e.lines().next().unwrap_or("")),
            (_, true) => "-".into(),
            _ => format!(
                "{:.3} (rx {:.3} Mpps)",
                self.cost.median(),
                self.rx.median()
            ),
        }
    }
}

fn ptnet_run(o: &Opts, bins: &Bins, topo: Topo, rate: u64) -> Result<Sample, String> {
    let (mut case, _) = pt_case(&PtParams::base(topo), &o.daemon_args);
    case.tx
        .args
        .extend(s(&["-R", &(rate * 1_000_000).to_string()]));
    let m = ptnet::measure(bins, &case, o.warm, o.secs)?;
    Ok(Sample {
        cpu: m.cpu,
        sent_mpps: m.sent_mpps,
        rx_mpps: m.mpps,
    })
}

fn dpdk_run(o: &Opts, sender: &std::path::Path, topo: Topo, rate: u64) -> Result<Sample, String> {
    let cfg = &o.dpdk_cfg;
    let dir = TempDir::new("dpdk-p8").map_err(|e| e.to_string())?;
    let (s0, s1) = (
        dir.path().join("vhost0.sock"),
        dir.path().join("vhost1.sock"),
    );
    let two = topo != Topo::Null;
    let mut vdevs = vec![Spec::vhost(0, &s0)];
    if two {
        vdevs.push(Spec::vhost(1, &s1));
    }
    let fwd = if two { "io" } else { "rxonly" };
    let mut host = Testpmd::start(
        cfg,
        &Spec {
            name: "ptb-vhost".into(),
            cpu: 1,
            vdevs,
            fwd: fwd.into(),
        },
        60,
    )?;
    dpdk::wait_socket(&s0, &mut host.proc)?;
    let rx = if two {
        dpdk::wait_socket(&s1, &mut host.proc)?;
        Some(Testpmd::start(
            cfg,
            &Spec {
                name: "ptb-rx".into(),
                cpu: 0,
                vdevs: vec![Spec::virtio_user(cfg, 0, &s1)],
                fwd: "rxonly".into(),
            },
            60,
        )?)
    } else {
        None
    };
    let tx = PacedTx::start(
        sender,
        cfg,
        0,
        Spec::virtio_user(cfg, 0, &s0),
        rate * 1_000_000,
        60,
    )?;
    let from = Instant::now() + Duration::from_secs_f64(o.warm);
    let to = from + Duration::from_secs_f64(o.secs);
    sleep_until(from);
    let mut procs = vec![
        ("testpmd vhost", host.proc.pid()),
        ("ptb-paced-tx", tx.proc.pid()),
    ];
    if let Some(r) = &rx {
        procs.push(("testpmd virtio-user rxonly", r.proc.pid()));
    }
    let meter = CpuMeter::start(&procs)?;
    sleep_until(to);
    let cpu = meter.finish()?;
    // testpmd prints its statistics once a second.
    let measured = rx.as_ref().unwrap_or(&host);
    dpdk::wait_sample_after(&measured.proc, to, Duration::from_secs(5));
    let rx_mpps =
        dpdk::window_mpps(&measured.proc.stdout(), 0, true, from, to).ok_or_else(|| {
            format!(
                "no testpmd statistics in the window:\n{}",
                measured.proc.tail(15)
            )
        })?;
    let sent_mpps = window_mean(&tx.proc.stdout(), from, to, ptnet::parse_report).map(|(m, _)| m);
    drop(tx);
    drop(rx);
    drop(host);
    Ok(Sample {
        cpu,
        sent_mpps,
        rx_mpps,
    })
}

/// The P8 workload: every path at every load, ptnet and DPDK alternating per run. A side that
/// cannot run is recorded as failed in its entry; the others go on.
pub fn run(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    let sender = if o.dpdk {
        Some(dpdk_paced::build())
    } else {
        None
    };
    let mut failures = 0;
    for rate in RATES_MPPS {
        let mut out = Json::obj();
        for (path, topo) in [("p1", Topo::Null), ("p2", Topo::Pipe), ("p3", Topo::Vale)] {
            let (mut pt, mut dp) = (Side::default(), Side::default());
            for i in 0..o.reps {
                pt.add(ptnet_run(o, bins, topo, rate));
                match &sender {
                    Some(Ok(bin)) => dp.add(dpdk_run(o, bin, topo, rate)),
                    Some(Err(e)) => dp.add(Err(e.clone())),
                    None => {}
                }
                eprintln!(
                    "bench: p8 {path} at {rate} Mpps run {}: ptnet {}, dpdk {}",
                    i + 1,
                    pt.show(),
                    dp.show()
                );
            }
            failures += usize::from(pt.error.is_some()) + usize::from(dp.error.is_some());
            let (pc, dc) = (pt.cost.median(), dp.cost.median());
            let ratio = pc / dc;
            let mut e = Json::obj();
            e.set("rate_mpps", rate)
                .set("ptnet_cpu_s_per_mpkt", pc)
                .set("dpdk_cpu_s_per_mpkt", dc)
                .set("ratio", ratio);
            let targeted = rate == RATES_MPPS[0];
            let carried = |sd: &Side| sd.rx.median() / rate as f64;
            let short: Vec<String> = [("ptnet", &pt), ("dpdk", &dp)]
                .iter()
                .filter(|(_, sd)| !sd.rx.0.is_empty() && carried(sd) < CARRIED)
                .map(|(n, sd)| format!("{n} rx {:.0}%", carried(sd) * 100.0))
                .collect();
            let judged = ratio.is_finite() && short.is_empty();
            e.set("both_carried_the_load", short.is_empty());
            if targeted {
                e.set("target_ratio", TARGET);
                if judged {
                    e.set("met", ratio <= TARGET);
                }
            }
            e.set("ptnet", pt.json(rate)).set("dpdk", dp.json(rate));
            out.set(path, e);
            rep.table.push([
                format!("{} {path} @{rate} Mpps", w.name),
                pt.show(),
                dp.show(),
                crate::workloads::ratio_text(ratio),
                if targeted {
                    format!("<= {TARGET}x")
                } else {
                    "-".into()
                },
                match (targeted, judged) {
                    (true, true) => crate::workloads::met_text(ratio <= TARGET, ratio),
                    (true, false) if ratio.is_finite() => {
                        format!("n/a: {} of the offered load", short.join(", "))
                    }
                    _ => "-".into(),
                },
            ]);
        }
        out.set(
            "what",
            format!(
                "{rate} Mpps offered; CPU seconds (utime+stime, every process of the side) per \
                 million packets received; ratio = ptnet / DPDK"
            ),
        );
        rep.res.set(&key(rate), out);
    }
    rep.places.push(format!(
        "p8 ptnet: as p1-p3, the sender paced (ptnet-pkt-gen -R); p8 dpdk: {}",
        pl(&[
            (
                "ptb-paced-tx (virtio-user, paced, sleeps between chunks)",
                "cpu 0"
            ),
            ("testpmd vhost rxonly (P1) / io (P2, P3)", "cpu 1"),
            ("testpmd virtio-user rxonly (P2, P3)", "cpu 0"),
        ])
        .text()
    ));
    if failures > 0 {
        return Err(format!(
            "{failures} side(s) of the P8 measurements failed (their rows and entries say why)"
        ));
    }
    Ok(())
}
