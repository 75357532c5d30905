//! The control side: everything off the fast path. For now, configuration
//! (parse, validate, turn into the data plane's spec and EAL arguments)
//! and the forwarding tables built from it.

pub mod bgp;
pub mod config;
pub mod dhcp;
pub mod eal_args;
pub mod engine;
pub mod host;
pub mod journal;
pub mod log;
pub mod mgmt;
pub mod neighbor;
pub mod relay;
pub mod reload;
pub mod rib;
pub mod router;
pub mod sessions;
pub mod vpn;
