//! The daemon's command line, signals and counters.

use nix::sys::signal::Signal;
use ptnet_integration::host::{finish, pkt_gen, spawn_pkt_gen};
use ptnet_integration::{Backend, PortCounters, TempDir};
use std::time::Duration;

#[test]
fn bad_port_string_is_named_and_exits_2() {
    let bins = ptnet_integration::bins().unwrap();
    for bad in ["eth0", "vale0:1@conf:rings=99", "netmap:p{x"] {
        let out = std::process::Command::new(&bins.backend)
            .args(["--socket-dir", "/tmp", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
    }
    let out = std::process::Command::new(&bins.backend)
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn netmap_choice_is_checked() {
    let bins = ptnet_integration::bins().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&bins.backend)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--netmap", "bogus", "vale0:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel, user"));
    if std::path::Path::new("/dev/netmap").exists() {
        return; // the rest needs a machine without the netmap module
    }
    let out = run(&["--socket-dir", "/tmp", "--netmap", "kernel", "vale0:1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/netmap") && err.contains("netmap.ko"),
        "{err}"
    );
}

#[test]
fn counters_are_logged_on_sigusr1_and_periodically() {
    let dir = TempDir::new("stats").expect("temp dir");
    let ports = ["netmap:st{0", "netmap:st}0"];
    let mut b = Backend::start(dir.path(), &ports, &["--stats-every", "1"]).expect("daemon starts");
    let rx = spawn_pkt_gen(&[
        "-i",
        &b.interface(ports[1]),
        "-f",
        "rx",
        "-n",
        "5000",
        "--json",
    ])
    .unwrap();
    let tx = pkt_gen(
        &[
            "-i",
            &b.interface(ports[0]),
            "-f",
            "tx",
            "-n",
            "5000",
            "-l",
            "60",
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(tx.success(), "tx failed");
    assert!(finish(rx, Duration::from_secs(60)).success(), "rx failed");
    b.signal(Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(b.running(), "SIGUSR1 stopped the daemon");
    let status = b.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let text = b.log_text();
    // The totals, each end's own.
    let logged = |port, want: (u64, u64, u64)| {
        PortCounters::all(&text, Some(port))
            .iter()
            .any(|c| (c.tx_packets, c.tx_bytes, c.rx_packets) == want)
    };
    assert!(logged(ports[0], (5000, 300_000, 0)), "{text}");
    assert!(logged(ports[1], (0, 0, 5000)), "{text}");
    // --stats-every 1: lines with rates.
    assert!(
        text.contains("tx_mpps=") && text.contains("rx_mpps="),
        "{text}"
    );
    assert!(text.contains("shutting down"), "{text}");
}

#[test]
fn sigterm_removes_the_sockets() {
    let (d, mut b) = Backend::in_temp_dir("sigterm", &["vale5:a", "null:x"]);
    assert!(b.socket("vale5:a").exists());
    b.stop();
    assert!(!d.path().join("vale5:a.sock").exists());
    assert!(!d.path().join("null:x.sock").exists());
    assert!(b.log_text().contains("shutting down"));
}
