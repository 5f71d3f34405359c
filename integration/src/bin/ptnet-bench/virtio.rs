//! P6 and P7: DPDK's virtio-user (testpmd) as the frontend of both backends, so the ratio
//! compares the daemon's virtio-net device with DPDK's vhost PMD directly.
//!
//! * P6: virtio-user `txonly` (cpu 0) -> our daemon (cpu 1; a `frontend=virtio-net` port on
//!   `null:`) vs -> DPDK vhost `rxonly` (cpu 1). Measured: the sender's Tx-pps, the frames the
//!   backend took (the same testpmd statistic on both sides).
//! * P7: virtio-user `txonly` (cpu 0) -> our VALE switch (two virtio-net ports; cpu 1) ->
//!   virtio-user `rxonly` (cpu 1), vs DPDK's shape for that path on 2 CPUs: virtio-user `txonly`
//!   (cpu 0) -> vhost `io` between two vhost ports (cpu 1) -> virtio-user `rxonly` (cpu 1).
//!   Measured: the receiver's Rx-pps.
//!
//! Every testpmd as the other DPDK runs start it (`dpdk.rs`, `--dpdk-virtio` devargs); the
//! daemon maps DPDK's hugetlbfs memory with `--allow-unsealed-memory`.

use crate::cases::pl;
use crate::dpdk::{self, Spec, Testpmd};
use crate::opts::Opts;
use crate::ptnet::Daemon;
use crate::report::{Json, Runs};
use crate::workloads::Report;
use ptnet_integration::{Bins, TempDir};
use std::path::Path;
use std::time::{Duration, Instant};

/// Frame length (as P1-P3).
const LEN: usize = 60;

/// The measurement window after the first statistics, then the mean Mpps of port 0 (rx or
/// tx) over the samples printed in it. A loaded machine delays testpmd's prints (its main lcore
/// shares a CPU with the busy forwarding one): the samples of up to 1.5 s after the window count
/// too, as long as one came.
fn window(t: &Testpmd, rx: bool, warm: f64, secs: f64) -> Result<f64, String> {
    let from = Instant::now() + Duration::from_secs_f64(warm);
    let to = from + Duration::from_secs_f64(secs);
    std::thread::sleep(to.saturating_duration_since(Instant::now()) + Duration::from_millis(600));
    let late = to + Duration::from_millis(1500);
    loop {
        if let Some(m) = dpdk::window_mpps(&t.proc.stdout(), 0, rx, from, to) {
            return Ok(m);
        }
        if Instant::now() > late {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    dpdk::window_mpps(&t.proc.stdout(), 0, rx, from, late)
        .ok_or_else(|| format!("no testpmd statistics in the window:\n{}", t.proc.tail(15)))
}

fn vu(o: &Opts, name: &str, cpu: usize, sock: &Path, fwd: &str) -> Result<Testpmd, String> {
    let spec = Spec {
        name: name.into(),
        cpu,
        vdevs: vec![Spec::virtio_user(&o.dpdk_cfg, 0, sock)],
        fwd: fwd.into(),
    };
    Testpmd::start(&o.dpdk_cfg, &spec, LEN)
}

/// One run of ours.
fn ours(o: &Opts, p7: bool) -> Result<f64, String> {
    let dir = TempDir::new("bench-virtio").map_err(|e| e.to_string())?;
    let conf = "@conf:frontend=virtio-net";
    let ports: Vec<String> = if p7 {
        vec![format!("vale7:tx{conf}"), format!("vale7:rx{conf}")]
    } else {
        vec![format!("null:p6{conf}")]
    };
    let mut args = o.daemon_args.clone();
    args.extend(["--allow-unsealed-memory", "--control-socket", "none"].map(String::from));
    let mut d = Daemon::start(dir.path(), "1", &args, &ports)?;
    let sock = |p: &str| {
        let name = p.split("@conf:").next().unwrap_or(p);
        dir.path().join(format!("{name}.sock"))
    };
    let r = if p7 {
        let rx = vu(o, "ptb-vu-rx", 1, &sock(&ports[1]), "rxonly")?;
        let _tx = vu(o, "ptb-vu-tx", 0, &sock(&ports[0]), "txonly")?;
        window(&rx, true, o.warm, o.secs)
    } else {
        let tx = vu(o, "ptb-vu-tx", 0, &sock(&ports[0]), "txonly")?;
        window(&tx, false, o.warm, o.secs)
    };
    if r.is_err() {
        eprintln!("bench: daemon log:\n{}", d.tail(20));
    }
    d.stop();
    r
}

/// One run of DPDK's.
fn dpdk_side(o: &Opts, p7: bool) -> Result<f64, String> {
    let dir = TempDir::new("bench-vhost").map_err(|e| e.to_string())?;
    let (s0, s1) = (dir.path().join("vh0.sock"), dir.path().join("vh1.sock"));
    let spec = Spec {
        name: "ptb-vu-vhost".into(),
        cpu: 1,
        vdevs: if p7 {
            vec![Spec::vhost(0, &s0), Spec::vhost(1, &s1)]
        } else {
            vec![Spec::vhost(0, &s0)]
        },
        fwd: if p7 { "io" } else { "rxonly" }.into(),
    };
    let mut host = Testpmd::start(&o.dpdk_cfg, &spec, LEN)?;
    dpdk::wait_socket(&s0, &mut host.proc)?;
    if p7 {
        dpdk::wait_socket(&s1, &mut host.proc)?;
        let rx = vu(o, "ptb-vu-rx", 1, &s1, "rxonly")?;
        let _tx = vu(o, "ptb-vu-tx", 0, &s0, "txonly")?;
        window(&rx, true, o.warm, o.secs)
    } else {
        let tx = vu(o, "ptb-vu-tx", 0, &s0, "txonly")?;
        window(&tx, false, o.warm, o.secs)
    }
}

/// A run, tried a second time when testpmd printed no statistics (a virtio-user that came up
/// before its vhost side's port was started sends nothing).
fn twice(key: &str, f: impl Fn() -> Result<f64, String>) -> Result<f64, String> {
    f().or_else(|e| {
        eprintln!("bench: {key}: {e}; trying once more");
        f()
    })
}

/// P6 (`p7` false) or P7: alternating runs of both sides, the table row and the results entry.
pub fn run(
    o: &Opts,
    _bins: &Bins,
    name: &str,
    key: &str,
    p7: bool,
    target: f64,
    rep: &mut Report,
) -> Result<(), String> {
    let (mut us, mut them) = (Runs::default(), Runs::default());
    for i in 0..o.reps {
        let m = twice(key, || ours(o, p7))?;
        eprintln!("bench: {key} run {} ptnet {m:.3} Mpps", i + 1);
        us.0.push(m);
        if o.dpdk {
            let m = twice(key, || dpdk_side(o, p7))?;
            eprintln!("bench: {key} run {} dpdk {m:.3} Mpps", i + 1);
            them.0.push(m);
        }
    }
    let ratio = us.median() / them.median();
    let place_us = if p7 {
        pl(&[
            ("testpmd virtio-user txonly", "cpu 0"),
            ("ptnet-backend (VALE, 2 virtio-net ports)", "cpu 1"),
            ("testpmd virtio-user rxonly", "cpu 1"),
            ("measured", "rxonly testpmd Rx-pps"),
        ])
    } else {
        pl(&[
            ("testpmd virtio-user txonly", "cpu 0"),
            ("ptnet-backend (virtio-net port on null:)", "cpu 1"),
            ("measured", "txonly testpmd Tx-pps"),
        ])
    };
    let place_them = if p7 {
        pl(&[
            ("testpmd virtio-user txonly", "cpu 0"),
            ("testpmd vhost io, 2 vhost ports", "cpu 1"),
            ("testpmd virtio-user rxonly", "cpu 1"),
            ("measured", "rxonly testpmd Rx-pps"),
        ])
    } else {
        pl(&[
            ("testpmd virtio-user txonly", "cpu 0"),
            ("testpmd vhost rxonly", "cpu 1"),
            ("measured", "txonly testpmd Tx-pps"),
        ])
    };
    rep.places.push(format!("{key} ptnet: {}", place_us.text()));
    rep.places
        .push(format!("{key} dpdk: {}", place_them.text()));
    let met = ratio >= target;
    rep.table.push([
        name.into(),
        us.show(),
        them.show(),
        format!("{ratio:.2}x"),
        format!(">= {target}x"),
        if met { "yes" } else { "NO" }.into(),
    ]);
    let mut j = Json::obj();
    j.set("ptnet", us.json())
        .set("dpdk", them.json())
        .set("ratio", ratio)
        .set("target", target)
        .set("met", met)
        .set("frame_len", LEN as u64)
        .set("virtio_user_devargs", o.dpdk_cfg.virtio_opts.as_str())
        .set("placement_ptnet", place_us.json())
        .set("placement_dpdk", place_them.json());
    rep.res.set(key, j);
    Ok(())
}
