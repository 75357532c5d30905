//! The running data plane as the control side's writer sees it
//! ([`control::engine::Dataplane`]). A newtype because neither the trait
//! nor `Running` is the binary's; it dereferences to `Running` for what
//! only the binary uses (cores, ports, trace, shutdown).

use std::time::Duration;

use control::engine::Dataplane;
use dataplane::policy::RuleSnapshot;
use dataplane::publish::{CommitError, PublishStats};
use dataplane::tables::{TableOp, Tables};
use dataplane::{Running, SubscriberSnapshot};

pub struct Plane(pub Running);

impl std::ops::Deref for Plane {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.0
    }
}

impl std::ops::DerefMut for Plane {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.0
    }
}

impl Dataplane for Plane {
    fn commit_within(
        &mut self,
        ops: &[TableOp],
        timeout: Option<Duration>,
    ) -> Result<PublishStats, CommitError> {
        self.0.commit_within(ops, timeout)
    }

    fn publish(&mut self, ops: &[TableOp]) -> Result<u64, CommitError> {
        self.0.publish(ops)
    }

    fn settled(&mut self) -> bool {
        self.0.settled()
    }

    fn tables(&self) -> Option<&Tables> {
        self.0.tables()
    }

    fn host_poll(&mut self, inspect: impl FnMut(u16, &[u8]) -> bool) -> usize {
        self.0.host_poll(inspect)
    }

    fn host_inject(&mut self, port: u16, frame: &[u8]) -> bool {
        self.0.host_inject(port, frame)
    }

    fn port_macs(&self) -> Vec<(String, [u8; 6])> {
        self.0.port_macs()
    }

    fn subscriber(&self, id: u32) -> Option<SubscriberSnapshot> {
        self.0.subscriber(id)
    }

    fn rule(&self, slot: u16) -> Option<RuleSnapshot> {
        self.0.rule(slot)
    }
}
