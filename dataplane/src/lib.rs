//! The data plane: everything a worker core touches. `dpdk` (the safe DPDK
//! layer) and `sys` (memory, prefetch) are the only modules with `unsafe`.

pub mod counters;
pub mod dpdk;
pub mod forward;
pub mod frame;
pub mod host;
pub mod lpm;
pub mod outcome;
pub mod pipeline;
pub mod policy;
pub mod publish;
pub mod runtime;
pub mod sys;
pub mod tables;
pub mod topology;
pub mod trace;
pub mod wire;
pub mod worker;

pub use counters::{CoreCounters, CoreSnapshot, SubscriberSnapshot};
pub use forward::ForwardMode;
pub use runtime::{
    DataplaneSpec, HostSpec, PortSpec, PublicationStats, Running, ShutdownReport, StartError,
};
pub use worker::IdlePolicy;
