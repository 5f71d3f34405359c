//! An `xdp:` port's daemon stopped and started again at once, as a user's restart (or the
//! benchmark's next run) does: the kernel releases the old AF_XDP socket's queue some time after
//! the old daemon exited, and the new daemon must wait for it rather than fail. A queue that stays
//! held is refused after the deadline, naming the interface and the queue.

use crate::netns::{run_daemon_in, Daemon};
use crate::scenarios::{kernel_to_port, port_to_kernel};
use crate::veth::{has_xdp_program, xdp_veth_pair, VETH};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Six restarts, each new daemon started the moment the previous one was told to go (SIGTERM,
/// or SIGKILL every other round: no clean shutdown), before it has exited and long before the
/// kernel released its socket's queue: every one binds, moves traffic both ways, and leaves no
/// XDP program behind at the end.
#[test]
fn nic_xdp_daemon_restarted_at_once_binds_and_moves_traffic() {
    let (a, b) = xdp_veth_pair(1);
    let mut old: Option<Daemon> = None;
    for round in 0..6u16 {
        let t0 = Instant::now();
        if let Some(d) = &old {
            d.signal(if round % 2 == 0 {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            });
        }
        let d = Daemon::start(&a, "xdp:va0");
        let started = t0.elapsed();
        if let Some(mut prev) = old.take() {
            let _ = prev.terminate();
        }
        let mut port = d.open();
        port_to_kernel(&mut port, &VETH(&b), 0, 40, 5000 + round);
        let per_ring = kernel_to_port(&mut port, &VETH(&b), 40, 1, 6000 + round);
        assert_eq!(per_ring, vec![40], "round {round}");
        drop(port);
        eprintln!("round {round}: daemon up in {started:?}");
        old = Some(d);
    }
    let (c, log) = old.take().expect("the last daemon").stop();
    assert!(c.tx_packets >= 40 && c.rx_packets >= 40, "{c:?}\n{log}");
    assert_eq!(c.bad_slots, 0, "{log}");
    assert!(
        !has_xdp_program(&a, "va0"),
        "the XDP program outlived the daemon"
    );
}

/// A second daemon on an interface whose queue a running daemon holds waits for the deadline
/// (about 5 s), then exits 2 naming the interface and the queue; the first daemon is unharmed.
#[test]
fn nic_xdp_queue_held_by_a_running_daemon_is_refused_after_the_deadline() {
    let (a, b) = xdp_veth_pair(1);
    let first = Daemon::start(&a, "xdp:va0");
    let t0 = Instant::now();
    let out = run_daemon_in(&a, "xdp:va0");
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in ["xdp:va0", "queue 0 of va0", "still busy", "busy"] {
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(30)).contains(&took),
        "refused after {took:?}, not after the ~5 s deadline: {err}"
    );
    let mut port = first.open();
    port_to_kernel(&mut port, &VETH(&b), 0, 20, 5100);
}
