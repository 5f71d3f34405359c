//! [`build_user_ports`]: builds the ports of the built-in userspace netmap (pipes, VALE, null) and
//! the host interface ports that copy into it ([`crate::port::nic`]). Which ports go to kernel
//! netmap instead is decided above (`served::build_ports`).

use crate::port::built::{mac_for, BuiltPort, RingParts};
use crate::port::delivery::{DeliveryRing, DeliveryRx};
use crate::port::mem::{IfSpec, NetmapMemory};
use crate::port::nic;
use crate::port::null::{NullRx, NullTx};
use crate::port::pipe::PipeTx;
use crate::port::ring::RingSync;
use crate::port::vale::{Switch, SwitchFull, SwitchPort, Switches, ValeTx};
use crate::portspec::{PortKind, PortSpec, RingConf};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

/// Why the ports could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The same port was given twice.
    #[error("port '{0}' given twice")]
    Duplicate(String),
    /// The two ends of a pipe disagree on their geometry.
    #[error("the two ends of pipe '{0}' ask for different rings or slots")]
    PipeMismatch(String),
    /// Memory could not be created.
    #[error("creating the netmap memory of '{0}': {1}")]
    Memory(String, #[source] std::io::Error),
    /// A host interface port could not be opened (see [`crate::port::nic`]), or a kernel netmap
    /// port registered (see [`crate::kernel`]).
    #[error(transparent)]
    Nic(#[from] nic::NicError),
    /// A VALE switch has no free slot.
    #[error("port '{0}': {1}")]
    SwitchFull(String, #[source] SwitchFull),
}

fn if_spec(name: &str, c: &RingConf) -> IfSpec {
    IfSpec {
        name: name.to_string(),
        tx_rings: c.tx_rings,
        rx_rings: c.rx_rings,
        tx_slots: c.tx_slots,
        rx_slots: c.rx_slots,
    }
}

/// Builds the ports of `specs` (pipe, VALE, null and host interface ports, each named once),
/// by name.
pub fn build_user_ports(
    specs: &[&PortSpec],
    switches: &Switches,
) -> Result<BTreeMap<String, BuiltPort>, BuildError> {
    let mut built = BTreeMap::new();

    // Pipes: both ends of each pipe at once, in one memory.
    let mut pipes: BTreeMap<(String, u32), Vec<&PortSpec>> = BTreeMap::new();
    for &s in specs {
        if let PortKind::Pipe { name, id, .. } = &s.kind {
            pipes.entry((name.clone(), *id)).or_default().push(s);
        }
    }
    for ((name, id), ends) in pipes {
        let label = format!("{name}{{{id}");
        let explicit: Vec<_> = ends
            .iter()
            .filter(|e| e.explicit_conf)
            .map(|e| (e, e.conf))
            .collect();
        // A conf given on the `}` end describes that end; turn it into the `{` end's view.
        let as_master = |e: &PortSpec, c: RingConf| match e.kind {
            PortKind::Pipe { slave: true, .. } => RingConf {
                tx_rings: c.rx_rings,
                rx_rings: c.tx_rings,
                tx_slots: c.rx_slots,
                rx_slots: c.tx_slots,
            },
            _ => c,
        };
        let confs: Vec<RingConf> = explicit.iter().map(|(e, c)| as_master(e, *c)).collect();
        if confs.windows(2).any(|w| w[0] != w[1]) {
            return Err(BuildError::PipeMismatch(label));
        }
        let c = confs.first().copied().unwrap_or_default();
        let master = if_spec(&format!("{name}{{{id}"), &c);
        let slave = IfSpec {
            name: format!("{name}}}{id}"),
            tx_rings: c.rx_rings,
            rx_rings: c.tx_rings,
            tx_slots: c.rx_slots,
            rx_slots: c.tx_slots,
        };
        let mem = Arc::new(
            NetmapMemory::new(&label, &[master.clone(), slave.clone()])
                .map_err(|e| BuildError::Memory(label.clone(), e))?,
        );
        let io = |e| BuildError::Memory(label.clone(), e);
        let parts = [
            RingParts::new(master.tx_rings + master.rx_rings).map_err(io)?,
            RingParts::new(slave.tx_rings + slave.rx_rings).map_err(io)?,
        ];
        let specs_ = [&master, &slave];
        // RX ring r of end e is fed by TX ring r of the other end.
        let rx_rings: Vec<Vec<Arc<DeliveryRing>>> = (0..2)
            .map(|e| {
                let s = specs_[e];
                (0..s.rx_rings)
                    .map(|r| {
                        let ring = (s.tx_rings + r) as usize;
                        Arc::new(DeliveryRing::new(
                            mem.ring(e, s.tx_rings + r),
                            mem.bufs().clone(),
                            (
                                parts[e].notify[ring].clone(),
                                Some(parts[1 - e].notify[r as usize].clone()),
                            ),
                            parts[e].stats[ring].clone(),
                        ))
                    })
                    .collect()
            })
            .collect();
        // Each end's virtio-net header length, read by both ends' TX rings.
        let hdr_lens = [(); 2].map(|_| Arc::new(AtomicU8::new(0)));
        let stats = [parts[0].stats.clone(), parts[1].stats.clone()];
        let mut parts = parts.into_iter();
        for e in 0..2 {
            let s = specs_[e];
            let p = parts.next().expect("two ends");
            let mut syncs: Vec<Box<dyn RingSync>> = Vec::new();
            for r in 0..s.tx_rings {
                let peer_rx = specs_[1 - e].tx_rings + r;
                syncs.push(Box::new(PipeTx::new(
                    mem.ring(e, r),
                    (
                        rx_rings[1 - e][r as usize].clone(),
                        stats[1 - e][peer_rx as usize].clone(),
                    ),
                    mem.bufs().clone(),
                    p.stats[r as usize].clone(),
                    [hdr_lens[e].clone(), hdr_lens[1 - e].clone()],
                )));
            }
            for r in 0..s.rx_rings {
                syncs.push(Box::new(DeliveryRx {
                    rx: rx_rings[e][r as usize].clone(),
                }));
            }
            let port_name = format!("netmap:{}", s.name);
            let w = p.workers(s, syncs);
            built.insert(
                port_name.clone(),
                BuiltPort::new(&port_name, mem.clone(), e, w).with_vnet_hdr(hdr_lens[e].clone()),
            );
        }
    }

    // VALE: every port of a switch has its own memory; the TX syncs need the whole switch.
    for &s in specs {
        if let PortKind::Vale { switch, .. } = &s.kind {
            let sw = switches.get_or_create(switch);
            built.insert(s.name.clone(), build_vale_port(&sw, s)?);
        }
    }

    // Null ports.
    for &s in specs {
        if let PortKind::Null { .. } = s.kind {
            let spec = if_spec(&s.name, &s.conf);
            let mem = Arc::new(
                NetmapMemory::new(&s.name, std::slice::from_ref(&spec))
                    .map_err(|e| BuildError::Memory(s.name.clone(), e))?,
            );
            let p = RingParts::new(spec.tx_rings + spec.rx_rings)
                .map_err(|e| BuildError::Memory(s.name.clone(), e))?;
            let mut syncs: Vec<Box<dyn RingSync>> = Vec::new();
            for r in 0..spec.tx_rings {
                syncs.push(Box::new(NullTx {
                    tx: mem.ring(0, r),
                    stats: p.stats[r as usize].clone(),
                }));
            }
            for _ in 0..spec.rx_rings {
                syncs.push(Box::new(NullRx));
            }
            let w = p.workers(&spec, syncs);
            built.insert(s.name.clone(), BuiltPort::new(&s.name, mem, 0, w));
        }
    }

    // Host interfaces (tap, AF_PACKET, AF_XDP): see crate::port::nic.
    for &s in specs.iter().filter(|s| nic::is_nic(&s.kind)) {
        built.insert(s.name.clone(), nic::build_port(s)?);
    }

    Ok(built)
}

/// Builds VALE port `m` and puts it on `switch` (taken off again when the port is removed:
/// [`BuiltPort::with_on_remove`]). The port's own TX rings join at once; the other ports' rings
/// see it at their next sync.
pub fn build_vale_port(switch: &Arc<Switch>, m: &PortSpec) -> Result<BuiltPort, BuildError> {
    let spec = if_spec(&m.name, &m.conf);
    let mem = Arc::new(
        NetmapMemory::new(&m.name, std::slice::from_ref(&spec))
            .map_err(|e| BuildError::Memory(m.name.clone(), e))?,
    );
    let p = RingParts::new(spec.tx_rings + spec.rx_rings)
        .map_err(|e| BuildError::Memory(m.name.clone(), e))?;
    let rx: Vec<Arc<DeliveryRing>> = (0..spec.rx_rings)
        .map(|r| {
            let ring = (spec.tx_rings + r) as usize;
            Arc::new(DeliveryRing::new(
                mem.ring(0, spec.tx_rings + r),
                mem.bufs().clone(),
                (p.notify[ring].clone(), None),
                p.stats[ring].clone(),
            ))
        })
        .collect();
    let own = mac_for(&m.name);
    let hdr_len = Arc::new(AtomicU8::new(0));
    let me = switch
        .add_port(
            SwitchPort {
                mac: own,
                rx: rx.clone(),
                rx_stats: p.stats[spec.tx_rings as usize..].to_vec(),
                vnet_hdr_len: hdr_len.clone(),
            },
            m.mac_limit,
        )
        .map_err(|e| BuildError::SwitchFull(m.name.clone(), e))?;
    let mut syncs: Vec<Box<dyn RingSync>> = Vec::new();
    for r in 0..spec.tx_rings {
        syncs.push(Box::new(ValeTx::new(
            switch.clone(),
            me,
            r as usize,
            mem.ring(0, r),
            mem.bufs().clone(),
            p.stats[r as usize].clone(),
        )));
    }
    for ring in rx {
        syncs.push(Box::new(DeliveryRx { rx: ring }));
    }
    let w = p.workers(&spec, syncs);
    let (sw, sw2) = (switch.clone(), switch.clone());
    Ok(BuiltPort::new(&spec.name, mem, 0, w)
        .with_vnet_hdr(hdr_len)
        .with_frontend_gone(move || sw.table.release(me, own))
        .with_on_remove(move || sw2.remove_port(me), {
            let sw3 = switch.clone();
            move || sw3.forget_port(me)
        }))
}
