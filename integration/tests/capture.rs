//! `ptnet-ctl capture` against the real daemon: frames sent by an in-process driver through a
//! pipe are captured on both ends (the sender's TX, the receiver's RX), read back with
//! `capture::pcap::read` and compared byte for byte with what was sent, and read by tcpdump;
//! bad requests exit 2; a capture nobody reads never slows or drops the port's traffic. Also the
//! ring counters (batches, kicks, interrupts) after traffic.

use ptnet_backend::capture::pcap;
use ptnet_driver::{Port, RingId};
use ptnet_integration::host::{finish, pkt_gen, run_with_timeout, spawn_pkt_gen, RunOutput};
use ptnet_integration::{bins, json_num, Backend};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ctl_bin() -> PathBuf {
    std::env::var_os("PTNET_CTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins().unwrap().backend.with_file_name("ptnet-ctl"))
}

fn ctl_cmd(b: &Backend, args: &[&str]) -> Command {
    let dir = b.socket("x").parent().unwrap().to_path_buf();
    let mut c = Command::new(ctl_bin());
    c.arg("--socket-dir").arg(dir).args(args);
    c
}

fn ctl(b: &Backend, args: &[&str]) -> RunOutput {
    run_with_timeout(&mut ctl_cmd(b, args), Duration::from_secs(30)).expect("ptnet-ctl runs")
}

fn code(o: &RunOutput) -> Option<i32> {
    o.status.and_then(|s| s.code())
}

/// Starts `ptnet-ctl capture` and waits until its file has the pcap header (the daemon's tap
/// runs from then on).
fn start_capture(b: &Backend, port: &str, count: u64, file: &Path) -> Child {
    let n = count.to_string();
    let child = ctl_cmd(
        b,
        &["capture", port, "-c", &n, "-w", file.to_str().unwrap()],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ptnet-ctl capture starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(file).map_or(0, |m| m.len()) < 24 {
        assert!(Instant::now() < deadline, "no pcap header in {file:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn wait_child(c: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = c;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let out = c.wait_with_output().unwrap();
            return (st.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            return (None, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Frame `i`: 60 to 1514 bytes, its sequence number in bytes 14..18, the rest a pattern of it.
fn frame(i: u32) -> Vec<u8> {
    let len = 60 + (i as usize * 37) % 1455;
    let mut f: Vec<u8> = (0..len)
        .map(|k| (k as u32).wrapping_mul(7).wrapping_add(i) as u8)
        .collect();
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xa]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&i.to_be_bytes());
    f
}

/// Sends `frames` on `tx` while `rx` receives them; returns what `rx` got.
fn send_and_receive(tx: &mut Port, rx: &mut Port, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut next = 0;
    while got.len() < frames.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} received",
            got.len(),
            frames.len()
        );
        {
            let mut t = tx.tx_ring(0);
            while next < frames.len() && t.send(&frames[next]) {
                next += 1;
            }
            t.txsync().unwrap();
        }
        {
            let mut r = rx.rx_ring(0);
            r.rxsync().unwrap();
            let mut buf = [0u8; 2048];
            while let Some(n) = r.recv(&mut buf) {
                got.push(buf[..n.min(2048)].to_vec());
            }
            r.rxsync().unwrap();
        }
        if got.len() < frames.len() {
            let _ = rx.wait_any(&[RingId::Rx(0)], Some(Duration::from_millis(5)));
        }
    }
    got
}

#[test]
fn capture_of_both_ends_is_what_was_sent_byte_for_byte() {
    const N: u32 = 3000;
    let (d, b) = Backend::in_temp_dir("capture", &["netmap:cap{1", "netmap:cap}1"]);
    let open = |p: &str| Port::open(&b.interface(p)).expect("attach");
    let (mut tx, mut rx) = (open("netmap:cap{1"), open("netmap:cap}1"));
    let (fa, fb) = (d.path().join("tx.pcap"), d.path().join("rx.pcap"));
    let ca = start_capture(&b, "netmap:cap{1", u64::from(N), &fa);
    let cb = start_capture(&b, "netmap:cap}1", u64::from(N), &fb);
    let sent: Vec<Vec<u8>> = (0..N).map(frame).collect();
    let got = send_and_receive(&mut tx, &mut rx, &sent);
    assert!(got == sent, "the pipe itself corrupted frames");
    for (c, f) in [(ca, &fa), (cb, &fb)] {
        let (st, err) = wait_child(c);
        assert_eq!(st, Some(0), "{f:?}: {err}\n{}", b.log_text());
        assert!(err.contains(&format!("\"captured\":{N}")), "{err}");
        assert!(err.contains("\"missed\":0"), "{err}");
        let frames = pcap::read(&std::fs::read(f).unwrap()).expect("a valid pcap file");
        assert_eq!(frames.len(), N as usize, "{f:?}");
        for (i, (r, s)) in frames.iter().zip(&sent).enumerate() {
            assert_eq!(r.orig_len as usize, s.len(), "{f:?} frame {i}");
            assert!(r.data == *s, "{f:?}: frame {i} differs from what was sent");
        }
        assert!(frames.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        if Command::new("tcpdump").arg("--version").output().is_ok() {
            let out = Command::new("tcpdump")
                .args(["-n", "-r"])
                .arg(f)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // One line a frame (an unknown ethertype's hex dump follows on indented lines).
            let lines = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with(char::is_whitespace))
                .count();
            assert_eq!(lines, N as usize, "tcpdump -r {f:?}");
        } else {
            eprintln!("tcpdump not installed (cargo xtask deps): not tried");
        }
    }

    // `-w -` streams the same pcap to stdout.
    let mut c = ctl_cmd(&b, &["capture", "netmap:cap}1", "-c", "10", "-w", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let more: Vec<Vec<u8>> = (N..N + 10).map(frame).collect();
    send_and_receive(&mut tx, &mut rx, &more);
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(c.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(0));
    let frames = pcap::read(&stdout).expect("a pcap stream");
    assert_eq!(frames.into_iter().map(|f| f.data).collect::<Vec<_>>(), more);

    // The ring counters after that traffic: batches, kicks and interrupts, and plausible.
    let out = ctl(&b, &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("stats JSON");
    for p in v["stats"]["ports"].as_array().unwrap() {
        for r in p["rings"].as_array().unwrap() {
            let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("no {k} in {r}"));
            eprintln!("{} ring {}: {r}", p["name"], r["index"]);
            if n("packets") == 0 {
                continue;
            }
            assert!(n("batches") > 0 && n("batches") <= n("packets"), "{r}");
            // A TX ring is woken by the sender's kick at least once (its loop sleeps at the
            // start); an RX ring with direct delivery may never need one. A kick that finds
            // nothing new (the guest asks for completions) is no batch, so kicks can exceed
            // batches, not packets.
            if r["dir"] == "tx" {
                assert!(n("kicks") > 0, "{r}");
            }
            assert!(n("kicks") <= n("packets") + 1, "{r}");
            assert!(n("irqs_sent") + n("irqs_suppressed") > 0, "{r}");
            assert!(n("irqs_sent") <= n("batches") + 1, "{r}");
        }
    }
    let table = ctl(&b, &["stats"]).stdout;
    assert!(
        table.contains("BATCHES") && table.contains("IRQS_SUPPR"),
        "{table}"
    );
}

/// One raw request on the control socket: the answer line.
fn raw(b: &Backend, line: &str) -> String {
    let path = b.socket("x").parent().unwrap().join("ptnet-backend.ctl");
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&s).write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    answer
}

#[test]
fn bad_capture_requests_are_refused_and_exit_2() {
    let (d, b) = Backend::in_temp_dir("capbad", &["netmap:cb{1", "netmap:cb}1"]);
    let f = d.path().join("x.pcap");
    let f = f.to_str().unwrap();
    for args in [
        vec!["capture", "nosuch", "-w", f],
        vec!["capture", "netmap:cb{1", "-c", "0", "-w", f],
        vec!["capture", "netmap:cb{1", "-s", "0", "-w", f],
        vec!["capture", "netmap:cb{1", "-s", "9000", "-w", f],
        vec!["capture", "netmap:cb{1", "-c", "x", "-w", f],
        vec!["capture", "netmap:cb{1"],
    ] {
        let out = ctl(&b, &args);
        assert_eq!(code(&out), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    for (req, want) in [
        (
            r#"{"cmd":"capture","port":"netmap:cb{1","count":0}"#,
            "bad_argument",
        ),
        (
            r#"{"cmd":"capture","port":"netmap:cb{1","snaplen":70000}"#,
            "bad_argument",
        ),
        (
            r#"{"cmd":"capture","port":"netmap:cb{1","snaplen":-1}"#,
            "bad_request",
        ),
        (r#"{"cmd":"capture","port":"no"}"#, "no_such_port"),
        (r#"{"cmd":"capture"}"#, "bad_request"),
        (
            r#"{"cmd":"capture","port":"netmap:cb{1","ports":["a"]}"#,
            "unexpected_field",
        ),
    ] {
        let a = raw(&b, req);
        assert!(a.contains(&format!("\"code\":\"{want}\"")), "{req}: {a}");
    }
    // One capture per port: the second is refused while the first runs, and runs once it ended.
    let first = start_capture(&b, "netmap:cb{1", 1_000_000, &d.path().join("first.pcap"));
    let out = ctl(&b, &["capture", "netmap:cb{1", "-w", f]);
    assert_eq!(code(&out), Some(2), "{out:?}");
    assert!(out.stderr.contains("already running"), "{out:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (st, err) = wait_child(first);
    assert_eq!(st, Some(0), "Ctrl-C ends a capture cleanly: {err}");
    assert!(err.contains("\"captured\":0"), "{err}");
    let mut again = start_capture(&b, "netmap:cb{1", 1, &d.path().join("again.pcap"));
    let _ = again.kill();
    let _ = again.wait();
}

/// pkt-gen's receive rate and loss through the pipe, `n` frames.
fn pipe_run(b: &Backend, n: u64) -> (f64, String) {
    let ns = n.to_string();
    let rx = spawn_pkt_gen(&[
        "-i",
        &b.interface("netmap:cs}1"),
        "-f",
        "rx",
        "-n",
        &ns,
        "--timeout",
        "10",
        "--json",
    ])
    .expect("rx starts");
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let tx = pkt_gen(
        &[
            "-i",
            &b.interface("netmap:cs{1"),
            "-f",
            "tx",
            "-n",
            &ns,
            "--json",
        ],
        Duration::from_secs(120),
    )
    .expect("tx runs");
    let secs = t0.elapsed().as_secs_f64();
    assert!(tx.success(), "{}", tx.stderr);
    let rx = finish(rx, Duration::from_secs(120));
    let line = rx.last_line().expect("rx summary").to_string();
    assert_eq!(json_num(&line, "packets"), Some(n as f64), "{line}");
    assert_eq!(json_num(&line, "lost"), Some(0.0), "{line}");
    (n as f64 / secs, line)
}

#[test]
fn a_capture_nobody_reads_never_slows_the_port() {
    const N: u64 = 2_000_000;
    let (_d, b) = Backend::in_temp_dir("capslow", &["netmap:cs{1", "netmap:cs}1"]);
    let (base, _) = pipe_run(&b, N);
    // A client that asks for a capture of both ends and reads nothing.
    let path = b.socket("x").parent().unwrap().join("ptnet-backend.ctl");
    let stuck: Vec<UnixStream> = ["netmap:cs{1", "netmap:cs}1"]
        .iter()
        .map(|p| {
            let s = UnixStream::connect(&path).unwrap();
            (&s).write_all(format!("{{\"cmd\":\"capture\",\"port\":\"{p}\"}}\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (slow, _) = pipe_run(&b, N);
    eprintln!("pipe: {base:.0} pps alone, {slow:.0} pps under an unread capture");
    // 2 CPUs shared with other tests: only a collapse is a failure.
    assert!(slow > base * 0.4, "{slow:.0} pps vs {base:.0}");
    // The stuck clients were dropped (their captures stopped): the ports can be captured again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = raw(&b, r#"{"cmd":"capture","port":"netmap:cs{1","count":1}"#);
        if a.contains("\"ok\":true") {
            break;
        }
        assert!(a.contains("capture_busy"), "{a}");
        assert!(
            Instant::now() < deadline,
            "the unread capture was never dropped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (after, _) = pipe_run(&b, N);
    eprintln!("pipe: {after:.0} pps after the unread captures were dropped");
    // What they got is far less than the traffic: the rest was missed (counted), not waited for.
    for s in &stuck {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut &*s, &mut got);
        assert!((got.len() as u64) < N * 60 / 2, "{} bytes", got.len());
    }
}
