//! The command line of `ptnet-backend`.

use crate::daemon::activation::{self, ActivationError, Inherited};
use crate::daemon::config::{check_sockets, resolve_control_socket, resolve_group, resolve_netmap};
use crate::daemon::metrics::MetricsServer;
use crate::daemon::server::ServeOptions;
use crate::daemon::stats::{Reason, Reporter};
use crate::daemon::{ConfigError, Daemon, DaemonConfig, Sockets, StatsFormat};
use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::portspec::PortSpec;
use crate::served::NetmapImpl;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
  valeX:IF@conf:attach=packet|xdp|tap
                     host interface IF joins switch X through that port kind, moved by a
                     daemon thread (no socket; as vale-ctl -a; macs defaults to 4096)

Ports are added and removed at runtime with ptnet-ctl add/remove/attach/detach.

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
    /// How the counters are reported on SIGUSR1, every --stats-every and at exit: log lines
    /// (text), or the log lines and one JSON object a report on stdout (json).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = StatsFormat::Text)]
    pub stats_format: StatsFormat,
    /// Which netmap runs pipe and VALE ports: the kernel's (needs /dev/netmap), the daemon's
    /// own, or the kernel's when /dev/netmap exists. netmap:IFNAME always needs the kernel's.
    #[arg(long, value_enum, value_name = "IMPL", default_value_t = NetmapArg::Auto)]
    pub netmap: NetmapArg,
    /// Most guest memory one frontend connection may share with SET_MEM_TABLE (all regions
    /// together), checked before anything is mapped: bytes, or with a K, M, G or T suffix
    /// (powers of 1024; KiB, MiB, ... also accepted). Larger tables are refused.
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_guest_memory: u64,
    /// virtio-net ports also map frontend memory files that are not memfds sealed against
    /// shrinking (DPDK virtio-user's hugepage files). Only for trusted frontends: one that
    /// shrinks its file while it is mapped kills the daemon (SIGBUS).
    #[arg(long)]
    pub allow_unsealed_memory: bool,
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
    /// The control socket ptnet-ctl talks to (one JSON request a line: list, stats, version;
    /// see ptnet-ctl --help). Default DIR/ptnet-backend.ctl, or PATH.ctl with --socket;
    /// `none` serves none. Mode 0600, or 0660 with --socket-group.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve the single PORT on this descriptor, a unix socket already bound and listening
    /// (QEMU's convention for vhost-user backend programs); its path becomes the port's socket.
    /// systemd socket activation (LISTEN_FDS) needs no option: each passed socket serves the
    /// port (or the control socket) whose path it is bound to.
    #[arg(long, value_name = "FDNUM", conflicts_with = "socket_dir")]
    pub fd: Option<i32>,
    /// Serve the counters for Prometheus on this TCP address (e.g. 127.0.0.1:9465, `[::1]:9465`;
    /// port 0 picks one, logged): GET /metrics, the text exposition format. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Print the backend's capabilities as JSON ({"type":"net","features":[]}) and exit: QEMU's
    /// convention for vhost-user backend programs.
    #[arg(long, exclusive = true)]
    pub print_capabilities: bool,
    /// Ports to serve.
    #[arg(value_name = "PORT", required = true)]
    pub ports: Vec<String>,
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

impl TryFrom<Args> for DaemonConfig {
    type Error = ConfigError;

    /// Checks the command line, in the order the daemon always has: the socket group, the
    /// ports, `--socket` against the ports, then `--netmap` against `/dev/netmap`.
    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let socket_group = args
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        let ports = args
            .ports
            .iter()
            .map(|p| PortSpec::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let sockets = match (args.socket, args.socket_dir) {
            (Some(p), _) => Sockets::Single(p),
            (None, dir) => Sockets::Dir(dir.unwrap_or_else(|| PathBuf::from("."))),
        };
        check_sockets(&sockets, ports.len())?;
        let control_socket = resolve_control_socket(args.control_socket.as_deref(), &sockets);
        let want = match args.netmap {
            NetmapArg::Auto => None,
            NetmapArg::Kernel => Some(NetmapImpl::Kernel),
            NetmapArg::User => Some(NetmapImpl::User),
        };
        let have_kernel = std::path::Path::new(crate::kernel::DEV_NETMAP).exists();
        let netmap = resolve_netmap(want, have_kernel)?;
        Ok(Self {
            ports,
            sockets,
            netmap,
            serve: ServeOptions {
                loops: LoopOptions {
                    busy_poll: args.busy_poll,
                    spin: Duration::from_micros(args.spin_us),
                },
                handshake_timeout: args.handshake_timeout,
                idle_timeout: args.idle_timeout,
                socket_group,
            },
            max_guest_memory: args.max_guest_memory,
            allow_unsealed_memory: args.allow_unsealed_memory,
            stats_every: (args.stats_every > 0).then(|| Duration::from_secs(args.stats_every)),
            stats_format: args.stats_format,
            control_socket,
        })
    }
}

/// Parses the process's command line as `A`: on an error clap's message and exit status 2, for
/// `--help` and `--version` their text and success (the caller returns the code).
pub fn parse_or_exit<A: Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Runs the daemon; returns when SIGINT or SIGTERM arrives. Exit status 2 for a bad command line
/// or a daemon that cannot start.
pub fn run() -> ExitCode {
    let args = match parse_or_exit::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.print_capabilities {
        println!("{}", crate::daemon::capabilities::capabilities_json());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PTNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let fail = |msg: &dyn std::fmt::Display| {
        eprintln!("ptnet-backend: {msg}");
        ExitCode::from(2)
    };
    // Inherited sockets are claimed before the daemon opens anything.
    let mut args = args;
    let inherited = match inherit_sockets(&mut args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let metrics_listen = args.metrics_listen;
    let config = match DaemonConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut paths = config.socket_paths();
    paths.extend(config.control_socket.clone());
    if let Err(e) = activation::register(inherited, &paths) {
        return fail(&e);
    }
    // Signals go to the main thread only: block them before any thread starts.
    crate::sys::block_daemon_signals();
    let daemon = match Daemon::start(&config) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let metrics = match metrics_listen.map(|a| MetricsServer::start(a, daemon.stats_source())) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            daemon.stop();
            return fail(&e);
        }
    };
    // The main thread waits for signals, reporting the counters on SIGUSR1 and every
    // --stats-every seconds.
    let mut reports = Reporter::new(config.stats_format, &daemon.ports(), daemon.virtqueues());
    loop {
        let timeout = config
            .stats_every
            .map(|e| e.saturating_sub(reports.since().elapsed()));
        match crate::sys::wait_for_signal(timeout) {
            Some(libc::SIGUSR1) => reports.report(Reason::Signal, &daemon.ports(), daemon.stats()),
            Some(sig) => {
                tracing::info!("signal {sig}: shutting down");
                break;
            }
            None => reports.report(Reason::Interval, &daemon.ports(), daemon.stats()),
        }
    }
    drop(metrics);
    let ports = daemon.ports();
    let last = daemon.stop();
    reports.report(Reason::Exit, &ports, last);
    ExitCode::SUCCESS
}

/// The sockets the daemon was started with: systemd's (`LISTEN_FDS`), and `--fd`'s, whose path
/// becomes `--socket` (see [`activation`]).
fn inherit_sockets(args: &mut Args) -> Result<Vec<Inherited>, ActivationError> {
    let mut all = activation::from_env()?;
    if let Some(fd) = args.fd {
        if args.ports.len() != 1 {
            return Err(ActivationError::FdForSeveralPorts(args.ports.len()));
        }
        let i = activation::from_fd(fd)?;
        match &args.socket {
            None => args.socket = Some(i.path.clone()),
            Some(s) if activation::same_socket(s, &i.path) => args.socket = Some(i.path.clone()),
            Some(s) => {
                return Err(ActivationError::FdNotSocket {
                    fd,
                    bound: i.path,
                    socket: s.clone(),
                })
            }
        }
        all.push(i);
    }
    Ok(all)
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
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert!(resolve_group("no-such-group-here").is_err());
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn config(args: &[&str]) -> Result<DaemonConfig, ConfigError> {
        let mut all = vec!["ptnet-backend"];
        all.extend(args);
        DaemonConfig::try_from(Args::try_parse_from(all).expect("parses"))
    }

    #[test]
    fn the_command_line_becomes_a_config() {
        let c = config(&[
            "--socket-dir",
            "/run/p",
            "--netmap",
            "user",
            "null:a",
            "vale0:1",
        ])
        .unwrap();
        assert_eq!(c.sockets, Sockets::Dir("/run/p".into()));
        assert_eq!(c.netmap, NetmapImpl::User);
        assert_eq!((c.stats_every, c.stats_format), (None, StatsFormat::Text));
        assert_eq!(c.ports.len(), 2);
        let c = config(&[
            "--socket",
            "/tmp/one.sock",
            "--stats-every",
            "3",
            "--stats-format",
            "json",
            "--busy-poll",
            "--socket-group",
            "0",
            "null:a",
        ])
        .unwrap();
        assert_eq!(c.sockets, Sockets::Single("/tmp/one.sock".into()));
        assert_eq!(c.stats_every, Some(Duration::from_secs(3)));
        assert_eq!(c.stats_format, StatsFormat::Json);
        assert!(c.serve.loops.busy_poll);
        assert_eq!(c.serve.socket_group, Some(0));
        assert_eq!(c.socket_paths(), [PathBuf::from("/tmp/one.sock")]);
        let c = config(&["null:a"]).unwrap();
        assert_eq!(c.sockets, Sockets::Dir(".".into()));
    }

    #[test]
    fn each_bad_option_names_itself() {
        let e = config(&["--socket", "/tmp/x.sock", "null:a", "null:b"]).unwrap_err();
        assert!(
            matches!(e, ConfigError::SocketForSeveralPorts { ports: 2 }),
            "{e:?}"
        );
        let e = config(&["--socket-group", "no-such-group-here", "null:a"]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::NoSuchGroup(g) if g == "no-such-group-here"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "--socket-group: no group named 'no-such-group-here'"
        );
        let e = config(&["null:a", "nosuchkind:x"]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Port(p) if p.spec == "nosuchkind:x"),
            "{e:?}"
        );
        if !std::path::Path::new(crate::kernel::DEV_NETMAP).exists() {
            let e = config(&["--netmap", "kernel", "null:a"]).unwrap_err();
            assert!(matches!(e, ConfigError::NoKernelNetmap), "{e:?}");
        }
    }
}
