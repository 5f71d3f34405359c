//! `xdp:IFNAME[@QUEUE]`: a host interface through AF_XDP (not built yet).

use super::NicError;
use crate::port::Port;
use crate::portspec::PortSpec;
use std::sync::Arc;

pub(crate) fn build(spec: &PortSpec, ifname: &str, _queue: u32) -> Result<Arc<Port>, NicError> {
    super::require_if(&spec.name, ifname)?;
    Err(NicError::Unsupported {
        port: spec.name.clone(),
        reason: "AF_XDP ports are not available in this build".into(),
    })
}
