//! The command line.

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Function {
    /// Transmit.
    Tx,
    /// Receive and verify.
    Rx,
    /// Send one frame at a time, wait for it to come back, measure round-trip times.
    Ping,
    /// Reflect every received frame (swap MAC addresses).
    Pong,
}

/// Packet generator and sink over a ptnet port.
#[derive(Parser, Debug)]
#[command(name = "ptnet-pkt-gen", version, about)]
pub(crate) struct Args {
    /// Port: vhost-user:PATH, ptnetN (or pci:ptnetN), ptnet:DDDD:BB:DD.F, pci:DDDD:BB:DD.F or
    /// packet:IFNAME (any Linux interface, through an AF_PACKET socket).
    #[arg(short = 'i', long = "interface", value_name = "PORT")]
    pub(crate) port: String,
    /// What to do.
    #[arg(short = 'f', long = "function", value_enum)]
    pub(crate) function: Function,
    /// Frame length in bytes (headers included, no CRC): 60 up to the buffer size.
    #[arg(short = 'l', long = "length", default_value_t = 60)]
    pub(crate) len: usize,
    /// Packets handled per ring per sync.
    #[arg(short = 'b', long = "burst", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) burst: u32,
    /// Packets to send or receive (0: forever).
    #[arg(short = 'n', long = "count", default_value_t = 0)]
    pub(crate) count: u64,
    /// Rate in packets per second (0: as fast as possible). For ping: pings per second.
    #[arg(short = 'R', long = "rate", default_value_t = 0)]
    pub(crate) rate: u64,
    /// Report interval in milliseconds (0: no periodic reports).
    #[arg(short = 'T', long = "report-ms", default_value_t = 1000)]
    pub(crate) report_ms: u64,
    /// Stop when nothing arrives for this many seconds (rx, pong, ping: per ping); tx: the longest
    /// wait for the host to take the last packets.
    #[arg(long = "timeout", value_name = "SECS")]
    pub(crate) timeout: Option<f64>,
    /// Destination MAC (default broadcast).
    #[arg(short = 'D', long = "dst-mac", value_parser = parse_mac)]
    pub(crate) dst_mac: Option<[u8; 6]>,
    /// Source MAC (default: the port's).
    #[arg(short = 'S', long = "src-mac", value_parser = parse_mac)]
    pub(crate) src_mac: Option<[u8; 6]>,
    /// Print one JSON line instead of the summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Spin instead of waiting for interrupts.
    #[arg(long = "busy-poll")]
    pub(crate) busy_poll: bool,
    /// Send and receive the way netmap's pkt-gen does, for throughput: tx writes one fixed frame
    /// into each buffer the first time the buffer shows up in its ring and afterwards only sets
    /// the slot's length (a pipe swaps buffers with the receiver, whose fast rx leaves them as
    /// they came); rx only counts slots and bytes, neither copying nor verifying. Use on both
    /// ends; the default (every frame numbered, every frame verified) is what tests rely on.
    #[arg(long)]
    pub(crate) fast: bool,
}

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("'{s}' is not a MAC address (xx:xx:xx:xx:xx:xx)"));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(format!("'{s}' is not a MAC address (xx:xx:xx:xx:xx:xx)"));
        }
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| format!("'{s}' is not a MAC address (xx:xx:xx:xx:xx:xx)"))?;
    }
    Ok(mac)
}

pub(crate) fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:FF:0:1").unwrap(), [2, 0, 10, 255, 0, 1]);
        for bad in [
            "",
            "02:00:0a:ff:00",
            "02:00:0a:ff:00:01:02",
            "02:00:0a:ff:00:zz",
            "020:0:0:0:0:0",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_mac([2, 0, 10, 255, 0, 1]), "02:00:0a:ff:00:01");
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("ptnet-pkt-gen").chain(args.iter().copied()))
    }

    #[test]
    fn command_line() {
        let a = parse(&["-i", "vhost-user:/tmp/x.sock", "-f", "tx"]).unwrap();
        assert_eq!(a.function, Function::Tx);
        assert_eq!(
            (a.len, a.burst, a.count, a.rate, a.report_ms),
            (60, 512, 0, 0, 1000)
        );
        assert!(!a.json && !a.busy_poll && !a.fast && a.timeout.is_none());
        let a = parse(&[
            "-i",
            "ptnet0",
            "-f",
            "ping",
            "-l",
            "128",
            "-b",
            "32",
            "-n",
            "100",
            "-R",
            "1000",
            "-T",
            "500",
            "--timeout",
            "2.5",
            "-D",
            "02:00:00:00:00:02",
            "-S",
            "02:00:00:00:00:01",
            "--json",
            "--busy-poll",
            "--fast",
        ])
        .unwrap();
        assert_eq!(a.function, Function::Ping);
        assert_eq!(
            (a.len, a.burst, a.count, a.rate, a.report_ms),
            (128, 32, 100, 1000, 500)
        );
        assert_eq!(a.timeout, Some(2.5));
        assert_eq!(a.dst_mac, Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(a.src_mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(a.json && a.busy_poll && a.fast);
        for bad in [
            &["-f", "tx"][..],
            &["-i", "x"],
            &["-i", "x", "-f", "flood"],
            &["-i", "x", "-f", "tx", "-b", "0"],
            &["-i", "x", "-f", "tx", "-n", "-1"],
            &["-i", "x", "-f", "tx", "-D", "nope"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?}");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
