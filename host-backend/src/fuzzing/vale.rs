//! The `vale_frames` target: frames and virtio-net headers through a VALE switch.

use super::input::Input;
use super::slots::{hdr_len, Rig};
use ptnet_protocol::netmap::slot_flags;
use ptnet_protocol::vnet::{self, VnetHeader};
use std::sync::atomic::Ordering;

/// A frame as a guest would write it: a virtio-net header of `hdr` bytes (built from fields or
/// raw), Ethernet addresses (a switch port's, broadcast, or raw; the source mostly `own`), and
/// an IPv4/IPv6 TCP or UDP packet with consistent lengths, or raw bytes.
fn frame(inp: &mut Input, hdr: usize, own: [u8; 6], macs: &[[u8; 6]]) -> Vec<u8> {
    let mut f = vec![0u8; hdr];
    let dst = match inp.below(4) {
        0 => [0xff; 6],
        1 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(&inp.u64().to_le_bytes()[..6]);
            m
        }
        _ => macs[inp.below(macs.len() as u32) as usize],
    };
    let src = if inp.below(8) == 0 {
        let mut m = [0u8; 6];
        m.copy_from_slice(&inp.u64().to_le_bytes()[..6]);
        m
    } else {
        own
    };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    let l3 = f.len() - hdr + 2;
    let payload = inp.below(3000) as usize;
    let (gso_type, l4, csum_off) = match inp.below(4) {
        0 => {
            f.extend_from_slice(inp.bytes(payload));
            (inp.u8(), inp.u16() as usize, inp.u16())
        }
        k => {
            let (v6, tcp) = (k == 2, k != 3);
            let l4_len = if tcp { 20 } else { 8 } + payload;
            if v6 {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4_len as u16).to_be_bytes());
                f.extend_from_slice(&[if tcp { 6 } else { 17 }, 64]);
                f.extend_from_slice(&[0xfd; 32]);
            } else {
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 1, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
                f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            }
            let l4 = f.len() - hdr;
            if tcp {
                f.extend_from_slice(&[0, 80, 0, 81, 0, 0, 0, 1, 0, 0, 0, 0, 0x50]);
                f.extend_from_slice(&[inp.u8(), 0xff, 0xff, 0, 0, 0, 0]);
            } else {
                f.extend_from_slice(&[0, 80, 0, 81]);
                f.extend_from_slice(&(l4_len as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
            let body = inp.bytes(payload);
            f.extend_from_slice(body);
            f.resize(f.len() + payload - body.len(), 0xa5);
            let gso = match (v6, tcp) {
                (false, true) => vnet::gso::TCPV4,
                (true, true) => vnet::gso::TCPV6,
                _ => vnet::gso::UDP,
            };
            (gso, l4, if tcp { 16 } else { 6 })
        }
    };
    let _ = l3;
    if hdr > 0 {
        let h = if inp.below(8) == 0 {
            let mut raw = [0u8; vnet::HDR_LEN_MRG];
            raw.copy_from_slice(&inp.u64().to_le_bytes().repeat(2)[..12]);
            VnetHeader::parse(&raw, hdr).unwrap_or_default()
        } else {
            let flags = inp.below(4) as u8;
            let gso_type = if inp.bool() { gso_type } else { 0 };
            VnetHeader {
                flags,
                gso_type,
                hdr_len: (l4 as u16).wrapping_add(20),
                gso_size: 1 + inp.below(1600) as u16,
                csum_start: l4 as u16,
                csum_offset: csum_off,
                num_buffers: 0,
            }
        };
        h.emit(&mut f[..hdr], hdr).expect("room");
    }
    f
}

/// Frames with arbitrary contents and virtio-net headers through a VALE switch of 3 ports whose
/// guests set different header lengths (or the same, as the input says).
pub fn vale_frames(data: &[u8]) {
    let mut inp = Input::new(data);
    let s = 2 + inp.below(31);
    let specs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|p| format!("valefz:{p}@conf:slots={s}"))
        .collect();
    let mut rig = Rig::new(&specs);
    let lens: [u8; 3] = if inp.bool() {
        [
            [0, 10, 12],
            [0, 12, 10],
            [10, 0, 12],
            [10, 12, 0],
            [12, 0, 10],
            [12, 10, 0],
        ][inp.below(6) as usize]
    } else {
        [(); 3].map(|_| hdr_len(&mut inp))
    };
    for (p, l) in rig.ports.iter().zip(lens) {
        p.vnet_hdr_len()
            .expect("VALE has headers")
            .store(l, Ordering::Relaxed);
    }
    let macs: Vec<[u8; 6]> = rig.ports.iter().map(|p| p.mac()).collect();
    for _ in 0..1 + inp.below(6) {
        let p = inp.below(3) as usize;
        let bufs = rig.bufs(p);
        let (own, hdr) = (macs[p], usize::from(lens[p]));
        rig.round(p, &mut inp, &mut |inp, v, i| {
            let f = frame(inp, hdr, own, &macs);
            let idx = v.buf_idx(i);
            let len = f.len().min(bufs.buf_size() as usize);
            bufs.write(idx, 0, &f[..len]);
            let len = if inp.below(16) == 0 {
                inp.u16()
            } else {
                len as u16
            };
            v.set_len(i, len);
            // Some slots chained to the next (NS_MOREFRAG): frames in several slots, finished
            // or left open at the guest's head.
            let more = inp.below(4) == 0;
            v.set_flags(i, if more { slot_flags::MOREFRAG } else { 0 });
        });
    }
}
