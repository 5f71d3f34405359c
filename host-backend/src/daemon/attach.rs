//! A host interface attached to a VALE switch (netmap's `vale-ctl -a`).

use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::portspec::{AttachKind, PortSpec};
use crate::served::Port;
use std::sync::Arc;

/// Why an interface could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The interface's port could not be opened.
    #[error(transparent)]
    Build(#[from] crate::port::BuildError),
}

/// An attached interface: its port and the thread moving frames.
pub struct Attached {}

impl Attached {
    /// Starts.
    pub fn start(
        _vale: &Arc<Port>,
        _spec: &PortSpec,
        _kind: AttachKind,
        _loops: LoopOptions,
    ) -> Result<Self, AttachError> {
        Ok(Self {})
    }

    /// Stops.
    pub fn stop(self) {}
}
