//! Route churn for `hdvrf bench --churn`: a deterministic stream of route
//! changes for the bench topology's upstream table that never leaves a
//! traffic destination without a route, so that every packet must still
//! be forwarded while the tables change under it.

use dataplane::tables::{RouteTable, TableOp};
use dataplane::topology;

/// The changeable routes and the state each is in.
pub struct Churn {
    /// (prefix, length, next hop if present).
    routes: Vec<(u32, u8, Option<u32>)>,
    next_hops: Vec<u32>,
    rng: u64,
}

impl Churn {
    /// `loaded` are routes already in the table (prefix, length, next
    /// hop); the churn also adds, moves and removes routes toward the
    /// traffic's own destinations (client /32s, their /24s and the /16),
    /// which start absent. The default route is never touched, so every
    /// destination always has a route.
    pub fn new(loaded: &[(u32, u8, u32)], clients: u32, seed: u64) -> Churn {
        let mut routes: Vec<(u32, u8, Option<u32>)> = loaded
            .iter()
            .filter(|r| r.1 > 0)
            .map(|&(p, l, nh)| (p, l, Some(nh)))
            .collect();
        let mut nets = std::collections::BTreeSet::new();
        for i in 0..clients {
            let a = topology::client_addr(i);
            routes.push((a, 32, None));
            nets.insert((a & 0xffff_ff00, 24));
            nets.insert((a & 0xffff_0000, 16));
        }
        routes.extend(nets.into_iter().map(|(p, l)| (p, l, None)));
        Churn {
            routes,
            next_hops: (0..topology::HUB_PATHS)
                .map(|k| topology::hub_next_hop(k, clients))
                .collect(),
            rng: seed | 1,
        }
    }

    /// xorshift64*: fast, deterministic, and good enough to pick routes.
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// Appends `n` changes to `out` and updates the state as if applied: a
    /// present route is removed or moved to another next hop (even odds),
    /// an absent one is added.
    pub fn ops(&mut self, n: usize, out: &mut Vec<TableOp>) {
        for _ in 0..n {
            let i = self.pick(self.routes.len());
            let remove = self.next() & 1 == 0;
            let k = self.pick(self.next_hops.len());
            let to = self.next_hops[k];
            let (prefix, len, state) = &mut self.routes[i];
            let (service, table, prefix, len) = (0, RouteTable::Upstream, *prefix, *len);
            match *state {
                Some(_) if remove => {
                    *state = None;
                    out.push(TableOp::DeleteRoute {
                        service,
                        table,
                        prefix,
                        len,
                    });
                }
                // A move to the same next hop is still a write to the
                // table, and as much work for the publisher.
                _ => {
                    *state = Some(to);
                    out.push(TableOp::AddRoute {
                        service,
                        table,
                        prefix,
                        len,
                        next_hop: to,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_keeps_its_state_and_the_default_route() {
        let loaded = [(0, 0, 0), (0x0100_0000, 8, 3), (0x0200_0000, 24, 5)];
        let mut c = Churn::new(&loaded, 8, 7);
        let mut ops = Vec::new();
        c.ops(2000, &mut ops);
        assert_eq!(ops.len(), 2000);
        let mut present: std::collections::HashMap<(u32, u8), bool> = Default::default();
        present.insert((0x0100_0000, 8), true);
        present.insert((0x0200_0000, 24), true);
        let (mut adds, mut dels) = (0, 0);
        for op in &ops {
            match *op {
                TableOp::AddRoute {
                    prefix,
                    len,
                    next_hop,
                    table,
                    ..
                } => {
                    assert_eq!(table, RouteTable::Upstream);
                    assert!(len > 0, "the default route is never touched");
                    assert!(next_hop == 0 || (9..16).contains(&next_hop), "{next_hop}");
                    present.insert((prefix, len), true);
                    adds += 1;
                }
                TableOp::DeleteRoute { prefix, len, .. } => {
                    assert!(len > 0);
                    let was = present.insert((prefix, len), false);
                    assert_eq!(was, Some(true), "deletes only what is there");
                    dels += 1;
                }
                _ => panic!("churn only changes routes"),
            }
        }
        assert!(adds > 500 && dels > 300, "adds {adds} deletes {dels}");
    }
}
