//! A host interface attached to a VALE switch inside the daemon (`ptnet-ctl attach`, and
//! `valeX:IFNAME@conf:attach=KIND` at start-up): a driver on another port of the switch and the
//! kernel stack behind the veth exchange verified traffic both ways through the switch, with no
//! bridge process: UDP datagrams to a kernel socket and back, and pings the driver answers.

use crate::scenarios::{kernel_to_port, port_to_kernel, udp_both_ways_and_ping};
use crate::veth::{veth_pair, VETH};
use ptnet_driver::Port;
use ptnet_integration::host::{run_with_timeout, RunOutput};
use ptnet_integration::{bins, Backend, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn ctl(dir: &Path, args: &[&str]) -> RunOutput {
    let bin: PathBuf = bins().unwrap().backend.with_file_name("ptnet-ctl");
    run_with_timeout(
        Command::new(bin).arg("--socket-dir").arg(dir).args(args),
        Duration::from_secs(30),
    )
    .expect("ptnet-ctl runs")
}

fn code(o: &RunOutput) -> Option<i32> {
    o.status.and_then(|s| s.code())
}

/// The daemon in namespace `ns` serving `ports` (and `extra` arguments).
fn daemon(ns: &str, dir: &TempDir, ports: &[&str], extra: &[&str]) -> Backend {
    Backend::start_under(&["ip", "netns", "exec", ns], dir.path(), ports, extra)
        .unwrap_or_else(|e| panic!("{ports:?}: {e}"))
}

#[test]
fn nic_attach_at_runtime_joins_the_switch_to_the_wire() {
    let (a, b) = veth_pair();
    let dir = TempDir::new("attach-rt").unwrap();
    let mut d = daemon(&a.name, &dir, &["vale0:g"], &[]);
    // Untrusted requests first: each refused with a reason, exit status 2, nothing changed.
    for (args, needle) in [
        (&["attach", "vale0", "nosuch0"][..], "nosuch0"),
        (&["attach", "vale0", "va0", "--kind", "dpdk"], "dpdk"),
        (&["attach", "pipe0", "va0"], "pipe0"),
        (&["attach", "vale0", "a/b"], "a/b"),
        (&["detach", "vale0", "va0"], "va0"),
        (&["detach", "vale0", "g"], "not an attached interface"),
    ] {
        let o = ctl(dir.path(), args);
        assert_eq!(code(&o), Some(2), "{args:?}: {o:?}");
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
    }
    let o = ctl(dir.path(), &["attach", "vale0", "va0", "--kind", "packet"]);
    assert_eq!(code(&o), Some(0), "{o:?}\n{}", d.log_text());
    assert!(o.stdout.contains("vale+packet"), "{}", o.stdout);
    let o = ctl(dir.path(), &["attach", "vale0", "va0"]);
    assert_eq!(code(&o), Some(2), "attached twice: {o:?}");

    let mut port = Port::open(&d.interface("vale0:g")).expect("driver attaches");
    udp_both_ways_and_ping(&mut port, &VETH(&b));

    // The attached port's counters are what went through it: 200 datagrams and 50 pongs to
    // the wire; from it 200 datagrams and 50 pings (and whatever the kernel sent on its own).
    let o = ctl(dir.path(), &["stats", "vale0:va0", "--json"]);
    assert_eq!(code(&o), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let p = &v["stats"]["ports"][0];
    assert!(p["rx_packets"].as_u64().unwrap() >= 250, "{p}");
    assert!(p["tx_packets"].as_u64().unwrap() >= 250, "{p}");
    assert_eq!(p["frontend"], "running");

    // Detached: the switch floods to nobody, the kernel gets nothing more.
    let o = ctl(dir.path(), &["detach", "vale0", "va0"]);
    assert_eq!(code(&o), Some(0), "{o:?}");
    let o = ctl(dir.path(), &["list"]);
    assert!(!o.stdout.contains("va0"), "{}", o.stdout);
    // Attached again through AF_XDP, it works again.
    let o = ctl(dir.path(), &["attach", "vale0", "va0", "--kind", "xdp"]);
    assert_eq!(code(&o), Some(0), "{o:?}\n{}", d.log_text());
    assert!(o.stdout.contains("vale+xdp"), "{}", o.stdout);
    port_to_kernel(&mut port, &VETH(&b), 0, 50, 4999);
    // A tap the daemon creates joins the switch too.
    let o = ctl(dir.path(), &["attach", "vale0", "tapat0", "--kind", "tap"]);
    assert_eq!(code(&o), Some(0), "{o:?}\n{}", d.log_text());
    let o = ctl(dir.path(), &["detach", "vale0", "tapat0"]);
    assert_eq!(code(&o), Some(0), "{o:?}");
    drop(port);
    d.stop();
}

#[test]
fn nic_attach_on_the_command_line() {
    let (a, b) = veth_pair();
    let dir = TempDir::new("attach-cl").unwrap();
    let mut d = daemon(
        &a.name,
        &dir,
        &["vale1:g"],
        &["vale1:va0@conf:attach=packet"],
    );
    let mut port = Port::open(&d.interface("vale1:g")).expect("driver attaches");
    port_to_kernel(&mut port, &VETH(&b), 0, 200, 4322);
    kernel_to_port(&mut port, &VETH(&b), 200, 4, 5556);
    let o = ctl(dir.path(), &["list"]);
    assert!(o.stdout.contains("vale1:va0"), "{}", o.stdout);
    drop(port);
    d.stop();
}
