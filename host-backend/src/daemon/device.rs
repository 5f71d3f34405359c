//! What a port's server needs of its device ([`ServedDevice`]), whichever frontend the port is
//! served as (`PORT@conf:frontend=`): the ptnet device or the virtio-net one.

use crate::frontend::ptnet::PtnetDevice;
use crate::frontend::virtio_net::VirtioNetDevice;
use std::io;
use std::os::unix::net::UnixStream;
use vhost::vhost_user::VhostUserBackendReqHandlerMut;

/// What the connection loop needs of a port's device, whichever frontend it is.
pub trait ServedDevice: VhostUserBackendReqHandlerMut + Send + 'static {
    /// The connection ended: stop, and forget what it set up.
    fn disconnect(&mut self);
    /// Does the frontend run the rings (it then keeps the port however quiet it is)?
    fn running(&self) -> bool;
    /// Sends requests owed on the backend channel (after the reply to the last message).
    fn flush_backend_requests(&mut self) {}
    /// Was the last request a refusal the connection survives?
    fn take_config_refusal(&mut self) -> bool {
        false
    }
    /// Handles the queued message itself, before `vhost` sees it, if it must (true: it was
    /// read and answered). The message is complete on the socket.
    fn intercept(&mut self, _stream: &UnixStream) -> io::Result<bool> {
        Ok(false)
    }
}

impl ServedDevice for PtnetDevice {
    fn disconnect(&mut self) {
        PtnetDevice::disconnect(self)
    }
    fn running(&self) -> bool {
        PtnetDevice::running(self)
    }
    fn flush_backend_requests(&mut self) {
        PtnetDevice::flush_backend_requests(self)
    }
    fn take_config_refusal(&mut self) -> bool {
        PtnetDevice::take_config_refusal(self)
    }
}

impl ServedDevice for VirtioNetDevice {
    fn disconnect(&mut self) {
        VirtioNetDevice::disconnect(self)
    }
    fn running(&self) -> bool {
        VirtioNetDevice::running(self)
    }
    fn intercept(&mut self, stream: &UnixStream) -> io::Result<bool> {
        self.early_vring_enable(stream)
    }
}
