//! The patched QEMU's `ptnet-pci` device on its own: `qemu-patches/tests/qtest-smoke.py` runs QEMU
//! under the qtest accelerator (no guest, no firmware) and plays the guest driver against the real
//! `ptnet-backend`: PCI ids, BARs, registers, the netmap memory through the memdev BAR, PTCTL, CSB
//! programming in guest RAM, kicks; interrupts end to end (a host `ptnet-pkt-gen` sends into the
//! other end of the pipe QEMU serves, the daemon publishes RX hwtail in the CSB and signals the
//! call eventfds, QEMU raises INTx at the IOAPIC or writes the MSI-X message into guest RAM); and
//! the daemon killed and restarted under QEMU (reconnection, state replay, interrupts from the new
//! daemon).
//!
//! QEMU is found like the VM tests find it (`PTNET_QEMU`, else `qemu-patches/build`); a missing
//! QEMU or `python3` fails the test. `#[ignore]`d (it runs QEMU): `cargo xtask test` runs it.

use ptnet_integration::host::{bins, workspace_root, Backend, TempDir};
use ptnet_integration::vm::qemu_binary;
use ptnet_integration::PortCounters;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// QEMU's end of the pipe and the peer's; two rings each way, so MSI-X vectors 2 and 3 are the
/// RX rings' (TX rings first).
const PORTS: [&str; 2] = ["netmap:qt{0@conf:rings=2", "netmap:qt}0@conf:rings=2"];

/// The whole run normally takes a few seconds; this only bounds a hang.
const DEADLINE: Duration = Duration::from_secs(50);

/// Checks that must have run and passed: a script that silently skipped a group fails here.
const REQUIRED: &[&str] = &[
    "PASS ptnet-pci 1b36:000d present",
    "PASS netmap_if name through BAR1 at NIFP_OFS",
    "PASS CREATE with CSB -> 0",
    "PASS appl_need_kick=0: no interrupt",
    "PASS INTx: RX hwtail in the CSB advanced by the packets sent",
    "PASS INTx: asserted after the daemon's call",
    "PASS INTx: IOAPIC input",
    "PASS INTx: held (not pulsed) until the guest masks it",
    "PASS INTx: deasserted once masked",
    "PASS MSI-X masked: each RX ring that received has its pending bit set",
    "PASS MSI-X unmasked: pending MSI delivered",
    "PASS MSI-X: each RX ring that received wrote its vector's data",
    "PASS after backend loss: CREATE -> ENXIO",
    "PASS after reconnection: CREATE -> 0 again",
    "PASS netmap memory mapped after reconnection",
    "PASS restarted daemon resumed the RX rings at the guest's positions",
    "PASS after reconnection: the new daemon's calls reach the guest as MSI-X",
    "PASS DELETE -> 0",
];

/// `N` of every "PASS peer pkt-gen sent N packets" line in `lines`.
fn packets_sent(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("PASS peer pkt-gen sent "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
#[ignore = "boots QEMU: run by `cargo xtask test`, or `cargo test -- --include-ignored`"]
fn qemu_device_qtest_smoke_with_interrupts_and_reconnection() {
    let t0 = Instant::now();
    let qemu = qemu_binary().unwrap_or_else(|e| panic!("{e}"));
    let pkt_gen = bins().unwrap_or_else(|e| panic!("{e}")).pkt_gen;
    let dir = TempDir::new("qtest").unwrap();
    let mut be = Backend::start(dir.path(), &PORTS, &[]).unwrap_or_else(|e| panic!("{e}"));
    let script = workspace_root().join("qemu-patches/tests/qtest-smoke.py");
    let ifname = PORTS[0]
        .strip_prefix("netmap:")
        .and_then(|p| p.split('@').next())
        .unwrap();

    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&qemu)
        .arg(be.socket(PORTS[0]))
        .args(["--expect-ifname", ifname, "--peer"])
        .arg(be.socket(PORTS[1]))
        .arg("--pkt-gen")
        .arg(&pkt_gen)
        .arg("--restart-handshake")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "python3 {}: {e} (cargo xtask deps installs python3)",
                script.display()
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Relay the script's output; restart the daemon when it asks (the test owns the process).
    let mut lines: Vec<String> = Vec::new();
    let mut restarts = 0;
    let mut sent_before_restart = 0;
    let deadline = t0 + DEADLINE;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                eprintln!("qtest-smoke: {line}");
                if line == "RESTART-BACKEND" {
                    restarts += 1;
                    sent_before_restart = packets_sent(&lines);
                    be.restart()
                        .unwrap_or_else(|e| panic!("daemon restart: {e}"));
                    writeln!(stdin, "restarted").expect("script stdin");
                    stdin.flush().expect("script stdin");
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().expect("wait for the script");
    let stderr = err.join().unwrap_or_default();
    be.stop();
    let log = be.log_text();
    let ctx = format!(
        "--- script stdout ---\n{}\n--- script stderr ---\n{stderr}\n--- daemon ---\n{log}",
        lines.join("\n")
    );

    assert!(
        !timed_out,
        "qtest-smoke.py still running after {DEADLINE:?}\n{ctx}"
    );
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\n{ctx}");
    assert!(status.success(), "qtest-smoke.py: {status}\n{ctx}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("0 failure(s)"),
        "{ctx}"
    );
    for req in REQUIRED {
        assert!(
            lines.iter().any(|l| l.starts_with(req)),
            "check '{req}' did not run\n{ctx}"
        );
    }
    assert_eq!(
        restarts, 1,
        "the script asked for one daemon restart\n{ctx}"
    );

    // The restarted daemon's own counters agree with what the script saw after the restart:
    // everything the peer sent crossed the pipe into QEMU's RX rings.
    let sent_after = packets_sent(&lines) - sent_before_restart;
    assert!(sent_after > 0, "no packets after the restart\n{ctx}");
    let ifname_peer = PORTS[1].split('@').next().unwrap();
    let ifname_qemu = PORTS[0].split('@').next().unwrap();
    assert_eq!(
        PortCounters::last(&log, Some(ifname_peer)).map(|c| c.tx_packets),
        Some(sent_after),
        "{ctx}"
    );
    assert_eq!(
        PortCounters::last(&log, Some(ifname_qemu)).map(|c| c.rx_packets),
        Some(sent_after),
        "{ctx}"
    );
    assert!(
        log.matches(&format!("rings started port=\"{ifname_qemu}\""))
            .count()
            >= 2,
        "QEMU's port started before and after the restart\n{ctx}"
    );
    eprintln!("qemu_device: {:.1} s", t0.elapsed().as_secs_f64());
}
