//! The command line.

use crate::dpdk;
use ptnet_integration::host::workspace_root;
use std::path::PathBuf;

/// `--help`.
pub const USAGE: &str = "\
usage: ptnet-bench [--quick] [--only LIST] [--secs S] [--warm S] [--reps N] [--no-dpdk]
                   [--dpdk-burst N] [--dpdk-virtio OPTS] [--daemon-args ARGS] [--out PATH]
  --quick            2 s runs after 1 s of warm-up, 1 run of each side (default: 10 s, 2 s, 3)
  --only LIST        comma-separated subset of: p1,p2,p3,p4,p5,p6,p7,nic,batch,rings,size
  --secs S           measured seconds per run        --warm S   warm-up seconds per run
  --reps N           runs of each side per workload  --no-dpdk  skip the DPDK side
  --dpdk-burst N     testpmd --burst (default 64)
  --dpdk-virtio OPTS extra virtio-user devargs (default in_order=1,mrg_rxbuf=0)
  --daemon-args ARGS extra ptnet-backend flags, space separated (e.g. --busy-poll)
  --out PATH         results file (default target/bench/results.json)";

/// The options.
pub struct Opts {
    /// `--quick`: shorter runs, one of each side.
    pub quick: bool,
    /// `--only`: the workloads to run (all when `None`).
    pub only: Option<Vec<String>>,
    /// Measured seconds per run.
    pub secs: f64,
    /// Warm-up seconds per run.
    pub warm: f64,
    /// Runs of each side per workload.
    pub reps: usize,
    /// Run the DPDK side.
    pub dpdk: bool,
    /// testpmd's settings.
    pub dpdk_cfg: dpdk::Config,
    /// Extra `ptnet-backend` flags.
    pub daemon_args: Vec<String>,
    /// The results file.
    pub out: PathBuf,
}

impl Opts {
    pub fn parse() -> Result<Self, String> {
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

    pub fn wants(&self, w: &str) -> bool {
        self.only.as_ref().is_none_or(|l| l.iter().any(|x| x == w))
    }
}
