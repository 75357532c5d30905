//! Subscriber sessions, driven by the DHCP exchange the relay sees.
//!
//! A session is a client (MAC) of a service on an access port and VLAN,
//! with the address the server gave it and the lease's end. Its forwarding
//! state is one next hop (port, VLAN, client MAC) and one downstream host
//! route to it; the same entry is the anti-spoofing check for the client's
//! own packets (its source must map back to this port, VLAN and MAC).
//!
//! - ACK: session up (or renewed: the lease end moves; or a new address
//!   for a known MAC: the old route goes in the same batch as the new one
//!   comes).
//! - RELEASE, DECLINE, NAK, lease expiry: session down, route removed,
//!   next hop freed (and its id reused).
//!
//! This module hands the routes and next hops to the RIB manager
//! (`crate::rib`), which computes the table ops; the control thread
//! publishes them (and, with BGP, advertises after publishing and
//! withdraws before).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::tables::{NextHop, RouteTable};

use crate::rib::{Rib, RouteKey, Source, Target};

/// Names of session next hops start with this, so that a reload, which
/// only knows the configuration's next hops, leaves them alone.
pub const NAME_PREFIX: &str = "~";

/// One subscriber session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub service: u16,
    pub mac: [u8; 6],
    pub port: u16,
    pub vlan: u16,
    pub address: Ipv4Addr,
    pub lease_end: Instant,
    pub next_hop: u32,
    pub since: Instant,
}

/// The name a client's session next hop goes by.
pub fn next_hop_name(mac: &[u8; 6]) -> String {
    format!("{NAME_PREFIX}{}", crate::config::fmt_mac(mac))
}

/// What an ACK did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acked {
    Up,
    Renewed,
    /// A new address for a known client; the old one is gone.
    Moved {
        old: Ipv4Addr,
    },
}

/// Every session, by (service, client MAC), with two indexes so that no
/// DHCP message costs a walk over every session: who holds an address,
/// and the lease ends in order.
#[derive(Debug, Default)]
pub struct Sessions {
    by_client: HashMap<(u16, [u8; 6]), Session>,
    by_address: HashMap<(u16, Ipv4Addr), [u8; 6]>,
    by_lease_end: BTreeSet<(Instant, u16, [u8; 6])>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.by_client.values()
    }

    /// Whether a live session holds `address` in `service`.
    pub fn holds(&self, service: u16, address: Ipv4Addr) -> bool {
        self.by_address.contains_key(&(service, address))
    }

    pub fn get(&self, service: u16, mac: [u8; 6]) -> Option<&Session> {
        self.by_client.get(&(service, mac))
    }

    /// An ACK for `mac` on (port, VLAN) of `service`: the session's next
    /// hop and host route go to the RIB manager (whose ops the caller
    /// commits). Returns what happened.
    #[allow(clippy::too_many_arguments)]
    pub fn ack(
        &mut self,
        rib: &mut Rib,
        service: u16,
        port: u16,
        vlan: u16,
        mac: [u8; 6],
        address: Ipv4Addr,
        lease: Duration,
        now: Instant,
    ) -> Acked {
        // Another client of the service holding this address (its lease
        // ended and the server gave the address anew): that session ends.
        if let Some(&m) = self.by_address.get(&(service, address)) {
            if m != mac {
                self.end(rib, service, m);
            }
        }
        let lease_end = now + lease;
        if let Some(s) = self.by_client.get_mut(&(service, mac)) {
            self.by_lease_end.remove(&(s.lease_end, service, mac));
            self.by_lease_end.insert((lease_end, service, mac));
            if s.address == address && (s.port, s.vlan) == (port, vlan) {
                s.lease_end = lease_end;
                return Acked::Renewed;
            }
            // New address or new attachment: one batch takes the old route
            // out and puts the new one in.
            let old = s.address;
            self.by_address.remove(&(service, old));
            self.by_address.insert((service, address), mac);
            rib.remove(Source::Session, host_key(service, old));
            if (s.port, s.vlan) != (port, vlan) {
                rib.update_next_hop(s.next_hop, client_next_hop(port, vlan, mac));
            }
            rib.set(
                Source::Session,
                host_key(service, address),
                &Target::NextHop(s.next_hop),
            );
            s.address = address;
            s.port = port;
            s.vlan = vlan;
            s.lease_end = lease_end;
            return Acked::Moved { old };
        }
        let id = rib.add_next_hop(client_next_hop(port, vlan, mac));
        rib.set(
            Source::Session,
            host_key(service, address),
            &Target::NextHop(id),
        );
        self.by_address.insert((service, address), mac);
        self.by_lease_end.insert((lease_end, service, mac));
        self.by_client.insert(
            (service, mac),
            Session {
                service,
                mac,
                port,
                vlan,
                address,
                lease_end,
                next_hop: id,
                since: now,
            },
        );
        Acked::Up
    }

    /// Ends `mac`'s session of `service` (RELEASE, DECLINE, NAK): its
    /// route and next hop leave the RIB manager (a route of another
    /// source for the address takes its place).
    pub fn end(&mut self, rib: &mut Rib, service: u16, mac: [u8; 6]) -> Option<Session> {
        let s = self.by_client.remove(&(service, mac))?;
        self.by_address.remove(&(service, s.address));
        self.by_lease_end.remove(&(s.lease_end, service, mac));
        rib.remove(Source::Session, host_key(service, s.address));
        rib.release_next_hop(s.next_hop);
        Some(s)
    }

    /// Ends every session whose lease is over at `now`.
    pub fn expire(&mut self, rib: &mut Rib, now: Instant) -> Vec<Session> {
        let mut gone = Vec::new();
        while let Some(&(end, service, mac)) = self.by_lease_end.first() {
            if end > now {
                break;
            }
            match self.end(rib, service, mac) {
                Some(g) => gone.push(g),
                // Not reachable while the indexes agree; never loop on it.
                None => {
                    self.by_lease_end.pop_first();
                }
            }
        }
        gone
    }
}

/// A session's host route's place in the RIB.
pub fn host_key(service: u16, address: Ipv4Addr) -> RouteKey {
    RouteKey {
        service,
        table: RouteTable::Downstream,
        prefix: u32::from(address),
        len: 32,
    }
}

fn client_next_hop(port: u16, vlan: u16, mac: [u8; 6]) -> NextHop {
    NextHop {
        port,
        vlan,
        dst_mac: mac,
        labels: [0; 2],
        n_labels: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::retired_next_hop;
    use dataplane::tables::TableOp;

    /// A RIB manager with `n` next hops of the file's, as a session's
    /// first next hop finds it.
    fn rib_with(n: u32) -> Rib {
        let mut rib = Rib::default();
        for id in 0..n {
            rib.claim_next_hop(id, client_next_hop(0, 0, [2, 0, 0, 0, 1, id as u8]));
        }
        rib
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const HOUR: Duration = Duration::from_secs(3600);

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, d)
    }

    #[test]
    fn up_renew_move_and_end_give_the_right_ops() {
        let mut s = Sessions::default();
        let now = Instant::now();
        let mut rib = rib_with(7);
        let what = s.ack(&mut rib, 0, 1, 0, A, ip(100), HOUR, now);
        let ops = rib.take_ops();
        assert_eq!(what, Acked::Up);
        assert_eq!(rib.next_hops_in_use(), 8, "one next hop appended");
        assert_eq!(
            ops,
            vec![
                TableOp::SetNextHop {
                    id: 7,
                    next_hop: client_next_hop(1, 0, A)
                },
                TableOp::AddRoute {
                    service: 0,
                    table: RouteTable::Downstream,
                    prefix: u32::from(ip(100)),
                    len: 32,
                    next_hop: 7
                },
            ]
        );
        // Renew: no table change, the lease moves.
        let what = s.ack(&mut rib, 0, 1, 0, A, ip(100), HOUR, now + HOUR / 2);
        assert_eq!((rib.take_ops().len(), what), (0, Acked::Renewed));
        assert_eq!(s.get(0, A).unwrap().lease_end, now + HOUR / 2 + HOUR);
        // A new address: the old route goes in the same batch.
        let what = s.ack(&mut rib, 0, 1, 0, A, ip(101), HOUR, now);
        let ops = rib.take_ops();
        assert_eq!(what, Acked::Moved { old: ip(100) });
        assert!(
            matches!(ops[0], TableOp::DeleteRoute { prefix, .. } if prefix == u32::from(ip(100)))
        );
        assert!(
            matches!(ops[1], TableOp::AddRoute { prefix, next_hop: 7, .. } if prefix == u32::from(ip(101)))
        );
        // End: route out, next hop retired, then reused.
        let gone = s.end(&mut rib, 0, A).unwrap();
        let ops = rib.take_ops();
        assert_eq!(gone.address, ip(101));
        assert_eq!(
            ops[1],
            TableOp::SetNextHop {
                id: 7,
                next_hop: retired_next_hop()
            }
        );
        assert!(s.end(&mut rib, 0, A).is_none(), "ends once");
        s.ack(&mut rib, 0, 1, 5, B, ip(102), HOUR, now);
        let ops = rib.take_ops();
        assert!(
            matches!(ops[0], TableOp::SetNextHop { id: 7, .. }),
            "reused"
        );
        assert_eq!(rib.next_hops_in_use(), 8);
    }

    #[test]
    fn an_address_given_anew_ends_its_old_holder_and_leases_expire() {
        let mut s = Sessions::default();
        let now = Instant::now();
        let mut rib = rib_with(0);
        s.ack(&mut rib, 0, 1, 0, A, ip(100), Duration::from_secs(5), now);
        rib.take_ops();
        let what = s.ack(&mut rib, 0, 1, 0, B, ip(100), HOUR, now);
        let ops = rib.take_ops();
        assert_eq!(what, Acked::Up);
        assert!(s.get(0, A).is_none());
        // A's route out and its next hop retired, then B's in.
        assert!(matches!(ops[0], TableOp::DeleteRoute { .. }));
        assert_eq!(ops.len(), 4);
        // The same MAC in another service is another session.
        s.ack(&mut rib, 1, 1, 100, B, ip(100), Duration::from_secs(5), now);
        assert_eq!(s.len(), 2);
        assert!(s.expire(&mut rib, now + Duration::from_secs(4)).is_empty());
        let gone = s.expire(&mut rib, now + Duration::from_secs(5));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].service, 1);
        assert_eq!(s.len(), 1);
    }

    /// The indexes agree with the sessions.
    fn consistent(s: &Sessions) {
        assert_eq!(s.by_address.len(), s.by_client.len());
        assert_eq!(s.by_lease_end.len(), s.by_client.len());
        for (&(svc, mac), x) in &s.by_client {
            assert_eq!(s.by_address.get(&(svc, x.address)), Some(&mac));
            assert!(s.by_lease_end.contains(&(x.lease_end, svc, mac)));
        }
    }

    proptest::proptest! {
        /// Random ACKs (new clients, renewals, moves, addresses given
        /// anew), ends and expiries: the indexes stay in step, every
        /// address has one holder, and expiry ends exactly the sessions a
        /// walk over all of them finds over.
        #[test]
        fn indexes_follow_every_change(steps in proptest::collection::vec((0u8..4, 0u8..2, 0u8..6, 0u8..6, 1u64..20), 1..200)) {
            let mut s = Sessions::default();
            let t0 = Instant::now();
            let mut rib = rib_with(0);
            let mut clock = 0u64;
            for (what, svc, m, a, secs) in steps {
                let mac = [2, 0, 0, 0, 0, m];
                let now = t0 + Duration::from_secs(clock);
                match what {
                    0 | 1 => {
                        s.ack(&mut rib, u16::from(svc), 1, 0, mac, ip(a), Duration::from_secs(secs), now);
                    }
                    2 => {
                        s.end(&mut rib, u16::from(svc), mac);
                    }
                    _ => {
                        clock += secs;
                        let now = t0 + Duration::from_secs(clock);
                        let mut over: Vec<_> = s.iter().filter(|x| x.lease_end <= now).map(|x| (x.service, x.mac)).collect();
                        let mut gone: Vec<_> = s.expire(&mut rib, now).into_iter().map(|x| (x.service, x.mac)).collect();
                        over.sort();
                        gone.sort();
                        proptest::prop_assert_eq!(over, gone);
                    }
                }
                consistent(&s);
                let mut held: Vec<_> = s.iter().map(|x| (x.service, x.address)).collect();
                held.sort();
                let n = held.len();
                held.dedup();
                proptest::prop_assert_eq!(n, held.len(), "one holder per address");
                // One next hop per session, and one host route each.
                proptest::prop_assert_eq!(rib.next_hops_in_use(), s.len());
                proptest::prop_assert_eq!(rib.len(), s.len());
            }
        }
    }
}
