//! The virtio-net feature bits this device knows and its config space (virtio 1.2, 5.1.4).
//!
//! QEMU's `virtio-net-pci` keeps the config space (MAC, STATUS, max_virtqueue_pairs) itself for
//! a vhost-user backend and never asks GET_CONFIG; other frontends may, and get the port's MAC,
//! the link up and the queue pairs.

/// `VIRTIO_NET_F_CSUM`: the device takes partial checksums.
pub const F_CSUM: u64 = 1 << 0;
/// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes partial checksums.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// `VIRTIO_NET_F_HOST_TSO4`: the device takes TCP/IPv4 GSO frames.
pub const F_HOST_TSO4: u64 = 1 << 11;
/// `VIRTIO_NET_F_HOST_TSO6`: the device takes TCP/IPv6 GSO frames.
pub const F_HOST_TSO6: u64 = 1 << 12;
/// `VIRTIO_NET_F_MAC`.
pub const F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_MRG_RXBUF`.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// `VIRTIO_NET_F_STATUS`.
pub const F_STATUS: u64 = 1 << 16;
/// `VIRTIO_NET_F_MQ`.
pub const F_MQ: u64 = 1 << 22;
/// `VIRTIO_RING_F_INDIRECT_DESC`.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
/// `VIRTIO_RING_F_EVENT_IDX`.
pub const F_EVENT_IDX: u64 = 1 << 29;
/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_RING_PACKED`.
pub const F_RING_PACKED: u64 = 1 << 34;
/// `VIRTIO_F_IN_ORDER`: buffers are used in the order they were made available (which this
/// device always does); packed TX queues then get one used descriptor a batch.
pub const F_IN_ORDER: u64 = 1 << 35;

/// `VIRTIO_NET_S_LINK_UP`.
pub const S_LINK_UP: u16 = 1;

/// Size of the config space given: mac, status, max_virtqueue_pairs, mtu.
pub const CONFIG_SIZE: usize = 12;

/// The virtio-net feature bits offered for a port: `vnet_hdr` when the port's netmap slots
/// carry a virtio-net header (so partial checksums can travel), `pairs` queue pairs.
pub fn offered_features(vnet_hdr: bool, pairs: u32) -> u64 {
    let mut f = F_VERSION_1
        | F_RING_PACKED
        | F_IN_ORDER
        | F_PROTOCOL_FEATURES
        | F_EVENT_IDX
        | F_INDIRECT_DESC
        | F_MRG_RXBUF
        | F_MAC
        | F_STATUS;
    if vnet_hdr {
        // TSO needs CSUM (the segments' checksums are completed here either way).
        f |= F_CSUM | F_GUEST_CSUM | F_HOST_TSO4 | F_HOST_TSO6;
    }
    if pairs > 1 {
        f |= F_MQ;
    }
    f
}

/// The config space: `virtio_net_config` up to `mtu` (little-endian).
pub fn config_space(mac: [u8; 6], pairs: u32) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    c[..6].copy_from_slice(&mac);
    c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
    c[8..10].copy_from_slice(&(pairs.min(0x8000) as u16).to_le_bytes());
    c[10..12].copy_from_slice(&1500u16.to_le_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout() {
        let c = config_space([2, 1, 2, 3, 4, 5], 2);
        assert_eq!(&c[..6], &[2, 1, 2, 3, 4, 5]);
        assert_eq!(u16::from_le_bytes([c[6], c[7]]), S_LINK_UP);
        assert_eq!(u16::from_le_bytes([c[8], c[9]]), 2);
        assert_eq!(u16::from_le_bytes([c[10], c[11]]), 1500);
    }

    #[test]
    fn offers() {
        let f = offered_features(false, 1);
        assert_eq!(f & (F_CSUM | F_GUEST_CSUM | F_MQ), 0);
        assert_ne!(f & F_VERSION_1, 0);
        let f = offered_features(true, 2);
        assert_eq!(
            f & (F_CSUM | F_GUEST_CSUM | F_MQ),
            F_CSUM | F_GUEST_CSUM | F_MQ
        );
    }
}
