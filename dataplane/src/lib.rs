//! The data plane: everything a worker core touches. `dpdk` (the safe DPDK
//! layer) and `sys` (memory, prefetch) are the only modules with `unsafe`.
//!
//! Without the `dpdk` feature (on by default) this is the part the control
//! side and the fuzzers share, built and tested without libdpdk: header
//! views, the LPM and the other tables, policy, the pipeline over the
//! [`frame::Frame`] trait, counters, table publication and the plain specs
//! of what to bring up. The feature adds the DPDK layer, the host path, the
//! poll loop and the runtime that starts them.

pub mod counters;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod forward;
pub mod frame;
#[cfg(feature = "dpdk")]
pub mod host;
pub mod lpm;
pub mod outcome;
pub mod pipeline;
pub mod policy;
pub mod publish;
#[cfg(feature = "dpdk")]
pub mod runtime;
pub mod spec;
pub mod sys;
pub mod tables;
pub mod topology;
pub mod trace;
pub mod wire;
#[cfg(feature = "dpdk")]
pub mod worker;

pub use counters::{CoreCounters, CoreSnapshot, SubscriberSnapshot};
pub use forward::ForwardMode;
#[cfg(feature = "dpdk")]
pub use runtime::{PublicationStats, Running, ShutdownReport, StartError};
pub use spec::{DataplaneSpec, HostSpec, IdlePolicy, PortSpec};
