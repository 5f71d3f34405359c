//! Ports added and removed while the daemon runs (`ptnet-ctl add/remove/attach/detach`, the
//! control socket's `add`, `remove`, `attach`, `detach`). Every request is untrusted input: each
//! PORT is parsed as on the command line, and a request is refused whole, with a typed error
//! ([`RequestError`]), before anything changes if any of its ports is bad, given twice, already
//! served (added) or not served (removed).
//!
//! * **Add.** The ports are built as at start-up (`served::build_ports`, the daemon's switch
//!   registry: a VALE port joins its running switch, see `port::vale`'s notes on the
//!   read-copy-update of the port table), then served on `SOCKET_DIR/NAME.sock`; a pipe end
//!   brings its peer (both ends are served). All or nothing: on a failure the ports started are
//!   stopped again and leave their switches.
//! * **Remove.** A VALE port first leaves its switch's table (the other ports stop sending to it
//!   at their next sync), then its server stops (a frontend's connection is closed, its rings
//!   stopped; its socket is removed, so a reconnecting frontend finds nothing), then its
//!   addresses are forgotten. A pipe end whose peer is served is refused unless the peer is
//!   removed in the same request: the peer's guest would lose its other end unasked.
//! * Other ports are untouched: the data path never takes the daemon's port list (its lock is
//!   held by the control thread and the stats readers only), and nothing of theirs is rebuilt.

use super::control::protocol::{kind_name, PortInfo, RequestError};
use super::{Core, Served};
use crate::daemon::config::Sockets;
use crate::portspec::{AttachKind, PortKind, PortSpec};
use crate::served::NetmapImpl;
use std::collections::HashSet;

/// Most ports a daemon serves: what a request may add up to.
pub const MAX_DAEMON_PORTS: usize = 1024;
/// Most ports one request names.
pub const MAX_REQUEST_PORTS: usize = 64;

/// At most this many characters of a client's text go into an error.
fn echo(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The other end of pipe end `spec` (user netmap only: a kernel pipe's peer is the kernel's).
fn pipe_peer(spec: &PortSpec) -> Option<String> {
    match &spec.kind {
        PortKind::Pipe { name, id, slave } => Some(format!(
            "netmap:{name}{}{id}",
            if *slave { '{' } else { '}' }
        )),
        _ => None,
    }
}

impl Core {
    /// Adds the ports `args` (PORT arguments); returns them as `list` shows them.
    pub(crate) fn add(&self, args: &[String]) -> Result<Vec<PortInfo>, RequestError> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut specs = Vec::new();
        for a in args {
            let s = PortSpec::parse(a).map_err(|e| RequestError::BadPort(echo(&e.to_string())))?;
            specs.push(s);
        }
        self.add_specs(specs)
    }

    /// Attaches host interface `ifname` to switch `switch` through `kind`: the port
    /// `SWITCH:IFNAME@conf:attach=KIND`.
    pub(crate) fn attach(
        &self,
        switch: &str,
        ifname: &str,
        kind: AttachKind,
    ) -> Result<Vec<PortInfo>, RequestError> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let arg = format!("{switch}:{ifname}@conf:attach={}", attach_word(kind));
        let spec =
            PortSpec::parse(&arg).map_err(|e| RequestError::BadPort(echo(&e.to_string())))?;
        if !matches!(spec.kind, PortKind::Vale { .. }) {
            return Err(RequestError::BadPort(echo(&format!(
                "'{switch}' is not a VALE switch (valeX)"
            ))));
        }
        self.add_specs(vec![spec])
    }

    /// Detaches `ifname` from `switch` (the port `SWITCH:IFNAME`, which must be an attached
    /// interface's).
    pub(crate) fn detach(&self, switch: &str, ifname: &str) -> Result<Vec<String>, RequestError> {
        let name = format!("{switch}:{ifname}");
        let attached = self
            .read()
            .iter()
            .find(|s| s.port.name() == name)
            .map(|s| s.spec.attach.is_some());
        match attached {
            None => Err(RequestError::NoSuchPort(echo(&name))),
            Some(false) => Err(RequestError::NotAttached(echo(&name))),
            Some(true) => self.remove(&[name]),
        }
    }

    fn add_specs(&self, mut specs: Vec<PortSpec>) -> Result<Vec<PortInfo>, RequestError> {
        if specs.is_empty() || specs.len() > MAX_REQUEST_PORTS {
            return Err(RequestError::BadPort(format!(
                "name 1 to {MAX_REQUEST_PORTS} ports"
            )));
        }
        let Sockets::Dir(dir) = &self.sockets else {
            return Err(RequestError::Refused(
                "this daemon serves one --socket: ports can be added only with --socket-dir".into(),
            ));
        };
        let existing: HashSet<String> = self
            .read()
            .iter()
            .map(|s| s.port.name().to_string())
            .collect();
        let mut seen = HashSet::new();
        for s in &specs {
            if !seen.insert(s.name.clone()) {
                return Err(RequestError::Duplicate(echo(&s.name)));
            }
            if existing.contains(&s.name) {
                return Err(RequestError::PortExists(echo(&s.name)));
            }
        }
        // A pipe of the userspace netmap comes whole: an end brings its peer (unless given).
        if self.netmap == NetmapImpl::User {
            let mut peers = Vec::new();
            for s in &specs {
                if let Some(peer) = pipe_peer(s) {
                    if existing.contains(&peer) {
                        return Err(RequestError::PortExists(echo(&format!(
                            "{peer} (the other end of {}; remove it first)",
                            s.name
                        ))));
                    }
                    if seen.insert(peer.clone()) {
                        peers.push(PortSpec::parse(&peer).expect("the peer of a valid end"));
                    }
                }
            }
            specs.extend(peers);
        }
        if existing.len() + specs.len() > MAX_DAEMON_PORTS {
            return Err(RequestError::Refused(format!(
                "a daemon serves at most {MAX_DAEMON_PORTS} ports"
            )));
        }
        let sockets = specs
            .iter()
            .map(|s| dir.join(format!("{}.sock", s.name)))
            .collect();
        let served = self
            .start_ports(&specs, sockets)
            .map_err(|e| RequestError::Refused(echo(&e.to_string())))?;
        let info: Vec<PortInfo> = served.iter().map(Served::info).collect();
        for p in &info {
            tracing::info!(port = p.name, socket = %p.socket.display(), "added");
        }
        self.write().extend(served);
        Ok(info)
    }

    /// Removes the ports `names`; returns their names.
    pub(crate) fn remove(&self, names: &[String]) -> Result<Vec<String>, RequestError> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if names.is_empty() || names.len() > MAX_REQUEST_PORTS {
            return Err(RequestError::BadPort(format!(
                "name 1 to {MAX_REQUEST_PORTS} ports"
            )));
        }
        let gone: Vec<Served> = {
            let mut served = self.write();
            let mut seen = HashSet::new();
            for n in names {
                if !seen.insert(n.as_str()) {
                    return Err(RequestError::Duplicate(echo(n)));
                }
                let Some(s) = served.iter().find(|s| s.port.name() == n) else {
                    return Err(RequestError::NoSuchPort(echo(n)));
                };
                if self.netmap == NetmapImpl::User {
                    if let Some(peer) = pipe_peer(&s.spec) {
                        let peer_served = served.iter().any(|o| o.port.name() == peer);
                        if peer_served && !names.contains(&peer) {
                            return Err(RequestError::PipePeer {
                                port: echo(n),
                                peer,
                            });
                        }
                    }
                }
            }
            let (gone, kept) = std::mem::take(&mut *served)
                .into_iter()
                .partition(|s| names.iter().any(|n| n == s.port.name()));
            *served = kept;
            gone
        };
        // Outside the lock: stopping a server waits for its connection's thread.
        let mut removed = Vec::new();
        for s in gone {
            let port = s.port.clone();
            port.removing();
            s.stop();
            port.removed();
            tracing::info!(port = port.name(), "removed");
            removed.push(port.name().to_string());
        }
        Ok(removed)
    }
}

/// `packet`, `xdp`, `tap`.
pub fn attach_word(k: AttachKind) -> &'static str {
    match k {
        AttachKind::Packet => "packet",
        AttachKind::Xdp => "xdp",
        AttachKind::Tap => "tap",
    }
}

impl Served {
    /// The port as `list` shows it.
    pub(crate) fn info(&self) -> PortInfo {
        let g = self.port.geometry();
        let st = super::stats::port_stats(&self.port, self.socket.clone(), self.frontend(), None);
        PortInfo {
            name: st.name,
            kind: match self.spec.attach {
                Some(k) => format!("vale+{}", attach_word(k)),
                None => kind_name(&self.spec.kind).into(),
            },
            socket: st.socket,
            frontend: st.frontend,
            datapath: st.datapath,
            connections: st.connections,
            tx_rings: g.num_tx_rings,
            rx_rings: g.num_rx_rings,
            tx_slots: g.num_tx_slots,
            rx_slots: g.num_rx_slots,
        }
    }
}

impl super::control::Operator for Core {
    fn stats(&self) -> super::DaemonStats {
        Core::stats(self)
    }

    fn list(&self) -> Vec<PortInfo> {
        self.read().iter().map(Served::info).collect()
    }

    fn add(&self, ports: &[String]) -> Result<Vec<PortInfo>, RequestError> {
        Core::add(self, ports)
    }

    fn remove(&self, ports: &[String]) -> Result<Vec<String>, RequestError> {
        Core::remove(self, ports)
    }

    fn attach(
        &self,
        switch: &str,
        ifname: &str,
        kind: AttachKind,
    ) -> Result<Vec<PortInfo>, RequestError> {
        Core::attach(self, switch, ifname, kind)
    }

    fn detach(&self, switch: &str, ifname: &str) -> Result<Vec<String>, RequestError> {
        Core::detach(self, switch, ifname)
    }

    fn tap(&self, port: &str) -> Result<std::sync::Arc<crate::capture::Tap>, RequestError> {
        let ports = self.read();
        let p = ports
            .iter()
            .find(|s| s.port.name() == port)
            .ok_or_else(|| RequestError::NoSuchPort(port.chars().take(64).collect()))?;
        p.port.tap().cloned().ok_or_else(|| {
            RequestError::Refused(format!(
                "{port}: a kernel netmap port (the kernel runs its rings): capture it with the kernel's tools"
            ))
        })
    }
}
