//! The daemon's counters as data ([`DaemonStats`], serializable), and their reports: the log
//! lines of SIGUSR1, `--stats-every` and exit, and with `--stats-format json` one JSON object per
//! report on stdout.

use crate::daemon::config::StatsFormat;
use crate::daemon::server::FrontendStatus;
use crate::frontend::virtio_net::vq::VqStats;
use crate::port::ring::RingStats;
use crate::served::{Datapath, Port};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Every port's counters at one moment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DaemonStats {
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// Kick eventfds that faulted (could not be read, or reported errors), all ports together.
    pub kick_faults: u64,
    /// Interrupt writes given up after `sys::SIGNAL_WRITE_BOUND`: a frontend that made its call
    /// eventfd blocking and full, so the writer (maybe another port's thread) would have waited.
    pub interrupt_writes_cut: u64,
    /// The ports, in command-line order.
    pub ports: Vec<PortStats>,
}

impl DaemonStats {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// Which loop syncs a port's rings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DatapathKind {
    /// The daemon's ring threads (userspace netmap ports).
    Threads,
    /// The kernel's sync loop (kernel netmap ports; no counters, positions only).
    Kernel,
}

/// A port's frontend.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FrontendState {
    /// No connection.
    Idle,
    /// A connection, its rings stopped.
    Connected,
    /// A connection whose rings run.
    Running,
    /// The daemon is not serving the port (stopped).
    Stopped,
}

impl From<Option<FrontendStatus>> for FrontendState {
    fn from(s: Option<FrontendStatus>) -> Self {
        match s {
            None => Self::Stopped,
            Some(s) if s.running => Self::Running,
            Some(s) if s.connected => Self::Connected,
            Some(_) => Self::Idle,
        }
    }
}

/// One port's counters (the sums are those of its log line).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PortStats {
    /// The port's name (the PORT argument without `@conf`).
    pub name: String,
    /// Its socket.
    pub socket: PathBuf,
    /// Which loop runs its rings.
    pub datapath: DatapathKind,
    /// Its frontend.
    pub frontend: FrontendState,
    /// Connections accepted.
    pub connections: u64,
    /// Packets sent by the guest (TX rings).
    pub tx_packets: u64,
    /// Bytes sent by the guest (TX rings).
    pub tx_bytes: u64,
    /// Packets received by the guest (RX rings).
    pub rx_packets: u64,
    /// Packets dropped for lack of room at a destination, all rings.
    pub drops: u64,
    /// Slots refused for a bad buffer index or length, all rings.
    pub bad_slots: u64,
    /// Ring resets for bad head/cur values, all rings.
    pub resets: u64,
    /// VALE: frames refused for a source address the port does not own.
    pub src_refused: u64,
    /// Packet rates since the last periodic report (`--stats-every` reports only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
    /// Each ring's counters (threads ports; empty for kernel ports).
    pub rings: Vec<RingCounters>,
    /// Kernel ports whose rings run: each ring's positions, from the CSB.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub kernel_rings: Option<Vec<KernelRing>>,
    /// Ports served as virtio-net devices (`frontend=virtio-net`): each virtqueue's counters,
    /// since the daemon started (the netmap rings' are in [`Self::rings`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub virtqueues: Option<Vec<VirtqueueCounters>>,
}

/// One virtqueue's counters ([`VqStats`]): virtqueue `2i` is queue pair `i`'s RX, `2i + 1` its
/// TX.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VirtqueueCounters {
    /// Virtqueue index.
    pub index: u32,
    /// TX (guest to port) or RX.
    pub dir: Dir,
    /// See [`VqStats::packets`].
    pub packets: u64,
    /// See [`VqStats::bytes`].
    pub bytes: u64,
    /// See [`VqStats::bad_chains`].
    pub bad_chains: u64,
    /// See [`VqStats::bad_addresses`].
    pub bad_addresses: u64,
    /// See [`VqStats::too_long`].
    pub too_long: u64,
    /// See [`VqStats::too_short`].
    pub too_short: u64,
    /// See [`VqStats::bad_headers`].
    pub bad_headers: u64,
    /// See [`VqStats::bad_heads`].
    pub bad_heads: u64,
    /// See [`VqStats::broken`].
    pub broken: u64,
    /// See [`VqStats::interrupts`].
    pub interrupts: u64,
    /// See [`VqStats::interrupts_suppressed`].
    #[serde(default)]
    pub interrupts_suppressed: u64,
    /// See [`VqStats::batches`].
    #[serde(default)]
    pub batches: u64,
    /// See [`VqStats::kicks`].
    #[serde(default)]
    pub kicks: u64,
}

impl VirtqueueCounters {
    /// Virtqueue `index`'s counters, now.
    pub fn of(index: u32, s: &VqStats) -> Self {
        let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Self {
            index,
            dir: if index.is_multiple_of(2) {
                Dir::Rx
            } else {
                Dir::Tx
            },
            packets: l(&s.packets),
            bytes: l(&s.bytes),
            bad_chains: l(&s.bad_chains),
            bad_addresses: l(&s.bad_addresses),
            too_long: l(&s.too_long),
            too_short: l(&s.too_short),
            bad_headers: l(&s.bad_headers),
            bad_heads: l(&s.bad_heads),
            broken: l(&s.broken),
            interrupts: l(&s.interrupts),
            interrupts_suppressed: l(&s.interrupts_suppressed),
            batches: l(&s.batches),
            kicks: l(&s.kicks),
        }
    }
}

/// The virtqueues' log line: `vq0 rx: packets=... ...; vq1 tx: ...`.
fn virtqueue_line(v: &[Arc<VqStats>]) -> String {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            let dir = if i.is_multiple_of(2) { "rx" } else { "tx" };
            format!("vq{i} {dir}: {}", s.line())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Packet rates, in millions of packets a second.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rates {
    /// TX rings.
    pub tx_mpps: f64,
    /// RX rings.
    pub rx_mpps: f64,
}

/// TX or RX.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Guest to port.
    Tx,
    /// Port to guest.
    Rx,
}

/// One ring's counters ([`RingStats`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RingCounters {
    /// Ring index (TX rings first): the vhost-user queue.
    pub index: u32,
    /// TX or RX.
    pub dir: Dir,
    /// Packets moved.
    pub packets: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Drops.
    pub drops: u64,
    /// Bad slots.
    pub bad_slots: u64,
    /// Resets.
    pub resets: u64,
    /// Refused source addresses.
    pub src_refused: u64,
    /// Syncs that moved the ring.
    #[serde(default)]
    pub batches: u64,
    /// Kicks received.
    #[serde(default)]
    pub kicks: u64,
    /// Interrupts sent.
    #[serde(default)]
    pub irqs_sent: u64,
    /// Interrupts suppressed (the frontend asked for none).
    #[serde(default)]
    pub irqs_suppressed: u64,
    /// VALE: frames for a port the ring's table does not have (just added or removed).
    #[serde(default)]
    pub no_route: u64,
}

/// A kernel netmap ring's positions, from the CSB.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelRing {
    /// Ring index (TX rings first).
    pub index: u32,
    /// TX or RX.
    pub dir: Dir,
    /// The guest's head.
    pub head: u32,
    /// The kernel's hwcur.
    pub hwcur: u32,
    /// The kernel's hwtail.
    pub hwtail: u32,
}

/// The counters of `port`, served on `socket` (`frontend`: `None` once not served;
/// `virtqueues`: its virtio-net device's, if it is served as one).
pub fn port_stats(
    port: &Port,
    socket: PathBuf,
    frontend: Option<FrontendStatus>,
    virtqueues: Option<&[Arc<VqStats>]>,
) -> PortStats {
    let ntx = port.geometry().num_tx_rings;
    let dir = |i: u32| if i < ntx { Dir::Tx } else { Dir::Rx };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let rings: Vec<RingCounters> = port
        .stats()
        .iter()
        .zip(0u32..)
        .map(|(s, index): (&Arc<RingStats>, u32)| RingCounters {
            index,
            dir: dir(index),
            packets: load(&s.packets),
            bytes: load(&s.bytes),
            drops: load(&s.drops),
            bad_slots: load(&s.bad_slots),
            resets: load(&s.resets),
            src_refused: load(&s.src_refused),
            batches: load(&s.batches),
            kicks: load(&s.kicks),
            irqs_sent: load(&s.irqs_sent),
            irqs_suppressed: load(&s.irqs_suppressed),
            no_route: load(&s.no_route),
        })
        .collect();
    let sum = |f: fn(&RingCounters) -> u64, d: Option<Dir>| {
        rings
            .iter()
            .filter(|r| d.is_none_or(|d| r.dir == d))
            .map(f)
            .sum()
    };
    let (datapath, kernel_rings) = match port.datapath() {
        Datapath::Threads { .. } => (DatapathKind::Threads, None),
        Datapath::Kernel(k) => (
            DatapathKind::Kernel,
            k.csb_positions().map(|pos| {
                pos.into_iter()
                    .zip(0u32..)
                    .map(|((head, hwcur, hwtail), index)| KernelRing {
                        index,
                        dir: dir(index),
                        head,
                        hwcur,
                        hwtail,
                    })
                    .collect()
            }),
        ),
    };
    PortStats {
        name: port.name().to_string(),
        socket,
        datapath,
        frontend: frontend.into(),
        connections: frontend.map_or(0, |f| f.accepted),
        tx_packets: sum(|r| r.packets, Some(Dir::Tx)),
        tx_bytes: sum(|r| r.bytes, Some(Dir::Tx)),
        rx_packets: sum(|r| r.packets, Some(Dir::Rx)),
        drops: sum(|r| r.drops, None),
        bad_slots: sum(|r| r.bad_slots, None),
        resets: sum(|r| r.resets, None),
        src_refused: sum(|r| r.src_refused, None),
        rates: None,
        rings,
        kernel_rings,
        virtqueues: virtqueues.map(|v| {
            v.iter()
                .zip(0u32..)
                .map(|(s, i)| VirtqueueCounters::of(i, s))
                .collect()
        }),
    }
}

/// Why a report is made.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// SIGUSR1.
    Signal,
    /// `--stats-every`.
    Interval,
    /// The daemon stopped.
    Exit,
}

/// One report as `--stats-format json` prints it: `{"event":"stats","reason":...,` then the
/// fields of [`DaemonStats`]`}`.
#[derive(Serialize)]
struct JsonReport<'a> {
    event: &'static str,
    reason: Reason,
    #[serde(flatten)]
    stats: &'a DaemonStats,
}

/// Reports the counters: the log lines of today, and the JSON line if asked.
pub struct Reporter {
    format: StatsFormat,
    since: Instant,
    /// Each port's packets at the last periodic report, by name (ports come and go at runtime).
    packets: std::collections::HashMap<String, (u64, u64)>,
    /// The virtqueue counters of the virtio-net ports served at start-up, by name, for their
    /// log line.
    virtqueues: std::collections::HashMap<String, Vec<Arc<VqStats>>>,
}

impl Reporter {
    /// A reporter whose first rates count from now; `virtqueues[i]`: port `i`'s virtio-net
    /// counters, if it is served as a virtio-net device ([`crate::daemon::Daemon::virtqueues`]).
    pub fn new(
        format: StatsFormat,
        ports: &[Arc<Port>],
        virtqueues: Vec<Option<Vec<Arc<VqStats>>>>,
    ) -> Self {
        Self {
            format,
            since: Instant::now(),
            packets: ports
                .iter()
                .map(|p| (p.name().to_string(), p.packets()))
                .collect(),
            virtqueues: ports
                .iter()
                .zip(virtqueues)
                .filter_map(|(p, v)| Some((p.name().to_string(), v?)))
                .collect(),
        }
    }

    /// When the last periodic report was made (or the reporter created).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Reports `stats` of `ports` for `reason`: a log line per port (with rates since the last
    /// periodic report for [`Reason::Interval`]), and the JSON line.
    pub fn report(&mut self, reason: Reason, ports: &[Arc<Port>], mut stats: DaemonStats) {
        if reason == Reason::Interval {
            let secs = self.since.elapsed().as_secs_f64().max(1e-6);
            let mut packets = std::collections::HashMap::new();
            for p in ports {
                let now = p.packets();
                let prev = self.packets.get(p.name()).copied().unwrap_or_default();
                let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs / 1e6;
                let r = Rates {
                    tx_mpps: rate(now.0, prev.0),
                    rx_mpps: rate(now.1, prev.1),
                };
                tracing::info!(
                    port = p.name(),
                    tx_mpps = format!("{:.3}", r.tx_mpps),
                    rx_mpps = format!("{:.3}", r.rx_mpps),
                    "{}",
                    p.stats_line()
                );
                if let Some(s) = stats.ports.iter_mut().find(|s| s.name == p.name()) {
                    s.rates = Some(r);
                }
                packets.insert(p.name().to_string(), now);
            }
            self.packets = packets;
            self.since = Instant::now();
        } else {
            for p in ports {
                tracing::info!(port = p.name(), "{}", p.stats_line());
            }
        }
        for p in ports {
            if let Some(v) = self.virtqueues.get(p.name()) {
                tracing::info!(port = p.name(), "virtio-net {}", virtqueue_line(v));
            }
        }
        if self.format == StatsFormat::Json {
            let report = JsonReport {
                event: "stats",
                reason,
                stats: &stats,
            };
            let mut line = serde_json::to_string(&report).expect("stats serialize");
            // One write for the whole line, newline included, so that a log line written to
            // the same file meanwhile cannot land inside it.
            line.push('\n');
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
}
