//! A port's socket file: its lock (`PATH.lock`, one daemon per socket), and a private bind
//! (see the rules in [`super::server`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A socket path claimed and listened on: its lock, the non-blocking listener, and the
/// (device, inode) of the socket file, which only its holder unlinks at stop.
pub(crate) struct ClaimedSocket {
    /// `PATH.lock` and its locked file.
    pub lock: (PathBuf, File),
    /// The listener, non-blocking.
    pub listener: UnixListener,
    /// What `PATH` named right after the bind ([`file_id`]).
    pub socket_id: (u64, u64),
}

/// Locks `path`, removes a stale socket there (refusing a live one: something answers on it),
/// binds it privately ([`bind_private`]) and makes the listener non-blocking: what the port
/// sockets and the control socket both do before serving.
pub(crate) fn claim_socket(path: &Path, group: Option<u32>) -> Result<ClaimedSocket, ServeError> {
    let lock = lock_socket_path(path)?;
    let listen_err = |e| ServeError::Listen(path.to_path_buf(), e);
    if let Some(listener) = super::activation::take(path) {
        // Inherited (socket activation, `--fd`): served as it is; its file is never removed,
        // as no file id matches this one.
        listener.set_nonblocking(true).map_err(listen_err)?;
        return Ok(ClaimedSocket {
            lock,
            listener,
            socket_id: (u64::MAX, u64::MAX),
        });
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        // A socket left by a previous run is removed; anything else is refused by bind.
        if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) {
            match UnixStream::connect(path) {
                Ok(_) => return Err(ServeError::Live(path.to_path_buf())),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    let _ = std::fs::remove_file(path);
                }
                Err(_) => {}
            }
        }
    }
    let listener = bind_private(path, group)?;
    let socket_id = file_id(path).ok_or_else(|| {
        listen_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the socket vanished after bind",
        ))
    })?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    Ok(ClaimedSocket {
        lock,
        listener,
        socket_id,
    })
}

/// `PATH.lock`, locked (flock, exclusive) and still named by its path.
fn lock_socket_path(path: &Path) -> Result<(PathBuf, File), ServeError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let lock_err = |e| ServeError::Lock(lock_path.clone(), e);
    loop {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(lock_err)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ServeError::InUse(path.to_path_buf(), lock_path))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        // A stopping daemon removes its lock file while it still holds the lock: ours counts
        // only if the path still names the file we locked.
        let ours = f.metadata().map_err(lock_err)?;
        if file_id(&lock_path) == Some((ours.dev(), ours.ino())) {
            return Ok((lock_path, f));
        }
    }
}

/// (device, inode) of what `path` names (not following a symlink).
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Binds `path` with mode 0600 (the umask narrowed around `bind`), then gives it `group` and
/// mode 0660 if asked.
fn bind_private(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    // Process-wide, but only ever narrows: a file another thread creates in this instant gets
    // fewer permissions, never more.
    let old = crate::sys::set_umask(0o177);
    let res = UnixListener::bind(path);
    crate::sys::set_umask(old);
    let listener = res.map_err(|e| ServeError::Listen(path.to_path_buf(), e))?;
    let mode_err = |e| ServeError::Mode(path.to_path_buf(), e);
    let mode = if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(mode_err)?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(mode_err)?;
    Ok(listener)
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be created.
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, #[source] std::io::Error),
    /// Another daemon holds the socket's lock.
    #[error(
        "{0} is in use by another ptnet-backend (it holds {1}); stop it, or use another \
         --socket-dir or --socket"
    )]
    InUse(PathBuf, PathBuf),
    /// Something answers on the socket, though nobody holds its lock.
    #[error(
        "{0} is a live socket another program serves (it answers connections); not replacing it"
    )]
    Live(PathBuf),
    /// The lock file could not be made or locked.
    #[error("cannot lock {0}: {1}")]
    Lock(PathBuf, #[source] std::io::Error),
    /// The socket's mode or group could not be set.
    #[error("cannot set the group or mode of {0}: {1}")]
    Mode(PathBuf, #[source] std::io::Error),
}
