//! The daemon as a library: [`Daemon::start`] builds the ports of a [`DaemonConfig`] and serves
//! each on its socket ([`server`]); [`Daemon::stats`] gives every counter as data
//! ([`DaemonStats`]); [`Daemon::stop`] shuts it all down, as SIGTERM does. The command line
//! ([`crate::cli`]) is a thin loop over this.

pub mod activation;
pub mod attach;
pub mod capabilities;
pub mod config;
pub mod control;
pub mod device;
pub mod metrics;
pub mod poll_server;
pub mod runtime;
pub mod server;
mod socket;
pub mod stats;

pub use config::{ConfigError, DaemonConfig, Sockets, StatsFormat};
pub use stats::{DaemonStats, FrontendState, PortStats};

use crate::frontend::ptnet::GuestMemory;
use crate::frontend::virtio_net::vq::VqStats;
use crate::port::build::BuildError;
use crate::port::vale::Switches;
use crate::portspec::{Frontend, PortSpec};
use crate::served::{build_ports, NetmapImpl, Port};
use control::protocol::RequestError;
use server::{PortServer, ServeError, ServeOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
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
    /// An interface could not be attached to its switch (`@conf:attach=`).
    #[error(transparent)]
    Attach(attach::AttachError),
}

/// A running daemon: its ports, each served on its socket; and its control socket.
pub struct Daemon {
    core: Arc<Core>,
    control: Option<control::ControlServer>,
}

/// A port the daemon serves, and how.
pub(crate) struct Served {
    /// Its PORT argument, parsed.
    spec: PortSpec,
    port: Arc<Port>,
    /// Its vhost-user socket (an attached interface's port has none: empty).
    socket: PathBuf,
    /// `None` once stopped; and for the ports of an attached interface, which have no server.
    server: Option<PortServer>,
    /// Its virtqueue counters, if it is served as a virtio-net device.
    virtqueues: Option<Vec<Arc<VqStats>>>,
    /// The interface attached to its switch through this port, driven by a daemon thread.
    attached: Option<attach::Attached>,
}

/// What the control thread shares with the daemon: the ports and their servers. The data path
/// never takes `served` (ring threads hold their port's parts themselves); the control thread,
/// the stats readers and [`Daemon::stop`] do, briefly; `changes` makes runtime additions and
/// removals one at a time.
pub(crate) struct Core {
    served: RwLock<Vec<Served>>,
    /// The userspace netmap's VALE switches.
    switches: Switches,
    sockets: Sockets,
    netmap: NetmapImpl,
    serve: ServeOptions,
    changes: Mutex<()>,
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
        GuestMemory::set_max_per_connection(config.max_guest_memory);
        crate::frontend::virtio_net::mem::allow_unsealed(config.allow_unsealed_memory);
        let core = Arc::new(Core {
            served: RwLock::new(Vec::new()),
            switches: Switches::default(),
            sockets: config.sockets.clone(),
            netmap: config.netmap,
            serve: config.serve,
            changes: Mutex::new(()),
            started: Instant::now(),
        });
        let served = core.start_ports(&config.ports, config.socket_paths())?;
        core.write().extend(served);
        let control = match &config.control_socket {
            None => None,
            Some(path) => {
                let op: Arc<dyn control::Operator> = core.clone();
                match control::ControlServer::start(path, config.serve.socket_group, op) {
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

    /// The served ports, in the order they were added (command line first).
    pub fn ports(&self) -> Vec<Arc<Port>> {
        self.core.read().iter().map(|s| s.port.clone()).collect()
    }

    /// Their sockets, in the same order.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.core.read().iter().map(|s| s.socket.clone()).collect()
    }

    /// The socket of port `name`.
    pub fn socket(&self, name: &str) -> Option<PathBuf> {
        self.core
            .read()
            .iter()
            .find(|s| s.port.name() == name)
            .map(|s| s.socket.clone())
    }

    /// Each port's virtqueue counters (in port order), for the ports served as virtio-net
    /// devices.
    pub fn virtqueues(&self) -> Vec<Option<Vec<Arc<VqStats>>>> {
        self.core
            .read()
            .iter()
            .map(|s| s.virtqueues.clone())
            .collect()
    }

    /// Every counter, now.
    pub fn stats(&self) -> DaemonStats {
        self.core.stats()
    }

    /// [`Self::stats`] as a function another thread can call (the metrics endpoint's).
    pub fn stats_source(&self) -> control::StatsFn {
        let core = self.core.clone();
        Arc::new(move || core.stats())
    }

    /// Adds ports as `ptnet-ctl add` does (PORT arguments, `@conf:` included): see
    /// [`runtime`].
    pub fn add_ports(&self, specs: &[String]) -> Result<Vec<String>, RequestError> {
        self.core
            .add(specs)
            .map(|p| p.into_iter().map(|p| p.name).collect())
    }

    /// Removes ports as `ptnet-ctl remove` does.
    pub fn remove_ports(&self, names: &[String]) -> Result<Vec<String>, RequestError> {
        self.core.remove(names)
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
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Served>> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Served>> {
        self.served.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds `specs` and serves each on its socket (`sockets`, in the same order); on error,
    /// what was started is stopped and the ports built are dropped (leaving their switches).
    fn start_ports(
        &self,
        specs: &[PortSpec],
        sockets: Vec<PathBuf>,
    ) -> Result<Vec<Served>, DaemonError> {
        let ports = build_ports(specs, self.netmap, &self.switches)?;
        // Checked before anything is served: a refused port serves none.
        if let Some((p, _)) = ports
            .iter()
            .zip(specs)
            .find(|(p, s)| s.frontend == Frontend::VirtioNet && p.threads_memory().is_none())
        {
            return Err(DaemonError::VirtioNetOnKernel(p.name().to_string()));
        }
        let mut served: Vec<Served> = Vec::new();
        for ((port, path), spec) in ports.into_iter().zip(sockets).zip(specs) {
            let started = match spec.attach {
                Some(kind) => attach::Attached::start(&port, spec, kind, self.serve.loops)
                    .map(|a| (None, Some(a)))
                    .map_err(DaemonError::Attach),
                None => PortServer::start_frontend(port.clone(), &path, self.serve, spec.frontend)
                    .map(|s| (Some(s), None))
                    .map_err(DaemonError::Serve),
            };
            match started {
                Ok((server, attached)) => {
                    let g = port.geometry();
                    tracing::info!(
                        port = port.name(),
                        socket = %path.display(),
                        tx_rings = g.num_tx_rings,
                        rx_rings = g.num_rx_rings,
                        slots = g.num_tx_slots,
                        mem_id = g.mem_id,
                        mem_size = g.mem_size,
                        frontend = ?spec.frontend,
                        attached = ?spec.attach,
                        mac = %mac_string(port.mac()),
                        "serving"
                    );
                    served.push(Served {
                        spec: spec.clone(),
                        virtqueues: server
                            .as_ref()
                            .and_then(|s| s.virtqueues().map(<[_]>::to_vec)),
                        port,
                        socket: if attached.is_some() {
                            PathBuf::new()
                        } else {
                            path
                        },
                        server,
                        attached,
                    });
                }
                Err(e) => {
                    for s in served {
                        s.stop();
                    }
                    return Err(e);
                }
            }
        }
        Ok(served)
    }

    /// Every counter, now (frontends [`FrontendState::Stopped`] once the servers are stopped).
    fn stats(&self) -> DaemonStats {
        let served = self.read();
        DaemonStats {
            uptime_s: self.started.elapsed().as_secs_f64(),
            kick_faults: crate::frontend::ptnet::syncloop::kick_faults(),
            interrupt_writes_cut: crate::sys::signal_writes_cut(),
            ports: served
                .iter()
                .map(|s| {
                    stats::port_stats(
                        &s.port,
                        s.socket.clone(),
                        s.frontend(),
                        s.virtqueues.as_deref(),
                    )
                })
                .collect(),
        }
    }

    /// Stops every port server (the ports stay listed, stopped).
    fn stop_servers(&self) {
        let all: Vec<_> = self
            .write()
            .iter_mut()
            .map(|s| (s.server.take(), s.attached.take()))
            .collect();
        for (server, attached) in all {
            if let Some(a) = attached {
                a.stop();
            }
            if let Some(s) = server {
                s.stop();
            }
        }
    }
}

impl Served {
    /// Its frontend: an attached interface's port always runs (its daemon thread).
    fn frontend(&self) -> Option<server::FrontendStatus> {
        if self.attached.is_some() {
            return Some(server::FrontendStatus {
                connected: true,
                running: true,
                accepted: 0,
            });
        }
        self.server.as_ref().map(PortServer::frontend)
    }

    /// Stops its server or its attach thread.
    fn stop(self) {
        if let Some(a) = self.attached {
            a.stop();
        }
        if let Some(s) = self.server {
            s.stop();
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
