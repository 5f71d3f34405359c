//! The control socket through the real binaries: `ptnet-backend` (the `Backend` harness) driven
//! by `ptnet-pkt-gen`, asked by `ptnet-ctl`. What `stats` and `list` say must be what the sender
//! counted; `--watch` gives its rate.

use ptnet_integration::host::{finish, run_with_timeout, spawn_pkt_gen, RunOutput};
use ptnet_integration::{bins, json_num, Backend};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// `ptnet-ctl`, built beside `ptnet-backend` (or `PTNET_CTL`).
fn ctl_bin() -> PathBuf {
    std::env::var_os("PTNET_CTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins().unwrap().backend.with_file_name("ptnet-ctl"))
}

fn ctl(b: &Backend, args: &[&str]) -> RunOutput {
    let dir = b.socket("x").parent().unwrap().to_path_buf();
    run_with_timeout(
        Command::new(ctl_bin())
            .arg("--socket-dir")
            .arg(dir)
            .args(args),
        Duration::from_secs(30),
    )
    .expect("ptnet-ctl runs")
}

#[test]
fn ptnet_ctl_tells_what_pkt_gen_sent() {
    let (_d, b) = Backend::in_temp_dir("ctl-pktgen", &["null:ctlint", "vale9:a@conf:slots=512"]);
    let out = ctl(&b, &["list"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..6],
        ["null:ctlint", "null", "idle", "threads", "1/1", "1024/1024"]
    );
    assert_eq!(
        rows[1][..6],
        ["vale9:a", "vale", "idle", "threads", "1/1", "512/512"]
    );

    // 5000 frames of 60 bytes into the null port.
    let sent = finish(
        spawn_pkt_gen(&[
            "-i",
            &b.interface("null:ctlint"),
            "-f",
            "tx",
            "-n",
            "5000",
            "--json",
        ])
        .expect("pkt-gen"),
        Duration::from_secs(60),
    );
    let packets = sent.last_line().and_then(|l| json_num(l, "packets"));
    assert_eq!(packets, Some(5000.0), "{sent:?}");
    let out = ctl(&b, &["stats", "null:ctlint", "--json"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let line = out.stdout.trim();
    assert_eq!(json_num(line, "tx_packets"), Some(5000.0), "{line}");
    assert_eq!(json_num(line, "tx_bytes"), Some(300_000.0), "{line}");
    assert_eq!(json_num(line, "connections"), Some(1.0), "{line}");
    assert!(line.contains("\"frontend\":\"idle\""), "{line}");

    // At a steady 20 kpps, --watch sees about that rate.
    let rated = spawn_pkt_gen(&[
        "-i",
        &b.interface("null:ctlint"),
        "-f",
        "tx",
        "-R",
        "20000",
        "--timeout",
        "4",
    ])
    .expect("pkt-gen");
    std::thread::sleep(Duration::from_millis(500));
    let out = ctl(
        &b,
        &[
            "stats",
            "null:ctlint",
            "--watch",
            "1",
            "--count",
            "2",
            "--json",
        ],
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(0), "{out:?}");
    let last = out.last_line().expect("a rates line");
    let pps = json_num(last, "tx_pps").expect(last);
    assert!((10_000.0..30_000.0).contains(&pps), "{last}");
    let bps = json_num(last, "tx_bps").expect(last);
    assert!(
        (bps - pps * 480.0).abs() < pps * 480.0 * 0.01 + 1.0,
        "{last}"
    );
    let _ = finish(rated, Duration::from_secs(30));

    // Stopped, the daemon is not reachable: exit 1, naming the socket.
    let mut b = b;
    b.stop();
    let out = ctl(&b, &["version"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert!(out.stderr.contains("ptnet-backend.ctl"), "{}", out.stderr);
}
