//! Serving ports on vhost-user sockets: one listening socket and one connection at a time per
//! port, each connection handled on its own thread. A connection's end (clean or not) is an
//! implicit DELETE; the port keeps its rings for the next frontend.

use crate::device::PtnetDevice;
use crate::port::Port;
use crate::syncloop::LoopOptions;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vhost::vhost_user::{BackendReqHandler, Error as VuError};

/// A port being served on a socket.
pub struct PortServer {
    path: PathBuf,
    shutdown: Arc<AtomicBool>,
    current: Arc<Mutex<Option<UnixStream>>>,
    listener: UnixListener,
    thread: Option<JoinHandle<()>>,
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be created.
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, #[source] std::io::Error),
}

impl PortServer {
    /// Listens on `path` (replacing a stale socket) and serves `port` there.
    pub fn start(port: Arc<Port>, path: &Path, opts: LoopOptions) -> Result<Self, ServeError> {
        if path.exists() {
            // A socket left by a previous run; anything else is refused by bind below.
            if std::fs::metadata(path)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false)
            {
                let _ = std::fs::remove_file(path);
            }
        }
        let listener =
            UnixListener::bind(path).map_err(|e| ServeError::Listen(path.to_path_buf(), e))?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<UnixStream>>> = Arc::default();
        let l = listener
            .try_clone()
            .map_err(|e| ServeError::Listen(path.to_path_buf(), e))?;
        let (sd, cur) = (shutdown.clone(), current.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vu-{}", port.name()).chars().take(15).collect())
            .spawn(move || serve(port, l, sd, cur, opts))
            .map_err(|e| ServeError::Listen(path.to_path_buf(), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            shutdown,
            current,
            listener,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving: closes the connection (stopping the rings), the socket, and removes it.
    pub fn stop(mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(s) = self.current.lock().expect("lock").as_ref() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accept() with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        drop(self.listener);
    }
}

fn serve(
    port: Arc<Port>,
    listener: UnixListener,
    shutdown: Arc<AtomicBool>,
    current: Arc<Mutex<Option<UnixStream>>>,
    opts: LoopOptions,
) {
    let device = Arc::new(Mutex::new(PtnetDevice::new(port.clone(), opts)));
    for conn in listener.incoming() {
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(port = port.name(), "accept: {e}");
                continue;
            }
        };
        *current.lock().expect("lock") = stream.try_clone().ok();
        tracing::info!(port = port.name(), "frontend connected");
        let mut handler = BackendReqHandler::from_stream(stream, device.clone());
        loop {
            match handler.handle_request() {
                Ok(()) => device.lock().expect("device lock").flush_backend_requests(),
                Err(VuError::InvalidParam)
                    if device.lock().expect("device lock").take_config_refusal() =>
                {
                    continue;
                }
                Err(VuError::Disconnected | VuError::PartialMessage) => {
                    tracing::info!(port = port.name(), "frontend disconnected");
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        port = port.name(),
                        "closing connection after bad message: {e}"
                    );
                    break;
                }
            }
        }
        *current.lock().expect("lock") = None;
        device.lock().expect("device lock").disconnect();
    }
}
