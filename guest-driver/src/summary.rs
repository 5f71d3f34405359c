//! The one-line JSON summaries `ptnet-pkt-gen --json` and `ptnet-bridge --json` print, as serde
//! types: the tools serialize them, tests deserialize them ([`PktGenSummary::from_output`],
//! [`BridgeSummary::from_output`]).
//!
//! The field names and their order are part of the tools' interface. Rates and durations are
//! printed with a fixed number of decimals (`"seconds":1.500000`), as the tools always did; this
//! needs the `serde_json` serializer ([`PktGenSummary::json`]), other serializers see them as raw
//! JSON values.
//!
//! ```
//! use ptnet_driver::summary::{Mode, PktGenSummary};
//! let s = PktGenSummary::new(Mode::Rx, 1000, 60_000, 0.5);
//! let line = s.json();
//! assert!(line.starts_with(r#"{"mode":"rx","packets":1000,"bytes":60000,"seconds":0.500000,"#));
//! // Read back (rates to the six decimals printed).
//! let back = PktGenSummary::from_output(&line).unwrap();
//! assert_eq!((back.packets, back.mpps), (1000, 0.002));
//! ```

use crate::port::Forwarded;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt::Write as _;

/// Serializes `x` with `D` decimals (`null` if it is not finite).
fn fixed<const D: usize, S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    let text = if x.is_finite() {
        format!("{x:.D$}")
    } else {
        "null".to_string()
    };
    serde_json::value::RawValue::from_string(text)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `n` per second over `seconds`, in millions (0 without a duration).
fn per_second_m(n: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n / seconds / 1e6
    } else {
        0.0
    }
}

/// What `ptnet-pkt-gen` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Transmit.
    Tx,
    /// Receive and verify.
    Rx,
    /// Round trips, one frame at a time.
    Ping,
    /// Reflect every frame.
    Pong,
}

impl Mode {
    /// The name on the command line and in the summary.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tx => "tx",
            Mode::Rx => "rx",
            Mode::Ping => "ping",
            Mode::Pong => "pong",
        }
    }
}

/// Round-trip time percentiles of a ping run, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rtt {
    /// Median.
    #[serde(serialize_with = "fixed::<3, _>")]
    pub p50: f64,
    /// 99th percentile.
    #[serde(serialize_with = "fixed::<3, _>")]
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(serialize_with = "fixed::<3, _>")]
    pub p999: f64,
}

impl Rtt {
    /// The percentiles of `sorted` round-trip times in nanoseconds (ascending), nearest rank.
    #[must_use]
    pub fn from_sorted_ns(sorted: &[u64]) -> Self {
        let us = |p| percentile(sorted, p) as f64 / 1e3;
        Rtt {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
        }
    }
}

/// The `p`-quantile (0..1) of sorted samples, nearest rank; 0 without samples.
#[must_use]
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The summary line of `ptnet-pkt-gen --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PktGenSummary {
    /// What ran.
    pub mode: Mode,
    /// Packets sent (tx, pong) or received (rx, ping).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Duration: tx and ping from start to end, rx and pong from the first packet to the last.
    #[serde(serialize_with = "fixed::<6, _>")]
    pub seconds: f64,
    /// Millions of packets per second.
    #[serde(serialize_with = "fixed::<6, _>")]
    pub mpps: f64,
    /// Gigabits per second.
    #[serde(serialize_with = "fixed::<6, _>")]
    pub gbps: f64,
    /// Frames that did not verify (or could not be reflected, for pong).
    pub errors: u64,
    /// Frames older than the newest of their stream (ping: answers to an earlier ping).
    pub out_of_order: u64,
    /// Frames skipped (ping: pings unanswered).
    pub lost: u64,
    /// Streams that started over from 0 (a restarted sender); absent when 0.
    #[serde(rename = "sender_restarts", default, skip_serializing_if = "is_zero")]
    pub restarts: u64,
    /// ping: pings sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// ping: round-trip times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<Rtt>,
}

impl PktGenSummary {
    /// A summary of `packets` and `bytes` in `seconds`, rates computed, everything else zero.
    #[must_use]
    pub fn new(mode: Mode, packets: u64, bytes: u64, seconds: f64) -> Self {
        PktGenSummary {
            mode,
            packets,
            bytes,
            seconds,
            mpps: per_second_m(packets as f64, seconds),
            gbps: per_second_m(bytes as f64 * 8.0, seconds) / 1e3,
            errors: 0,
            out_of_order: 0,
            lost: 0,
            restarts: 0,
            sent: None,
            rtt_us: None,
        }
    }

    /// The JSON line (without newline).
    #[must_use]
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serializes")
    }

    /// The human-readable line.
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}: {} packets, {} bytes in {:.3} s: {:.3} Mpps {:.3} Gbps",
            self.mode.as_str(),
            self.packets,
            self.bytes,
            self.seconds,
            self.mpps,
            self.gbps
        );
        if self.mode != Mode::Tx {
            let _ = write!(
                s,
                "; errors {} out_of_order {} lost {}",
                self.errors, self.out_of_order, self.lost
            );
        }
        if let Some(sent) = self.sent {
            let _ = write!(s, "; sent {sent}");
        }
        if let Some(r) = self.rtt_us {
            let _ = write!(
                s,
                "; rtt p50 {:.1} us p99 {:.1} us p99.9 {:.1} us",
                r.p50, r.p99, r.p999
            );
        }
        s
    }

    /// The last line of a tool's `output` that is a pkt-gen summary.
    #[must_use]
    pub fn from_output(output: &str) -> Option<Self> {
        last_parsed(output)
    }
}

/// The last line of `output` that parses as a `T`.
fn last_parsed<T: for<'de> Deserialize<'de>>(output: &str) -> Option<T> {
    output
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
}

/// Counters of one direction of a bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeDir {
    /// Packets forwarded.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Received slots dropped (bad buffer index or length).
    pub dropped: u64,
}

impl BridgeDir {
    /// Adds what one [`crate::TxRing::forward_from`] did.
    #[inline]
    pub fn add(&mut self, f: Forwarded) {
        self.packets += u64::from(f.packets);
        self.bytes += f.bytes;
        self.dropped += u64::from(f.dropped);
    }
}

/// The `"mode"` of a bridge summary: always `"bridge"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeMode {
    /// `"bridge"`.
    #[default]
    Bridge,
}

/// The summary line of `ptnet-bridge --json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeSummary {
    /// Always [`BridgeMode::Bridge`].
    pub mode: BridgeMode,
    /// Did packets move by swapping buffers (one memory) rather than by copy?
    pub zero_copy: bool,
    /// Packets forwarded, both directions.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Slots dropped, both directions.
    pub dropped: u64,
    /// From the first packet forwarded to the last.
    #[serde(serialize_with = "fixed::<6, _>")]
    pub seconds: f64,
    /// Millions of packets per second, both directions.
    #[serde(serialize_with = "fixed::<6, _>")]
    pub mpps: f64,
    /// Packets from the first port to the second.
    pub a_to_b_packets: u64,
    /// Their bytes.
    pub a_to_b_bytes: u64,
    /// Slots dropped that way.
    pub a_to_b_dropped: u64,
    /// Packets from the second port to the first.
    pub b_to_a_packets: u64,
    /// Their bytes.
    pub b_to_a_bytes: u64,
    /// Slots dropped that way.
    pub b_to_a_dropped: u64,
}

impl BridgeSummary {
    /// The summary of a run that moved `ab` one way and `ba` the other in `seconds`.
    #[must_use]
    pub fn new(zero_copy: bool, ab: BridgeDir, ba: BridgeDir, seconds: f64) -> Self {
        let packets = ab.packets + ba.packets;
        BridgeSummary {
            mode: BridgeMode::Bridge,
            zero_copy,
            packets,
            bytes: ab.bytes + ba.bytes,
            dropped: ab.dropped + ba.dropped,
            seconds,
            mpps: per_second_m(packets as f64, seconds),
            a_to_b_packets: ab.packets,
            a_to_b_bytes: ab.bytes,
            a_to_b_dropped: ab.dropped,
            b_to_a_packets: ba.packets,
            b_to_a_bytes: ba.bytes,
            b_to_a_dropped: ba.dropped,
        }
    }

    /// The first port to the second.
    #[must_use]
    pub fn a_to_b(&self) -> BridgeDir {
        BridgeDir {
            packets: self.a_to_b_packets,
            bytes: self.a_to_b_bytes,
            dropped: self.a_to_b_dropped,
        }
    }

    /// The second port to the first.
    #[must_use]
    pub fn b_to_a(&self) -> BridgeDir {
        BridgeDir {
            packets: self.b_to_a_packets,
            bytes: self.b_to_a_bytes,
            dropped: self.b_to_a_dropped,
        }
    }

    /// The JSON line (without newline).
    #[must_use]
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serializes")
    }

    /// The human-readable line, with the ports' names.
    #[must_use]
    pub fn text(&self, a: &str, b: &str) -> String {
        let d = |d: BridgeDir| {
            format!(
                "{} packets, {} bytes, {} dropped",
                d.packets, d.bytes, d.dropped
            )
        };
        format!(
            "bridge ({}): {a} -> {b}: {}; {b} -> {a}: {}; {:.3} s, {:.3} Mpps",
            if self.zero_copy { "zero copy" } else { "copy" },
            d(self.a_to_b()),
            d(self.b_to_a()),
            self.seconds,
            self.mpps
        )
    }

    /// The last line of a tool's `output` that is a bridge summary.
    #[must_use]
    pub fn from_output(output: &str) -> Option<Self> {
        last_parsed(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkt_gen_json_is_the_tools_format() {
        let mut s = PktGenSummary::new(Mode::Ping, 10, 600, 1.0);
        s.rtt_us = Some(Rtt {
            p50: 1.0,
            p99: 2.0,
            p999: 3.0,
        });
        s.sent = Some(10);
        assert_eq!(
            s.json(),
            "{\"mode\":\"ping\",\"packets\":10,\"bytes\":600,\"seconds\":1.000000,\
             \"mpps\":0.000010,\"gbps\":0.000005,\"errors\":0,\"out_of_order\":0,\"lost\":0,\
             \"sent\":10,\"rtt_us\":{\"p50\":1.000,\"p99\":2.000,\"p999\":3.000}}"
        );
        let mut s = PktGenSummary::new(Mode::Rx, 3, 180, 0.0);
        s.restarts = 2;
        assert_eq!(
            s.json(),
            "{\"mode\":\"rx\",\"packets\":3,\"bytes\":180,\"seconds\":0.000000,\
             \"mpps\":0.000000,\"gbps\":0.000000,\"errors\":0,\"out_of_order\":0,\"lost\":0,\
             \"sender_restarts\":2}"
        );
        // And back, from a tool's whole output.
        let out = format!("ptnet-pkt-gen: ready\n{}\n", s.json());
        assert_eq!(PktGenSummary::from_output(&out), Some(s));
        assert_eq!(PktGenSummary::from_output("no summary"), None);
    }

    #[test]
    fn pkt_gen_text() {
        let s = PktGenSummary::new(Mode::Tx, 1_000_000, 60_000_000, 2.0);
        assert_eq!(
            s.text(),
            "tx: 1000000 packets, 60000000 bytes in 2.000 s: 0.500 Mpps 0.240 Gbps"
        );
    }

    #[test]
    fn bridge_json_is_the_tools_format() {
        let ab = BridgeDir {
            packets: 4,
            bytes: 240,
            dropped: 1,
        };
        let s = BridgeSummary::new(true, ab, BridgeDir::default(), 2.0);
        assert_eq!(
            s.json(),
            "{\"mode\":\"bridge\",\"zero_copy\":true,\"packets\":4,\"bytes\":240,\"dropped\":1,\
             \"seconds\":2.000000,\"mpps\":0.000002,\"a_to_b_packets\":4,\"a_to_b_bytes\":240,\
             \"a_to_b_dropped\":1,\"b_to_a_packets\":0,\"b_to_a_bytes\":0,\"b_to_a_dropped\":0}"
        );
        assert_eq!(BridgeSummary::from_output(&s.json()), Some(s.clone()));
        // A pkt-gen line is not a bridge summary, nor the other way round.
        let p = PktGenSummary::new(Mode::Rx, 1, 60, 1.0).json();
        assert_eq!(BridgeSummary::from_output(&p), None);
        assert_eq!(PktGenSummary::from_output(&s.json()), None);
        assert_eq!(
            s.text("a", "b"),
            "bridge (zero copy): a -> b: 4 packets, 240 bytes, 1 dropped; \
             b -> a: 0 packets, 0 bytes, 0 dropped; 2.000 s, 0.000 Mpps"
        );
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.999), 7);
        let r = Rtt::from_sorted_ns(&v);
        assert_eq!((r.p50, r.p99, r.p999), (0.5, 0.99, 0.999));
    }
}
