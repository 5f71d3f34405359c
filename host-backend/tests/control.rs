//! The control socket (`daemon::control`) and its client `ptnet-ctl`, against a real daemon
//! started in-process (and the binaries for the exit codes and the command-line defaults):
//! `list` and `stats` tell what a driver-side sender counted; malformed, unknown, oversized,
//! silent and surplus clients get their errors or are cut, while the ports and the other
//! control clients are still served.

mod support;

use ptnet_backend::ctl::{request, CtlError};
use ptnet_backend::daemon::control::protocol::{
    Command, ErrorCode, PortInfo, Response, MAX_REQUEST, PROTOCOL_VERSION,
};
use ptnet_backend::daemon::control::{MAX_CLIENTS, REQUEST_TIMEOUT};
use ptnet_backend::daemon::server::ServeError;
use ptnet_backend::daemon::{Daemon, DaemonConfig, DaemonError, FrontendState};
use ptnet_driver::Port;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{
    ask, backend, ctl_stats_until, daemon_with_control as daemon, move_frames, terminate, wait_for,
    wait_for_path, TempDir, T,
};

/// A raw control connection.
struct Raw {
    s: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(T)).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        Self { s, r }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    /// The next response line, parsed.
    fn response(&mut self) -> Response {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read");
        assert!(line.ends_with('\n'), "no whole line: {line:?}");
        serde_json::from_str(&line).expect(&line)
    }

    /// The daemon closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.r.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn list_and_stats_tell_what_the_sender_counted() {
    let dir = TempDir::new("count");
    let (d, ctl) = daemon(
        &dir.0,
        &[
            "netmap:ctl{0@conf:slots=256",
            "netmap:ctl}0",
            "null:ctlsink@conf:rings=2",
        ],
    );
    let mode = std::fs::metadata(&ctl).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let v = ask(&ctl, Command::Version).version.expect("version");
    assert_eq!(
        (v.daemon.as_str(), v.protocol, v.pid),
        ("ptnet-backend", PROTOCOL_VERSION, std::process::id())
    );
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));

    let ports = ask(&ctl, Command::List).ports.expect("ports");
    let summary: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.kind.as_str(),
                p.frontend,
                (p.tx_rings, p.rx_rings, p.tx_slots, p.rx_slots),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "netmap:ctl{0",
                "pipe",
                FrontendState::Idle,
                (1, 1, 256, 256)
            ),
            (
                "netmap:ctl}0",
                "pipe",
                FrontendState::Idle,
                (1, 1, 256, 256)
            ),
            (
                "null:ctlsink",
                "null",
                FrontendState::Idle,
                (2, 2, 1024, 1024)
            ),
        ]
    );
    assert_eq!(ports[2].socket, dir.0.join("null:ctlsink.sock"));

    // 100 frames of 60 bytes from one end of the pipe to the other.
    let mut tx = Port::open(&dir.vhost_user("netmap:ctl{0")).expect("tx end");
    let mut rx = Port::open(&dir.vhost_user("netmap:ctl}0")).expect("rx end");
    let running = |p: &Vec<PortInfo>| p[..2].iter().all(|p| p.frontend == FrontendState::Running);
    let p = wait_for(
        "both ends running",
        Duration::from_millis(10),
        || ask(&ctl, Command::List).ports.unwrap(),
        running,
    );
    assert_eq!(p[2].frontend, FrontendState::Idle);
    assert_eq!((p[0].connections, p[1].connections), (1, 1));
    move_frames(&mut tx, &mut rx, 100);
    let s = ctl_stats_until(&ctl, "100 frames counted", |s| s.ports[1].rx_packets == 100);
    assert_eq!(
        (
            s.ports[0].tx_packets,
            s.ports[0].tx_bytes,
            s.ports[0].rx_packets
        ),
        (100, 6000, 0)
    );
    assert_eq!((s.ports[1].tx_packets, s.ports[1].rx_packets), (0, 100));
    // The same counters as the library's.
    assert_eq!(d.stats().ports[1].rings, s.ports[1].rings);
    let one = ask(
        &ctl,
        Command::Stats {
            port: Some("netmap:ctl{0".into()),
        },
    )
    .stats
    .unwrap();
    assert_eq!(one.ports.len(), 1);
    assert_eq!(
        (one.ports[0].name.as_str(), one.ports[0].tx_packets),
        ("netmap:ctl{0", 100)
    );
    let r = request(
        &ctl,
        &Command::Stats {
            port: Some("netmap:nope".into()),
        },
        T,
    )
    .unwrap();
    assert_eq!((r.ok, r.code), (false, Some(ErrorCode::NoSuchPort)));

    drop(tx);
    drop(rx);
    d.stop();
    assert!(!ctl.exists(), "the control socket is left behind");
    match request(&ctl, &Command::List, T) {
        Err(CtlError::Unreachable { path, .. }) => assert_eq!(path, ctl),
        r => panic!("{r:?}"),
    }
}

#[test]
fn bad_requests_get_typed_errors_and_the_connection_goes_on() {
    let dir = TempDir::new("bad");
    let (d, ctl) = daemon(&dir.0, &["null:ctlbad"]);
    let mut c = Raw::connect(&ctl);
    for (line, code) in [
        (&b"{\"cmd\":\"list\"\n"[..], ErrorCode::BadRequest),
        (b"not json\n", ErrorCode::BadRequest),
        (b"[\"list\"]\n", ErrorCode::BadRequest),
        (
            b"{\"cmd\":\"list\",\"verbose\":true}\n",
            ErrorCode::BadRequest,
        ),
        (b"{\"port\":\"null:ctlbad\"}\n", ErrorCode::BadRequest),
        (b"\xff\xfe\n", ErrorCode::BadRequest),
        (b"{\"cmd\":\"shutdown\"}\n", ErrorCode::UnknownCommand),
        (
            b"{\"cmd\":\"version\",\"port\":\"x\"}\n",
            ErrorCode::UnexpectedField,
        ),
        (b"{\"cmd\":\"stats\",\"port\":7}\n", ErrorCode::BadRequest),
    ] {
        c.send(line);
        let r = c.response();
        assert_eq!((r.ok, r.code), (false, Some(code)), "{line:?}: {r:?}");
        assert!(r.error.is_some());
    }
    let r = c.response_after(b"{\"cmd\":\"list\",\"x\":1}\n");
    assert!(
        r.error.as_deref().unwrap().contains("unknown field `x`"),
        "{r:?}"
    );
    // Empty lines are skipped; two requests in one write get two answers, in order; a request
    // may come a byte at a time.
    c.send(b"\n\n{\"cmd\":\"version\"}\n{\"cmd\":\"list\"}\n");
    assert!(c.response().version.is_some());
    assert_eq!(c.response().ports.unwrap()[0].name, "null:ctlbad");
    for b in b"{\"cmd\":\"stats\"}\n" {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.response().stats.unwrap().ports[0].name, "null:ctlbad");
    // A last request without its newline is answered at the client's shutdown.
    c.send(b"{\"cmd\":\"version\"}");
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.response().ok);
    assert!(c.closed());

    // Too long a line: an error, then the connection is closed; the limit itself is fine.
    let mut c = Raw::connect(&ctl);
    let pad = MAX_REQUEST - br#"{"cmd":"list"}"#.len();
    c.send(format!("{}{{\"cmd\":\"list\"}}\n", " ".repeat(pad)).as_bytes());
    assert!(c.response().ok);
    c.send(&vec![b' '; MAX_REQUEST + 1]);
    let r = c.response();
    assert_eq!((r.ok, r.code), (false, Some(ErrorCode::TooLong)));
    assert!(c.closed());
    // Sent without pause, a huge line is cut the same way (the daemon reads no more of it).
    let mut c = Raw::connect(&ctl);
    let huge = vec![b'x'; 1 << 20];
    let _ = c.s.write_all(&huge);
    let r = c.response();
    assert_eq!(r.code, Some(ErrorCode::TooLong));
    assert!(ask(&ctl, Command::Version).ok);
    d.stop();
}

impl Raw {
    fn response_after(&mut self, line: &[u8]) -> Response {
        self.send(line);
        self.response()
    }
}

#[test]
fn silent_and_surplus_clients_hold_nothing() {
    let dir = TempDir::new("silent");
    let (d, ctl) = daemon(&dir.0, &["null:ctlquiet"]);
    // Clients that connect and say nothing, send half a request, or ask without ever reading
    // the answers (until the daemon stops reading them): all slots but one taken.
    let started = Instant::now();
    let mut silent: Vec<Raw> = (0..MAX_CLIENTS - 1).map(|_| Raw::connect(&ctl)).collect();
    silent[0].send(b"{\"cmd\":");
    silent[1].s.set_nonblocking(true).unwrap();
    let flood = b"{\"cmd\":\"stats\"}\n".repeat(100_000);
    let mut flooded = 0;
    while let Ok(n) = silent[1].s.write(&flood[flooded..]) {
        flooded += n;
        if flooded == flood.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        flooded < flood.len(),
        "the daemon read every request unanswered"
    );
    silent[1].s.set_nonblocking(false).unwrap();
    // The last slot still serves.
    assert!(ask(&ctl, Command::Version).ok);
    silent.push(Raw::connect(&ctl));
    // One more is told the daemon is busy, and closed.
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = Raw::connect(&ctl);
    let r = extra.response();
    assert_eq!((r.ok, r.code), (false, Some(ErrorCode::Busy)), "{r:?}");
    assert!(extra.closed());
    // Meanwhile the port is served: a frontend connects and sends.
    let mut p = Port::open(&dir.vhost_user("null:ctlquiet")).expect("the port is still served");
    {
        let mut t = p.tx_ring(0);
        for _ in 0..10 {
            assert!(t.send(&[1; 64]));
        }
        t.txsync().expect("txsync");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stats().ports[0].tx_packets < 10 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    // The silent ones are cut at the request deadline; then everyone is served again. (Read
    // only after it: reading the flooder's answers earlier would let the daemon answer on, and
    // so keep that connection alive, legitimately.)
    std::thread::sleep(
        (started + REQUEST_TIMEOUT + Duration::from_millis(300))
            .saturating_duration_since(Instant::now()),
    );
    for c in &mut silent {
        assert!(c.closed());
    }
    let waited = started.elapsed();
    assert!(
        waited >= REQUEST_TIMEOUT && waited < REQUEST_TIMEOUT + Duration::from_secs(3),
        "{waited:?}"
    );
    let s = ask(&ctl, Command::Stats { port: None }).stats.unwrap();
    assert_eq!(s.ports[0].tx_packets, 10);
    assert_eq!(s.ports[0].frontend, FrontendState::Running);

    // Many clients at once, each asking in turn: every one is answered, or told `busy`.
    let answered: Vec<Response> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..32)
            .map(|_| sc.spawn(|| request(&ctl, &Command::List, T).expect("an answer")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answered
        .iter()
        .all(|r| r.ok || r.code == Some(ErrorCode::Busy)));
    assert!(answered.iter().any(|r| r.ok));
    drop(p);
    d.stop();
}

#[test]
fn a_second_daemon_on_the_same_control_socket_is_refused() {
    let dir = TempDir::new("twice");
    let (first, ctl) = daemon(&dir.0, &["null:ctltwice1"]);
    let mut config = DaemonConfig::in_dir(&dir.0, &["null:ctltwice2"]).unwrap();
    config.control_socket = Some(ctl.clone());
    match Daemon::start(&config) {
        Err(e @ DaemonError::Control(ServeError::InUse(..))) => {
            assert!(e.to_string().starts_with("--control-socket: "), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second daemon started"),
    }
    // Its port sockets were stopped again; the first daemon still answers.
    assert!(!dir.0.join("null:ctltwice2.sock").exists());
    assert!(ask(&ctl, Command::Version).ok);
    first.stop();
}

fn ctl_binary(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ptnet-ctl"))
        .args(args)
        .output()
        .expect("ptnet-ctl");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn ptnet_ctl_tables_json_and_exit_codes() {
    let dir = TempDir::new("bin");
    let (d, ctl) = daemon(&dir.0, &["null:ctlbin@conf:rings=2,slots=512"]);
    let sd = dir.0.to_str().unwrap();
    let (code, out, _) = ctl_binary(&["--socket-dir", sd, "list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PORT"), "{out}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["null:ctlbin", "null", "idle", "threads", "2/2", "512/512"]
    );
    let (code, out, _) = ctl_binary(&["--socket", ctl.to_str().unwrap(), "stats", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(
        (&v["ok"], &v["stats"]["ports"][0]["name"]),
        (&true.into(), &"null:ctlbin".into())
    );
    let (code, out, _) = ctl_binary(&["--socket-dir", sd, "version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ptnet-backend "), "{out}");
    let (code, out, _) = ctl_binary(&[
        "--socket-dir",
        sd,
        "stats",
        "null:ctlbin",
        "--watch",
        "0.1",
        "--count",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0);
    let rates: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(rates.len(), 2, "{out}");
    assert_eq!(rates[1]["ports"][0]["name"], "null:ctlbin");
    assert_eq!(rates[1]["ports"][0]["tx_pps"], 0.0);

    // A refused request, and a bad command line: 2.
    let (code, _, err) = ctl_binary(&["--socket-dir", sd, "stats", "null:nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no port named \"null:nope\""), "{err}");
    for bad in [
        &["--socket-dir", sd, "frobnicate"][..],
        &["--socket-dir", sd][..],
        &["--socket-dir", sd, "stats", "--watch", "0"][..],
        &["--socket-dir", sd, "--socket", "/x", "list"][..],
    ] {
        assert_eq!(ctl_binary(bad).0, 2, "{bad:?}");
    }
    d.stop();
    // No daemon: 1, naming the socket.
    let (code, _, err) = ctl_binary(&["--socket-dir", sd, "list"]);
    assert_eq!(code, 1);
    assert!(err.contains(ctl.to_str().unwrap()), "{err}");
}

/// The daemon binary: the control socket by default in the socket directory, none with
/// `--control-socket none`.
#[test]
fn the_binary_serves_its_control_socket_by_default() {
    let dir = TempDir::new("daemonbin");
    for (extra, want) in [(&[][..], true), (&["--control-socket", "none"][..], false)] {
        let child = backend(&dir.0)
            .args(extra)
            .args(["--netmap", "user", "null:ctldefault"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ptnet-backend");
        wait_for_path(&dir.0.join("null:ctldefault.sock"));
        std::thread::sleep(Duration::from_millis(100));
        let ctl = dir.0.join("ptnet-backend.ctl");
        assert_eq!(ctl.exists(), want, "{extra:?}");
        if want {
            let p = ask(&ctl, Command::List).ports.unwrap();
            assert_eq!(p[0].name, "null:ctldefault");
        }
        terminate(child);
        assert!(!ctl.exists(), "left behind");
    }
}

/// `--print-capabilities` (QEMU's vhost-user backend convention): one JSON object, exit 0; it
/// takes no other argument.
#[test]
fn the_binary_prints_its_capabilities() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ptnet-backend"))
            .args(args)
            .output()
            .expect("ptnet-backend")
    };
    let out = run(&["--print-capabilities"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(v, serde_json::json!({"type": "net", "features": []}));
    let out = run(&["--print-capabilities", "null:x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// With `--socket-group`, the control socket gets the group and mode 0660, like the ports'.
#[test]
fn the_control_socket_takes_the_socket_group() {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        eprintln!("skipped: giving a socket an arbitrary group needs root");
        return;
    }
    let dir = TempDir::new("group");
    let mut config = DaemonConfig::in_dir(&dir.0, &["null:ctlgroup"]).unwrap();
    let ctl = dir.0.join("c.ctl");
    config.control_socket = Some(ctl.clone());
    config.serve.socket_group = Some(4242);
    let d = Daemon::start(&config).expect("daemon");
    let m = std::fs::metadata(&ctl).unwrap();
    assert_eq!((m.mode() & 0o777, m.gid()), (0o660, 4242), "{:o}", m.mode());
    assert!(ask(&ctl, Command::Version).ok);
    d.stop();
    assert!(!ctl.exists());
}
