//! The command line of `ptnet-backend`.

use crate::daemon::server::{PortServer, ServeOptions};
use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::port::Port;
use crate::port::{build_ports, NetmapImpl};
use crate::portspec::PortSpec;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
PORT syntax (netmap's nmport syntax):
  netmap:NAME{N      end 0 of netmap pipe N of NAME (zero copy, lossless)
  netmap:NAME}N      end 1 of the same pipe
  valeX:Y            port Y of VALE learning switch X (one copy, drops when full)
  null:NAME          discards everything it is sent, receives nothing
  tap:NAME           a tap device (created if missing); frames copied in the sync loop
  packet:IFNAME      a host interface through AF_PACKET memory-mapped rings
  xdp:IFNAME[@Q]     a host interface through AF_XDP (copy mode), rings on queues Q, Q+1, ...
  netmap:IFNAME      a NIC through kernel netmap (needs /dev/netmap: the netmap module)
  PORT@conf:OPTS     OPTS: rings=N, tx-rings=N, rx-rings=N, slots=N, tx-slots=N, rx-slots=N
                     (defaults: 1 TX and 1 RX ring of 1024 slots; at most 32 rings in all);
                     VALE ports also macs=N: source MACs the port may claim besides its own
                     (default 1; a bridge port needs one per host behind it; another port's
                     MAC is never taken, frames from it are dropped and counted);
                     frontend=ptnet|virtio-net: the device the port is served as (default
                     ptnet; virtio-net: a standard vhost-user net device for stock QEMU and a
                     guest's virtio_net driver, one queue pair per ring pair)

Each PORT is served on DIR/<PORT without @conf>.sock (--socket-dir), or on --socket PATH when
a single PORT is given. Pipe and VALE ports run on kernel netmap when /dev/netmap exists, on the
daemon's built-in userspace netmap otherwise (--netmap chooses).

Examples:
  ptnet-backend --socket-dir /tmp/p 'netmap:p{1' 'netmap:p}1'
  ptnet-backend --socket-dir /run/ptnet vale0:1 vale0:2@conf:rings=2,slots=2048
  ptnet-backend --socket-dir /run/ptnet vale0:1 vale0:bridge@conf:macs=256
  ptnet-backend --socket /tmp/sink.sock null:sink
  ptnet-backend --socket-dir /tmp/p tap:ptap0 packet:eth1@conf:rings=2
  ptnet-backend --socket-dir /tmp/p vale0:1@conf:frontend=virtio-net vale0:2@conf:rings=2

Then point a frontend at a socket, e.g.
  qemu-system-x86_64 ... -chardev socket,id=p0,path=/tmp/p/vale0:1.sock,reconnect-ms=1000 \\
      -device ptnet-pci,chardev=p0
  ptnet-pkt-gen -i vhost-user:/tmp/p/vale0:1.sock -f tx
and, for a frontend=virtio-net port, stock QEMU (add mq=on,vectors=2N+2 to the device and
queues=N to the netdev for N ring pairs; give each guest a MAC of its own):
  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on \\
      -numa node,memdev=mem -chardev socket,id=c,path=/tmp/p/vale0:1.sock,reconnect-ms=1000 \\
      -netdev vhost-user,id=n,chardev=c -device virtio-net-pci,netdev=n,mac=52:54:00:00:00:01";

/// Serve netmap ports to ptnet frontends (QEMU's ptnet-pci, or ptnet-driver) over vhost-user.
#[derive(Parser, Debug)]
#[command(name = "ptnet-backend", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Directory for the per-port sockets (created if missing).
    #[arg(long, value_name = "DIR", conflicts_with = "socket")]
    pub socket_dir: Option<PathBuf>,
    /// Socket path, when serving a single port.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Ring threads never sleep: lowest latency, one busy core per active ring.
    #[arg(long)]
    pub busy_poll: bool,
    /// How long a ring thread keeps polling after its last progress before it sleeps.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 50)]
    pub spin_us: u64,
    /// Log every port's counters and packet rates every SECONDS (0: only on SIGUSR1 and at exit).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub stats_every: u64,
    /// Which netmap runs pipe and VALE ports: the kernel's (needs /dev/netmap), the daemon's
    /// own, or the kernel's when /dev/netmap exists. netmap:IFNAME always needs the kernel's.
    #[arg(long, value_enum, value_name = "IMPL", default_value_t = NetmapArg::Auto)]
    pub netmap: NetmapArg,
    /// Most guest memory one frontend connection may share with SET_MEM_TABLE (all regions
    /// together), checked before anything is mapped: bytes, or with a K, M, G or T suffix
    /// (powers of 1024; KiB, MiB, ... also accepted). Larger tables are refused.
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_guest_memory: u64,
    /// Time a new connection has to send its first complete vhost-user message before it is
    /// closed (seconds, fractions allowed).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub handshake_timeout: Duration,
    /// Time a frontend has to complete a message it started before it is closed; and how long
    /// a port's connection must have been silent (or a newer one must have waited) before a
    /// newer connection takes the port over: the newest frontend wins (seconds).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Give the sockets this group (a name or a number) and mode 0660; a socket directory the
    /// daemon creates gets the group and mode 0710. Without it: sockets 0600, directory 0700.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Ports to serve.
    #[arg(value_name = "PORT", required = true)]
    pub ports: Vec<String>,
}

/// Packet rates per port between two looks at the counters (`--stats-every`).
struct RateMeter {
    since: Instant,
    packets: Vec<(u64, u64)>,
}

impl RateMeter {
    fn new(ports: &[Arc<Port>]) -> Self {
        Self {
            since: Instant::now(),
            packets: ports.iter().map(|p| p.packets()).collect(),
        }
    }

    /// Logs each port's counters and its rates since the last call.
    fn log(&mut self, ports: &[Arc<Port>]) {
        let secs = self.since.elapsed().as_secs_f64().max(1e-6);
        for (p, prev) in ports.iter().zip(&mut self.packets) {
            let now = p.packets();
            let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs / 1e6;
            tracing::info!(
                port = p.name(),
                tx_mpps = format!("{:.3}", rate(now.0, prev.0)),
                rx_mpps = format!("{:.3}", rate(now.1, prev.1)),
                "{}",
                p.stats_line()
            );
            *prev = now;
        }
        self.since = Instant::now();
    }
}

/// A size for `--max-guest-memory`: a positive number of bytes, with an optional binary suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("unknown size suffix {suffix:?} (use K, M, G or T)")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number of bytes, optionally with K, M, G or T".to_string())?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| "size overflows 64 bits".to_string())?;
    if bytes == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(bytes)
}

/// A timeout in seconds (fractions allowed): more than 0, at most a day.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds".to_string())?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err("must be more than 0 and at most 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// `--socket-group`: a group name, or a number.
fn resolve_group(g: &str) -> Result<u32, String> {
    match crate::sys::group_id(g) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => g
            .parse()
            .map_err(|_| format!("--socket-group: no group named '{g}'")),
        Err(e) => Err(format!("--socket-group: looking up '{g}': {e}")),
    }
}

/// Creates the socket directory if missing, 0700 (0710 with `group`, which it then gets)
/// whatever the umask; an existing directory is left as it is.
fn create_socket_dir(dir: &std::path::Path, group: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    let mode = if let Some(gid) = group {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
        0o710
    } else {
        0o700
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// `--netmap`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetmapArg {
    /// The kernel's when /dev/netmap exists, else the daemon's.
    Auto,
    /// The kernel's.
    Kernel,
    /// The daemon's built-in userspace netmap.
    User,
}

/// Runs the daemon; returns when SIGINT or SIGTERM arrives.
pub fn run() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PTNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let fail = |msg: String| {
        eprintln!("ptnet-backend: {msg}");
        ExitCode::from(2)
    };
    let socket_group = match args.socket_group.as_deref().map(resolve_group) {
        None => None,
        Some(Ok(g)) => Some(g),
        Some(Err(e)) => return fail(e),
    };
    let specs = match args
        .ports
        .iter()
        .map(|p| PortSpec::parse(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let paths: Vec<PathBuf> = match (&args.socket, &args.socket_dir) {
        (Some(p), _) if specs.len() == 1 => vec![p.clone()],
        (Some(_), _) => {
            return fail("--socket takes a single PORT; use --socket-dir for several".into())
        }
        (None, dir) => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            if let Err(e) = create_socket_dir(&dir, socket_group) {
                return fail(format!(
                    "cannot create socket directory {}: {e}",
                    dir.display()
                ));
            }
            specs
                .iter()
                .map(|s| dir.join(format!("{}.sock", s.name)))
                .collect()
        }
    };
    let have_kernel = std::path::Path::new(crate::kernel::DEV_NETMAP).exists();
    let netmap = match (args.netmap, have_kernel) {
        (NetmapArg::Kernel, false) => {
            return fail(
                "--netmap kernel: /dev/netmap does not exist (load the netmap kernel module, netmap.ko)".into(),
            )
        }
        (NetmapArg::Kernel, true) | (NetmapArg::Auto, true) => NetmapImpl::Kernel,
        (NetmapArg::User, _) | (NetmapArg::Auto, false) => NetmapImpl::User,
    };
    tracing::info!(
        "pipe and VALE ports run on {}",
        if netmap == NetmapImpl::Kernel {
            "kernel netmap (/dev/netmap)"
        } else {
            "the built-in userspace netmap"
        }
    );
    let ports = match build_ports(&specs, netmap) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    crate::frontend::ptnet::GuestMemory::set_max_per_connection(args.max_guest_memory);
    // Signals go to the main thread only: block them before any thread starts.
    crate::sys::block_daemon_signals();
    let opts = LoopOptions {
        busy_poll: args.busy_poll,
        spin: Duration::from_micros(args.spin_us),
    };
    let opts = ServeOptions {
        loops: opts,
        handshake_timeout: args.handshake_timeout,
        idle_timeout: args.idle_timeout,
        socket_group,
    };
    let mut servers = Vec::new();
    let frontend_of = |port: &Port| {
        specs
            .iter()
            .find(|s| s.name == port.name())
            .map_or(crate::portspec::Frontend::Ptnet, |s| s.frontend)
    };
    for (port, path) in ports.iter().zip(&paths) {
        let frontend = frontend_of(port);
        if frontend == crate::portspec::Frontend::VirtioNet && port.threads_memory().is_none() {
            for s in servers {
                PortServer::stop(s);
            }
            return fail(format!(
                "port '{}': frontend=virtio-net needs the userspace netmap (kernel netmap ports \
                 are run by the kernel's loop; use --netmap user)",
                port.name()
            ));
        }
        match PortServer::start_frontend(port.clone(), path, opts, frontend) {
            Ok(s) => {
                let g = port.geometry();
                tracing::info!(
                    port = port.name(),
                    socket = %path.display(),
                    tx_rings = g.num_tx_rings,
                    rx_rings = g.num_rx_rings,
                    slots = g.num_tx_slots,
                    mem_id = g.mem_id,
                    mem_size = g.mem_size,
                    frontend = ?frontend,
                    mac = %mac_string(port.mac()),
                    "serving"
                );
                servers.push(s);
            }
            Err(e) => {
                for s in servers {
                    s.stop();
                }
                return fail(e.to_string());
            }
        }
    }
    // The main thread waits for signals, logging the counters on SIGUSR1 and every
    // --stats-every seconds.
    let every = (args.stats_every > 0).then(|| Duration::from_secs(args.stats_every));
    let mut rates = RateMeter::new(&ports);
    loop {
        let timeout = every.map(|e| e.saturating_sub(rates.since.elapsed()));
        match crate::sys::wait_for_signal(timeout) {
            Some(libc::SIGUSR1) => {
                for p in &ports {
                    tracing::info!(port = p.name(), "{}", p.stats_line());
                }
            }
            Some(sig) => {
                tracing::info!("signal {sig}: shutting down");
                break;
            }
            None => rates.log(&ports),
        }
    }
    for s in servers {
        s.stop();
    }
    for p in &ports {
        tracing::info!(port = p.name(), "{}", p.stats_line());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64G"), Ok(64 << 30));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        for bad in ["", "0", "G", "12Q", "-1", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        let a = Args::try_parse_from(["ptnet-backend", "null:x"]).unwrap();
        assert_eq!(
            a.max_guest_memory,
            crate::frontend::ptnet::DEFAULT_MAX_GUEST_MEMORY
        );
        let e = Args::try_parse_from(["ptnet-backend", "--max-guest-memory", "lots", "null:x"])
            .unwrap_err();
        assert!(e.to_string().contains("--max-guest-memory"), "{e}");
    }
}

#[cfg(test)]
mod serve_option_tests {
    use super::*;

    #[test]
    fn connection_deadlines_and_socket_group_parse() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["", "0", "-1", "nan", "inf", "1e9", "five"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?} accepted");
        }
        let a = Args::try_parse_from(["ptnet-backend", "null:x"]).unwrap();
        assert_eq!(a.handshake_timeout, Duration::from_secs(5));
        assert_eq!(a.idle_timeout, Duration::from_secs(5));
        assert_eq!(a.socket_group, None);
        assert_eq!(resolve_group("root"), Ok(0));
        assert_eq!(resolve_group("4242"), Ok(4242));
        assert!(resolve_group("no-such-group-here").is_err());
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
