//! What the tables and the fast path need from the machine, without DPDK:
//! memory ([`Zeroed`]), prefetch, and the socket options BGP's transport
//! security needs ([`sock`]). Beside `dpdk` (and the `dpdk-sys`
//! crate) the only place with `unsafe`; every block carries a `// SAFETY:`
//! comment naming the invariant it relies on.

mod mem;
mod prefetch;
pub mod sock;

pub use mem::{Zeroable, Zeroed, ZeroedU32};
pub use prefetch::prefetch;
