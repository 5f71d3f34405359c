//! `cargo xtask demo`: the main job. `ptnet-backend` serves two ports of a VALE switch (or the two
//! ends of a pipe with `--pipe`), two QEMU guests boot with a ptnet NIC each, one runs
//! `ptnet-pkt-gen -f tx` and the other `-f rx`, and the daemon's rates are printed here every
//! second (from its control socket). `--seconds N` counts from when both pkt-gens run, so boot
//! time (reported apart) is not taken from it; Ctrl-C or the end stops everything and removes what
//! the demo created. Exits non-zero when the guests never came up or no packet moved.

use ptnet_integration::vm::{Nic, Vm, VmConfig};
use ptnet_integration::{Backend, PortCounters, TempDir};
use std::time::{Duration, Instant};

struct Opts {
    pipe: bool,
    seconds: Option<u64>,
    rate: Option<u64>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        pipe: false,
        seconds: None,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} wants a number"))
        };
        match a.as_str() {
            "--pipe" => o.pipe = true,
            "--seconds" => o.seconds = Some(num("--seconds")?),
            "--rate" => o.rate = Some(num("--rate")?),
            "-h" | "--help" => {
                println!(
                    "usage: ptnet-demo [--pipe] [--seconds N] [--rate PPS]\n\
                     Boots two guests on ptnet ports of one ptnet-backend (VALE switch, or a pipe\n\
                     with --pipe); one transmits, one receives; live rates until Ctrl-C."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}' (try --help)")),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ptnet-demo: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("ptnet-demo: {e}");
        std::process::exit(1);
    }
}

fn run(opts: &Opts) -> Result<(), String> {
    ptnet_integration::sys::catch_stop_signals();
    let dir = TempDir::new("demo").map_err(|e| format!("temp dir: {e}"))?;
    let ports: [&str; 2] = if opts.pipe {
        ["netmap:demo{0", "netmap:demo}0"]
    } else {
        ["vale0:1", "vale0:2"]
    };
    println!(
        "== starting ptnet-backend {} {} (sockets in {})",
        ports[0],
        ports[1],
        dir.path().display()
    );
    let mut backend = Backend::start(dir.path(), &ports, &[])?;
    let rate = opts.rate.map(|r| format!(" -R {r}")).unwrap_or_default();
    let rx_cmd = "ptnet-pkt-gen -i ptnet0 -f rx -n 0 -T 1000 2>&1";
    let tx_cmd = format!("ptnet-pkt-gen -i ptnet0 -f tx -n 0 -l 60 -T 1000{rate} 2>&1");
    // Each guest gets its own MAC: QEMU's default is the same in every QEMU process, and a
    // learning switch would see both guests at one address.
    let boot = |name: &str, port: &str, cmd: &str, mac: &str| -> Result<Vm, String> {
        let mut cfg = VmConfig::new(name, cmd).nic(Nic {
            reconnect_ms: 1000,
            mac: Some(mac.into()),
            ..Nic::new(backend.socket(port))
        });
        cfg.timeout = Duration::from_secs(opts.seconds.map_or(24 * 3600, |s| s + 120));
        println!("== booting guest '{name}' on {port}: {cmd}");
        Vm::start(&cfg)
    };
    let mut rx = boot("rx", ports[1], rx_cmd, "52:54:00:00:00:02")?;
    let mut tx = boot("tx", ports[0], &tx_cmd, "52:54:00:00:00:01")?;
    println!(
        "== guests boot under {} (Ctrl-C stops everything)",
        format!("{:?}", ptnet_integration::vm::Accel::from_env()).to_uppercase()
    );
    let control = dir.path().join("ptnet-backend.ctl");
    let booting = Instant::now();
    // The clock starts when both pkt-gens run (their first line is on the console), so a slow
    // boot does not eat the demo's time; boot time is reported on its own.
    let mut ready: [bool; 2] = [false; 2];
    let mut start: Option<Instant> = None;
    let mut last: Option<(Instant, u64, u64)> = None;
    let mut shown = [0usize; 2];
    let boot_limit = Duration::from_secs(300);
    while !ptnet_integration::sys::stop_requested()
        && start.is_none_or(|t| {
            opts.seconds
                .is_none_or(|s| t.elapsed() < Duration::from_secs(s))
        })
    {
        for (k, (name, vm)) in [("rx", &mut rx), ("tx", &mut tx)].into_iter().enumerate() {
            let serial = vm.serial();
            for line in serial.lines().skip(shown[k]) {
                // The console also carries firmware and kernel output: show what pkt-gen and
                // the guest's init say.
                let l = line.trim_end();
                if l.contains("ptnet-pkt-gen") || l.contains("PTNET") {
                    println!("[{name}] {l}");
                    ready[k] |= l.contains("ptnet-pkt-gen: ");
                }
            }
            shown[k] = serial.lines().count();
        }
        if start.is_none() && ready == [true, true] {
            println!(
                "== both guests up after {:.1} s of boot; counting from now",
                booting.elapsed().as_secs_f64()
            );
            start = Some(Instant::now());
        }
        if start.is_none() && booting.elapsed() > boot_limit {
            return Err(format!(
                "the guests were not both running pkt-gen after {} s (rx {}, tx {}): see the \
                 console lines above",
                boot_limit.as_secs(),
                if ready[0] { "up" } else { "not up" },
                if ready[1] { "up" } else { "not up" }
            ));
        }
        // A rate line a second, from the daemon's own counters (its control socket).
        if start.is_some() && last.is_none_or(|(t, _, _)| t.elapsed() >= Duration::from_secs(1)) {
            if let (Some(txp), Some(rxp)) = (
                port_counter(&control, ports[0], "tx_packets"),
                port_counter(&control, ports[1], "rx_packets"),
            ) {
                if let Some((t, t0, r0)) = last {
                    let dt = t.elapsed().as_secs_f64();
                    println!(
                        "[rate] sent {:.3} Mpps, received {:.3} Mpps (totals {txp} / {rxp})",
                        txp.saturating_sub(t0) as f64 / dt / 1e6,
                        rxp.saturating_sub(r0) as f64 / dt / 1e6
                    );
                }
                last = Some((Instant::now(), txp, rxp));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("== stopping guests and ptnet-backend");
    drop(tx);
    drop(rx);
    backend.stop();
    for l in backend
        .log_text()
        .lines()
        .filter(|l| l.contains("rings stopped") || l.contains("tx_packets="))
        .take(6)
    {
        println!("[backend] {l}");
    }
    let log = backend.log_text();
    let (sent, received, dropped) = (
        counters(&log, ports[0]).tx_packets,
        counters(&log, ports[1]).rx_packets,
        counters(&log, ports[0]).drops,
    );
    if opts.pipe {
        println!(
            "== the tx guest sent {sent} packets, the rx guest received {received} (a pipe is \
             lossless: the sender waits for the receiver)"
        );
    } else {
        println!(
            "== the tx guest sent {sent} packets, the rx guest received {received}; the switch \
             dropped {dropped} that found the receiver's ring full (VALE drops, as netmap's does: \
             --rate PPS paces the sender, --pipe shows a lossless pipe)"
        );
    }
    drop(dir);
    println!("== done: sockets, guests and temporary files removed");
    if start.is_none() {
        return Err("stopped before both guests were up: nothing was measured".into());
    }
    if sent == 0 || received == 0 {
        return Err(format!(
            "nothing moved (sent {sent}, received {received}): the guests ran pkt-gen but no \
             packet crossed the daemon; its log is above"
        ));
    }
    Ok(())
}

/// `port`'s last counters in the daemon's log (its exit summary), zeros if absent.
fn counters(log: &str, port: &str) -> PortCounters {
    PortCounters::last(log, Some(port)).unwrap_or_default()
}

/// Counter `key` of `port`, asked of the daemon's control socket (`{"cmd":"stats","port":..}`);
/// `None` if the daemon does not answer.
fn port_counter(control: &std::path::Path, port: &str, key: &str) -> Option<u64> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(control).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let port = port.replace('\\', "\\\\").replace('"', "\\\"");
    writeln!(s, "{{\"cmd\":\"stats\",\"port\":\"{port}\"}}").ok()?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).ok()?;
    ptnet_integration::json_num(&line, key).map(|v| v as u64)
}
