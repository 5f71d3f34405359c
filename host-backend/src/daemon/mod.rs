//! The daemon as a library: [`Daemon::start`] builds the ports of a [`DaemonConfig`] and serves
//! each on its socket ([`server`]); [`Daemon::stats`] gives every counter as data
//! ([`DaemonStats`]); [`Daemon::stop`] shuts it all down, as SIGTERM does. The command line
//! ([`crate::cli`]) is a thin loop over this.

pub mod capabilities;
pub mod config;
pub mod control;
pub mod device;
pub mod server;
mod socket;
pub mod stats;

pub use config::{ConfigError, DaemonConfig, Sockets, StatsFormat};
pub use stats::{DaemonStats, FrontendState, PortStats};

use crate::frontend::ptnet::GuestMemory;
use crate::frontend::virtio_net::vq::VqStats;
use crate::port::build::BuildError;
use crate::portspec::Frontend;
use crate::served::{build_ports, NetmapImpl, Port};
use server::{PortServer, ServeError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket directory could not be created.
    #[error("cannot create socket directory {}: {source}", dir.display())]
    SocketDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A port could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A port's socket could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// `frontend=virtio-net` on a port the kernel's loop runs.
    #[error(
        "port '{0}': frontend=virtio-net needs the userspace netmap (kernel netmap ports are run \
         by the kernel's loop; use --netmap user)"
    )]
    VirtioNetOnKernel(String),
    /// The control socket (`--control-socket`) could not be served.
    #[error("--control-socket: {0}")]
    Control(#[source] ServeError),
}

/// A running daemon: its ports, each served on its socket; and its control socket.
pub struct Daemon {
    core: Arc<Core>,
    control: Option<control::ControlServer>,
}

/// What the control thread shares with the daemon: the ports and their servers (taken at stop).
struct Core {
    ports: Vec<Arc<Port>>,
    sockets: Vec<PathBuf>,
    servers: RwLock<Vec<PortServer>>,
    /// Each port's virtqueue counters, if it is served as a virtio-net device.
    virtqueues: Vec<Option<Vec<Arc<VqStats>>>>,
    started: Instant,
}

impl Daemon {
    /// Creates the socket directory if needed, builds the ports and serves each on its socket.
    /// On error, whatever was started is stopped again.
    pub fn start(config: &DaemonConfig) -> Result<Self, DaemonError> {
        if let Some(dir) = config.socket_dir() {
            create_socket_dir(dir, config.serve.socket_group).map_err(|source| {
                DaemonError::SocketDir {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
        }
        tracing::info!(
            "pipe and VALE ports run on {}",
            if config.netmap == NetmapImpl::Kernel {
                "kernel netmap (/dev/netmap)"
            } else {
                "the built-in userspace netmap"
            }
        );
        let ports = build_ports(&config.ports, config.netmap)?;
        GuestMemory::set_max_per_connection(config.max_guest_memory);
        crate::frontend::virtio_net::mem::allow_unsealed(config.allow_unsealed_memory);
        let sockets = config.socket_paths();
        // Checked before anything is served: a refused port serves none.
        let frontends: Vec<Frontend> = config.ports.iter().map(|s| s.frontend).collect();
        if let Some((p, _)) = ports
            .iter()
            .zip(&frontends)
            .find(|(p, f)| **f == Frontend::VirtioNet && p.threads_memory().is_none())
        {
            return Err(DaemonError::VirtioNetOnKernel(p.name().to_string()));
        }
        let mut servers = Vec::new();
        for ((port, path), &frontend) in ports.iter().zip(&sockets).zip(&frontends) {
            match PortServer::start_frontend(port.clone(), path, config.serve, frontend) {
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
                    return Err(e.into());
                }
            }
        }
        let virtqueues = servers
            .iter()
            .map(|s| s.virtqueues().map(<[_]>::to_vec))
            .collect();
        let core = Arc::new(Core {
            ports,
            sockets,
            servers: RwLock::new(servers),
            virtqueues,
            started: Instant::now(),
        });
        let control = match &config.control_socket {
            None => None,
            Some(path) => {
                let statics = config
                    .ports
                    .iter()
                    .zip(&core.ports)
                    .map(|(spec, p)| {
                        let g = p.geometry();
                        control::PortStatic {
                            kind: control::protocol::kind_name(&spec.kind),
                            geometry: (
                                g.num_tx_rings,
                                g.num_rx_rings,
                                g.num_tx_slots,
                                g.num_rx_slots,
                            ),
                        }
                    })
                    .collect();
                let c2 = core.clone();
                let stats: control::StatsFn = Arc::new(move || c2.stats());
                match control::ControlServer::start(path, config.serve.socket_group, statics, stats)
                {
                    Ok(c) => Some(c),
                    Err(e) => {
                        Core::stop_servers(&core);
                        return Err(DaemonError::Control(e));
                    }
                }
            }
        };
        Ok(Self { core, control })
    }

    /// The control socket, if one is served.
    pub fn control_socket(&self) -> Option<&Path> {
        self.control.as_ref().map(|c| c.path())
    }

    /// The served ports, in command-line order.
    pub fn ports(&self) -> &[Arc<Port>] {
        &self.core.ports
    }

    /// Their sockets, in the same order.
    pub fn sockets(&self) -> &[PathBuf] {
        &self.core.sockets
    }

    /// The socket of port `name`.
    pub fn socket(&self, name: &str) -> Option<&Path> {
        self.core
            .ports
            .iter()
            .position(|p| p.name() == name)
            .map(|i| self.core.sockets[i].as_path())
    }

    /// Each port's virtqueue counters (in port order), for the ports served as virtio-net
    /// devices.
    pub fn virtqueues(&self) -> &[Option<Vec<Arc<VqStats>>>] {
        &self.core.virtqueues
    }

    /// Every counter, now.
    pub fn stats(&self) -> DaemonStats {
        self.core.stats()
    }

    /// Stops serving: the control socket first, then every connection is closed (its rings
    /// stopped) and every socket removed. Returns the counters as they stand after (every
    /// frontend [`FrontendState::Stopped`]).
    pub fn stop(self) -> DaemonStats {
        if let Some(c) = self.control {
            c.stop();
        }
        Core::stop_servers(&self.core);
        self.core.stats()
    }
}

impl Core {
    /// Every counter, now (frontends [`FrontendState::Stopped`] once the servers are stopped).
    fn stats(&self) -> DaemonStats {
        let servers = self.servers.read().unwrap_or_else(|e| e.into_inner());
        self.collect(|i| servers.get(i).map(PortServer::frontend))
    }

    /// Stops and drops every port server.
    fn stop_servers(&self) {
        let servers = std::mem::take(&mut *self.servers.write().unwrap_or_else(|e| e.into_inner()));
        for s in servers {
            s.stop();
        }
    }

    fn collect(&self, frontend: impl Fn(usize) -> Option<server::FrontendStatus>) -> DaemonStats {
        DaemonStats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            kick_faults: crate::frontend::ptnet::syncloop::kick_faults(),
            interrupt_writes_cut: crate::sys::signal_writes_cut(),
            ports: self
                .ports
                .iter()
                .zip(&self.sockets)
                .enumerate()
                .map(|(i, (p, s))| {
                    let vq = self.virtqueues[i].as_deref();
                    stats::port_stats(p, s.clone(), frontend(i), vq)
                })
                .collect(),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Creates the socket directory if missing, 0700 (0710 with `group`, which it then gets)
/// whatever the umask; an existing directory is left as it is.
fn create_socket_dir(dir: &Path, group: Option<u32>) -> std::io::Result<()> {
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
