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
//! `--fast` (both ends) sends and receives like netmap's pkt-gen, for throughput figures: the
//! sender writes one fixed frame into each buffer once and afterwards only advances the ring, the
//! receiver only counts. Nothing is verified then.
//!
//! Exit codes: 0 success, 1 runtime failure (verification errors, fewer packets than asked, device
//! errors), 2 bad command line or bad port string.

use args::{fmt_mac, Args, Function};
use clap::Parser;
use ptnet_driver::testframe::MIN_LEN;
use ptnet_driver::{Error, Port};
use run::{on_stop_signal, Run};
use std::process::ExitCode;
use std::time::Duration;

mod args;
mod run;

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
    if args.fast && !matches!(args.function, Function::Tx | Function::Rx) {
        eprintln!("ptnet-pkt-gen: --fast: only for -f tx and -f rx");
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
