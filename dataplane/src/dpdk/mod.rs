//! The safe DPDK layer: the only module outside `dpdk-sys` with `unsafe`.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment naming the invariant
//! it relies on. The rest of the crate (and the workspace) sees owning types
//! (`Eal`, `Mempool`, `Mbuf`, `Burst`, `Port`) and plain-id queue handles
//! (`RxQueue`, `TxQueue`) that a worker owns.

mod burst;
mod eal;
mod error;
mod lpm_ref;
mod mbuf;
mod mempool;
mod port;

pub use burst::{Burst, MbufFrame, BURST_SIZE};
pub use eal::{dpdk_version, lcore_id, tsc, tsc_hz, Eal, LaunchError};
pub use error::DpdkError;
pub use lpm_ref::RteLpm;
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{LinkState, Port, PortConfig, PortStats, RxQueue, TxQueue, SOCKET_ID_ANY};
