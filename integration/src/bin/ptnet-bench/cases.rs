//! The measured cases: ptnet's topologies (null, pipe, VALE) and DPDK's shapes, where each
//! process runs, and one comparison (ptnet against DPDK's best shape, alternating runs).

use crate::opts::Opts;
use crate::report::{Json, Runs};
use crate::{dpdk, ptnet};
use ptnet_integration::Bins;
use std::time::Instant;

/// Where things ran, for the output.
#[derive(Clone, Debug)]
pub struct Placement(pub Vec<(String, String)>);

impl Placement {
    pub fn json(&self) -> Json {
        let mut o = Json::obj();
        for (k, v) in &self.0 {
            o.set(k, v.as_str());
        }
        o
    }
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A [`Placement`] from (process, CPUs) pairs.
pub fn pl(v: &[(&str, &str)]) -> Placement {
    Placement(
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

/// Owned strings.
pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The ptnet pipe/VALE/null cases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Topo {
    Null,
    Pipe,
    Vale,
}

/// The daemon's slots per ring when a port does not say.
pub const DEFAULT_SLOTS: u32 = 1024;

pub struct PtParams {
    pub topo: Topo,
    pub batch: u32,
    pub rings: u32,
    /// Slots per ring (the daemon's default, netmap's, is 1024).
    pub slots: u32,
    pub len: usize,
}

impl PtParams {
    pub fn base(topo: Topo) -> Self {
        Self {
            topo,
            batch: 512,
            rings: 1,
            slots: DEFAULT_SLOTS,
            len: 60,
        }
    }
}

// CPU placement (2 CPUs): the sender on CPU 0, the receiving side on CPU 1; the daemon on CPU 1
// when there is no receiver process (P1), else free to run on both (its two ring threads follow
// the sender and the receiver respectively).
pub const PT_P1: (&str, &str) = ("0", "1"); // (tx, daemon)
pub const PT_P2: (&str, &str, &str) = ("0", "1", "0,1"); // (tx, rx, daemon)

/// The daemon's TX ring threads run with the sender (CPU 0), its RX ring threads with the
/// receiver (CPU 1); `PTNET_BENCH_PIN_RINGS=0` leaves them to the scheduler (either CPU).
fn pin_rings() -> bool {
    std::env::var("PTNET_BENCH_PIN_RINGS").map_or(true, |v| v != "0")
}

pub fn pt_case(p: &PtParams, daemon_args: &[String]) -> (ptnet::Case, Placement) {
    let mut opts = Vec::new();
    if p.rings > 1 {
        opts.push(format!("rings={}", p.rings));
    }
    if p.slots != DEFAULT_SLOTS {
        opts.push(format!("slots={}", p.slots));
    }
    let conf = if opts.is_empty() {
        String::new()
    } else {
        format!("@conf:{}", opts.join(","))
    };
    // `--fast`: pkt-gen sends as netmap's does (each buffer prepared once, the receiver only
    // counts), DPDK's testpmd txonly/rxonly being the same kind of sender and sink. The tests
    // use pkt-gen's default, checking mode.
    let gen = |f: &str| {
        s(&[
            "--fast",
            "-f",
            f,
            "-l",
            &p.len.to_string(),
            "-b",
            &p.batch.to_string(),
        ])
    };
    match p.topo {
        Topo::Null => (
            ptnet::Case {
                ports: vec![format!("null:sink{conf}")],
                daemon_cpus: PT_P1.1.into(),
                daemon_args: daemon_args.to_vec(),
                tx: ptnet::Gen {
                    port: format!("null:sink{conf}"),
                    cpus: PT_P1.0.into(),
                    args: gen("tx"),
                },
                rx: None,
                thread_pins: Vec::new(),
            },
            pl(&[
                ("ptnet-pkt-gen tx", "cpu 0"),
                ("ptnet-backend (all threads)", "cpu 1"),
                ("measured", "pkt-gen tx periodic reports"),
            ]),
        ),
        Topo::Pipe | Topo::Vale => {
            let (a, b) = if p.topo == Topo::Pipe {
                ("netmap:bp{1", "netmap:bp}1")
            } else {
                ("vale0:1", "vale0:2")
            };
            let (a, b) = (format!("{a}{conf}"), format!("{b}{conf}"));
            (
                ptnet::Case {
                    ports: vec![a.clone(), b.clone()],
                    daemon_cpus: PT_P2.2.into(),
                    daemon_args: daemon_args.to_vec(),
                    tx: ptnet::Gen {
                        port: a,
                        cpus: PT_P2.0.into(),
                        args: gen("tx"),
                    },
                    rx: Some(ptnet::Gen {
                        port: b.clone(),
                        cpus: PT_P2.1.into(),
                        args: gen("rx"),
                    }),
                    thread_pins: if pin_rings() {
                        // Ring thread names: "<port>-tx<i>" / "<port>-rx<i>", cut to 15 bytes.
                        vec![
                            ("-tx".into(), PT_P2.0.into()),
                            ("-rx".into(), PT_P2.1.into()),
                        ]
                    } else {
                        Vec::new()
                    },
                },
                if pin_rings() {
                    pl(&[
                        ("ptnet-pkt-gen tx", "cpu 0"),
                        ("ptnet-pkt-gen rx", "cpu 1"),
                        ("ptnet-backend TX ring threads", "cpu 0"),
                        ("ptnet-backend RX ring threads", "cpu 1"),
                        ("ptnet-backend other threads", "cpus 0-1"),
                        ("measured", "pkt-gen rx periodic reports"),
                    ])
                } else {
                    pl(&[
                        ("ptnet-pkt-gen tx", "cpu 0"),
                        ("ptnet-pkt-gen rx", "cpu 1"),
                        (
                            "ptnet-backend (all threads)",
                            "cpus 0-1 (scheduler's choice)",
                        ),
                        ("measured", "pkt-gen rx periodic reports"),
                    ])
                },
            )
        }
    }
}

/// The DPDK topologies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// P1: virtio-user txonly -> vhost rxonly.
    Sink,
    /// P2/P3 as specified: virtio-user txonly -> vhost io (2 ports) -> virtio-user rxonly: three
    /// busy-polling processes on two CPUs.
    Chain,
    /// P2/P3 in two processes: one testpmd with both virtio-user ports in `flowgen` mode (sends on
    /// each, receives and frees on each) -> vhost io between the two vhost ports. Delivered
    /// packets counted on both receiving ports. One busy poller per CPU: DPDK's best on 2 CPUs.
    Flowgen,
}

impl Shape {
    pub fn key(self) -> &'static str {
        match self {
            Shape::Sink => "sink",
            Shape::Chain => "chain3",
            Shape::Flowgen => "flowgen2",
        }
    }
}

/// One DPDK run; Mpps from testpmd's own statistics.
fn dpdk_run(
    cfg: &dpdk::Config,
    shape: Shape,
    len: usize,
    warm: f64,
    secs: f64,
) -> Result<f64, String> {
    let dir = ptnet_integration::TempDir::new("dpdk").map_err(|e| e.to_string())?;
    let s0 = dir.path().join("vhost0.sock");
    let s1 = dir.path().join("vhost1.sock");
    let two = shape != Shape::Sink;
    let mut host = dpdk::Testpmd::start(
        cfg,
        &dpdk::Spec {
            name: "ptb-vhost".into(),
            cpu: 1,
            vdevs: if two {
                vec![dpdk::Spec::vhost(0, &s0), dpdk::Spec::vhost(1, &s1)]
            } else {
                vec![dpdk::Spec::vhost(0, &s0)]
            },
            fwd: if two { "io" } else { "rxonly" }.into(),
        },
        len,
    )?;
    dpdk::wait_socket(&s0, &mut host.proc)?;
    if two {
        dpdk::wait_socket(&s1, &mut host.proc)?;
    }
    let rx = if shape == Shape::Chain {
        Some(dpdk::Testpmd::start(
            cfg,
            &dpdk::Spec {
                name: "ptb-rx".into(),
                cpu: 1,
                vdevs: vec![dpdk::Spec::virtio_user(cfg, 0, &s1)],
                fwd: "rxonly".into(),
            },
            len,
        )?)
    } else {
        None
    };
    let tx = dpdk::Testpmd::start(
        cfg,
        &dpdk::Spec {
            name: "ptb-tx".into(),
            cpu: 0,
            vdevs: if shape == Shape::Flowgen {
                vec![
                    dpdk::Spec::virtio_user(cfg, 0, &s0),
                    dpdk::Spec::virtio_user(cfg, 1, &s1),
                ]
            } else {
                vec![dpdk::Spec::virtio_user(cfg, 0, &s0)]
            },
            fwd: if shape == Shape::Flowgen {
                "flowgen"
            } else {
                "txonly"
            }
            .into(),
        },
        len,
    )?;
    // Traffic has started: testpmd printed its first statistics.
    let t0 = Instant::now();
    let from = t0 + std::time::Duration::from_secs_f64(warm);
    let to = from + std::time::Duration::from_secs_f64(secs);
    let (measured, ports): (&dpdk::Testpmd, &[u32]) = match shape {
        Shape::Sink => (&host, &[0]),
        Shape::Chain => (rx.as_ref().expect("chain has a receiver"), &[0]),
        Shape::Flowgen => (&tx, &[0, 1]),
    };
    crate::proc::sleep_until(to);
    dpdk::wait_sample_after(&measured.proc, to, std::time::Duration::from_secs(5));
    let r = dpdk::window_mpps_sum(&measured.proc.stdout(), ports, from, to);
    let tail = measured.proc.tail(15);
    drop(tx);
    drop(rx);
    drop(host);
    r.ok_or_else(|| format!("no testpmd statistics in the window:\n{tail}"))
}

pub fn dpdk_placement(shape: Shape) -> Placement {
    match shape {
        Shape::Sink => pl(&[
            ("testpmd virtio-user txonly (main+fwd lcore)", "cpu 0"),
            ("testpmd vhost rxonly (main+fwd lcore)", "cpu 1"),
            ("measured", "vhost testpmd Rx-pps (--stats-period 1)"),
        ]),
        Shape::Chain => pl(&[
            ("testpmd virtio-user txonly (main+fwd lcore)", "cpu 0"),
            ("testpmd vhost io, 2 vhost ports (main+fwd lcore)", "cpu 1"),
            ("testpmd virtio-user rxonly (main+fwd lcore)", "cpu 1"),
            ("measured", "rxonly testpmd Rx-pps (--stats-period 1)"),
        ]),
        Shape::Flowgen => pl(&[
            (
                "testpmd 2 virtio-user ports, flowgen (main+fwd lcore)",
                "cpu 0",
            ),
            ("testpmd vhost io, 2 vhost ports (main+fwd lcore)", "cpu 1"),
            (
                "measured",
                "sum of Rx-pps of both virtio-user ports (--stats-period 1)",
            ),
        ]),
    }
}

pub struct Cmp {
    pub ptnet: Runs,
    /// Per DPDK shape: runs and where things ran.
    pub dpdk_shapes: Vec<(Shape, Runs)>,
    pub pt_place: Placement,
    pub target: f64,
    /// DPDK runs that failed: (shape, error). The other runs are kept.
    pub dpdk_errors: Vec<(Shape, String)>,
}

impl Cmp {
    /// DPDK's best shape (highest median).
    pub fn best(&self) -> Option<&(Shape, Runs)> {
        self.dpdk_shapes
            .iter()
            .filter(|(_, r)| !r.0.is_empty())
            .max_by(|a, b| a.1.median().total_cmp(&b.1.median()))
    }
    pub fn dpdk(&self) -> Runs {
        self.best().map(|(_, r)| r.clone()).unwrap_or_default()
    }
    pub fn ratio(&self) -> f64 {
        self.ptnet.median() / self.dpdk().median()
    }
    pub fn json(&self) -> Json {
        let mut o = Json::obj();
        o.set("ptnet_mpps", self.ptnet.median())
            .set("dpdk_mpps", self.dpdk().median())
            .set("ratio", self.ratio())
            .set("target_ratio", self.target)
            .set("met", self.ratio() >= self.target)
            .set("ptnet", self.ptnet.json())
            .set("ptnet_placement", self.pt_place.json());
        if let Some((shape, _)) = self.best() {
            o.set("dpdk_best_shape", shape.key());
        }
        let mut shapes = Json::obj();
        for (shape, r) in &self.dpdk_shapes {
            let mut e = r.json();
            e.set("placement", dpdk_placement(*shape).json());
            shapes.set(shape.key(), e);
        }
        o.set("dpdk", shapes);
        if !self.dpdk_errors.is_empty() {
            let mut e = Json::obj();
            for (shape, err) in &self.dpdk_errors {
                e.set(shape.key(), err.as_str());
            }
            o.set("dpdk_failed_runs", e);
        }
        o
    }
}

pub fn compare(o: &Opts, bins: &Bins, name: &str, topo: Topo, target: f64) -> Result<Cmp, String> {
    let (case, pt_place) = pt_case(&PtParams::base(topo), &o.daemon_args);
    let shapes: &[Shape] = match (o.dpdk, topo) {
        (false, _) => &[],
        (true, Topo::Null) => &[Shape::Sink],
        (true, _) => &[Shape::Chain, Shape::Flowgen],
    };
    let mut c = Cmp {
        ptnet: Runs::default(),
        dpdk_shapes: shapes.iter().map(|&s| (s, Runs::default())).collect(),
        pt_place,
        target,
        dpdk_errors: Vec::new(),
    };
    // Alternate: ptnet, then each DPDK shape, per repetition.
    for rep in 0..o.reps {
        let m = ptnet::throughput(bins, &case, o.warm, o.secs)?;
        eprintln!("bench: {name} run {} ptnet {m:.3} Mpps", rep + 1);
        c.ptnet.0.push(m);
        for (shape, runs) in &mut c.dpdk_shapes {
            let m = match dpdk_run(&o.dpdk_cfg, *shape, 60, o.warm, o.secs) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!(
                        "bench: {name} run {} dpdk {} FAILED: {e}",
                        rep + 1,
                        shape.key()
                    );
                    c.dpdk_errors.push((*shape, e));
                    continue;
                }
            };
            eprintln!(
                "bench: {name} run {} dpdk {} {m:.3} Mpps",
                rep + 1,
                shape.key()
            );
            runs.0.push(m);
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_options_are_written_only_when_not_the_default() {
        let mut p = PtParams::base(Topo::Pipe);
        assert_eq!(pt_case(&p, &[]).0.ports, ["netmap:bp{1", "netmap:bp}1"]);
        (p.rings, p.slots) = (2, 4096);
        let ports = pt_case(&p, &[]).0.ports;
        assert_eq!(
            ports,
            [
                "netmap:bp{1@conf:rings=2,slots=4096",
                "netmap:bp}1@conf:rings=2,slots=4096"
            ]
        );
        p.rings = 1;
        assert_eq!(pt_case(&p, &[]).0.ports[0], "netmap:bp{1@conf:slots=4096");
    }
}
