//! The workloads, as a table ([`WORKLOADS`]): what `--only` selects, in the order they run, and
//! how each one is measured and reported (its rows of the printed table, its entries of the
//! results file).

use crate::cases::{compare, dpdk_placement, pl, pt_case, s, PtParams, Topo, PT_P1};
use crate::opts::Opts;
use crate::report::{Json, Runs};
use crate::{proc, ptnet};
use ptnet_integration::Bins;
use std::path::Path;

/// How a workload is measured.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// ptnet against DPDK on one topology, alternating runs; `target` is the ratio the spec asks
    /// ptnet to reach.
    Compare {
        /// ptnet's topology (DPDK's shapes follow from it).
        topo: Topo,
        /// The ratio ptnet / DPDK asked for.
        target: f64,
    },
    /// DPDK virtio-user into our virtio-net device vs DPDK's vhost PMD (`virtio.rs`): P6 into
    /// `null:` (`p7` false), P7 through VALE.
    Virtio {
        /// P7 rather than P6.
        p7: bool,
        /// The ratio asked for.
        target: f64,
    },
    /// The daemon's CPU with 64 idle VALE ports.
    IdleCpu,
    /// Ping-pong round trips through a pipe.
    PingPong,
    /// pkt-gen tx into each host-interface port kind ([`NIC_PORTS`]).
    Nic,
    /// One parameter of the pipe case (P2) swept over `points`, ptnet only.
    Scaling {
        /// The parameter's values.
        points: &'static [u64],
        /// Sets it in the pipe case.
        apply: fn(&mut PtParams, u64),
    },
}

/// One workload.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Its `--only` name (and, for P1-P3, its key in the results file).
    pub key: &'static str,
    /// Its name in the printed table (for the sweeps and the NIC ports, the prefix of each row's).
    pub name: &'static str,
    /// What is measured.
    pub kind: Kind,
}

fn set_batch(p: &mut PtParams, x: u64) {
    p.batch = x as u32;
}

fn set_rings(p: &mut PtParams, x: u64) {
    p.rings = x as u32;
}

fn set_len(p: &mut PtParams, x: u64) {
    p.len = x as usize;
}

/// Every workload, in the order they run.
pub const WORKLOADS: [Workload; 11] = [
    Workload {
        key: "p1",
        name: "P1 tx -> daemon -> null",
        kind: Kind::Compare {
            topo: Topo::Null,
            target: 4.0,
        },
    },
    Workload {
        key: "p2",
        name: "P2 tx -> pipe -> rx",
        kind: Kind::Compare {
            topo: Topo::Pipe,
            target: 4.0,
        },
    },
    Workload {
        key: "p3",
        name: "P3 tx -> VALE -> rx",
        kind: Kind::Compare {
            topo: Topo::Vale,
            target: 2.0,
        },
    },
    Workload {
        key: "p4",
        name: "P4 daemon CPU, 64 idle ports",
        kind: Kind::IdleCpu,
    },
    Workload {
        key: "p5",
        name: "P5 ping-pong RTT over a pipe (us)",
        kind: Kind::PingPong,
    },
    Workload {
        key: "p6",
        name: "P6 virtio-user tx -> daemon -> null",
        kind: Kind::Virtio {
            p7: false,
            target: 1.5,
        },
    },
    Workload {
        key: "p7",
        name: "P7 virtio-user tx -> VALE -> rx",
        kind: Kind::Virtio {
            p7: true,
            target: 1.5,
        },
    },
    Workload {
        key: "nic",
        name: "NIC port",
        kind: Kind::Nic,
    },
    Workload {
        key: "batch",
        name: "scaling pipe",
        kind: Kind::Scaling {
            points: &[1, 8, 64, 512],
            apply: set_batch,
        },
    },
    Workload {
        key: "rings",
        name: "scaling pipe",
        kind: Kind::Scaling {
            points: &[1, 2, 4],
            apply: set_rings,
        },
    },
    Workload {
        key: "size",
        name: "scaling pipe",
        kind: Kind::Scaling {
            points: &[60, 256, 1514],
            apply: set_len,
        },
    },
];

/// The host-interface ports of the `nic` workload: (kind, port).
const NIC_PORTS: [(&str, &str); 3] = [
    ("tap", "tap:ptbencht"),
    ("packet", "packet:ptbench0"),
    ("xdp", "xdp:ptbench0"),
];

/// What the run produced so far: the results file's content, the table's rows, where things ran.
pub struct Report<'a> {
    /// The results file's object.
    pub res: Json,
    /// The printed table's rows.
    pub table: Vec<[String; 6]>,
    /// "workload side: placement" lines.
    pub places: Vec<String>,
    scaling: Json,
    out: &'a Path,
}

impl<'a> Report<'a> {
    /// An empty report written to `out`, starting with `meta`.
    pub fn new(out: &'a Path, meta: Json) -> Self {
        let mut res = Json::obj();
        res.set("meta", meta);
        Self {
            res,
            table: Vec::new(),
            places: Vec::new(),
            scaling: Json::obj(),
            out,
        }
    }

    /// Writes the results file.
    pub fn save(&self) -> Result<(), String> {
        if let Some(d) = self.out.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(self.out, self.res.render())
            .map_err(|e| format!("{}: {e}", self.out.display()))
    }

    /// A row with only a ptnet figure.
    fn figure(&mut self, name: String, ptnet: String) {
        let dash = || "-".to_string();
        self.table
            .push([name, ptnet, dash(), dash(), dash(), dash()]);
    }
}

fn yes(met: bool) -> String {
    if met { "yes" } else { "NO" }.into()
}

/// Runs workload `w` and adds what it measured to `rep`.
pub fn run(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    match w.kind {
        Kind::Compare { topo, target } => compared(o, bins, w, topo, target, rep),
        Kind::IdleCpu => idle_cpu(o, bins, w, rep),
        Kind::PingPong => ping_pong(o, bins, w, rep),
        Kind::Virtio { p7, target } => crate::virtio::run(o, bins, w.name, w.key, p7, target, rep),
        Kind::Nic => nic_ports(o, bins, w, rep),
        Kind::Scaling { points, apply } => scaling(o, bins, w, points, apply, rep),
    }
}

fn compared(
    o: &Opts,
    bins: &Bins,
    w: &Workload,
    topo: Topo,
    target: f64,
    rep: &mut Report,
) -> Result<(), String> {
    let key = w.key;
    let c = compare(o, bins, key, topo, target)?;
    let best = c.best().map_or("", |(s, _)| s.key());
    rep.table.push([
        w.name.into(),
        c.ptnet.show(),
        format!("{} {best}", c.dpdk().show()),
        format!("{:.2}x", c.ratio()),
        format!(">= {target}x"),
        yes(c.ratio() >= target),
    ]);
    rep.places
        .push(format!("{key} ptnet: {}", c.pt_place.text()));
    for (shape, _) in &c.dpdk_shapes {
        rep.places.push(format!(
            "{key} dpdk {}: {}",
            shape.key(),
            dpdk_placement(*shape).text()
        ));
    }
    rep.res.set(key, c.json());
    Ok(())
}

fn idle_cpu(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
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

fn ping_pong(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
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
    let floor = proc::eventfd_floor(if o.quick { 5_000 } else { 50_000 });
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
            "two threads (cpu 0, cpu 1) bouncing a token through two eventfds: the cost of 2 \
             cross-CPU wake-ups on this machine; a ptnet ping-pong through a pipe takes 6 \
             (ping->tx thread->rx thread->pong->tx thread->rx thread->ping) when nothing spins",
        );
    let mut rtt = Json::obj();
    rtt.set("p50", p50.median())
        .set("p99", p99.median())
        .set("p999", p999.median());
    rep.res.set("p5_rtt_us", rtt);
    let mut p5 = Json::obj();
    p5.set("pings_per_run", count)
        .set("p50", p50.json())
        .set("p99", p99.json())
        .set("p999", p999.json())
        .set("floor_eventfd_rtt_us", fl)
        .set("target_p99_us", 20.0)
        .set("met", p99.median() < 20.0)
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
        format!("floor p50 {:.1} p99 {:.1}", floor.0, floor.1),
        "-".into(),
        "p99 < 20 us".into(),
        yes(p99.median() < 20.0),
    ]);
    Ok(())
}

/// Mpps per host-interface port kind: pkt-gen tx into `tap:`, `packet:` and `xdp:` ports over a
/// veth pair and a tap made here (and removed after). The copies into the kernel are the cost.
fn nic_ports(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    let cleanup = || {
        let _ = proc::sh("ip", &["link", "del", "ptbench0"]);
        let _ = proc::sh("ip", &["link", "del", "ptbencht"]);
    };
    cleanup();
    let setup = || -> Result<(), String> {
        proc::sh(
            "ip",
            &[
                "link", "add", "ptbench0", "type", "veth", "peer", "name", "ptbench1",
            ],
        )?;
        proc::sh("ip", &["tuntap", "add", "dev", "ptbencht", "mode", "tap"])?;
        for dev in ["ptbench0", "ptbench1", "ptbencht"] {
            proc::sh("ip", &["link", "set", dev, "up"])?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        cleanup();
        return Err(format!("nic workload setup: {e}"));
    }
    let mut out = Json::obj();
    for (kind, port) in NIC_PORTS {
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
        for i in 0..o.reps {
            match ptnet::throughput(bins, &case, o.warm, o.secs) {
                Ok(m) => {
                    eprintln!("bench: nic {kind} run {} ptnet {m:.3} Mpps", i + 1);
                    r.0.push(m);
                }
                Err(e) => {
                    cleanup();
                    return Err(format!("nic {kind}: {e}"));
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
        out.set(kind, e);
        rep.figure(
            format!("{} {kind}: tx -> daemon -> kernel", w.name),
            format!("{:.3}", r.median()),
        );
    }
    cleanup();
    rep.res.set("nic", out);
    Ok(())
}

fn scaling(
    o: &Opts,
    bins: &Bins,
    w: &Workload,
    points: &[u64],
    apply: fn(&mut PtParams, u64),
    rep: &mut Report,
) -> Result<(), String> {
    let what = w.key;
    let mut arr = Vec::new();
    let mut place = None;
    for &x in points {
        let mut p = PtParams::base(Topo::Pipe);
        apply(&mut p, x);
        let (case, pt_place) = pt_case(&p, &o.daemon_args);
        place = Some(pt_place);
        let mut r = Runs::default();
        for i in 0..o.reps {
            let m = ptnet::throughput(bins, &case, o.warm, o.secs)?;
            eprintln!("bench: scaling {what}={x} run {} ptnet {m:.3} Mpps", i + 1);
            r.0.push(m);
        }
        let mut e = Json::obj();
        e.set(what, x)
            .set("mpps", r.median())
            .set("gbps", r.median() * p.len as f64 * 8.0 / 1e3)
            .set("ptnet", r.json());
        arr.push(e);
        rep.figure(
            format!("{} {what}={x}", w.name),
            format!("{:.3}", r.median()),
        );
    }
    let mut j = Json::obj();
    j.set("topology", "pipe (as P2), ptnet only")
        .set("points", Json::Arr(arr));
    if let Some(p) = place {
        j.set("placement", p.json());
    }
    rep.scaling.set(what, j);
    rep.res.set("scaling", rep.scaling.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--only` takes exactly the table's keys, and the usage text lists them all, in order.
    #[test]
    fn usage_lists_every_workload() {
        let keys: Vec<&str> = WORKLOADS.iter().map(|w| w.key).collect();
        let list = keys.join(",");
        assert!(crate::opts::USAGE.contains(&list), "{list}");
        assert_eq!(
            keys,
            ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "nic", "batch", "rings", "size"]
        );
    }

    /// Each sweep changes only its own parameter, to each of its points.
    #[test]
    fn sweeps_set_their_parameter() {
        for w in &WORKLOADS {
            let Kind::Scaling { points, apply } = w.kind else {
                continue;
            };
            for &x in points {
                let mut p = PtParams::base(Topo::Pipe);
                apply(&mut p, x);
                let got = match w.key {
                    "batch" => u64::from(p.batch),
                    "rings" => u64::from(p.rings),
                    _ => p.len as u64,
                };
                assert_eq!(got, x, "{}", w.key);
            }
        }
    }
}
