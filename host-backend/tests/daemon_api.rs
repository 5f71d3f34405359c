//! The daemon as a library, in-process: started on a temp socket dir, driven by the driver's
//! vhost-user frontend, its counters read as data (`Daemon::stats`), stopped; and the binary's
//! `--stats-format json` lines parsed.

mod support;

use ptnet_backend::daemon::server::ServeError;
use ptnet_backend::daemon::stats::{DatapathKind, Dir};
use ptnet_backend::daemon::{Daemon, DaemonConfig, DaemonError, FrontendState};
use ptnet_driver::Port;
use support::{backend, move_frames, vhost_user, wait_for_path, wait_stats, TempDir};

#[test]
fn a_daemon_serves_counts_and_stops() {
    let dir = TempDir::new("serve");
    let config = DaemonConfig::in_dir(
        &dir.0,
        &[
            "netmap:api{0@conf:slots=256",
            "netmap:api}0",
            "null:apisink",
        ],
    )
    .expect("config");
    let d = Daemon::start(&config).expect("daemon");
    let sock = |n: &str| dir.0.join(format!("{n}.sock"));
    for n in ["netmap:api{0", "netmap:api}0", "null:apisink"] {
        assert_eq!(d.socket(n), Some(sock(n)));
        assert!(sock(n).exists(), "{n}");
    }
    let s = d.stats();
    assert_eq!(s.ports.len(), 3);
    for p in &s.ports {
        assert_eq!(
            (
                p.datapath,
                p.frontend,
                p.connections,
                p.tx_packets,
                p.rx_packets
            ),
            (DatapathKind::Threads, FrontendState::Idle, 0, 0, 0),
            "{p:?}"
        );
        assert_eq!(
            p.rings.iter().map(|r| r.dir).collect::<Vec<_>>(),
            [Dir::Tx, Dir::Rx]
        );
    }

    // Two frontends on the two ends of the pipe: 100 frames of 60 bytes one way.
    let mut tx = Port::open(&vhost_user(&sock("netmap:api{0"))).expect("tx end");
    let mut rx = Port::open(&vhost_user(&sock("netmap:api}0"))).expect("rx end");
    wait_stats(&d, "both ends running", |s| {
        s.ports[..2]
            .iter()
            .all(|p| p.frontend == FrontendState::Running)
    });
    move_frames(&mut tx, &mut rx, 100);
    let s = wait_stats(&d, "the counters", |s| {
        s.ports[0].tx_packets == 100 && s.ports[1].rx_packets == 100
    });
    let (a, b) = (&s.ports[0], &s.ports[1]);
    assert_eq!(
        (a.name.as_str(), a.tx_bytes, a.rx_packets),
        ("netmap:api{0", 6000, 0)
    );
    assert_eq!((a.rings[0].packets, a.rings[0].bytes), (100, 6000));
    assert_eq!(
        (b.tx_packets, b.rx_packets, b.rings[1].packets),
        (0, 100, 100)
    );
    assert_eq!(
        (
            a.drops,
            a.bad_slots,
            a.resets,
            a.src_refused,
            b.drops,
            b.bad_slots,
            b.resets
        ),
        (0, 0, 0, 0, 0, 0, 0)
    );
    assert_eq!((a.connections, b.connections), (1, 1));
    assert_eq!(
        s.port("null:apisink").unwrap().frontend,
        FrontendState::Idle
    );

    // The frontends go: the ports are idle again, the counters stay.
    drop(tx);
    drop(rx);
    let s = wait_stats(&d, "frontends gone", |s| {
        s.ports.iter().all(|p| p.frontend == FrontendState::Idle)
    });
    assert_eq!(s.ports[0].tx_packets, 100);

    // As data, serializable: the JSON names the same fields.
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["ports"][0]["name"], "netmap:api{0");
    assert_eq!(json["ports"][0]["tx_bytes"], 6000);
    assert_eq!(json["ports"][1]["rings"][1]["dir"], "rx");
    assert_eq!(json["ports"][2]["frontend"], "idle");

    let last = d.stop();
    assert!(last
        .ports
        .iter()
        .all(|p| p.frontend == FrontendState::Stopped));
    assert_eq!(last.ports[1].rx_packets, 100);
    for n in ["netmap:api{0", "netmap:api}0", "null:apisink"] {
        assert!(!sock(n).exists(), "{n} left behind");
    }
}

#[test]
fn a_second_daemon_on_the_same_sockets_is_refused() {
    let dir = TempDir::new("twice");
    let config = DaemonConfig::in_dir(&dir.0, &["null:apitwice"]).expect("config");
    let first = Daemon::start(&config).expect("first daemon");
    match Daemon::start(&config) {
        Err(DaemonError::Serve(ServeError::InUse(sock, _))) => {
            assert_eq!(sock, dir.0.join("null:apitwice.sock"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second daemon started"),
    }
    assert!(first.stats().ports[0].frontend == FrontendState::Idle);
    first.stop();
    // Stopped, the sockets are free again.
    Daemon::start(&config)
        .expect("a daemon after the first")
        .stop();
}

#[test]
fn bad_ports_are_refused_before_anything_is_served() {
    let dir = TempDir::new("bad");
    let config = DaemonConfig::in_dir(&dir.0, &["null:apibad", "null:apibad"]).expect("config");
    match Daemon::start(&config) {
        Err(DaemonError::Build(e)) => assert!(e.to_string().contains("given twice"), "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started"),
    }
    assert!(!dir.0.join("null:apibad.sock").exists());
}

/// The binary with `--stats-format json`: one JSON object a line on stdout, on SIGUSR1 and at
/// exit.
#[test]
fn the_binary_prints_json_stats_lines() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::BufRead;
    let dir = TempDir::new("json");
    let mut child = backend(&dir.0)
        .args(["--stats-format", "json", "--netmap", "user", "null:apijson"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ptnet-backend");
    wait_for_path(&dir.0.join("null:apijson.sock"));
    let pid = Pid::from_raw(child.id() as i32);
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    kill(pid, Signal::SIGUSR1).expect("SIGUSR1");
    let line = lines.next().expect("a line").expect("read");
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(v["event"], "stats");
    assert_eq!(v["reason"], "signal");
    assert_eq!(v["ports"][0]["name"], "null:apijson");
    assert_eq!(v["ports"][0]["frontend"], "idle");
    assert_eq!(v["ports"][0]["tx_packets"], 0);
    assert!(v["kick_faults"].is_u64(), "{line}");
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let line = lines.next().expect("the exit line").expect("read");
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(
        (&v["reason"], &v["ports"][0]["frontend"]),
        (&"exit".into(), &"stopped".into())
    );
    assert!(child.wait().unwrap().success());
}

/// A `frontend=virtio-net` port reports its virtqueues' counters beside its rings'; a ptnet
/// port has none.
#[test]
fn a_virtio_net_port_reports_its_virtqueues() {
    let dir = TempDir::new("vq");
    let config = DaemonConfig::in_dir(
        &dir.0,
        &["null:apivq@conf:frontend=virtio-net,rings=2", "null:apipt"],
    )
    .expect("config");
    let d = Daemon::start(&config).expect("daemon");
    let s = d.stats();
    let vq = s.ports[0].virtqueues.as_ref().expect("virtqueue counters");
    assert_eq!(
        vq.iter().map(|q| (q.index, q.dir)).collect::<Vec<_>>(),
        [(0, Dir::Rx), (1, Dir::Tx), (2, Dir::Rx), (3, Dir::Tx)]
    );
    assert!(vq.iter().all(|q| q.packets == 0 && q.broken == 0), "{vq:?}");
    assert_eq!(s.ports[1].virtqueues, None);
    let json = serde_json::to_value(&s).expect("serializes");
    assert_eq!(json["ports"][0]["virtqueues"][1]["dir"], "tx");
    assert!(json["ports"][1].get("virtqueues").is_none(), "{json}");
    let after = d.stop();
    assert_eq!(after.ports[0].virtqueues.as_ref().map(Vec::len), Some(4));
}
