//! Sockets the daemon is started with instead of binding them itself: systemd's socket
//! activation (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`: descriptors 3, 4, ... are
//! listening sockets, `contrib/ptnet-backend@.socket`), and QEMU's backend convention `--fd N`
//! (one already-listening socket for the single PORT).
//!
//! **Which socket serves which port.** A socket passed with `LISTEN_FDS` serves the port (or
//! the control socket) whose path it is bound to: the path a `.socket` unit's `ListenStream=`
//! names must be the one the daemon would bind itself (`DIR/<PORT>.sock` with `--socket-dir DIR`,
//! `DIR/ptnet-backend.ctl` for the control socket). Matching by path rather than by
//! `FileDescriptorName=` because systemd does not allow `:` in those names and every port name
//! has one; `LISTEN_FDNAMES` only labels the descriptors in messages. Ports with no inherited
//! socket bind their own as usual. `--fd N` serves the single PORT on N, whatever its path (which
//! becomes the port's socket, as `--socket` would).
//!
//! Each inherited descriptor must be a listening unix stream socket bound to a path, and must
//! match a socket the daemon serves; anything else stops the daemon with exit status 2 naming
//! the descriptor. An inherited socket's file is never removed by the daemon (the socket unit
//! owns it, and serves it again when the daemon restarts); its `PATH.lock` is taken as usual.

use crate::daemon::socket::file_id;
use crate::sys::{claim_listening_unix_socket, InheritError};
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// Most descriptors taken from `LISTEN_FDS`.
pub const MAX_LISTEN_FDS: usize = 4096;

/// A listening socket the daemon was started with.
#[derive(Debug)]
pub struct Inherited {
    /// Where it came from, for messages: `--fd 5`, `LISTEN_FDS descriptor 3 ("vm1")`.
    pub origin: String,
    /// The socket.
    pub listener: UnixListener,
    /// The path it is bound to.
    pub path: PathBuf,
}

/// Why the inherited sockets cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A descriptor that is not a listening unix stream socket.
    #[error("{origin} {source}")]
    Bad {
        /// Which descriptor.
        origin: String,
        /// What it is instead.
        source: InheritError,
    },
    /// `LISTEN_FDS` is not a count.
    #[error("LISTEN_FDS={0:?}: expected a number of descriptors, 1 to {MAX_LISTEN_FDS}")]
    ListenFds(String),
    /// `LISTEN_FDNAMES` does not name each descriptor.
    #[error("LISTEN_FDNAMES has {names} names for LISTEN_FDS={fds}")]
    Names {
        /// Names given.
        names: usize,
        /// Descriptors given.
        fds: usize,
    },
    /// An abstract or unnamed socket.
    #[error("{0} is not bound to a path (abstract and unnamed sockets cannot be served)")]
    NoPath(String),
    /// A socket no port (nor the control socket) would be served on.
    #[error("{origin} is bound to {}, which is neither a port's socket nor the control socket (they are: {expected})", path.display())]
    Unmatched {
        /// Which descriptor.
        origin: String,
        /// Its path.
        path: PathBuf,
        /// The daemon's socket paths.
        expected: String,
    },
    /// Two inherited sockets for one path.
    #[error("{0} and {1} are bound to the same path")]
    Duplicate(String, String),
    /// `--fd` with several ports.
    #[error(
        "--fd serves a single PORT (got {0}); use --socket-dir and socket activation for several"
    )]
    FdForSeveralPorts(usize),
    /// `--fd` and `--socket` disagree.
    #[error("--fd {fd} is bound to {}, not to --socket {}", bound.display(), socket.display())]
    FdNotSocket {
        /// The descriptor.
        fd: RawFd,
        /// Its path.
        bound: PathBuf,
        /// `--socket`.
        socket: PathBuf,
    },
}

fn inherit(fd: RawFd, origin: String) -> Result<Inherited, ActivationError> {
    let listener = claim_listening_unix_socket(fd).map_err(|source| ActivationError::Bad {
        origin: origin.clone(),
        source,
    })?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .ok_or_else(|| ActivationError::NoPath(origin.clone()))?;
    Ok(Inherited {
        origin,
        listener,
        path,
    })
}

/// `--fd N`.
pub fn from_fd(fd: RawFd) -> Result<Inherited, ActivationError> {
    inherit(fd, format!("--fd {fd}"))
}

/// The sockets systemd passed (none unless `LISTEN_PID` is this process), from values of
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
pub fn from_listen_vars(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
) -> Result<Vec<Inherited>, ActivationError> {
    let ours = pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
    let Some(fds) = fds.filter(|_| ours) else {
        if fds.is_some() {
            tracing::warn!("LISTEN_FDS is set for another process (LISTEN_PID {pid:?}): ignored");
        }
        return Ok(Vec::new());
    };
    let n: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=MAX_LISTEN_FDS).contains(n))
        .ok_or_else(|| ActivationError::ListenFds(fds.into()))?;
    let names: Vec<&str> = names.map_or_else(Vec::new, |s| s.split(':').collect());
    if !names.is_empty() && names.len() != n {
        return Err(ActivationError::Names {
            names: names.len(),
            fds: n,
        });
    }
    (0..n)
        .map(|i| {
            let fd = LISTEN_FDS_START + i as RawFd;
            let origin = match names.get(i) {
                Some(name) => format!("LISTEN_FDS descriptor {fd} ({name:?})"),
                None => format!("LISTEN_FDS descriptor {fd}"),
            };
            inherit(fd, origin)
        })
        .collect()
}

/// [`from_listen_vars`] of this process's environment, which it then clears of them (so that
/// no child takes them for its own).
pub fn from_env() -> Result<Vec<Inherited>, ActivationError> {
    let var = |k| std::env::var(k).ok();
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    from_listen_vars(pid.as_deref(), fds.as_deref(), names.as_deref())
}

/// Inherited sockets waiting for their server: (the daemon's path they serve, the socket).
static WAITING: Mutex<Vec<(PathBuf, UnixListener)>> = Mutex::new(Vec::new());

/// Whether `a` and `b` name the same socket: the same path, or the same file.
pub fn same_socket(a: &Path, b: &Path) -> bool {
    a == b || file_id(a).is_some_and(|id| file_id(b) == Some(id))
}

/// Matches each inherited socket to the one of `expected` (the daemon's socket paths: the
/// ports', the control socket's) it is bound to, and keeps it for the server of that path,
/// which takes it instead of binding.
pub fn register(inherited: Vec<Inherited>, expected: &[PathBuf]) -> Result<(), ActivationError> {
    let mut matched: Vec<(PathBuf, Inherited)> = Vec::new();
    for i in inherited {
        let Some(p) = expected.iter().find(|p| same_socket(p, &i.path)) else {
            let expected = expected
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ActivationError::Unmatched {
                origin: i.origin,
                path: i.path,
                expected,
            });
        };
        if let Some((_, other)) = matched.iter().find(|(q, _)| q == p) {
            return Err(ActivationError::Duplicate(other.origin.clone(), i.origin));
        }
        tracing::info!(socket = %p.display(), "inherited from {}", i.origin);
        matched.push((p.clone(), i));
    }
    let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    waiting.extend(matched.into_iter().map(|(p, i)| (p, i.listener)));
    Ok(())
}

/// The inherited socket registered for `path`, if any (taken: asked again, `None`).
pub(crate) fn take(path: &Path) -> Option<UnixListener> {
    let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    let i = waiting.iter().position(|(p, _)| p == path)?;
    Some(waiting.swap_remove(i).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_variables_are_checked() {
        let me = std::process::id().to_string();
        // Not ours, or none: nothing inherited, whatever the rest says.
        assert!(from_listen_vars(None, Some("2"), None).unwrap().is_empty());
        assert!(from_listen_vars(Some("1"), Some("2"), None)
            .unwrap()
            .is_empty());
        assert!(from_listen_vars(Some(&me), None, None).unwrap().is_empty());
        for bad in ["0", "-1", "two", "99999"] {
            assert!(
                matches!(from_listen_vars(Some(&me), Some(bad), None), Err(ActivationError::ListenFds(s)) if s == bad),
                "{bad}"
            );
        }
        assert!(matches!(
            from_listen_vars(Some(&me), Some("2"), Some("a:b:c")),
            Err(ActivationError::Names { names: 3, fds: 2 })
        ));
    }
}
