//! [`DaemonStats`] in Prometheus' text exposition format (version 0.0.4): one `# HELP` and one
//! `# TYPE` line per metric family, then its samples, families never interleaved. Counters end in
//! `_total`. The labels: `port` (the port's name), `ring` / `queue` (the index, TX rings first as
//! in `ptnet-ctl stats`), `direction` (`tx`: guest to port, `rx`: port to guest) and `cause` for
//! the drops and errors, whose causes are one family each so that `sum by (port)` adds them up.

use crate::daemon::stats::{DaemonStats, Dir, FrontendState, RingCounters, VirtqueueCounters};
use std::fmt::Write;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A per-ring counter: its metric name, help text, its `cause` label if any, and where it is in
/// [`RingCounters`] (the JSON field `ptnet-ctl stats --json` shows, for the coverage test).
type RingField = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    fn(&RingCounters) -> u64,
);

/// Every counter of [`RingCounters`], as a metric.
const RING_FIELDS: &[RingField] = &[
    ("ptnet_ring_packets_total", "Packets moved by the ring (TX: sent or dropped by the port; RX: received by the guest).", None, "packets", |r| r.packets),
    ("ptnet_ring_bytes_total", "Bytes moved by the ring (TX rings, and RX rings of NIC ports).", None, "bytes", |r| r.bytes),
    ("ptnet_ring_drops_total", "Packets dropped or refused by the ring, by cause: ring_full (no room at the destination), bad_slot (bad buffer index or length), src_refused (VALE: a source MAC the port does not own), no_route (VALE: a destination port just added or removed).", Some("ring_full"), "drops", |r| r.drops),
    ("ptnet_ring_drops_total", "", Some("bad_slot"), "bad_slots", |r| r.bad_slots),
    ("ptnet_ring_drops_total", "", Some("src_refused"), "src_refused", |r| r.src_refused),
    ("ptnet_ring_drops_total", "", Some("no_route"), "no_route", |r| r.no_route),
    ("ptnet_ring_resets_total", "Ring resets for bad head/cur values from the guest.", None, "resets", |r| r.resets),
    ("ptnet_ring_batches_total", "Syncs of the port that moved the ring.", None, "batches", |r| r.batches),
    ("ptnet_ring_kicks_total", "Kicks received from the guest.", None, "kicks", |r| r.kicks),
    ("ptnet_ring_interrupts_total", "Interrupts for the ring, by outcome: sent (raised in the guest), suppressed (slots completed or delivered while the guest asked for none).", Some("sent"), "irqs_sent", |r| r.irqs_sent),
    ("ptnet_ring_interrupts_total", "", Some("suppressed"), "irqs_suppressed", |r| r.irqs_suppressed),
];

/// A per-virtqueue counter, as [`RingField`].
type VqField = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    fn(&VirtqueueCounters) -> u64,
);

/// Every counter of [`VirtqueueCounters`] (ports served with `frontend=virtio-net`).
const VQ_FIELDS: &[VqField] = &[
    ("ptnet_virtqueue_packets_total", "Frames moved by the virtqueue (TX: into the port; RX: into the guest).", None, "packets", |q| q.packets),
    ("ptnet_virtqueue_bytes_total", "Bytes moved by the virtqueue, without virtio-net headers.", None, "bytes", |q| q.bytes),
    ("ptnet_virtqueue_errors_total", "Descriptor chains or frames the virtqueue refused, by cause; broken counts the queue stopping until it is set up again.", Some("bad_chain"), "bad_chains", |q| q.bad_chains),
    ("ptnet_virtqueue_errors_total", "", Some("bad_address"), "bad_addresses", |q| q.bad_addresses),
    ("ptnet_virtqueue_errors_total", "", Some("too_long"), "too_long", |q| q.too_long),
    ("ptnet_virtqueue_errors_total", "", Some("too_short"), "too_short", |q| q.too_short),
    ("ptnet_virtqueue_errors_total", "", Some("bad_header"), "bad_headers", |q| q.bad_headers),
    ("ptnet_virtqueue_errors_total", "", Some("bad_head"), "bad_heads", |q| q.bad_heads),
    ("ptnet_virtqueue_errors_total", "", Some("broken"), "broken", |q| q.broken),
    ("ptnet_virtqueue_batches_total", "Rounds of the queue pair's thread that moved frames through the virtqueue.", None, "batches", |q| q.batches),
    ("ptnet_virtqueue_kicks_total", "Kicks received from the guest.", None, "kicks", |q| q.kicks),
    ("ptnet_virtqueue_interrupts_total", "Interrupts for the virtqueue, by outcome: sent (raised in the guest), suppressed (chains used while the guest asked for none).", Some("sent"), "interrupts", |q| q.interrupts),
    ("ptnet_virtqueue_interrupts_total", "", Some("suppressed"), "interrupts_suppressed", |q| q.interrupts_suppressed),
];

/// A label value, escaped as the format wants (backslash, double quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn dir_name(d: Dir) -> &'static str {
    match d {
        Dir::Tx => "tx",
        Dir::Rx => "rx",
    }
}

/// The exposition of the families whose name starts at `fields[i]`, each sample from `rows`.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Renders `stats`.
pub fn render(stats: &DaemonStats) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.family(
        "ptnet_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    o.sample(
        "ptnet_uptime_seconds",
        &[],
        format_args!("{:.3}", stats.uptime_s),
    );
    o.family(
        "ptnet_kick_faults_total",
        "counter",
        "Kick eventfds that faulted, all ports together.",
    );
    o.sample("ptnet_kick_faults_total", &[], stats.kick_faults);
    o.family(
        "ptnet_interrupt_writes_cut_total",
        "counter",
        "Interrupt writes given up because a frontend's call eventfd was blocking and full.",
    );
    o.sample(
        "ptnet_interrupt_writes_cut_total",
        &[],
        stats.interrupt_writes_cut,
    );

    o.family(
        "ptnet_port_frontend_state",
        "gauge",
        "1 for the state the port's frontend is in (idle: no connection; connected: rings stopped; running; stopped: not served), 0 for the others.",
    );
    for p in &stats.ports {
        for (state, name) in [
            (FrontendState::Idle, "idle"),
            (FrontendState::Connected, "connected"),
            (FrontendState::Running, "running"),
            (FrontendState::Stopped, "stopped"),
        ] {
            let v = u8::from(p.frontend == state);
            o.sample(
                "ptnet_port_frontend_state",
                &[("port", &p.name), ("state", name)],
                v,
            );
        }
    }
    o.family(
        "ptnet_port_connections_total",
        "counter",
        "Frontend connections the port accepted.",
    );
    for p in &stats.ports {
        o.sample(
            "ptnet_port_connections_total",
            &[("port", &p.name)],
            p.connections,
        );
    }

    let mut last = "";
    for &(name, help, cause, _, get) in RING_FIELDS {
        if name != last {
            o.family(name, "counter", help);
            last = name;
        }
        for p in &stats.ports {
            for r in &p.rings {
                let ring = r.index.to_string();
                let mut labels = vec![
                    ("port", p.name.as_str()),
                    ("ring", &ring),
                    ("direction", dir_name(r.dir)),
                ];
                if let Some(c) = cause {
                    labels.push(("cause", c));
                }
                o.sample(name, &labels, get(r));
            }
        }
    }

    let mut last = "";
    for &(name, help, cause, _, get) in VQ_FIELDS {
        if name != last {
            o.family(name, "counter", help);
            last = name;
        }
        for p in &stats.ports {
            for q in p.virtqueues.iter().flatten() {
                let queue = q.index.to_string();
                let mut labels = vec![
                    ("port", p.name.as_str()),
                    ("queue", &queue),
                    ("direction", dir_name(q.dir)),
                ];
                if let Some(c) = cause {
                    labels.push(("cause", c));
                }
                o.sample(name, &labels, get(q));
            }
        }
    }

    o.family(
        "ptnet_kernel_ring_position",
        "gauge",
        "Kernel netmap ports: each running ring's positions from the CSB (pointer: head, hwcur, hwtail).",
    );
    for p in &stats.ports {
        for k in p.kernel_rings.iter().flatten() {
            let ring = k.index.to_string();
            for (pointer, v) in [("head", k.head), ("hwcur", k.hwcur), ("hwtail", k.hwtail)] {
                let labels = [
                    ("port", p.name.as_str()),
                    ("ring", &ring),
                    ("direction", dir_name(k.dir)),
                    ("pointer", pointer),
                ];
                o.sample("ptnet_kernel_ring_position", &labels, v);
            }
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::stats::{DatapathKind, PortStats};

    fn ring(index: u32, dir: Dir, base: u64) -> RingCounters {
        RingCounters {
            index,
            dir,
            packets: base + 1,
            bytes: base + 2,
            drops: base + 3,
            bad_slots: base + 4,
            resets: base + 5,
            src_refused: base + 6,
            batches: base + 7,
            kicks: base + 8,
            irqs_sent: base + 9,
            irqs_suppressed: base + 10,
            no_route: base + 11,
        }
    }

    fn stats() -> DaemonStats {
        DaemonStats {
            uptime_s: 1.5,
            kick_faults: 7,
            interrupt_writes_cut: 8,
            ports: vec![PortStats {
                name: "netmap:a\"b\\{1".into(),
                socket: "/tmp/x.sock".into(),
                datapath: DatapathKind::Threads,
                frontend: FrontendState::Running,
                connections: 2,
                tx_packets: 0,
                tx_bytes: 0,
                rx_packets: 0,
                drops: 0,
                bad_slots: 0,
                resets: 0,
                src_refused: 0,
                rates: None,
                rings: vec![ring(0, Dir::Tx, 10), ring(1, Dir::Rx, 20)],
                kernel_rings: None,
                virtqueues: None,
            }],
        }
    }

    #[test]
    fn every_counter_is_a_sample_with_its_labels() {
        let text = render(&stats());
        let port = r#"port="netmap:a\"b\\{1""#;
        for want in [
            "ptnet_kick_faults_total 7\n".to_string(),
            format!("ptnet_port_frontend_state{{{port},state=\"running\"}} 1\n"),
            format!("ptnet_port_frontend_state{{{port},state=\"idle\"}} 0\n"),
            format!("ptnet_ring_packets_total{{{port},ring=\"0\",direction=\"tx\"}} 11\n"),
            format!("ptnet_ring_bytes_total{{{port},ring=\"1\",direction=\"rx\"}} 22\n"),
            format!("ptnet_ring_drops_total{{{port},ring=\"0\",direction=\"tx\",cause=\"ring_full\"}} 13\n"),
            format!("ptnet_ring_drops_total{{{port},ring=\"1\",direction=\"rx\",cause=\"src_refused\"}} 26\n"),
            format!("ptnet_ring_resets_total{{{port},ring=\"1\",direction=\"rx\"}} 25\n"),
            format!("ptnet_ring_drops_total{{{port},ring=\"0\",direction=\"tx\",cause=\"no_route\"}} 21\n"),
        ] {
            assert!(text.contains(&want), "{want:?} missing in\n{text}");
        }
        // One HELP and one TYPE line per family, and a family's samples together.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line} outside its family");
            }
        }
    }

    /// A counter added to [`RingCounters`] or [`VirtqueueCounters`] must be exported too.
    #[test]
    fn the_tables_cover_every_counter_ptnet_ctl_shows() {
        let fields = |v: serde_json::Value| -> Vec<String> {
            v.as_object()
                .unwrap()
                .iter()
                .filter(|(k, v)| v.is_u64() && *k != "index")
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut ring_fields: Vec<&str> = RING_FIELDS.iter().map(|f| f.3).collect();
        let mut want = fields(serde_json::to_value(ring(0, Dir::Tx, 0)).unwrap());
        ring_fields.sort_unstable();
        want.sort_unstable();
        assert_eq!(ring_fields, want);
        let vq = VirtqueueCounters::of(1, &Default::default());
        let mut vq_fields: Vec<&str> = VQ_FIELDS.iter().map(|f| f.3).collect();
        let mut want = fields(serde_json::to_value(vq).unwrap());
        vq_fields.sort_unstable();
        want.sort_unstable();
        assert_eq!(vq_fields, want);
        // Each getter reads its own field.
        let r = ring(0, Dir::Tx, 100);
        let v = serde_json::to_value(&r).unwrap();
        for f in RING_FIELDS {
            assert_eq!(Some((f.4)(&r)), v[f.3].as_u64(), "{}", f.3);
        }
    }
}
