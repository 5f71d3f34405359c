//! The `vnet` target: virtio-net headers, checksums and GSO on any bytes.

use super::input::Input;
use ptnet_protocol::vnet::{self, complete_checksum, Gso, VnetHeader};

/// Virtio-net header parsing, checksum completion and GSO segmentation on arbitrary bytes.
pub fn vnet(data: &[u8]) {
    let mut inp = Input::new(data);
    let len = [0, vnet::HDR_LEN, vnet::HDR_LEN_MRG, inp.below(16) as usize][inp.below(4) as usize];
    let out_len = inp.u16() as usize % 4096;
    let buf = inp.bytes(usize::MAX);
    let Ok(h) = VnetHeader::parse(buf, len) else {
        return;
    };
    // What parsed emits and parses back the same (num_buffers only in the 12-byte form).
    let mut again = [0u8; vnet::HDR_LEN_MRG];
    h.emit(&mut again, len).expect("room for a header");
    let back = VnetHeader::parse(&again, len).expect("an emitted header parses");
    assert_eq!(back, h, "header round trip");
    let frame = &buf[len..];
    let mut copy = frame.to_vec();
    let _ = complete_checksum(&h, &mut copy);
    assert_eq!(copy.len(), frame.len());
    if let Ok(g) = Gso::new(&h, frame) {
        assert!(g.count() >= 1 && g.count() <= vnet::MAX_GSO_SEGMENTS);
        let mut out = vec![0u8; out_len];
        for i in 0..g.count() {
            let l = g.segment_len(i);
            match g.write_segment(frame, i, &mut out) {
                Ok(n) => assert!(n == l && n <= out.len()),
                Err(_) => assert!(l > out.len()),
            }
        }
    }
}
