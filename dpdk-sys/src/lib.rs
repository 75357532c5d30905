//! Raw FFI to DPDK 22.11: bindgen output and the exported wrappers of
//! `inline.c` for DPDK's `static inline` functions. Nothing else lives here;
//! the safe layer is `dataplane::dpdk`.

#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(dead_code)]
#![allow(clippy::all)]
#![allow(unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
