//! The daemon's per-port counters, read back from its output: the one place that knows how the
//! daemon reports them.
//!
//! On SIGUSR1, every `--stats-every` seconds and at exit, `ptnet-backend --stats-format json`
//! prints one JSON object a line (`{"event":"stats",...,"ports":[{"name":..,"tx_packets":..}]}`),
//! which [`Backend`](crate::host::Backend) always asks for: those are parsed as JSON. A log
//! without them (a daemon started by hand with text stats) falls back to the text lines
//! (`tx_packets=.. ... port="NAME"`). The counters of one frontend's connection exist only as
//! the "rings stopped (...)" log line ([`PortCounters::last_stopped`]). Tests compare
//! [`PortCounters`], not log text.

use serde::Deserialize;

/// One `--stats-format json` report, as far as the tests read it.
#[derive(Deserialize)]
struct StatsReport {
    event: String,
    ports: Vec<PortReport>,
}

/// One port of a [`StatsReport`] (its other fields are ignored).
#[derive(Deserialize)]
struct PortReport {
    name: String,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    drops: u64,
    bad_slots: u64,
    resets: u64,
    src_refused: u64,
}

/// One port's counters, as one log line gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets the port's TX rings moved (guest to host).
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets the port's RX rings delivered (host to guest).
    pub rx_packets: u64,
    /// Packets dropped (no room, link down, ...).
    pub drops: u64,
    /// Slots refused for a bad buffer index or length.
    pub bad_slots: u64,
    /// Ring resets after bad indexes.
    pub resets: u64,
    /// Frames refused for a source address another port owns (VALE).
    pub src_refused: u64,
}

/// The value of `key=N` in `line`, `key` being a whole word (not the tail of another key).
pub fn counter(line: &str, key: &str) -> Option<u64> {
    line.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',' | ';'))
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

impl PortCounters {
    /// The counters of one stats line; `None` unless it has them all.
    pub fn parse(line: &str) -> Option<Self> {
        let c = |k| counter(line, k);
        Some(Self {
            tx_packets: c("tx_packets")?,
            tx_bytes: c("tx_bytes")?,
            rx_packets: c("rx_packets")?,
            drops: c("drops")?,
            bad_slots: c("bad_slots")?,
            resets: c("resets")?,
            src_refused: c("src_refused")?,
        })
    }

    /// Every set of counters `log` has for `port` (any port when `None`), oldest first: from
    /// its JSON stats lines when it has any, else from its text stats lines.
    pub fn all(log: &str, port: Option<&str>) -> Vec<Self> {
        let json = Self::all_json(log, port);
        if log.lines().any(|l| l.starts_with("{\"event\":\"stats\"")) {
            return json;
        }
        let tag = port.map(|p| format!("port=\"{p}\""));
        log.lines()
            .filter(|l| tag.as_ref().is_none_or(|t| l.contains(t.as_str())))
            .filter_map(Self::parse)
            .collect()
    }

    /// The counters of every JSON stats report in `log` for `port` (any port when `None`).
    fn all_json(log: &str, port: Option<&str>) -> Vec<Self> {
        log.lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<StatsReport>(l).ok())
            .filter(|r| r.event == "stats")
            .flat_map(|r| r.ports)
            .filter(|p| port.is_none_or(|n| n == p.name))
            .map(|p| Self {
                tx_packets: p.tx_packets,
                tx_bytes: p.tx_bytes,
                rx_packets: p.rx_packets,
                drops: p.drops,
                bad_slots: p.bad_slots,
                resets: p.resets,
                src_refused: p.src_refused,
            })
            .collect()
    }

    /// The last counters `log` has for `port` (any port when `None`).
    pub fn last(log: &str, port: Option<&str>) -> Option<Self> {
        Self::all(log, port).pop()
    }

    /// The counters of the last "rings stopped" line for `port` (a frontend went).
    pub fn last_stopped(log: &str, port: &str) -> Option<Self> {
        let tag = format!("port=\"{port}\"");
        log.lines()
            .filter(|l| l.contains("rings stopped") && l.contains(&tag))
            .filter_map(Self::parse)
            .next_back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "2026-01-01T00:00:00Z  INFO ptnet_backend::cli: tx_packets=5000 tx_bytes=300000 \
        rx_packets=0 drops=2 bad_slots=3 resets=1 src_refused=7 port=\"netmap:st{0\"";

    #[test]
    fn parses_a_stats_line() {
        let c = PortCounters::parse(LINE).unwrap();
        assert_eq!(
            c,
            PortCounters {
                tx_packets: 5000,
                tx_bytes: 300000,
                rx_packets: 0,
                drops: 2,
                bad_slots: 3,
                resets: 1,
                src_refused: 7,
            }
        );
        assert_eq!(counter(LINE, "packets"), None);
        assert_eq!(PortCounters::parse("tx_packets=1 rx_packets=2"), None);
    }

    #[test]
    fn json_reports_are_read_and_preferred() {
        let json = r#"{"event":"stats","reason":"exit","uptime_s":1.0,"kick_faults":0,"ports":[{"name":"a","socket":"/x","tx_packets":7,"tx_bytes":420,"rx_packets":0,"drops":1,"bad_slots":0,"resets":0,"src_refused":0,"rings":[]},{"name":"b","tx_packets":0,"tx_bytes":0,"rx_packets":6,"drops":0,"bad_slots":2,"resets":3,"src_refused":4}]}"#;
        let log = format!("{LINE}\n{json}\n");
        let a = PortCounters::last(&log, Some("a")).unwrap();
        assert_eq!((a.tx_packets, a.tx_bytes, a.drops), (7, 420, 1));
        let b = PortCounters::last(&log, Some("b")).unwrap();
        assert_eq!(
            (b.rx_packets, b.bad_slots, b.resets, b.src_refused),
            (6, 2, 3, 4)
        );
        // With JSON reports present, the text line (port netmap:st{0) is not read.
        assert_eq!(PortCounters::last(&log, Some("netmap:st{0")), None);
        assert_eq!(PortCounters::all(&log, None).len(), 2);
    }

    #[test]
    fn picks_the_port_and_the_last_line() {
        let other = LINE
            .replace("netmap:st{0", "netmap:st}0")
            .replace("=5000", "=9");
        let later = LINE.replace("=5000", "=6000");
        let log = format!("{LINE}\n{other}\n{later}\n");
        let last = PortCounters::last(&log, Some("netmap:st{0")).unwrap();
        assert_eq!(last.tx_packets, 6000);
        assert_eq!(PortCounters::last(&log, None).unwrap().tx_packets, 6000);
        assert_eq!(PortCounters::all(&log, Some("netmap:st}0")).len(), 1);
        let stopped = format!(
            "{log}x: rings stopped (tx_packets=1 tx_bytes=60 rx_packets=0 drops=0 bad_slots=0 \
             resets=4 src_refused=0) port=\"a\"\n"
        );
        assert_eq!(
            PortCounters::last_stopped(&stopped, "a").map(|c| c.resets),
            Some(4)
        );
        assert_eq!(PortCounters::last_stopped(&log, "netmap:st{0"), None);
    }
}
