//! `ptnet-ctl`, the control socket's client (like `vale-ctl` or `ovs-appctl`): one request per
//! run (`list`, `stats`, `version`, `add`, `remove`, `attach`, `detach`, `capture`), the answer as a table, or as the daemon's JSON with
//! `--json`. `stats --watch SECONDS` samples again every SECONDS and prints each port's rates.
//!
//! Exit status: 0 done; 1 the daemon could not be reached (or hung up, or answered nonsense);
//! 2 a bad command line, or a request the daemon refused (e.g. no such port).

mod capture;
mod rings;

use crate::daemon::control::protocol::{Command, PortInfo, Response, CONTROL_SOCKET_NAME};
use crate::daemon::stats::{DaemonStats, Dir, PortStats};
use crate::portspec::AttachKind;
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
The daemon's control socket is DIR/ptnet-backend.ctl for ptnet-backend --socket-dir DIR,
PATH.ctl for ptnet-backend --socket PATH, or what ptnet-backend --control-socket names.
The protocol is one JSON object a line, e.g.
  {\"cmd\":\"list\"}  {\"cmd\":\"stats\",\"port\":\"vale0:1\"}  {\"cmd\":\"version\"}
answered by {\"ok\":true,...} or {\"ok\":false,\"code\":...,\"error\":...}.

Exit status: 0 done, 1 the daemon is not reachable, 2 a bad command line or a refused request.

Examples:
  ptnet-ctl --socket-dir /run/ptnet list
  ptnet-ctl --socket-dir /run/ptnet stats vale0:1 --json
  ptnet-ctl --socket-dir /run/ptnet stats --watch 1
  ptnet-ctl --socket-dir /run/ptnet add vale0:vm3 'netmap:p{2@conf:rings=2'
  ptnet-ctl --socket-dir /run/ptnet remove vale0:vm3
  ptnet-ctl --socket-dir /run/ptnet attach vale0 eth1 --kind packet
  ptnet-ctl --socket-dir /run/ptnet detach vale0 eth1
  ptnet-ctl --socket-dir /run/ptnet capture vale0:1 -c 100 -w vm1.pcap
  ptnet-ctl --socket-dir /run/ptnet capture vale0:1 -w - | tcpdump -n -r -";

/// Ask a running ptnet-backend about its ports, over its control socket.
#[derive(Parser, Debug)]
#[command(name = "ptnet-ctl", version, about, after_help = AFTER_HELP)]
pub struct CtlArgs {
    /// The daemon's socket directory (its --socket-dir): talk to DIR/ptnet-backend.ctl.
    #[arg(long, value_name = "DIR", conflicts_with = "socket", global = true)]
    pub socket_dir: Option<PathBuf>,
    /// The control socket itself.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON answer line as it came instead of a table (with --watch: one
    /// JSON object of rates a line).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a daemon that does not answer within SECONDS.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, global = true)]
    pub timeout: f64,
    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ptnet-ctl`'s commands.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Every port: kind, frontend state (idle, connected, running), rings, slots, socket.
    List,
    /// Every port's counters, or PORT's.
    Stats {
        /// Only this port.
        port: Option<String>,
        /// Sample every SECONDS and print each port's packet and bit rates.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
        /// With --watch: stop after N intervals (default: until interrupted).
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// The daemon's version, protocol version and pid.
    Version,
    /// Adds ports while the daemon runs (PORT as on ptnet-backend's command line, @conf:
    /// included): a VALE switch gains a port, a pipe is created (an end brings its peer), a
    /// null or host interface port is opened; each gets its socket. All or nothing.
    Add {
        /// The ports.
        #[arg(required = true, value_name = "PORT")]
        ports: Vec<String>,
    },
    /// Removes ports: a frontend attached is disconnected (its rings stopped first), the socket
    /// removed. Both ends of a served pipe go together: name both.
    Remove {
        /// The ports' names.
        #[arg(required = true, value_name = "PORT")]
        ports: Vec<String>,
    },
    /// Attaches host interface IFNAME to VALE switch SWITCH (as vale-ctl -a): a port
    /// SWITCH:IFNAME driven by a daemon thread, no socket, no bridge process.
    Attach {
        /// The switch (valeX).
        switch: String,
        /// The host interface.
        ifname: String,
        /// Through which port kind.
        #[arg(long, default_value = "packet", value_parser = ["packet", "xdp", "tap"])]
        kind: String,
    },
    /// Detaches an attached interface from its switch (as vale-ctl -h).
    Detach {
        /// The switch (valeX).
        switch: String,
        /// The host interface.
        ifname: String,
    },
    /// Captures PORT's frames, both directions, into a pcap file (as tcpdump -w): a monitor
    /// that never slows the port (frames it cannot keep up with are counted missed). Ends
    /// after COUNT frames or on Ctrl-C; the counts go to stderr.
    Capture {
        /// The port.
        port: String,
        /// Stop after COUNT frames.
        #[arg(short = 'c', long, value_name = "COUNT")]
        count: Option<u64>,
        /// Keep the first SNAPLEN bytes of each frame (1..=2048, default 2048).
        #[arg(short = 's', long, value_name = "SNAPLEN")]
        snaplen: Option<u32>,
        /// The pcap file; `-` streams to stdout (`| tcpdump -r -`, `| wireshark -k -i -`).
        #[arg(short = 'w', long, value_name = "FILE", required = true)]
        write: PathBuf,
    },
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Connecting, writing or reading failed.
    #[error("cannot reach ptnet-backend at {}: {source}", path.display())]
    Unreachable {
        /// The control socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon's answer is not a response.
    #[error("ptnet-backend at {} answered nonsense: {why}", path.display())]
    BadAnswer {
        /// The control socket.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The most a response line may have (the stats of 32 ports of 32 rings are far less).
const MAX_RESPONSE: u64 = 16 << 20;

/// Sends `cmd` on the control socket `path` and reads its answer, within `timeout` for each
/// step.
pub fn request(path: &Path, cmd: &Command, timeout: Duration) -> Result<Response, CtlError> {
    request_line(path, cmd, timeout).map(|(r, _)| r)
}

/// [`request`], with the answer's line as the daemon sent it (newline excluded).
pub fn request_line(
    path: &Path,
    cmd: &Command,
    timeout: Duration,
) -> Result<(Response, String), CtlError> {
    let unreachable = |source| CtlError::Unreachable {
        path: path.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(unreachable)?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let mut line = cmd.to_line();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = Vec::new();
    BufReader::new(s.take(MAX_RESPONSE))
        .read_until(b'\n', &mut answer)
        .map_err(unreachable)?;
    if answer.last() != Some(&b'\n') {
        return Err(unreachable(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before a whole answer",
        )));
    }
    let bad = |why: String| CtlError::BadAnswer {
        path: path.to_path_buf(),
        why,
    };
    let r = serde_json::from_slice(&answer).map_err(|e| bad(e.to_string()))?;
    answer.pop();
    let line = String::from_utf8(answer).map_err(|e| bad(e.to_string()))?;
    Ok((r, line))
}

/// The control socket the arguments name.
pub fn socket_path(args: &CtlArgs) -> PathBuf {
    match (&args.socket, &args.socket_dir) {
        (Some(p), _) => p.clone(),
        (None, d) => d
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(CONTROL_SOCKET_NAME),
    }
}

/// `ptnet-ctl`'s main.
pub fn run() -> ExitCode {
    let args = match crate::cli::parse_or_exit::<CtlArgs>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let usage = |msg: &str| {
        eprintln!("ptnet-ctl: {msg}");
        ExitCode::from(2)
    };
    if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
        return usage("--timeout: must be more than 0 and at most 3600 seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let path = socket_path(&args);
    let cmd = match &args.command {
        CtlCommand::List => Command::List,
        CtlCommand::Version => Command::Version,
        CtlCommand::Stats { port, .. } => Command::Stats { port: port.clone() },
        CtlCommand::Add { ports } => Command::Add {
            ports: ports.clone(),
        },
        CtlCommand::Remove { ports } => Command::Remove {
            ports: ports.clone(),
        },
        CtlCommand::Attach {
            switch,
            ifname,
            kind,
        } => Command::Attach {
            switch: switch.clone(),
            ifname: ifname.clone(),
            kind: AttachKind::parse(kind).unwrap_or(AttachKind::Packet),
        },
        CtlCommand::Detach { switch, ifname } => Command::Detach {
            switch: switch.clone(),
            ifname: ifname.clone(),
        },
        CtlCommand::Capture {
            port,
            count,
            snaplen,
            write,
        } => {
            let snaplen = snaplen.unwrap_or(crate::capture::DEFAULT_SNAPLEN);
            if *count == Some(0) {
                return usage("capture -c: the count must be at least 1");
            }
            if snaplen == 0 || snaplen > crate::capture::DEFAULT_SNAPLEN {
                return usage("capture -s: the snap length must be 1..=2048");
            }
            let cmd = Command::Capture {
                port: port.clone(),
                count: *count,
                snaplen,
            };
            return capture::run(&path, &cmd, write, timeout);
        }
    };
    let watch = match &args.command {
        CtlCommand::Stats {
            watch: Some(w),
            count,
            ..
        } => {
            if !(*w >= 0.01 && *w <= 86_400.0) {
                return usage("--watch: must be at least 0.01 and at most 86400 seconds");
            }
            Some((Duration::from_secs_f64(*w), *count))
        }
        _ => None,
    };
    let ask = || match request_line(&path, &cmd, timeout) {
        Ok((r, line)) if r.ok => Ok((r, line)),
        Ok((r, _)) => {
            eprintln!(
                "ptnet-ctl: ptnet-backend refused the request: {}",
                r.error.as_deref().unwrap_or("(no reason given)")
            );
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("ptnet-ctl: {e}");
            Err(ExitCode::from(1))
        }
    };
    let (first, first_line) = match ask() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    if let Some((every, count)) = watch {
        let mut prev = first.stats.unwrap_or_else(empty_stats);
        let mut n = 0u64;
        while count.is_none_or(|c| n < c) {
            let next = Instant::now() + every;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let now = match ask() {
                Ok((r, _)) => r.stats.unwrap_or_else(empty_stats),
                Err(code) => return code,
            };
            let rates = rates(&prev, &now);
            let text = if args.json {
                serde_json::to_string(&rates).expect("rates serialize") + "\n"
            } else {
                rates_table(&rates)
            };
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::SUCCESS;
            }
            prev = now;
            n += 1;
        }
        return ExitCode::SUCCESS;
    }
    let text = if args.json {
        first_line + "\n"
    } else if let Some(v) = &first.version {
        format!(
            "{} {} (control protocol {}, pid {})\n",
            v.daemon, v.version, v.protocol, v.pid
        )
    } else if let Some(p) = &first.ports {
        list_table(p)
    } else if let Some(s) = &first.stats {
        stats_table(s)
    } else if let Some(r) = &first.removed {
        r.iter().map(|n| format!("removed {n}\n")).collect()
    } else {
        String::new()
    };
    let _ = out.write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn empty_stats() -> DaemonStats {
    DaemonStats {
        uptime_s: 0.0,
        kick_faults: 0,
        interrupt_writes_cut: 0,
        ports: Vec::new(),
    }
}

/// One port's rates over an interval of `--watch`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PortRates {
    /// The port.
    pub name: String,
    /// Packets a second the guest sent.
    pub tx_pps: f64,
    /// Bits a second the guest sent.
    pub tx_bps: f64,
    /// Packets a second the guest received.
    pub rx_pps: f64,
    /// Bits a second the guest received, where the port counts them: NIC ports (tap, packet,
    /// xdp), which copy; pipes and VALE count RX packets only (their RX rings only move
    /// indexes; the bytes are the sender's), so theirs is 0.
    pub rx_bps: f64,
    /// Drops a second.
    pub drops_ps: f64,
}

/// The rates of one `--watch` interval (`--json` prints one such object a line).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    /// The interval, by the daemon's clock (seconds).
    pub interval_s: f64,
    /// Each port that is in both samples.
    pub ports: Vec<PortRates>,
}

fn rx_bytes(p: &PortStats) -> u64 {
    p.rings
        .iter()
        .filter(|r| r.dir == Dir::Rx)
        .map(|r| r.bytes)
        .sum()
}

/// The rates between two samples, by the daemon's uptime.
pub fn rates(prev: &DaemonStats, now: &DaemonStats) -> Rates {
    let secs = (now.uptime_s - prev.uptime_s).max(1e-6);
    let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    Rates {
        interval_s: secs,
        ports: now
            .ports
            .iter()
            .filter_map(|n| {
                let p = prev.port(&n.name)?;
                Some(PortRates {
                    name: n.name.clone(),
                    tx_pps: per_s(n.tx_packets, p.tx_packets),
                    tx_bps: per_s(n.tx_bytes, p.tx_bytes) * 8.0,
                    rx_pps: per_s(n.rx_packets, p.rx_packets),
                    rx_bps: per_s(rx_bytes(n), rx_bytes(p)) * 8.0,
                    drops_ps: per_s(n.drops, p.drops),
                })
            })
            .collect(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let l: Vec<String> = cells.zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(l.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

fn list_table(ports: &[PortInfo]) -> String {
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kind.clone(),
                json_word(&p.frontend),
                json_word(&p.datapath),
                format!("{}/{}", p.tx_rings, p.rx_rings),
                format!("{}/{}", p.tx_slots, p.rx_slots),
                p.connections.to_string(),
                p.socket.display().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "PORT", "KIND", "FRONTEND", "DATAPATH", "RINGS", "SLOTS", "CONNS", "SOCKET",
        ],
        &rows,
    )
}

fn stats_table(s: &DaemonStats) -> String {
    let rows: Vec<Vec<String>> = s
        .ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                json_word(&p.frontend),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                p.rx_packets.to_string(),
                rx_bytes(p).to_string(),
                p.drops.to_string(),
                p.bad_slots.to_string(),
                p.resets.to_string(),
                p.src_refused.to_string(),
            ]
        })
        .collect();
    format!(
        "uptime {:.1} s, kick faults {}, interrupt writes cut {}\n{}{}{}",
        s.uptime_s,
        s.kick_faults,
        s.interrupt_writes_cut,
        table(
            &[
                "PORT",
                "FRONTEND",
                "TX_PACKETS",
                "TX_BYTES",
                "RX_PACKETS",
                "RX_BYTES",
                "DROPS",
                "BAD_SLOTS",
                "RESETS",
                "SRC_REFUSED"
            ],
            &rows
        ),
        rings::ring_table(s, table),
        rings::virtqueue_table(s, table)
    )
}

/// 1234567 as `1.23M`.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.2}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn rates_table(r: &Rates) -> String {
    let rows: Vec<Vec<String>> = r
        .ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                si(p.tx_pps),
                si(p.tx_bps),
                si(p.rx_pps),
                si(p.rx_bps),
                si(p.drops_ps),
            ]
        })
        .collect();
    format!(
        "over {:.2} s\n{}\n",
        r.interval_s,
        table(
            &["PORT", "TX_PPS", "TX_BPS", "RX_PPS", "RX_BPS", "DROPS/S"],
            &rows
        )
    )
}

/// An enum's JSON word (`running`, `threads`).
fn json_word(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_successive_samples() {
        let mut a: DaemonStats = serde_json::from_str(
            r#"{"uptime_s":1.0,"kick_faults":0,"interrupt_writes_cut":0,"ports":[
              {"name":"p","socket":"/x","datapath":"threads","frontend":"running",
               "connections":1,"tx_packets":100,"tx_bytes":6000,"rx_packets":0,"drops":0,
               "bad_slots":0,"resets":0,"src_refused":0,
               "rings":[{"index":0,"dir":"tx","packets":100,"bytes":6000,"drops":0,
                         "bad_slots":0,"resets":0,"src_refused":0},
                        {"index":1,"dir":"rx","packets":0,"bytes":0,"drops":0,
                         "bad_slots":0,"resets":0,"src_refused":0}]}]}"#,
        )
        .unwrap();
        let b = a.clone();
        a.uptime_s = 3.0;
        a.ports[0].tx_packets = 300;
        a.ports[0].tx_bytes = 18000;
        a.ports[0].rx_packets = 50;
        a.ports[0].rings[1].bytes = 500;
        let r = rates(&b, &a);
        assert_eq!(r.interval_s, 2.0);
        let p = &r.ports[0];
        assert_eq!(
            (p.tx_pps, p.tx_bps, p.rx_pps, p.rx_bps),
            (100.0, 48000.0, 25.0, 2000.0)
        );
        let t = rates_table(&r);
        assert!(t.contains("48.00k"), "{t}");
        assert!(stats_table(&a).contains("RX_BYTES"));
    }
}
