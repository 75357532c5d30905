//! Forwarding modes: testpmd's `io` and `macswap` (the reference every
//! benchmark compares against) and `router`, the HD-VRF pipeline
//! (`crate::pipeline`).

#[cfg(feature = "dpdk")]
use crate::dpdk::Burst;

/// What a worker does to a burst between rx and tx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// Send packets on unchanged (testpmd `io`).
    Io,
    /// Swap destination and source MAC addresses (testpmd `macswap`).
    MacSwap,
    /// The HD-VRF pipeline over the router's tables.
    Router,
}

impl std::str::FromStr for ForwardMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "io" => Ok(ForwardMode::Io),
            "macswap" => Ok(ForwardMode::MacSwap),
            "router" => Ok(ForwardMode::Router),
            other => Err(format!(
                "unknown forwarding mode {other:?} (expected io, macswap or router)"
            )),
        }
    }
}

impl std::fmt::Display for ForwardMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForwardMode::Io => "io",
            ForwardMode::MacSwap => "macswap",
            ForwardMode::Router => "router",
        })
    }
}

/// Swaps the Ethernet addresses of every packet in the burst. Frames too
/// short to hold both addresses are freed; returns how many.
#[cfg(feature = "dpdk")]
#[inline]
pub fn macswap(burst: &mut Burst) -> u64 {
    burst.retain_data(macswap_bytes) as u64
}

/// The same swap over a plain byte slice, for tests without EAL.
pub fn macswap_bytes(frame: &mut [u8]) -> bool {
    if frame.len() < 12 {
        return false;
    }
    let (dst, rest) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut rest[..6]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macswap_swaps_addresses_and_keeps_payload() {
        let mut f = [
            1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x08, 0x00, 0x45,
        ];
        assert!(macswap_bytes(&mut f));
        assert_eq!(
            f,
            [0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 1, 2, 3, 4, 5, 6, 0x08, 0x00, 0x45]
        );
    }

    #[test]
    fn macswap_leaves_runts_alone() {
        let mut f = [1u8; 11];
        assert!(!macswap_bytes(&mut f));
        assert_eq!(f, [1u8; 11]);
    }

    #[test]
    fn mode_parses() {
        assert_eq!("io".parse::<ForwardMode>().unwrap(), ForwardMode::Io);
        assert_eq!(
            "macswap".parse::<ForwardMode>().unwrap(),
            ForwardMode::MacSwap
        );
        assert_eq!(
            "router".parse::<ForwardMode>().unwrap(),
            ForwardMode::Router
        );
        assert!("l3fwd".parse::<ForwardMode>().is_err());
    }
}
