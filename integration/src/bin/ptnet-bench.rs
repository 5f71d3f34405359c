//! `ptnet-bench` (run by `cargo xtask bench`): ptnet against DPDK vhost-user, in one run.
//!
//! ```text
//! cargo xtask bench                 # the full spec: 3+3 alternating runs of 10 s per workload
//! cargo xtask bench --quick         # 1+1 runs of 2 s, for development
//! cargo xtask bench --only p1,p5    # a subset (p1 p2 p3 p4 p5 nic batch rings size)
//! ```
//!
//! Workloads (60-byte frames, batch 512 unless varied):
//! * P1 sender -> daemon -> `null:` sink, vs testpmd virtio-user txonly -> vhost testpmd rxonly.
//! * P2 sender -> pipe -> receiver, vs virtio-user txonly -> vhost testpmd io -> virtio-user rxonly.
//! * P3 the same through VALE.
//! * P4 daemon CPU with 64 idle VALE ports (% of one core, /proc/PID/stat utime+stime).
//! * P5 ping-pong round trip through a pipe (p50, p99, p99.9).
//! * Scaling: batch 1/8/64/512, rings 1/2/4, frame sizes 60/256/1514 (over the pipe).
//!
//! Both sides get the same two CPUs, each process pinned (taskset / EAL `--lcores`); where each
//! ran is printed and written to `target/bench/results.json` with every figure. DPDK's rate is
//! taken from testpmd's own statistics (`--stats-period 1`, Rx-pps of the receiving port), ptnet's
//! from the receiving pkt-gen's periodic reports, both averaged over the same window after the
//! warm-up. The benchmark never fails on a figure; it fails only when something cannot run.

#[path = "../bench/dpdk.rs"]
mod dpdk;
#[path = "../bench/proc.rs"]
mod proc;
#[path = "../bench/ptnet.rs"]
mod ptnet;
#[path = "../bench/report.rs"]
mod report;

use ptnet_integration::host::workspace_root;
use ptnet_integration::Bins;
use report::{Json, Runs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: ptnet-bench [--quick] [--only LIST] [--secs S] [--warm S] [--reps N] [--no-dpdk]
                   [--dpdk-burst N] [--dpdk-virtio OPTS] [--daemon-args ARGS] [--out PATH]
  --quick            2 s runs after 1 s of warm-up, 1 run of each side (default: 10 s, 2 s, 3)
  --only LIST        comma-separated subset of: p1,p2,p3,p4,p5,nic,batch,rings,size
  --secs S           measured seconds per run        --warm S   warm-up seconds per run
  --reps N           runs of each side per workload  --no-dpdk  skip the DPDK side
  --dpdk-burst N     testpmd --burst (default 64)
  --dpdk-virtio OPTS extra virtio-user devargs (default in_order=1,mrg_rxbuf=0)
  --daemon-args ARGS extra ptnet-backend flags, space separated (e.g. --busy-poll)
  --out PATH         results file (default target/bench/results.json)";

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    secs: f64,
    warm: f64,
    reps: usize,
    dpdk: bool,
    dpdk_cfg: dpdk::Config,
    daemon_args: Vec<String>,
    out: PathBuf,
}

impl Opts {
    fn parse() -> Result<Self, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Opts {
            quick,
            only: None,
            secs: if quick { 2.0 } else { 10.0 },
            warm: if quick { 1.0 } else { 2.0 },
            reps: if quick { 1 } else { 3 },
            dpdk: true,
            dpdk_cfg: dpdk::Config::default(),
            daemon_args: Vec::new(),
            out: workspace_root().join("target/bench/results.json"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            let num = |s: String, name: &str| -> Result<f64, String> {
                s.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| format!("{name} {s}: not a positive number"))
            };
            match a.as_str() {
                "--quick" => {}
                "--only" => {
                    o.only = Some(val(a)?.split(',').map(|s| s.trim().to_string()).collect())
                }
                "--secs" => o.secs = num(val(a)?, a)?,
                "--warm" => o.warm = num(val(a)?, a)?,
                "--reps" => o.reps = num(val(a)?, a)? as usize,
                "--no-dpdk" => o.dpdk = false,
                "--dpdk-burst" => o.dpdk_cfg.burst = num(val(a)?, a)?.min(512.0) as u32,
                "--dpdk-virtio" => o.dpdk_cfg.virtio_opts = val(a)?,
                "--daemon-args" => {
                    o.daemon_args = val(a)?.split_whitespace().map(String::from).collect()
                }
                "--out" => o.out = PathBuf::from(val(a)?),
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        o.reps = o.reps.max(1);
        Ok(o)
    }

    fn wants(&self, w: &str) -> bool {
        self.only.as_ref().is_none_or(|l| l.iter().any(|x| x == w))
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn utc_now() -> String {
    proc::sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The commit, plus "+dirty" and the modified paths of the measured crates, if any.
fn git_head() -> String {
    let root = workspace_root();
    let r = root.display().to_string();
    let head = proc::sh("git", &["-C", &r, "rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = proc::sh(
        "git",
        &[
            "-C",
            &r,
            "status",
            "--porcelain",
            "--",
            "host-backend",
            "guest-driver",
            "protocol",
        ],
    )
    .unwrap_or_default();
    let files: Vec<&str> = dirty.lines().map(|l| l.get(3..).unwrap_or(l)).collect();
    if files.is_empty() {
        head.trim().to_string()
    } else {
        format!("{}+dirty ({})", head.trim(), files.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Setup

const HUGEPAGES: u64 = 1024;

fn setup_hugepages() -> Result<(), String> {
    let nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    let cur: u64 = std::fs::read_to_string(nr)
        .map_err(|e| format!("{nr}: {e}"))?
        .trim()
        .parse()
        .unwrap_or(0);
    if cur < HUGEPAGES {
        std::fs::write(nr, HUGEPAGES.to_string()).map_err(|e| format!("{nr}: {e}"))?;
        let now: u64 = std::fs::read_to_string(nr)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        eprintln!("bench: hugepages {cur} -> {now} (2 MB)");
        if now < HUGEPAGES / 2 {
            return Err(format!("could only reserve {now} hugepages"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    {
        std::fs::create_dir_all("/dev/hugepages").map_err(|e| e.to_string())?;
        proc::sh("mount", &["-t", "hugetlbfs", "nodev", "/dev/hugepages"])?;
        eprintln!("bench: mounted hugetlbfs on /dev/hugepages");
    }
    Ok(())
}

fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

fn setup_dpdk() -> Result<(), String> {
    if have(dpdk::TESTPMD) {
        return Ok(());
    }
    eprintln!("bench: installing dpdk (apt-get install -y dpdk dpdk-dev)");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "dpdk", "dpdk-dev"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))
    };
    let mut st = install()?;
    if !st.success() {
        // Stale or missing package lists: refresh them once.
        let _ = std::process::Command::new("apt-get")
            .args(["update", "-q"])
            .status();
        st = install()?;
    }
    if !st.success() || !have(dpdk::TESTPMD) {
        return Err("apt-get install dpdk dpdk-dev did not provide dpdk-testpmd".into());
    }
    Ok(())
}

fn setup_bins() -> Result<Bins, String> {
    if std::env::var_os("PTNET_HOST_PROFILE").is_none() {
        // Safe in edition 2021; done while still single-threaded, so nothing reads the
        // environment concurrently.
        std::env::set_var("PTNET_HOST_PROFILE", "release");
    }
    ptnet_integration::bins()
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// Where things ran, for the output.
#[derive(Clone, Debug)]
struct Placement(Vec<(String, String)>);

impl Placement {
    fn json(&self) -> Json {
        let mut o = Json::obj();
        for (k, v) in &self.0 {
            o.set(k, v.as_str());
        }
        o
    }
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn pl(v: &[(&str, &str)]) -> Placement {
    Placement(
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The ptnet pipe/VALE/null cases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topo {
    Null,
    Pipe,
    Vale,
}

struct PtParams {
    topo: Topo,
    batch: u32,
    rings: u32,
    len: usize,
}

impl PtParams {
    fn base(topo: Topo) -> Self {
        Self {
            topo,
            batch: 512,
            rings: 1,
            len: 60,
        }
    }
}

// CPU placement (2 CPUs): the sender on CPU 0, the receiving side on CPU 1; the daemon on CPU 1
// when there is no receiver process (P1), else free to run on both (its two ring threads follow
// the sender and the receiver respectively).
const PT_P1: (&str, &str) = ("0", "1"); // (tx, daemon)
const PT_P2: (&str, &str, &str) = ("0", "1", "0,1"); // (tx, rx, daemon)

/// The daemon's TX ring threads run with the sender (CPU 0), its RX ring threads with the
/// receiver (CPU 1); `PTNET_BENCH_PIN_RINGS=0` leaves them to the scheduler (either CPU).
fn pin_rings() -> bool {
    std::env::var("PTNET_BENCH_PIN_RINGS").map_or(true, |v| v != "0")
}

fn pt_case(p: &PtParams, daemon_args: &[String]) -> (ptnet::Case, Placement) {
    let conf = if p.rings > 1 {
        format!("@conf:rings={}", p.rings)
    } else {
        String::new()
    };
    let gen = |f: &str| {
        s(&[
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
enum Shape {
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
    fn key(self) -> &'static str {
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
    std::thread::sleep(
        to.saturating_duration_since(Instant::now()) + std::time::Duration::from_millis(600),
    );
    let (measured, ports): (&dpdk::Testpmd, &[u32]) = match shape {
        Shape::Sink => (&host, &[0]),
        Shape::Chain => (rx.as_ref().expect("chain has a receiver"), &[0]),
        Shape::Flowgen => (&tx, &[0, 1]),
    };
    let r = dpdk::window_mpps_sum(&measured.proc.stdout(), ports, from, to);
    let tail = measured.proc.tail(15);
    drop(tx);
    drop(rx);
    drop(host);
    r.ok_or_else(|| format!("no testpmd statistics in the window:\n{tail}"))
}

fn dpdk_placement(shape: Shape) -> Placement {
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

struct Cmp {
    ptnet: Runs,
    /// Per DPDK shape: runs and where things ran.
    dpdk_shapes: Vec<(Shape, Runs)>,
    pt_place: Placement,
    target: f64,
}

impl Cmp {
    /// DPDK's best shape (highest median).
    fn best(&self) -> Option<&(Shape, Runs)> {
        self.dpdk_shapes
            .iter()
            .filter(|(_, r)| !r.0.is_empty())
            .max_by(|a, b| a.1.median().total_cmp(&b.1.median()))
    }
    fn dpdk(&self) -> Runs {
        self.best().map(|(_, r)| r.clone()).unwrap_or_default()
    }
    fn ratio(&self) -> f64 {
        self.ptnet.median() / self.dpdk().median()
    }
    fn json(&self) -> Json {
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
        o
    }
}

fn compare(o: &Opts, bins: &Bins, name: &str, topo: Topo, target: f64) -> Result<Cmp, String> {
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
    };
    // Alternate: ptnet, then each DPDK shape, per repetition.
    for rep in 0..o.reps {
        let m = ptnet::throughput(bins, &case, o.warm, o.secs)?;
        eprintln!("bench: {name} run {} ptnet {m:.3} Mpps", rep + 1);
        c.ptnet.0.push(m);
        for (shape, runs) in &mut c.dpdk_shapes {
            let m = dpdk_run(&o.dpdk_cfg, *shape, 60, o.warm, o.secs)?;
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

fn scaling(o: &Opts, bins: &Bins, what: &str) -> Result<Json, String> {
    let points: Vec<(u64, PtParams)> = match what {
        "batch" => [1u32, 8, 64, 512]
            .iter()
            .map(|&b| {
                (
                    u64::from(b),
                    PtParams {
                        batch: b,
                        ..PtParams::base(Topo::Pipe)
                    },
                )
            })
            .collect(),
        "rings" => [1u32, 2, 4]
            .iter()
            .map(|&r| {
                (
                    u64::from(r),
                    PtParams {
                        rings: r,
                        ..PtParams::base(Topo::Pipe)
                    },
                )
            })
            .collect(),
        _ => [60usize, 256, 1514]
            .iter()
            .map(|&l| {
                (
                    l as u64,
                    PtParams {
                        len: l,
                        ..PtParams::base(Topo::Pipe)
                    },
                )
            })
            .collect(),
    };
    let mut arr = Vec::new();
    let mut place = None;
    for (x, p) in points {
        let (case, pt_place) = pt_case(&p, &o.daemon_args);
        place = Some(pt_place);
        let mut r = Runs::default();
        for rep in 0..o.reps {
            let m = ptnet::throughput(bins, &case, o.warm, o.secs)?;
            eprintln!(
                "bench: scaling {what}={x} run {} ptnet {m:.3} Mpps",
                rep + 1
            );
            r.0.push(m);
        }
        let mut e = Json::obj();
        e.set(what, x)
            .set("mpps", r.median())
            .set("gbps", r.median() * p.len as f64 * 8.0 / 1e3)
            .set("ptnet", r.json());
        arr.push(e);
    }
    let mut o = Json::obj();
    o.set("topology", "pipe (as P2), ptnet only")
        .set("points", Json::Arr(arr));
    if let Some(p) = place {
        o.set("placement", p.json());
    }
    Ok(o)
}

/// Mpps per host-interface port kind: pkt-gen tx into `tap:`, `packet:` and `xdp:` ports over a
/// veth pair and a tap made here (and removed after). The copies into the kernel are the cost.
fn nic_ports(o: &Opts, bins: &Bins) -> Result<Json, String> {
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
    for (kind, port) in [
        ("tap", "tap:ptbencht"),
        ("packet", "packet:ptbench0"),
        ("xdp", "xdp:ptbench0"),
    ] {
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
        for rep in 0..o.reps {
            match ptnet::throughput(bins, &case, o.warm, o.secs) {
                Ok(m) => {
                    eprintln!("bench: nic {kind} run {} ptnet {m:.3} Mpps", rep + 1);
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
    }
    cleanup();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

fn run(o: &Opts) -> Result<(), String> {
    let start_load = loadavg();
    let start = utc_now();
    eprintln!("bench: start {start}, /proc/loadavg {start_load}");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ncpu < 2 {
        return Err("the benchmark needs two CPUs".into());
    }
    if o.dpdk {
        setup_dpdk()?;
        setup_hugepages()?;
    }
    let bins = setup_bins()?;
    eprintln!(
        "bench: binaries {} and {}",
        bins.backend.display(),
        bins.pkt_gen.display()
    );
    let mut res = Json::obj();
    let mut meta = Json::obj();
    meta.set("start_utc", start.as_str())
        .set("loadavg_start", start_load.as_str())
        .set("cpus_online", ncpu)
        .set("core_budget", "2 CPUs (0 and 1), both sides")
        .set("quick", o.quick)
        .set("warmup_s", o.warm)
        .set("measure_s", o.secs)
        .set("reps_per_side", o.reps)
        .set("frame_len", 60u64)
        .set("batch", 512u64)
        .set("daemon_args", o.daemon_args.join(" "))
        .set(
            "dpdk_version",
            if o.dpdk {
                dpdk::version()
            } else {
                "skipped".into()
            },
        )
        .set("dpdk_burst", u64::from(o.dpdk_cfg.burst))
        .set("dpdk_ring", u64::from(o.dpdk_cfg.ring))
        .set("dpdk_virtio_opts", o.dpdk_cfg.virtio_opts.as_str())
        .set("git_head", git_head())
        .set("ptnet_backend", bins.backend.display().to_string())
        .set("ptnet_pkt_gen", bins.pkt_gen.display().to_string());
    res.set("meta", meta.clone());
    let mut table: Vec<[String; 6]> = Vec::new();
    let mut places: Vec<String> = Vec::new();
    let save = |res: &Json| -> Result<(), String> {
        if let Some(d) = o.out.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(&o.out, res.render()).map_err(|e| format!("{}: {e}", o.out.display()))
    };
    for (key, name, topo, target) in [
        ("p1", "P1 tx -> daemon -> null", Topo::Null, 4.0),
        ("p2", "P2 tx -> pipe -> rx", Topo::Pipe, 4.0),
        ("p3", "P3 tx -> VALE -> rx", Topo::Vale, 2.0),
    ] {
        if !o.wants(key) {
            continue;
        }
        let c = compare(o, &bins, key, topo, target)?;
        let best = c.best().map_or("", |(s, _)| s.key());
        table.push([
            name.into(),
            c.ptnet.show(),
            format!("{} {best}", c.dpdk().show()),
            format!("{:.2}x", c.ratio()),
            format!(">= {target}x"),
            if c.ratio() >= target { "yes" } else { "NO" }.into(),
        ]);
        places.push(format!("{key} ptnet: {}", c.pt_place.text()));
        for (shape, _) in &c.dpdk_shapes {
            places.push(format!(
                "{key} dpdk {}: {}",
                shape.key(),
                dpdk_placement(*shape).text()
            ));
        }
        res.set(key, c.json());
        save(&res)?;
    }
    if o.wants("p4") {
        let (attached, bare) = ptnet::idle_cpu(&bins, "1", "0", 64, o.secs)?;
        eprintln!("bench: p4 {attached:.3}% with idle receivers attached, {bare:.3}% unattached");
        res.set("p4_idle_cpu_pct", attached);
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
        res.set("p4", p4);
        table.push([
            "P4 daemon CPU, 64 idle ports".into(),
            format!("{attached:.3}% ({bare:.3}% unattached)"),
            "-".into(),
            "-".into(),
            "< 1%".into(),
            if attached < 1.0 { "yes" } else { "NO" }.into(),
        ]);
        save(&res)?;
    }
    if o.wants("p5") {
        let count: u64 = if o.quick { 20_000 } else { 300_000 };
        let (mut p50, mut p99, mut p999) = (Runs::default(), Runs::default(), Runs::default());
        for rep in 0..o.reps {
            let (a, b, c) = ptnet::ping_pong(&bins, "0,1", &o.daemon_args, ("0", "1"), count, &[])?;
            eprintln!(
                "bench: p5 run {} rtt p50 {a:.1} us p99 {b:.1} us p99.9 {c:.1} us",
                rep + 1
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
        res.set("p5_rtt_us", rtt);
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
        res.set("p5", p5);
        table.push([
            "P5 ping-pong RTT over a pipe (us)".into(),
            format!(
                "p50 {:.1} p99 {:.1} p99.9 {:.1}",
                p50.median(),
                p99.median(),
                p999.median()
            ),
            format!("floor p50 {:.1} p99 {:.1}", floor.0, floor.1),
            "-".into(),
            "p99 < 20 us".into(),
            if p99.median() < 20.0 { "yes" } else { "NO" }.into(),
        ]);
        save(&res)?;
    }
    if o.wants("nic") {
        let nic = nic_ports(o, &bins)?;
        if let Json::Obj(m) = &nic {
            for (kind, v) in m {
                if let Json::Obj(e) = v {
                    if let Some((_, Json::Num(mpps))) = e.iter().find(|(k, _)| k == "mpps") {
                        table.push([
                            format!("NIC port {kind}: tx -> daemon -> kernel"),
                            format!("{mpps:.3}"),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                        ]);
                    }
                }
            }
        }
        res.set("nic", nic);
        save(&res)?;
    }
    let mut sc = Json::obj();
    for what in ["batch", "rings", "size"] {
        if !o.wants(what) {
            continue;
        }
        let j = scaling(o, &bins, what)?;
        if let Json::Obj(m) = &j {
            if let Some((_, Json::Arr(points))) = m.iter().find(|(k, _)| k == "points") {
                for p in points {
                    if let Json::Obj(pm) = p {
                        let x = pm.iter().find(|(k, _)| k == what).map(|(_, v)| v.clone());
                        let mpps = pm.iter().find(|(k, _)| k == "mpps").map(|(_, v)| v.clone());
                        if let (Some(Json::Num(x)), Some(Json::Num(m))) = (x, mpps) {
                            table.push([
                                format!("scaling pipe {what}={x}"),
                                format!("{m:.3}"),
                                "-".into(),
                                "-".into(),
                                "-".into(),
                                "-".into(),
                            ]);
                        }
                    }
                }
            }
        }
        sc.set(what, j);
        res.set("scaling", sc.clone());
        save(&res)?;
    }
    let end_load = loadavg();
    meta.set("loadavg_end", end_load.as_str())
        .set("end_utc", utc_now());
    res.set("meta", meta);
    save(&res)?;

    // The table.
    let head = [
        "workload",
        "ptnet Mpps median [min-max]",
        "DPDK Mpps median [min-max]",
        "ratio",
        "target",
        "met",
    ];
    let mut w = head.map(str::len);
    for r in &table {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: &[String]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!();
    println!(
        "ptnet vs DPDK {} ({}): {} run(s) per side of {} s after {} s warm-up, alternating",
        dpdk::version(),
        if o.quick { "QUICK" } else { "full" },
        o.reps,
        o.secs,
        o.warm
    );
    println!("loadavg at start: {start_load}; at end: {end_load}");
    println!("{}", line(&head.map(String::from)));
    println!(
        "{}",
        w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in &table {
        println!("{}", line(r));
    }
    println!();
    println!("placement (2 CPUs for both sides):");
    for p in &places {
        println!("  {p}");
    }
    println!("results: {}", o.out.display());
    Ok(())
}

fn main() -> ExitCode {
    let o = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ptnet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
