//! The workloads, as a table ([`WORKLOADS`]): what `--only` selects, in the order they run, and
//! how each one is measured and reported (its rows of the printed table, its entries of the
//! results file).

use crate::cases::{compare, dpdk_placement, pt_case, PtParams, Topo};
use crate::opts::Opts;
use crate::report::{Json, Runs};
use crate::{ptnet, single};
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
    /// pkt-gen tx into each host-interface port kind ([`crate::single::NIC_PORTS`]).
    Nic,
    /// One parameter of the pipe case (P2) swept over `points`, ptnet only.
    Scaling {
        /// The parameter's values.
        points: &'static [u64],
        /// Sets it in the pipe case.
        apply: fn(&mut PtParams, u64),
    },
    /// A workload that measures and reports by itself (its own module): it adds its rows to
    /// [`Report::table`] and its entries to [`Report::res`]. An error marks it failed.
    Run(RunFn),
}

/// What a [`Kind::Run`] workload runs.
pub type RunFn = fn(&Opts, &Bins, &Workload, &mut Report) -> Result<(), String>;

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

fn set_slots(p: &mut PtParams, x: u64) {
    p.slots = x as u32;
}

fn set_len(p: &mut PtParams, x: u64) {
    p.len = x as usize;
}

/// Every workload, in the order they run. A new one is one entry here (a [`Kind::Run`] for one
/// that lives in its own module).
pub const WORKLOADS: &[Workload] = &[
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
        // On 2 CPUs the sender and the daemon's TX ring thread share CPU 0 and switch once a
        // ring's worth of packets: the ring size sets how often (the P2 bound, see README).
        key: "slots",
        name: "scaling pipe",
        kind: Kind::Scaling {
            points: &[1024, 2048, 4096],
            apply: set_slots,
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
    Workload {
        key: "p8",
        name: "P8 CPU-s/Mpkt at a fixed load,",
        kind: Kind::Run(crate::cost::run),
    },
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
    failed: Vec<&'static str>,
    out: &'a Path,
}

/// P2 (pipe) over P3 (VALE), ptnet's medians, asked for.
pub const P2_OVER_P3: f64 = 2.0;

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
            failed: Vec::new(),
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

    /// Records that `w` failed with `err`: in the results file (`failures`; and, when the
    /// workload recorded nothing of its own, its entry and a row of the table).
    pub fn fail(&mut self, w: &Workload, err: &str) {
        let mut f = match self.res.get("failures") {
            Some(f) => f.clone(),
            None => Json::obj(),
        };
        f.set(w.key, err);
        self.res.set("failures", f);
        // A workload that recorded partial results wrote its own rows (its failed parts say so).
        if self.res.get(w.key).is_none() {
            let mut e = Json::obj();
            e.set("failed", true).set("error", err);
            self.res.set(w.key, e);
            let first = err.lines().next().unwrap_or("");
            self.table.push([
                w.name.into(),
                format!("FAILED: {first}"),
                "-".into(),
                "-".into(),
                "-".into(),
                "FAILED".into(),
            ]);
        }
        self.failed.push(w.key);
    }

    /// The workloads that failed so far.
    pub fn failed(&self) -> &[&'static str] {
        &self.failed
    }

    /// Once P2 and P3 both ran: the zero-copy pipe against the copying switch (ptnet's medians),
    /// as a row and as `p2_over_p3`.
    pub fn pipe_over_switch(&mut self) {
        let (Some(p2), Some(p3)) = (self.ptnet_mpps("p2"), self.ptnet_mpps("p3")) else {
            return;
        };
        let ratio = p2 / p3;
        let mut e = Json::obj();
        e.set("p2_ptnet_mpps", p2)
            .set("p3_ptnet_mpps", p3)
            .set("ratio", ratio)
            .set("target_ratio", P2_OVER_P3)
            .set("met", ratio >= P2_OVER_P3);
        self.res.set("p2_over_p3", e);
        self.table.push([
            "P2 / P3 ptnet (zero copy vs one copy)".into(),
            format!("{p2:.3} / {p3:.3}"),
            "-".into(),
            ratio_text(ratio),
            format!(">= {P2_OVER_P3}x"),
            met_text(ratio >= P2_OVER_P3, ratio),
        ]);
    }

    fn ptnet_mpps(&self, key: &str) -> Option<f64> {
        match self.res.get(key)?.get("ptnet_mpps")? {
            Json::Num(x) if x.is_finite() => Some(*x),
            _ => None,
        }
    }

    /// A row with only a ptnet figure.
    pub fn figure(&mut self, name: String, ptnet: String) {
        let dash = || "-".to_string();
        self.table
            .push([name, ptnet, dash(), dash(), dash(), dash()]);
    }
}

pub fn yes(met: bool) -> String {
    if met { "yes" } else { "NO" }.into()
}

/// "2.71x", or "-" when there is no ratio (no DPDK side, a side failed).
pub fn ratio_text(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "-".into()
    }
}

/// "yes" / "NO", or "-" when there is no ratio to judge.
pub fn met_text(met: bool, r: f64) -> String {
    if r.is_finite() {
        yes(met)
    } else {
        "-".into()
    }
}

/// Runs workload `w` and adds what it measured to `rep`.
pub fn run(o: &Opts, bins: &Bins, w: &Workload, rep: &mut Report) -> Result<(), String> {
    match w.kind {
        Kind::Compare { topo, target } => compared(o, bins, w, topo, target, rep),
        Kind::IdleCpu => single::idle_cpu(o, bins, w, rep),
        Kind::PingPong => single::ping_pong(o, bins, w, rep),
        Kind::Virtio { p7, target } => crate::virtio::run(o, bins, w.name, w.key, p7, target, rep),
        Kind::Nic => single::nic_ports(o, bins, w, rep),
        Kind::Scaling { points, apply } => scaling(o, bins, w, points, apply, rep),
        Kind::Run(f) => f(o, bins, w, rep),
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
    let dpdk = match (c.best(), c.dpdk_errors.first()) {
        (None, Some((_, e))) => format!("FAILED: {}", e.lines().next().unwrap_or("")),
        _ => format!("{} {best}", c.dpdk().show()),
    };
    rep.table.push([
        w.name.into(),
        c.ptnet.show(),
        dpdk,
        ratio_text(c.ratio()),
        format!(">= {target}x"),
        met_text(c.ratio() >= target, c.ratio()),
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
    if key == "p2" {
        crate::floors::p2_bounds(o, rep)?;
    }
    match c.dpdk_errors.first() {
        None => Ok(()),
        Some((shape, e)) => Err(format!(
            "{} DPDK run(s) failed (ptnet's and the other runs are kept); {}: {e}",
            c.dpdk_errors.len(),
            shape.key()
        )),
    }
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

    /// Every workload has its own `--only` name, and the usage text lists them all, in order.
    #[test]
    fn usage_lists_every_workload() {
        let keys: Vec<&str> = WORKLOADS.iter().map(|w| w.key).collect();
        let mut uniq = keys.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), keys.len(), "{keys:?}");
        assert!(crate::opts::usage().contains(&keys.join(",")), "{keys:?}");
        for k in [
            "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "nic", "batch", "rings", "slots",
            "size",
        ] {
            assert!(keys.contains(&k), "{k}");
        }
    }

    /// A failed workload keeps what the others recorded, gets its own entry and row, and is
    /// listed; a workload that recorded partial results keeps them.
    #[test]
    fn a_failed_workload_is_recorded_beside_the_others() {
        let out = std::path::Path::new("/nonexistent/results.json");
        let mut rep = Report::new(out, Json::obj());
        rep.res.set("p1", 1.0);
        rep.fail(&WORKLOADS[1], "p2: ptnet-backend exited\nmore");
        let mut part = Json::obj();
        part.set("tap", 0.4);
        rep.res.set("nic", part);
        let nic = WORKLOADS.iter().find(|w| w.key == "nic").unwrap();
        rep.fail(nic, "nic xdp: busy");
        let text = rep.res.render();
        assert!(text.contains("\"p1\": 1"), "{text}");
        assert!(text.contains("\"failed\": true"), "{text}");
        assert!(text.contains("\"tap\": 0.4"), "{text}");
        assert_eq!(rep.failed(), ["p2", "nic"]);
        assert_eq!(rep.table.len(), 1, "only p2 gets a row of its own");
        assert_eq!(rep.table[0][1], "FAILED: p2: ptnet-backend exited");
        assert_eq!(ratio_text(f64::NAN), "-");
        assert_eq!(met_text(false, f64::NAN), "-");
        assert_eq!(ratio_text(2.714), "2.71x");
    }

    /// Each sweep changes only its own parameter, to each of its points.
    #[test]
    fn sweeps_set_their_parameter() {
        for w in WORKLOADS {
            let Kind::Scaling { points, apply } = w.kind else {
                continue;
            };
            for &x in points {
                let mut p = PtParams::base(Topo::Pipe);
                apply(&mut p, x);
                let got = match w.key {
                    "batch" => u64::from(p.batch),
                    "rings" => u64::from(p.rings),
                    "slots" => u64::from(p.slots),
                    _ => p.len as u64,
                };
                assert_eq!(got, x, "{}", w.key);
            }
        }
    }
}
