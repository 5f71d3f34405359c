//! Ports the daemon refuses.

use super::*;

#[test]
fn nic_nonexistent_interface_is_named_exit_2() {
    daemon_refuses("packet:nosuch0", &["nosuch0", "does not exist"]);
    daemon_refuses("xdp:nosuch1@0", &["nosuch1", "does not exist"]);
}

#[test]
fn nic_kernel_netmap_without_module_exit_2() {
    if std::path::Path::new("/dev/netmap").exists() {
        // With the module, the port is recognised but not served yet (see the README).
        daemon_refuses("netmap:lo", &["/dev/netmap is present", "not wired"]);
    } else {
        daemon_refuses("netmap:lo", &["/dev/netmap", "netmap kernel module"]);
    }
}
