//! Names for rings: one ring of a port ([`RingId`]) and a direction ([`Direction`]).

/// Names a ring of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingId {
    /// TX ring `i`.
    Tx(u32),
    /// RX ring `i`.
    Rx(u32),
}

impl std::fmt::Display for RingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingId::Tx(i) => write!(f, "TX ring {i}"),
            RingId::Rx(i) => write!(f, "RX ring {i}"),
        }
    }
}

/// TX or RX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Transmit rings.
    Tx,
    /// Receive rings.
    Rx,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Tx => "TX",
            Direction::Rx => "RX",
        })
    }
}
