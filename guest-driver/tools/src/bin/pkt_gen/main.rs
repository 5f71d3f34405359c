//! `ptnet-pkt-gen`: a packet generator and sink over a ptnet port, modelled on netmap's pkt-gen.
//!
//! ```text
//! ptnet-pkt-gen -i vhost-user:/tmp/p/p}1.sock -f rx -n 1000000 --timeout 5
//! ptnet-pkt-gen -i vhost-user:/tmp/p/p{1.sock -f tx -n 1000000
//! ```
//!
//! Frames are Ethernet + IPv4 + UDP, then a magic, a stream number (the TX ring), a per-stream
//! sequence number and a payload pattern derived from the sequence number. `rx` verifies all of it.
//!
//! Exit codes: 0 success, 1 runtime failure (verification errors, fewer packets than asked, device
//! errors), 2 bad command line or bad port string.

use clap::{Parser, ValueEnum};
use ptnet_driver::testframe::MIN_LEN;
use ptnet_driver::{Error, Port};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod run;

use run::Run;

/// Set by SIGINT/SIGTERM: stop, print the summary, detach cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

#[inline]
fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Offset of the magic number in a frame (after Ethernet, IPv4 and UDP headers).

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Function {
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
struct Args {
    /// Port: vhost-user:PATH, [pci:]ptnetN, ptnet:DDDD:BB:DD.F or pci:DDDD:BB:DD.F.
    #[arg(short = 'i', long = "interface", value_name = "PORT")]
    port: String,
    /// What to do.
    #[arg(short = 'f', long = "function", value_enum)]
    function: Function,
    /// Frame length in bytes (headers included, no CRC): 60 up to the buffer size.
    #[arg(short = 'l', long = "length", default_value_t = 60)]
    len: usize,
    /// Packets handled per ring per sync.
    #[arg(short = 'b', long = "burst", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
    /// Packets to send or receive (0: forever).
    #[arg(short = 'n', long = "count", default_value_t = 0)]
    count: u64,
    /// Rate in packets per second (0: as fast as possible). For ping: pings per second.
    #[arg(short = 'R', long = "rate", default_value_t = 0)]
    rate: u64,
    /// Report interval in milliseconds (0: no periodic reports).
    #[arg(short = 'T', long = "report-ms", default_value_t = 1000)]
    report_ms: u64,
    /// Stop when nothing arrives for this many seconds (rx, pong, ping: per ping); tx: the longest
    /// wait for the host to take the last packets.
    #[arg(long = "timeout", value_name = "SECS")]
    timeout: Option<f64>,
    /// Destination MAC (default broadcast).
    #[arg(short = 'D', long = "dst-mac", value_parser = parse_mac)]
    dst_mac: Option<[u8; 6]>,
    /// Source MAC (default: the port's).
    #[arg(short = 'S', long = "src-mac", value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Print one JSON line instead of the summary.
    #[arg(long)]
    json: bool,
    /// Spin instead of waiting for interrupts.
    #[arg(long = "busy-poll")]
    busy_poll: bool,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
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

fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if args.len < MIN_LEN {
        eprintln!(
            "ptnet-pkt-gen: -l {}: frame length must be at least {MIN_LEN}",
            args.len
        );
        return ExitCode::from(2);
    }
    let timeout = match args.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            eprintln!("ptnet-pkt-gen: --timeout {t}: must be a positive number of seconds");
            return ExitCode::from(2);
        }
    };
    let mut port = match Port::open(&args.port) {
        Ok(p) => p,
        Err(e @ Error::BadPort { .. }) => {
            eprintln!("ptnet-pkt-gen: -i: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("ptnet-pkt-gen: cannot open {}: {e}", args.port);
            return ExitCode::from(1);
        }
    };
    if args.len > port.buf_size() as usize {
        eprintln!(
            "ptnet-pkt-gen: -l {}: larger than the port's buffers ({} bytes)",
            args.len,
            port.buf_size()
        );
        return ExitCode::from(2);
    }
    port.set_busy_poll(args.busy_poll);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_stop_signal) {
            eprintln!("ptnet-pkt-gen: cannot handle signal {sig}: {e}");
        }
    }
    eprintln!(
        "ptnet-pkt-gen: {} mac {} rings {}/{} slots {}/{} buffers {} bytes",
        port.name(),
        fmt_mac(port.mac()),
        port.num_tx_rings(),
        port.num_rx_rings(),
        port.num_tx_slots(),
        port.num_rx_slots(),
        port.buf_size()
    );
    let mut run = Run {
        args: &args,
        port,
        timeout,
    };
    let res = match args.function {
        Function::Tx => run.tx(),
        Function::Rx => run.rx(),
        Function::Ping => run.ping(),
        Function::Pong => run.pong(),
    };
    drop(run);
    let s = match res {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ptnet-pkt-gen: {e}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        println!("{}", s.json());
    } else {
        println!("{}", s.text());
    }
    let short = args.count > 0
        && match args.function {
            Function::Ping => s.sent.unwrap_or(0) < args.count || s.packets < args.count,
            _ => s.packets < args.count,
        };
    let bad = s.errors > 0 || s.out_of_order > 0 || s.lost > 0;
    if short {
        eprintln!("ptnet-pkt-gen: {} of {} packets", s.packets, args.count);
    }
    if short || (bad && args.function != Function::Pong) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!a.json && !a.busy_poll && a.timeout.is_none());
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
        assert!(a.json && a.busy_poll);
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
