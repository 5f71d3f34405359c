//! What the soak checks on the daemon: its fds, threads and RSS, and its counters.

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

/// The counters of the daemon's latest stats line for `port` in `log`.
pub fn counters(log: &str, port: &str) -> Option<[u64; 4]> {
    let line = log
        .lines()
        .rfind(|l| l.contains(&format!("port=\"{port}\"")) && l.contains("tx_packets="))?;
    let get = |k: &str| -> Option<u64> {
        let v = line.split(&format!("{k}=")).nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some([
        get("tx_packets")?,
        get("rx_packets")?,
        get("drops")?,
        get("bad_slots")?,
    ])
}
