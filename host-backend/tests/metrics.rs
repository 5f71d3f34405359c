//! The metrics endpoint (`--metrics-listen`, `daemon::metrics`) against a real daemon: curl
//! reads the counters of traffic this test moved, `promtool check metrics` accepts the
//! exposition, and malformed, oversized, silent and surplus clients get their status codes or
//! are cut while the endpoint goes on serving. `promtool` comes with Debian's `prometheus`
//! package (`cargo xtask deps`).

mod support;

use ptnet_backend::daemon::metrics::{MetricsServer, MAX_CLIENTS, MAX_REQUEST, REQUEST_TIMEOUT};
use ptnet_backend::daemon::{Daemon, DaemonConfig};
use ptnet_driver::Port;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{backend, move_frames, terminate, TempDir};

/// `curl` of `url`: (HTTP status, body).
fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (cargo xtask deps installs it)");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect(code), body.to_string())
}

/// The value of the sample `series` (`name{labels}` exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` of `text`: its verdict, and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool: install Debian's prometheus package (cargo xtask deps)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

fn start(dir: &TempDir, specs: &[&str]) -> (Daemon, MetricsServer, String) {
    let d = Daemon::start(&DaemonConfig::in_dir(&dir.0, specs).unwrap()).expect("daemon");
    let m =
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), d.stats_source()).expect("metrics");
    let url = format!("http://{}/metrics", m.local_addr());
    (d, m, url)
}

#[test]
fn curl_reads_the_counters_of_the_traffic_moved() {
    let dir = TempDir::new("count");
    let (d, _m, url) = start(
        &dir,
        &["netmap:m{0@conf:slots=256", "netmap:m}0", "null:msink"],
    );
    let (code, text) = curl(&url, &[]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"ptnet_port_frontend_state{port="netmap:m{0",state="idle"}"#
        ),
        Some(1.0)
    );
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool: {said}\n{text}");

    let mut tx = Port::open(&dir.vhost_user("netmap:m{0")).expect("tx end");
    let mut rx = Port::open(&dir.vhost_user("netmap:m}0")).expect("rx end");
    move_frames(&mut tx, &mut rx, 300);
    let deadline = Instant::now() + Duration::from_secs(5);
    let rx_packets = r#"ptnet_ring_packets_total{port="netmap:m}0",ring="1",direction="rx"}"#;
    let text = loop {
        let (code, text) = curl(&url, &[]);
        assert_eq!(code, 200);
        if sample(&text, rx_packets) == Some(300.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for (series, want) in [
        (
            r#"ptnet_ring_packets_total{port="netmap:m{0",ring="0",direction="tx"}"#,
            300.0,
        ),
        (
            r#"ptnet_ring_bytes_total{port="netmap:m{0",ring="0",direction="tx"}"#,
            18000.0,
        ),
        (
            r#"ptnet_ring_packets_total{port="netmap:m{0",ring="1",direction="rx"}"#,
            0.0,
        ),
        (
            r#"ptnet_ring_drops_total{port="netmap:m{0",ring="0",direction="tx",cause="ring_full"}"#,
            0.0,
        ),
        (
            r#"ptnet_ring_drops_total{port="netmap:m{0",ring="0",direction="tx",cause="bad_slot"}"#,
            0.0,
        ),
        (
            r#"ptnet_ring_resets_total{port="netmap:m}0",ring="1",direction="rx"}"#,
            0.0,
        ),
        (
            r#"ptnet_port_frontend_state{port="netmap:m{0",state="running"}"#,
            1.0,
        ),
        (
            r#"ptnet_port_frontend_state{port="netmap:m}0",state="running"}"#,
            1.0,
        ),
        (
            r#"ptnet_port_frontend_state{port="null:msink",state="idle"}"#,
            1.0,
        ),
        (r#"ptnet_port_connections_total{port="netmap:m{0"}"#, 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }
    // The same numbers as the library's (and so ptnet-ctl stats').
    let s = d.stats();
    assert_eq!(
        (
            s.ports[0].tx_packets,
            s.ports[0].tx_bytes,
            s.ports[1].rx_packets
        ),
        (300, 18000, 300)
    );
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool: {said}\n{text}");
    // HEAD: the headers only; another path: 404; another method: 405.
    assert_eq!(curl(&url, &["-I"]).0, 200);
    let root = url.trim_end_matches("metrics");
    assert_eq!(curl(&format!("{root}nope"), &[]).0, 404);
    assert_eq!(curl(&url, &["-X", "POST", "-d", "x=1"]).0, 405);
    drop((tx, rx));
    d.stop();
}

/// What the endpoint answers to `bytes` sent on a fresh connection: its status line.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(REQUEST_TIMEOUT * 2)).unwrap();
    // The endpoint may answer and shut down before everything is sent.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn bad_oversized_silent_and_surplus_clients_are_refused_and_it_goes_on() {
    let dir = TempDir::new("bad");
    let (d, m, url) = start(&dir, &["null:mbad"]);
    let a = m.local_addr();
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno-colon\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
    ] {
        assert_eq!(raw(a, bad), "HTTP/1.1 400 Bad Request", "{bad:?}");
    }
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    big.resize(MAX_REQUEST * 4, b'a');
    assert_eq!(raw(a, &big), "HTTP/1.1 413 Content Too Large");
    let long_header = format!("x-long: {}", "b".repeat(MAX_REQUEST));
    assert_eq!(curl(&url, &["-H", &long_header]).0, 413);
    // Silent clients hold every slot: one more is told 503, at once.
    let silent: Vec<TcpStream> = (0..MAX_CLIENTS)
        .map(|_| TcpStream::connect(a).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(
        raw(a, b"GET /metrics HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 503 Service Unavailable"
    );
    assert!(t.elapsed() < REQUEST_TIMEOUT, "{:?}", t.elapsed());
    // ... until their deadline cuts them.
    for mut s in silent {
        s.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
        let t = Instant::now();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Ok(0)), "not cut");
        assert!(t.elapsed() < REQUEST_TIMEOUT * 2);
    }
    // A client sending its request a byte at a time, too slowly, is cut at the deadline too.
    let mut slow = TcpStream::connect(a).unwrap();
    let t = Instant::now();
    while slow.write_all(b"G").is_ok() && t.elapsed() < REQUEST_TIMEOUT * 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        t.elapsed() < REQUEST_TIMEOUT * 3,
        "the slow client was never cut"
    );
    // And the endpoint still answers.
    let (code, text) = curl(&url, &[]);
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &text,
            r#"ptnet_port_frontend_state{port="null:mbad",state="idle"}"#
        ),
        Some(1.0)
    );
    drop(m);
    assert!(TcpStream::connect(a).is_err(), "still listening after stop");
    d.stop();
}

/// The binary: `--metrics-listen` serves while it runs; an address in use is exit 2 naming the
/// option; a malformed one is clap's exit 2.
#[test]
fn the_binary_serves_metrics_and_refuses_a_bad_address() {
    let dir = TempDir::new("bin");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let run = |addr: &str| {
        backend(&dir.0)
            .args([
                "--netmap",
                "user",
                "--control-socket",
                "none",
                "--metrics-listen",
                addr,
                "null:mbin",
            ])
            .output()
            .expect("ptnet-backend")
    };
    let out = run(&busy);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--metrics-listen {busy}")), "{err}");
    assert!(
        !dir.0.join("null:mbin.sock").exists(),
        "the port's socket is left behind"
    );
    let out = run("not-an-address");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"));

    drop(taken);
    let child = backend(&dir.0)
        .args(["--netmap", "user", "--metrics-listen", &busy, "null:mbin"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("http://{busy}/metrics");
    loop {
        if TcpStream::connect(&busy).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = curl(&url, &[]);
    assert_eq!(code, 200);
    assert!(
        text.contains(r#"ptnet_port_frontend_state{port="null:mbin",state="idle"} 1"#),
        "{text}"
    );
    terminate(child);
}
