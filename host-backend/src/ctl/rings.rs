//! `ptnet-ctl stats`: the per-ring table (what each sync did: batches, kicks, interrupts), and
//! the same for the virtqueues of `frontend=virtio-net` ports.

use crate::daemon::stats::{DaemonStats, Dir};

/// One row per ring of every port that has ring counters (kernel ports have none).
pub fn ring_table(s: &DaemonStats, table: fn(&[&str], &[Vec<String>]) -> String) -> String {
    let rows: Vec<Vec<String>> = s
        .ports
        .iter()
        .flat_map(|p| {
            p.rings.iter().map(|r| {
                let dir = match r.dir {
                    Dir::Tx => "tx",
                    Dir::Rx => "rx",
                };
                vec![
                    p.name.clone(),
                    format!("{dir}{}", r.index),
                    r.packets.to_string(),
                    r.batches.to_string(),
                    r.kicks.to_string(),
                    r.irqs_sent.to_string(),
                    r.irqs_suppressed.to_string(),
                    r.drops.to_string(),
                    r.no_route.to_string(),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table(
        &[
            "PORT",
            "RING",
            "PACKETS",
            "BATCHES",
            "KICKS",
            "IRQS",
            "IRQS_SUPPR",
            "DROPS",
            "NO_ROUTE",
        ],
        &rows,
    )
}

/// One row per virtqueue of every port served as a virtio-net device (none: empty).
pub fn virtqueue_table(s: &DaemonStats, table: fn(&[&str], &[Vec<String>]) -> String) -> String {
    let rows: Vec<Vec<String>> = s
        .ports
        .iter()
        .flat_map(|p| {
            p.virtqueues.iter().flatten().map(|q| {
                let dir = match q.dir {
                    Dir::Tx => "tx",
                    Dir::Rx => "rx",
                };
                let errors = q.bad_chains
                    + q.bad_addresses
                    + q.too_long
                    + q.too_short
                    + q.bad_headers
                    + q.bad_heads;
                vec![
                    p.name.clone(),
                    format!("vq{}:{dir}", q.index),
                    q.packets.to_string(),
                    q.batches.to_string(),
                    q.kicks.to_string(),
                    q.interrupts.to_string(),
                    q.interrupts_suppressed.to_string(),
                    errors.to_string(),
                    q.broken.to_string(),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table(
        &[
            "PORT",
            "VIRTQUEUE",
            "PACKETS",
            "BATCHES",
            "KICKS",
            "IRQS",
            "IRQS_SUPPR",
            "ERRORS",
            "BROKEN",
        ],
        &rows,
    )
}
