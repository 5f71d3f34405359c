//! Ports the daemon refuses (exit 2, naming what is wrong), and kernel netmap ports.

use crate::netns::{daemon_refuses, Daemon, Netns};
use std::path::Path;
use std::time::Duration;

#[test]
fn nic_nonexistent_interface_is_named_exit_2() {
    daemon_refuses("packet:nosuch0", &["nosuch0", "does not exist"]);
    daemon_refuses("xdp:nosuch1@0", &["nosuch1", "does not exist"]);
}

/// `netmap:IFNAME` is a kernel netmap port. Without the netmap module the daemon refuses it
/// (exit 2, naming `/dev/netmap` and the module); with it, the daemon binds the interface when it
/// starts and serves the port until told to stop.
#[test]
fn nic_kernel_netmap_port_is_served_with_the_module_and_refused_without() {
    if !Path::new("/dev/netmap").exists() {
        daemon_refuses("netmap:lo", &["/dev/netmap", "netmap kernel module"]);
        return;
    }
    let ns = Netns::new("knetmap");
    // Panics, with the daemon's log, unless its socket appears.
    let mut d = Daemon::start(&ns, "netmap:lo");
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.running(), "the daemon stopped serving netmap:lo");
    let status = d.terminate();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
