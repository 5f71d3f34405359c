//! What the soak checks on the daemon: its fds, threads and RSS, and its counters.

use ptnet_integration::PortCounters;

/// fds, threads and RSS (KiB) of `pid`.
pub fn usage(pid: u32) -> Option<(usize, u64, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(k))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((fds, field("Threads:")?, field("VmRSS:")?))
}

/// tx, rx, drops and bad slots of the daemon's latest counters for `port` in `log`.
pub fn counters(log: &str, port: &str) -> Option<[u64; 4]> {
    let c = PortCounters::last(log, Some(port))?;
    Some([c.tx_packets, c.rx_packets, c.drops, c.bad_slots])
}
