//! The little of `bpf(2)` AF_XDP needs, without libbpf: an XSKMAP, a hand-assembled XDP program
//! that redirects each frame to the socket of its receive queue, and a BPF link attaching it to
//! an interface (closing the link detaches the program).

use super::sys;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` BPF_XDP.
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
/// XDP attach flags.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// Native (driver) mode.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One `struct bpf_insn`: code, dst_reg:4 | src_reg:4, off, imm.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst & 0xf) | ((src & 0xf) << 4)) as u64) << 8
        | ((off as u16) as u64) << 16
        | ((imm as u32) as u64) << 32
}

/// The program, for the XSKMAP `map_fd`:
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)          ; ctx->rx_queue_index
/// r1 = map_fd ll                  ; the XSKMAP (pseudo map fd, two slots)
/// r3 = XDP_PASS                   ; no socket on this queue: to the stack
/// call bpf_redirect_map
/// exit
/// ```
pub fn redirect_program(map_fd: i32) -> [u64; 6] {
    [
        insn(0x61, 2, 1, 16, 0),     // BPF_LDX | BPF_MEM | BPF_W
        insn(0x18, 1, 1, 0, map_fd), // BPF_LD | BPF_DW | BPF_IMM, src = BPF_PSEUDO_MAP_FD
        insn(0, 0, 0, 0, 0),
        insn(0xb7, 3, 0, 0, XDP_PASS), // BPF_ALU64 | BPF_MOV | BPF_K
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), // BPF_JMP | BPF_CALL
        insn(0x95, 0, 0, 0, 0),        // BPF_JMP | BPF_EXIT
    ]
}

/// An XSKMAP of `entries` queues.
pub fn xskmap(entries: u32) -> io::Result<OwnedFd> {
    sys::bpf_map_create_u32(BPF_MAP_TYPE_XSKMAP, entries)
}

/// `map[key] = fd` (an AF_XDP socket).
pub fn map_set(map: &OwnedFd, key: u32, fd: i32) -> io::Result<()> {
    sys::bpf_map_update_u32(map.as_fd(), key, fd as u32)
}

/// Loads the redirect program for `map`; on a verifier refusal the error carries its log.
pub fn load_redirect(map: &OwnedFd) -> io::Result<OwnedFd> {
    let prog = redirect_program(map.as_raw_fd());
    let mut log = vec![0u8; 4096];
    sys::bpf_prog_load(BPF_PROG_TYPE_XDP, &prog, c"GPL", "ptnet_xsk", &mut log).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let msg = String::from_utf8_lossy(&log[..end]).trim().to_string();
        io::Error::new(
            e.kind(),
            format!(
                "{e}{}{msg}",
                if msg.is_empty() { "" } else { "; verifier: " }
            ),
        )
    })
}

/// Attaches `prog` to interface `ifindex` as its XDP program (`flags`: a mode); the program stays
/// attached while the returned link is open.
pub fn attach_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    sys::bpf_link_create(prog.as_fd(), ifindex, BPF_XDP, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_like_the_kernel_header() {
        let p = redirect_program(7);
        // ldxw r2, [r1+16]
        assert_eq!(p[0].to_le_bytes(), [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        // lddw r1, map fd 7 (src_reg 1 = BPF_PSEUDO_MAP_FD)
        assert_eq!(p[1].to_le_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[2], 0);
        assert_eq!(p[3].to_le_bytes(), [0xb7, 0x03, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p[4].to_le_bytes(), [0x85, 0, 0, 0, 51, 0, 0, 0]);
        assert_eq!(p[5].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }
}
