//! Listening sockets the daemon was started with (systemd's `LISTEN_FDS`, or `--fd`): checked,
//! then owned.

use std::collections::HashSet;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::Mutex;

/// Why an inherited descriptor is not a socket the daemon can serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InheritError {
    /// 0, 1 and 2 are the standard streams (and negative numbers nothing).
    #[error("is not a descriptor above the standard streams (0, 1, 2)")]
    Reserved,
    /// Nothing is open there.
    #[error("is not an open file descriptor")]
    NotOpen,
    /// Open, but not a socket.
    #[error("is not a socket")]
    NotSocket,
    /// A socket of another family.
    #[error("is not a unix domain socket")]
    NotUnix,
    /// A datagram or seqpacket socket.
    #[error("is not a stream socket (SOCK_STREAM)")]
    NotStream,
    /// A stream socket nobody called `listen` on (a connection, or an unbound socket).
    #[error("is not listening (systemd: Accept=no; a --fd socket must be bound and listened on)")]
    NotListening,
    /// Claimed already (the same number given twice).
    #[error("is given twice")]
    Twice,
    /// A system call failed.
    #[error("cannot be inspected: {0}")]
    Io(String),
}

/// Descriptors claimed so far: each is owned once.
static CLAIMED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

fn sockopt(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals of the sizes given; the kernel writes at most `len`
    // bytes; `fd` is a plain number (EBADF if nothing is open there).
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// Checks that `fd`, inherited from whoever started the daemon, is a listening unix stream
/// socket, and takes it over: close-on-exec set, and owned by the returned listener.
///
/// Only for descriptors the process was started with, claimed at start-up (the command line's
/// `--fd`, systemd's `LISTEN_FDS`): nothing else in the daemon opens or owns them, and each is
/// claimed once (a second claim of the same number is [`InheritError::Twice`]).
pub fn claim_listening_unix_socket(fd: RawFd) -> Result<UnixListener, InheritError> {
    if fd < 3 {
        return Err(InheritError::Reserved);
    }
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    let claimed = claimed.get_or_insert_with(HashSet::new);
    if claimed.contains(&fd) {
        return Err(InheritError::Twice);
    }
    // SAFETY: F_GETFD only reads the descriptor's flags (EBADF if it is not open).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(InheritError::NotOpen);
    }
    let check = |name| {
        sockopt(fd, name).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTSOCK) => InheritError::NotSocket,
            Some(libc::EBADF) => InheritError::NotOpen,
            _ => InheritError::Io(e.to_string()),
        })
    };
    if check(libc::SO_DOMAIN)? != libc::AF_UNIX {
        return Err(InheritError::NotUnix);
    }
    if check(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(InheritError::NotStream);
    }
    if check(libc::SO_ACCEPTCONN)? == 0 {
        return Err(InheritError::NotListening);
    }
    // SAFETY: as above; only the close-on-exec flag is added.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(InheritError::Io(io::Error::last_os_error().to_string()));
    }
    claimed.insert(fd);
    // SAFETY: `fd` is open (F_GETFD succeeded), a listening unix stream socket, and owned by
    // nothing else in this process: it was inherited at exec (the contract of this function,
    // whose callers run at start-up on the numbers `--fd` or `LISTEN_FDS` give), and `CLAIMED`
    // makes sure it is wrapped only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(UnixListener::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn only_listening_unix_stream_sockets_are_taken() {
        assert_eq!(
            claim_listening_unix_socket(1).unwrap_err(),
            InheritError::Reserved
        );
        assert_eq!(
            claim_listening_unix_socket(-5).unwrap_err(),
            InheritError::Reserved
        );
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            claim_listening_unix_socket(f.as_raw_fd()).unwrap_err(),
            InheritError::NotSocket
        );
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            claim_listening_unix_socket(a.as_raw_fd()).unwrap_err(),
            InheritError::NotListening
        );
        let d = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(
            claim_listening_unix_socket(d.as_raw_fd()).unwrap_err(),
            InheritError::NotStream
        );
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            claim_listening_unix_socket(t.as_raw_fd()).unwrap_err(),
            InheritError::NotUnix
        );
        let dir = std::env::temp_dir().join(format!("ptnet-inherit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let l = UnixListener::bind(dir.join("s")).unwrap();
        let fd = l.into_raw_fd();
        let got = claim_listening_unix_socket(fd).unwrap();
        assert_eq!(
            got.local_addr().unwrap().as_pathname(),
            Some(dir.join("s").as_path())
        );
        assert_eq!(
            claim_listening_unix_socket(fd).unwrap_err(),
            InheritError::Twice
        );
        drop(got);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
