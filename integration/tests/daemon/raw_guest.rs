//! A hostile guest ([`RawGuest`]) that writes whatever it likes into its registers, CSB and rings:
//! refused, counted, contained to its own port.

use crate::common::{frame, receive, send, wait_for, RawGuest};
use ptnet_driver::transport::Transport;
use ptnet_driver::Port;
use ptnet_integration::host::pkt_gen;
use ptnet_integration::{Backend, PortCounters};
use ptnet_protocol::regs::{ptnet, ENXIO};
use std::time::{Duration, Instant};

/// The counters the daemon logged for `port` when its last frontend went ("rings stopped").
fn stopped(b: &Backend, port: &str) -> PortCounters {
    let log = b.log_text();
    PortCounters::last_stopped(&log, port)
        .unwrap_or_else(|| panic!("no 'rings stopped' counters for {port}:\n{log}"))
}

#[test]
fn csb_outside_guest_memory_is_refused() {
    let (_d, b) = Backend::in_temp_dir("csbout", &["vale2:a"]);
    let mut g = RawGuest::attach(&b.socket("vale2:a"));
    // Far beyond the frontend's memory table, then straddling its end, then zero.
    g.program_csb(0xdead_0000_0000, g.csb.ktoa_gpa);
    assert_eq!(g.create(), ENXIO);
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa + 64 * 1024 * 1024 - 64);
    assert_eq!(g.create(), ENXIO);
    g.program_csb(0, 0);
    assert_eq!(g.create(), ENXIO);
    // The same device works once the addresses are sane.
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
}

#[test]
fn refused_requests_are_logged_at_most_once_a_second() {
    let (_d, mut b) = Backend::in_temp_dir("refusals", &["vale4:a"]);
    let mut g = RawGuest::attach(&b.socket("vale4:a"));
    let started = Instant::now();
    for _ in 0..300 {
        assert!(
            g.t.write_reg(ptnet::NUM_TX_RINGS, 7).is_err(),
            "a write to a read-only register is NACKed"
        );
    }
    let burst = started.elapsed();
    // The connection goes on: the device still works.
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(g.t.write_reg(ptnet::NUM_TX_RINGS, 7).is_err());
    b.stop();
    let log = b.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("; refused")).collect();
    let windows = burst.as_secs() as usize + 1;
    assert!(
        lines.len() >= 2 && lines.len() <= windows + 1,
        "{} lines for 301 refusals over {burst:?}: {log}",
        lines.len()
    );
    assert!(lines[0].contains("not a writable register"), "{}", lines[0]);
    // The line after the pause accounts for what was not logged.
    let unlogged: u64 = lines
        .iter()
        .filter_map(|l| l.split("refused_unlogged=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(unlogged as usize + lines.len(), 301, "{log}");
}

#[test]
fn bad_ring_indexes_reset_the_ring_and_traffic_resumes() {
    let (_d, mut b) = Backend::in_temp_dir("badidx", &["vale3:a", "vale3:b"]);
    let mut recv_port = Port::open(&b.interface("vale3:b")).unwrap();
    let mut g = RawGuest::attach(&b.socket("vale3:a"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let (atok, ktoa) = g.entries(0);
    let n = g.rings[0].num_slots();
    assert_eq!(ktoa.appl_read(), (n - 1, 0));
    for (head, cur) in [(n + 5, 0), (0, n), (u32::MAX, u32::MAX)] {
        atok.appl_write(head, cur);
        g.t.kick(0);
        wait_for("the reset to be logged", || {
            b.log_text().matches("ring reset").count() > 0
        });
        assert_eq!(
            ktoa.appl_read(),
            (n - 1, 0),
            "host state unchanged by bad indexes"
        );
        assert!(
            ktoa.kern_need_kick(),
            "host listens for kicks after a reset"
        );
    }
    // A sane update after the resets is served.
    g.fill(0, 7);
    g.fill(1, 8);
    atok.appl_write(2, 2);
    g.t.kick(0);
    let got = receive(&mut recv_port, 2, Duration::from_secs(2));
    assert_eq!(got.iter().map(|f| f[14]).collect::<Vec<_>>(), vec![7, 8]);
    drop(g);
    b.stop();
    let resets = stopped(&b, "vale3:a").resets;
    assert!(resets >= 1, "{}", b.log_text());
}

#[test]
fn bad_buffer_indexes_and_lengths_are_dropped() {
    let (_d, mut b) = Backend::in_temp_dir("badslot", &["vale4:a", "vale4:b"]);
    let mut recv_port = Port::open(&b.interface("vale4:b")).unwrap();
    let mut g = RawGuest::attach(&b.socket("vale4:a"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let (atok, ktoa) = g.entries(0);
    for s in 0..5 {
        g.fill(s, s as u8);
    }
    let r = &g.rings[0];
    r.set_buf_idx(1, g.bufs.num() + 1000); // outside the pool
    r.set_buf_idx(2, 0); // the reserved "no buffer" index
    r.set_len(3, 4000); // longer than a buffer
    atok.appl_write(5, 5);
    g.t.kick(0);
    let got = receive(&mut recv_port, 5, Duration::from_secs(1));
    assert_eq!(
        got.iter().map(|f| f[14]).collect::<Vec<_>>(),
        vec![0, 4],
        "only the sane slots travel"
    );
    wait_for("completion", || ktoa.appl_read().1 == 5);
    drop(g);
    b.stop();
    assert_eq!(stopped(&b, "vale4:a").bad_slots, 3, "{}", b.log_text());
    assert!(
        b.log_text()
            .lines()
            .any(|l| l.contains("were dropped") && l.contains("vale4:a")),
        "bad slots are logged with the port name:\n{}",
        b.log_text()
    );
}

#[test]
fn bad_slots_on_a_pipe_never_reach_the_peer_as_bad_indexes() {
    let (_d, b) = Backend::in_temp_dir("badpipe", &["netmap:bp{1", "netmap:bp}1"]);
    let mut rx = Port::open(&b.interface("netmap:bp}1")).unwrap();
    let mut g = RawGuest::attach(&b.socket("netmap:bp{1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let (atok, _) = g.entries(0);
    g.fill(0, 1);
    g.fill(1, 2);
    g.rings[0].set_buf_idx(1, u32::MAX);
    g.fill(2, 3);
    atok.appl_write(3, 3);
    g.t.kick(0);
    // The bad slot arrives as an empty packet; the good ones intact, in order.
    let got = receive(&mut rx, 3, Duration::from_secs(2));
    assert_eq!(got.len(), 3);
    assert_eq!(got[0][14], 1);
    assert!(got[1].is_empty());
    assert_eq!(got[2][14], 3);
}

/// A hostile pipe receiver that puts bad buffer indexes in its own RX slots loses only its own
/// traffic, and the loss counts on it: the sender's packets all count as sent, none as its bad
/// slots.
#[test]
fn a_pipe_receivers_corrupt_slots_count_on_the_receiver() {
    let (_d, mut b) = Backend::in_temp_dir("rxbad", &["netmap:rb{1", "netmap:rb}1"]);
    let mut g = RawGuest::attach(&b.socket("netmap:rb}1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let rx = &g.rings[g.tx_rings as usize];
    for s in 0..rx.num_slots() {
        rx.set_buf_idx(s, u32::MAX);
    }
    let tx = pkt_gen(
        &["-i", &b.interface("netmap:rb{1"), "-f", "tx", "-n", "10"],
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(tx.success(), "{}\n{}", tx.stdout, tx.stderr);
    b.stop();
    let log = b.log_text();
    let last = |port| {
        PortCounters::last(&log, Some(port))
            .unwrap_or_else(|| panic!("no counters for {port}\n{log}"))
    };
    let (sender, receiver) = (last("netmap:rb{1"), last("netmap:rb}1"));
    assert_eq!((sender.tx_packets, sender.bad_slots), (10, 0), "{log}");
    assert_eq!(receiver.bad_slots, 10, "{log}");
}

#[test]
fn slots_released_just_before_a_disconnect_are_not_delivered_again() {
    let (_d, b) = Backend::in_temp_dir("release", &["netmap:st{1", "netmap:st}1"]);
    let mut tx = Port::open(&b.interface("netmap:st{1")).unwrap();
    let mut g = RawGuest::attach(&b.socket("netmap:st}1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let rx_ring = g.tx_rings;
    let (atok, ktoa) = g.entries(rx_ring);
    send(
        &mut tx,
        0,
        &(0..10)
            .map(|i| frame([2; 6], [4; 6], i))
            .collect::<Vec<_>>(),
    );
    wait_for("ten packets", || ktoa.appl_read().0 == 10);
    // Release all ten without kicking (the host asked for no kick), then vanish.
    atok.appl_write(10, 10);
    drop(g);
    wait_for("the disconnect", || {
        b.log_text().contains("frontend disconnected")
    });
    let mut rx = Port::open(&b.interface("netmap:st}1")).unwrap();
    assert!(
        receive(&mut rx, 1, Duration::from_millis(300)).is_empty(),
        "released slots came back"
    );
    send(&mut tx, 0, &[frame([2; 6], [4; 6], 42)]);
    assert_eq!(receive(&mut rx, 1, Duration::from_secs(2))[0][14], 42);
}

#[test]
fn a_reset_ring_waits_for_the_guest_instead_of_spinning() {
    let (_d, mut b) = Backend::in_temp_dir("resetspin", &["netmap:rs{1", "netmap:rs}1"]);
    let mut tx = Port::open(&b.interface("netmap:rs{1")).unwrap();
    let mut g = RawGuest::attach(&b.socket("netmap:rs}1"));
    g.program_csb(g.csb.atok_gpa, g.csb.ktoa_gpa);
    assert_eq!(g.create(), 0);
    let rx_ring = g.tx_rings;
    let (atok, ktoa) = g.entries(rx_ring);
    // The receiver publishes nonsense, then packets arrive for it: the port has news, but the
    // ring cannot take it in until the guest repairs its indexes.
    atok.appl_write(5000, 5000);
    g.t.kick(rx_ring);
    send(
        &mut tx,
        0,
        &(0..10)
            .map(|i| frame([2; 6], [4; 6], i))
            .collect::<Vec<_>>(),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Repaired, the ring delivers what waited.
    atok.appl_write(0, 0);
    g.t.kick(rx_ring);
    wait_for("the waiting packets", || ktoa.appl_read().0 == 10);
    drop(g);
    b.stop();
    let resets = stopped(&b, "netmap:rs}1").resets;
    assert!(
        (1..100).contains(&resets),
        "{resets} resets: the ring spun\n{}",
        b.log_text()
    );
}
