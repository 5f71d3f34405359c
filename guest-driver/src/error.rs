//! The driver's error type.

use std::io;

/// Everything that can go wrong attaching to or using a ptnet device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port string could not be parsed.
    #[error("bad port '{0}': {1}")]
    BadPort(String, String),
    /// No device matched.
    #[error("no ptnet device matches '{0}'")]
    NoDevice(String),
    /// An I/O error, with what was being done.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// The vhost-user conversation failed.
    #[error("vhost-user: {0}")]
    VhostUser(String),
    /// The device reported something impossible (bad geometry, memory too small, ...).
    #[error("device: {0}")]
    Device(String),
    /// PTCTL returned an errno.
    #[error("PTCTL command {cmd} failed with errno {errno}")]
    Ptctl {
        /// The command written.
        cmd: u32,
        /// The errno read back.
        errno: u32,
    },
    /// The application published inconsistent ring indexes.
    #[error("ring {ring}: {source}")]
    BadIndexes {
        /// Ring number.
        ring: u32,
        /// What was wrong.
        #[source]
        source: ptnet_protocol::sync::BadIndexes,
    },
}

impl Error {
    /// Wraps an `io::Error` with context.
    pub fn io(what: impl Into<String>, e: io::Error) -> Self {
        Error::Io(what.into(), e)
    }
}
