//! The writer side, against what it needs of the running data plane
//! ([`Dataplane`]): `dataplane::Running` in `hdvrf run` (the binary
//! implements the trait for it), a double over plain tables in the unit
//! tests, so none of this needs EAL.

use std::time::Duration;

use dataplane::policy::RuleSnapshot;
use dataplane::publish::{CommitError, PublishStats};
use dataplane::tables::{TableOp, Tables};
use dataplane::SubscriberSnapshot;

/// What the control thread's writer side uses of the running data plane:
/// table publication (a commit that waits for the workers, or a publish
/// that does not and is `settled` later), the tables in use, the host
/// path's punted frames and the frames it sends, and a few counters.
/// The methods are `dataplane::Running`'s, with its meaning.
pub trait Dataplane {
    /// Publishes `ops` and waits for every worker to take them, at most
    /// `timeout` (`None`: no limit). The ops the tables refused are in
    /// [`Dataplane::tables`]`.rejected()` after.
    fn commit_within(
        &mut self,
        ops: &[TableOp],
        timeout: Option<Duration>,
    ) -> Result<PublishStats, CommitError>;

    /// Publishes `ops` without waiting for the workers; returns the
    /// generation published.
    fn publish(&mut self, ops: &[TableOp]) -> Result<u64, CommitError>;

    /// Whether every worker uses the tables last published (finishing
    /// the pending replay if so); never waits.
    fn settled(&mut self) -> bool;

    /// The tables the workers use now (router mode).
    fn tables(&self) -> Option<&Tables>;

    /// One round of the host path: `inspect` sees each punted frame with
    /// its port and returns true to take it (false: the kernel's). Returns
    /// how many packets moved.
    fn host_poll(&mut self, inspect: impl FnMut(u16, &[u8]) -> bool) -> usize;

    /// Sends a frame out of `port`; false if it could not be queued.
    fn host_inject(&mut self, port: u16, frame: &[u8]) -> bool;

    /// Each port's device name and MAC, in port order.
    fn port_macs(&self) -> Vec<(String, [u8; 6])>;

    /// Subscriber (next hop) `id`'s counters summed over the workers.
    fn subscriber(&self, id: u32) -> Option<SubscriberSnapshot>;

    /// Policy rule slot `slot`'s counters summed over the workers.
    fn rule(&self, slot: u16) -> Option<RuleSnapshot>;
}
