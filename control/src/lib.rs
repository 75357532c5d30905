//! The control side: everything off the fast path. For now, configuration
//! (parse, validate, turn into the data plane's spec and EAL arguments).

pub mod config;
pub mod eal_args;
