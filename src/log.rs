//! Lines for the operator: `control::log` (`say!`, `note!` and the
//! per-tick [`flush`]), shared with the control side's code so that both
//! write through the same batch.

pub use control::log::flush;
pub(crate) use control::log::say;
