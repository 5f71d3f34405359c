//! The daemon's validated configuration ([`DaemonConfig`]), built from the command line
//! (`impl TryFrom<cli::Args>`, in [`crate::cli`]) or directly by a program embedding the daemon.

use crate::daemon::server::ServeOptions;
use crate::frontend::ptnet::DEFAULT_MAX_GUEST_MEMORY;
use crate::portspec::{PortSpec, PortSpecError};
use crate::served::NetmapImpl;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the ports' sockets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sockets {
    /// `DIR/<port name>.sock` for each port (`--socket-dir`; created if missing).
    Dir(PathBuf),
    /// The one port's socket (`--socket`).
    Single(PathBuf),
}

/// How the counters are reported (SIGUSR1, `--stats-every`, exit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsFormat {
    /// Log lines only (`tx_packets=... drops=...`).
    #[default]
    Text,
    /// The log lines, and one JSON object per report on stdout ([`crate::daemon::DaemonStats`]).
    Json,
}

/// Everything the daemon needs to start, checked.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The ports, in command-line order.
    pub ports: Vec<PortSpec>,
    /// Where their sockets go.
    pub sockets: Sockets,
    /// Which netmap runs pipe and VALE ports (resolved: `--netmap auto` is gone by now).
    pub netmap: NetmapImpl,
    /// Connection deadlines, socket group and ring-thread options.
    pub serve: ServeOptions,
    /// Most guest memory one connection may map (`--max-guest-memory`).
    pub max_guest_memory: u64,
    /// virtio-net ports map unsealed memory files too (`--allow-unsealed-memory`).
    pub allow_unsealed_memory: bool,
    /// Report the counters this often (`--stats-every`), besides SIGUSR1 and exit.
    pub stats_every: Option<Duration>,
    /// How the counters are reported.
    pub stats_format: StatsFormat,
    /// The control socket (`--control-socket`; `None`: none is served).
    pub control_socket: Option<PathBuf>,
}

/// A bad command line: one variant per option that can be wrong, naming it. The messages are
/// what the daemon prints before exiting with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--socket-group` names no group (and is not a number).
    #[error("--socket-group: no group named '{0}'")]
    NoSuchGroup(String),
    /// `--socket-group` could not be looked up.
    #[error("--socket-group: looking up '{group}': {source}")]
    GroupLookup {
        /// The group given.
        group: String,
        /// Why.
        source: io::Error,
    },
    /// A PORT argument does not parse.
    #[error(transparent)]
    Port(#[from] PortSpecError),
    /// `--socket` with several ports.
    #[error("--socket takes a single PORT; use --socket-dir for several")]
    SocketForSeveralPorts {
        /// How many ports were given.
        ports: usize,
    },
    /// `--netmap kernel` without `/dev/netmap`.
    #[error(
        "--netmap kernel: /dev/netmap does not exist (load the netmap kernel module, netmap.ko)"
    )]
    NoKernelNetmap,
    /// No PORT at all.
    #[error("no PORT to serve")]
    NoPorts,
}

impl DaemonConfig {
    /// The ports `specs` (nmport syntax) served in `dir` with every default, on the built-in
    /// userspace netmap: what a test or an embedding program starts from.
    pub fn in_dir(dir: impl Into<PathBuf>, specs: &[&str]) -> Result<Self, ConfigError> {
        let ports = specs
            .iter()
            .map(|s| PortSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if ports.is_empty() {
            return Err(ConfigError::NoPorts);
        }
        Ok(Self {
            ports,
            sockets: Sockets::Dir(dir.into()),
            netmap: NetmapImpl::User,
            serve: ServeOptions::default(),
            max_guest_memory: DEFAULT_MAX_GUEST_MEMORY,
            allow_unsealed_memory: false,
            stats_every: None,
            stats_format: StatsFormat::Text,
            control_socket: None,
        })
    }

    /// The socket path of each port, in order.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        match &self.sockets {
            Sockets::Single(p) => vec![p.clone()],
            Sockets::Dir(dir) => self
                .ports
                .iter()
                .map(|s| dir.join(format!("{}.sock", s.name)))
                .collect(),
        }
    }

    /// The socket directory to create, if the sockets go in one.
    pub fn socket_dir(&self) -> Option<&Path> {
        match &self.sockets {
            Sockets::Dir(d) => Some(d),
            Sockets::Single(_) => None,
        }
    }
}

/// `--control-socket`: `none` serves none; no value gives the default of `sockets`:
/// `DIR/ptnet-backend.ctl` with `--socket-dir`, `PATH.ctl` beside a single `--socket PATH`.
pub fn resolve_control_socket(arg: Option<&Path>, sockets: &Sockets) -> Option<PathBuf> {
    match arg {
        Some(p) if p == Path::new("none") => None,
        Some(p) => Some(p.to_path_buf()),
        None => Some(match sockets {
            Sockets::Dir(d) => d.join(crate::daemon::control::protocol::CONTROL_SOCKET_NAME),
            Sockets::Single(p) => {
                let mut s = p.as_os_str().to_owned();
                s.push(".ctl");
                PathBuf::from(s)
            }
        }),
    }
}

/// `--socket-group`: a group name, or a number.
pub fn resolve_group(g: &str) -> Result<u32, ConfigError> {
    match crate::sys::group_id(g) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => g.parse().map_err(|_| ConfigError::NoSuchGroup(g.into())),
        Err(source) => Err(ConfigError::GroupLookup {
            group: g.into(),
            source,
        }),
    }
}

/// Checks the ports against the socket placement: `--socket` serves exactly one.
pub fn check_sockets(sockets: &Sockets, ports: usize) -> Result<(), ConfigError> {
    match sockets {
        Sockets::Single(_) if ports != 1 => Err(ConfigError::SocketForSeveralPorts { ports }),
        _ if ports == 0 => Err(ConfigError::NoPorts),
        _ => Ok(()),
    }
}

/// Resolves `--netmap`: `want` `None` is auto (the kernel's when `have_kernel`).
pub fn resolve_netmap(
    want: Option<NetmapImpl>,
    have_kernel: bool,
) -> Result<NetmapImpl, ConfigError> {
    match (want, have_kernel) {
        (Some(NetmapImpl::Kernel), false) => Err(ConfigError::NoKernelNetmap),
        (Some(n), _) => Ok(n),
        (None, true) => Ok(NetmapImpl::Kernel),
        (None, false) => Ok(NetmapImpl::User),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_option_is_its_own_error() {
        assert!(
            matches!(resolve_group("no-such-group-here"), Err(ConfigError::NoSuchGroup(g)) if g == "no-such-group-here")
        );
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        let one = Sockets::Single("/tmp/x.sock".into());
        assert!(matches!(
            check_sockets(&one, 2),
            Err(ConfigError::SocketForSeveralPorts { ports: 2 })
        ));
        check_sockets(&one, 1).unwrap();
        assert!(matches!(
            check_sockets(&Sockets::Dir(".".into()), 0),
            Err(ConfigError::NoPorts)
        ));
        assert!(matches!(
            resolve_netmap(Some(NetmapImpl::Kernel), false),
            Err(ConfigError::NoKernelNetmap)
        ));
        assert_eq!(resolve_netmap(None, true).unwrap(), NetmapImpl::Kernel);
        assert_eq!(resolve_netmap(None, false).unwrap(), NetmapImpl::User);
        assert_eq!(
            resolve_netmap(Some(NetmapImpl::User), true).unwrap(),
            NetmapImpl::User
        );
        match DaemonConfig::in_dir("/tmp", &["null:a", "bogus:"]) {
            Err(ConfigError::Port(e)) => assert_eq!(e.spec, "bogus:"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn the_control_socket_defaults_beside_the_sockets() {
        let dir = Sockets::Dir("/run/p".into());
        let one = Sockets::Single("/tmp/one.sock".into());
        assert_eq!(
            resolve_control_socket(None, &dir),
            Some(PathBuf::from("/run/p/ptnet-backend.ctl"))
        );
        assert_eq!(
            resolve_control_socket(None, &one),
            Some(PathBuf::from("/tmp/one.sock.ctl"))
        );
        assert_eq!(resolve_control_socket(Some(Path::new("none")), &dir), None);
        assert_eq!(
            resolve_control_socket(Some(Path::new("/x/c.ctl")), &one),
            Some(PathBuf::from("/x/c.ctl"))
        );
    }

    #[test]
    fn sockets_are_named_after_the_ports() {
        let c = DaemonConfig::in_dir("/run/p", &["null:a", "vale0:1@conf:rings=2"]).unwrap();
        assert_eq!(
            c.socket_paths(),
            [
                PathBuf::from("/run/p/null:a.sock"),
                PathBuf::from("/run/p/vale0:1.sock")
            ]
        );
        assert_eq!(c.socket_dir(), Some(Path::new("/run/p")));
    }
}
