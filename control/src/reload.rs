//! `hdvrf ctl reload`: what changed in the configuration file, as table
//! ops on the running tables. Routes, next hops, labels, services'
//! settings and access bindings change in place, published in one batch;
//! ports, cores, the label range, the role and the set of services need a
//! restart (`mgmt::restart_needed` says which).
//!
//! The running tables name next hops and services by index. Names are
//! matched, not positions: a next hop keeps its index across reloads, a
//! new one is appended, a removed one is replaced by an unusable next hop
//! (routes could still name its index) and its name forgotten. Session
//! next hops (`crate::sessions`) are not the file's and stay as they are.
//!
//! Routes are the RIB manager's (`crate::rib`): the plan lists the file's,
//! and [`apply_routes`] makes them the `file` source's, undoing `ctl`'s
//! changes; what sessions and BGP hold stays theirs.

use std::collections::{HashMap, HashSet};

use dataplane::policy::Rule;
use dataplane::tables::{LabelAction, NextHop, RouteTable, TableOp, Tables, DISCARD, NO_SERVICE};

use crate::config::{parse_ipv4, Loaded};
use crate::mgmt::Names;
use crate::neighbor::Neighbors;
use crate::rib::{Rib, RouteKey, Source, Target};

/// The batch that turns the running tables into the file's, and what it
/// does, for the reply.
#[derive(Debug, Default)]
pub struct Plan {
    pub ops: Vec<TableOp>,
    /// The names after the batch.
    pub names: Names,
    /// Running index of each of the file's next hops, in file order.
    pub next_hop_ids: Vec<u32>,
    /// The file's routes, at running ids, in a stable order.
    pub routes: Vec<(RouteKey, u32)>,
    /// Next hops the batch appends or changes: (id, value).
    pub next_hop_changes: Vec<(u32, NextHop)>,
    /// The file's next hops it no longer has.
    pub next_hops_gone: Vec<u32>,
    /// What [`apply_routes`] did to the tables' file and `ctl` routes.
    pub routes_added: u64,
    pub routes_changed: u64,
    pub routes_removed: u64,
    pub next_hops_added: u64,
    pub next_hops_changed: u64,
    pub next_hops_removed: u64,
    pub labels_changed: u64,
    pub services_changed: u64,
    pub access_changed: u64,
    /// Policy rules set (new or changed) and removed.
    pub rules_set: u64,
    pub rules_removed: u64,
    /// Counter and policer slots the batch gives to new rules: no running
    /// rule uses them, so their counts and buckets start afresh.
    pub fresh_rule_slots: Vec<u16>,
    /// The file's routes a live session's host route stands over: the
    /// file's change waits for the session to end.
    pub kept_for_sessions: u64,
}

/// Plans the reload of `loaded` over the running `cur` (named by `names`;
/// `neighbors` holds the MACs ARP learnt, which a reload keeps for next
/// hops whose address did not change).
pub fn plan(
    cur: &Tables,
    names: &Names,
    neighbors: &Neighbors,
    loaded: &Loaded,
) -> Result<Plan, String> {
    let cfg = &loaded.config;
    let new = crate::router::build_tables(loaded, &vec![[0u8; 6]; cfg.ports.len()])?;
    if new.labels.base() != cur.labels.base() || new.labels.len() != cur.labels.len() {
        return Err("the local label range changed: that needs a restart".into());
    }
    let mut p = Plan {
        names: names.clone(),
        ..Plan::default()
    };

    // Services by name; the set is the same (a restart otherwise).
    let svc: Vec<u16> = cfg
        .services
        .iter()
        .map(|s| names.service(s.name.get_ref()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{e}: adding or removing a service needs a restart"))?;
    if svc.len() != cur.services.len() {
        return Err("adding or removing a service needs a restart".into());
    }
    let svc_id = |i: u16| {
        if i == NO_SERVICE {
            NO_SERVICE
        } else {
            svc[usize::from(i)]
        }
    };

    // Next hops by name: kept, appended, or retired. Both sides indexed
    // once: a walk over the names per next hop was quadratic (100k next
    // hops, 5 billion compares).
    let current: HashMap<&str, u32> = names
        .next_hops
        .iter()
        .enumerate()
        .rev()
        .map(|(id, n)| (n.as_str(), id as u32))
        .collect();
    let in_file: HashSet<&str> = cfg
        .next_hops
        .iter()
        .map(|n| n.name.get_ref().as_str())
        .collect();
    let mut appended = 0u32;
    let mut settings = Vec::new();
    for (i, n) in cfg.next_hops.iter().enumerate() {
        let name = n.name.get_ref();
        let id = match current.get(name.as_str()).copied() {
            Some(id) => id,
            None => {
                let id = cur.next_hops().len() as u32 + appended;
                appended += 1;
                let at = id as usize;
                if p.names.next_hops.len() <= at {
                    p.names.next_hops.resize(at + 1, String::new());
                }
                p.names.next_hops[at] = name.clone();
                id
            }
        };
        p.next_hop_ids.push(id);
        let mut want = new.next_hops()[i];
        // An ARP next hop whose address stayed keeps the MAC it learnt.
        let address = n
            .address
            .as_ref()
            .and_then(|a| parse_ipv4(a.get_ref()).ok());
        if let (false, Some(e), Some(have)) =
            (want.is_resolved(), neighbors.get(id), cur.next_hop(id))
        {
            if address == Some(u32::from(e.address)) && e.port == want.port && e.vlan == want.vlan {
                want.dst_mac = have.dst_mac;
            }
        }
        match cur.next_hop(id) {
            Some(have) if *have == want => {}
            Some(_) => {
                p.next_hops_changed += 1;
                settings.push(TableOp::SetNextHop { id, next_hop: want });
            }
            None => {
                p.next_hops_added += 1;
                settings.push(TableOp::SetNextHop { id, next_hop: want });
            }
        }
    }
    // Appends first, in index order, so that each lands at its index.
    settings.sort_by_key(|op| match op {
        TableOp::SetNextHop { id, .. } => *id,
        _ => 0,
    });
    for (id, name) in names.next_hops.iter().enumerate() {
        let session = name.starts_with(crate::sessions::NAME_PREFIX);
        if !name.is_empty() && !session && !in_file.contains(name.as_str()) {
            // The file lets go of it: the RIB manager retires it once no
            // route leads to it any more.
            p.next_hops_removed += 1;
            p.names.next_hops[id] = String::new();
            p.next_hops_gone.push(id as u32);
        }
    }
    plan_policy(cur, &new, &svc, &mut p, &mut settings);
    let nh_id = |i: u32| {
        if i == DISCARD {
            DISCARD
        } else {
            p.next_hop_ids[i as usize]
        }
    };

    // Services' own settings and access bindings.
    for (i, s) in new.services.iter().enumerate() {
        let id = svc[i];
        let have = &cur.services[usize::from(id)];
        if (have.gateway, have.ttl_mode, have.anti_spoofing)
            != (s.gateway, s.ttl_mode, s.anti_spoofing)
        {
            p.services_changed += 1;
            settings.push(TableOp::SetService {
                service: id,
                gateway: s.gateway,
                ttl_mode: s.ttl_mode,
                anti_spoofing: s.anti_spoofing,
            });
        }
    }
    for (port, (a, b)) in cur.ports.iter().zip(&new.ports).enumerate() {
        for (vlan, (&have, &want)) in a.vlan_service.iter().zip(b.vlan_service.iter()).enumerate() {
            let want = svc_id(want);
            if have != want {
                p.access_changed += 1;
                settings.push(TableOp::SetAccess {
                    port: port as u16,
                    vlan: vlan as u16,
                    service: want,
                });
            }
        }
    }

    // Labels, with the file's ids translated.
    let base = cur.labels.base();
    for label in base..base + cur.labels.len() as u32 {
        let want = new.labels.get(label).map(|a| match a {
            LabelAction::PopContinue => LabelAction::PopContinue,
            LabelAction::PopDownstream { service } => LabelAction::PopDownstream {
                service: svc_id(service),
            },
            LabelAction::PopHub { service } => LabelAction::PopHub {
                service: svc_id(service),
            },
            LabelAction::Swap { label, next_hop } => LabelAction::Swap {
                label,
                next_hop: nh_id(next_hop),
            },
            LabelAction::PopPhp { next_hop } => LabelAction::PopPhp {
                next_hop: nh_id(next_hop),
            },
        });
        if cur.labels.get(label) != want {
            p.labels_changed += 1;
            settings.push(TableOp::SetLabel {
                label,
                action: want,
            });
        }
    }
    p.ops = settings;

    // Routes: the file's, at running ids.
    for (i, b) in new.services.iter().enumerate() {
        let service = svc[i];
        for table in [
            RouteTable::Upstream,
            RouteTable::Downstream,
            RouteTable::Hub,
        ] {
            p.routes
                .extend(b.table(table).routes().map(|(prefix, len, n)| {
                    let key = RouteKey {
                        service,
                        table,
                        prefix,
                        len,
                    };
                    (key, nh_id(n))
                }));
        }
    }
    p.routes
        .sort_unstable_by_key(|(k, _)| (k.service, k.table as u8, k.prefix, k.len));
    p.next_hop_changes = p
        .ops
        .iter()
        .filter_map(|op| match *op {
            TableOp::SetNextHop { id, next_hop } => Some((id, next_hop)),
            _ => None,
        })
        .collect();
    Ok(p)
}

/// Tells the RIB manager what the plan does to the file's next hops (the
/// plan's ops append and change them; the manager retires those the file
/// dropped once no route leads to them), then hands it the file's routes
/// ([`apply_routes`]). The batch to commit is the plan's ops followed by
/// the manager's.
pub fn apply(p: &mut Plan, rib: &mut Rib) {
    for &(id, next_hop) in &p.next_hop_changes {
        if rib.holds(id) {
            rib.next_hop_changed(id, next_hop);
        } else {
            rib.claim_next_hop(id, next_hop);
        }
    }
    apply_routes(p, rib);
    for &id in &p.next_hops_gone {
        rib.release_next_hop(id);
    }
}

/// Makes the plan's routes the RIB manager's `file` routes: `ctl`'s
/// changes are undone (routes it added go, routes it deleted come back),
/// the file's new and changed routes are set and those it dropped
/// removed. Counts what happens to the routes the tables hold from the
/// file and `ctl`; a new or changed route of the file's under a live
/// session's host route is counted as kept for the session (it takes
/// effect when the session ends).
pub fn apply_routes(p: &mut Plan, rib: &mut Rib) {
    let old_file: HashMap<RouteKey, u32> = rib
        .routes_of(Source::File)
        .filter_map(|(k, _)| Some((k, rib.get(Source::File, &k)?)))
        .collect();
    let want: HashMap<RouteKey, u32> = p.routes.iter().copied().collect();
    let mut keys: HashSet<RouteKey> = old_file.keys().copied().collect();
    keys.extend(rib.routes_of(Source::Ctl).map(|(k, _)| k));
    keys.extend(want.keys().copied());
    let local = |rib: &Rib, k: &RouteKey| {
        rib.installed(k)
            .filter(|(s, _)| matches!(s, Source::Ctl | Source::File))
            .map(|(_, id)| id)
    };
    let before: HashMap<RouteKey, u32> = keys
        .iter()
        .filter_map(|k| Some((*k, local(rib, k)?)))
        .collect();
    rib.clear_source(Source::Ctl);
    let mut gone: Vec<RouteKey> = old_file
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    gone.sort_unstable_by_key(|k| (k.service, k.table as u8, k.prefix, k.len));
    for k in gone {
        rib.remove(Source::File, k);
    }
    for &(k, id) in &p.routes {
        let target = if id == DISCARD {
            Target::Discard
        } else {
            Target::NextHop(id)
        };
        rib.set(Source::File, k, &target);
    }
    for k in &keys {
        let after = (rib.winner(k) == Some(Source::File))
            .then(|| rib.get(Source::File, k))
            .flatten();
        // A new or changed route of the file's under a live session's
        // host route waits for the session to end (one the file drops
        // was never in the tables: nothing to count).
        if want.contains_key(k)
            && old_file.get(k) != want.get(k)
            && rib.winner(k) == Some(Source::Session)
        {
            p.kept_for_sessions += 1;
            continue;
        }
        match (before.get(k), after) {
            (None, Some(_)) => p.routes_added += 1,
            (Some(_), None) => p.routes_removed += 1,
            (Some(a), Some(b)) if *a != b => p.routes_changed += 1,
            _ => {}
        }
    }
}

/// Policy rules, service by service. A rule the running tables already
/// have (same match and action, wherever it stands in the list) keeps
/// its slot, so its counters and its bucket go on; a new one takes a slot
/// no running rule uses.
fn plan_policy(cur: &Tables, new: &Tables, svc: &[u16], p: &mut Plan, ops: &mut Vec<TableOp>) {
    let mut used: Vec<bool> = vec![false; dataplane::policy::MAX_RULES];
    for r in cur.services.iter().flat_map(|s| &s.policy) {
        if let Some(u) = used.get_mut(usize::from(r.slot)) {
            *u = true;
        }
    }
    let mut free = (0..used.len()).filter(|&s| !used[s]).map(|s| s as u16);
    for (i, b) in new.services.iter().enumerate() {
        let service = svc[i];
        let have = &cur.services[usize::from(service)].policy;
        let mut unclaimed: Vec<Option<Rule>> = have.iter().copied().map(Some).collect();
        for (k, want) in b.policy.iter().enumerate() {
            let same = unclaimed
                .iter_mut()
                .find(|r| r.is_some_and(|r| r.with_slot(0) == want.with_slot(0)))
                .and_then(Option::take);
            let rule = match same {
                Some(r) => r,
                None => {
                    // The file has at most MAX_RULES rules and the running
                    // tables as many: a free slot exists while fewer than
                    // that are new.
                    let Some(slot) = free.next() else {
                        break;
                    };
                    p.fresh_rule_slots.push(slot);
                    want.with_slot(slot)
                }
            };
            if have.get(k) != Some(&rule) {
                p.rules_set += 1;
                ops.push(TableOp::SetRule {
                    service,
                    index: k as u16,
                    rule: Some(rule),
                });
            }
        }
        if b.policy.len() < have.len() {
            p.rules_removed += (have.len() - b.policy.len()) as u64;
            ops.push(TableOp::SetRule {
                service,
                index: b.policy.len() as u16,
                rule: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SPOKE_EXAMPLE;
    use dataplane::lpm::NO_ROUTE;
    use std::path::Path;

    fn load(src: &str) -> Loaded {
        crate::config::parse(Path::new("spoke.toml"), src).expect("valid")
    }

    /// A reload as the control thread runs it: the plan, then the file's
    /// next hops and routes through the RIB manager; the whole batch.
    fn reload_batch(t: &Tables, names: &Names, rib: &mut Rib, a: &Loaded) -> Vec<TableOp> {
        let mut p = plan(t, names, &Neighbors::default(), a).unwrap();
        apply(&mut p, rib);
        let mut ops = std::mem::take(&mut p.ops);
        ops.extend(rib.take_ops());
        ops
    }

    #[test]
    fn many_next_hops_keep_their_ids_by_name_in_any_order() {
        // 20k next hops: a reload matches them by name (it used to walk
        // every name per next hop, quadratic at this size).
        const N: usize = 20_000;
        let hops = |order: &mut dyn Iterator<Item = usize>| {
            order
                .map(|i| {
                    format!(
                        "[[next_hop]]\nname = \"c{i}\"\nport = \"access0\"\nmac = \"02:5c:00:00:{:02x}:{:02x}\"\n",
                        i >> 8,
                        i & 0xff
                    )
                })
                .collect::<String>()
        };
        let a = load(&format!("{SPOKE_EXAMPLE}\n{}", hops(&mut (0..N))));
        let t = crate::router::build_tables(&a, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]).unwrap();
        let names = Names::from_config(&a.config);
        let first = names.next_hop("c0").unwrap();
        // The file's order reversed and c7 gone: same ids, c7 retired.
        let b = load(&format!(
            "{SPOKE_EXAMPLE}\n{}",
            hops(&mut (0..N).rev().filter(|&i| i != 7))
        ));
        let p = plan(&t, &names, &Neighbors::default(), &b).unwrap();
        assert_eq!(
            (p.next_hops_added, p.next_hops_changed, p.next_hops_removed),
            (0, 0, 1)
        );
        assert_eq!(p.next_hops_gone, [first + 7]);
        assert_eq!(p.names.next_hop("c19999"), Ok(first + 19_999));
        assert!(p.names.next_hop("c7").is_err());
        let in_file = b
            .config
            .next_hops
            .iter()
            .position(|n| n.name.get_ref() == "c0");
        assert_eq!(p.next_hop_ids[in_file.unwrap()], first);
    }

    #[test]
    fn a_reload_leaves_session_bgp_and_ecmp_routes_alone_and_keeps_discard_routes() {
        let src = SPOKE_EXAMPLE.replace(
            "    { prefix = \"10.0.0.20/32\", next_hop = \"client-b\" },\n",
            "    { prefix = \"10.0.0.20/32\", next_hop = \"client-b\" },\n    { prefix = \"10.0.0.0/24\", next_hop = \"discard\" },\n",
        );
        let a = load(&src);
        let mut t =
            crate::router::build_tables(&a, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]).unwrap();
        assert_eq!(t.services[0].downstream.lookup(0x0a00_0063), DISCARD);
        let names = Names::from_config(&a.config);
        let mut rib = Rib::from_tables(&t);
        // A session's next hop and route, a BGP route and an ECMP group,
        // as the running router makes them.
        let nh = *t.next_hop(0).unwrap();
        let session = rib.add_next_hop(nh);
        let key = |table, prefix, len| RouteKey {
            service: 0,
            table,
            prefix,
            len,
        };
        assert!(rib.set(
            Source::Session,
            key(RouteTable::Downstream, 0x0a00_0063, 32),
            &Target::NextHop(session)
        ));
        assert!(rib.set(
            Source::Bgp,
            key(RouteTable::Upstream, 0x0a09_0000, 16),
            &Target::Labelled(vec![(0, 3001)])
        ));
        assert!(rib.set(
            Source::Bgp,
            key(RouteTable::Upstream, 0x0a0a_0000, 16),
            &Target::Labelled(vec![(0, 3001), (1, 3002)])
        ));
        let ops = rib.take_ops();
        t.apply(&ops);
        assert!(t.rejected().is_empty(), "{:?}", t.rejected());
        assert!(t.groups().len() == 1 && t.next_hops().len() > names.next_hops.len());
        let ops = reload_batch(&t, &names, &mut rib, &a);
        assert!(ops.is_empty(), "{ops:?}");
        // Without the discard route in the file, it goes, and only it.
        let ops = reload_batch(&t, &names, &mut rib, &load(SPOKE_EXAMPLE));
        assert_eq!(
            ops,
            [TableOp::DeleteRoute {
                service: 0,
                table: RouteTable::Downstream,
                prefix: 0x0a00_0000,
                len: 24
            }]
        );
    }

    #[test]
    fn a_reload_keeps_the_slots_of_unchanged_rules_and_gives_new_ones_free_slots() {
        use crate::config::HUB_EXAMPLE;
        let a = load(HUB_EXAMPLE);
        let mut t =
            crate::router::build_tables(&a, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]).unwrap();
        let names = Names::from_config(&a.config);
        let slots = |t: &Tables| {
            t.services[0]
                .policy
                .iter()
                .map(|r| (r.net, r.slot))
                .collect::<Vec<_>>()
        };
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        // A new rule on top, the deny rule gone: the others move down a
        // place and keep their slots.
        let b = load(
            &HUB_EXAMPLE
                .replace(
                    "    { prefix = \"10.0.0.66/32\", action = \"deny\" },\n",
                    "",
                )
                .replace(
                    "policy = [\n",
                    "policy = [\n    { prefix = \"10.0.0.77/32\", action = \"deny\" },\n",
                ),
        );
        let p = plan(&t, &names, &Neighbors::default(), &b).unwrap();
        assert_eq!(p.fresh_rule_slots, [4]);
        assert_eq!((p.rules_set, p.rules_removed), (2, 0));
        t.apply(&p.ops);
        assert!(t.rejected().is_empty(), "{:?}", t.rejected());
        assert_eq!(
            slots(&t),
            [
                (ip("10.0.0.77"), 4),
                (ip("10.0.0.0"), 0),
                (ip("10.0.0.0"), 2),
                (ip("192.0.2.0"), 3)
            ]
        );
        // No rules at all: the list is cut, nothing new.
        let mut src = HUB_EXAMPLE.to_owned();
        let start = src.find("policy = [").unwrap();
        src.truncate(start);
        let c = load(&src);
        let p = plan(&t, &names, &Neighbors::default(), &c).unwrap();
        assert!(p.fresh_rule_slots.is_empty());
        assert_eq!((p.rules_set, p.rules_removed), (0, 4));
        t.apply(&p.ops);
        assert!(t.services[0].policy.is_empty());
        // The same file again: nothing to do.
        assert!(plan(&t, &names, &Neighbors::default(), &c)
            .unwrap()
            .ops
            .is_empty());
    }

    #[test]
    fn a_reload_changes_next_hops_labels_services_and_routes_in_place() {
        let a = load(SPOKE_EXAMPLE);
        let mut t =
            crate::router::build_tables(&a, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]).unwrap();
        let names = Names::from_config(&a.config);
        let mut rib = Rib::from_tables(&t);
        let b_src = SPOKE_EXAMPLE
            .replace("labels = [100, 2001]", "labels = [100, 2009]")
            .replace(
                "[[next_hop]]\nname = \"client-b\"\nport = \"access0\"\nmac = \"02:cb:00:00:00:0b\"\nvlan = 100\n",
                "[[next_hop]]\nname = \"hub3\"\nport = \"core0\"\nmac = \"02:40:00:00:00:33\"\nlabels = [100, 2003]\n",
            )
            .replace(", { port = \"access0\", vlan = 100 }", "")
            .replace("    { prefix = \"10.0.0.20/32\", next_hop = \"client-b\" },\n", "")
            .replace(
                "upstream = [ { prefix = \"0.0.0.0/0\", next_hop = \"hub\" } ]",
                "upstream = [ { prefix = \"0.0.0.0/0\", next_hop = \"hub\" }, { prefix = \"10.9.0.0/16\", next_hop = \"hub3\" } ]",
            )
            .replace("out_label = 555", "out_label = 556")
            .replace("anti_spoofing = true", "anti_spoofing = false");
        assert_ne!(b_src, SPOKE_EXAMPLE);
        let b = load(&b_src);
        let mut p = plan(&t, &names, &Neighbors::default(), &b).unwrap();
        apply(&mut p, &mut rib);
        assert_eq!(
            (p.next_hops_added, p.next_hops_changed, p.next_hops_removed),
            (1, 1, 1)
        );
        assert_eq!(
            (p.routes_added, p.routes_changed, p.routes_removed),
            (1, 0, 1)
        );
        assert_eq!(
            (p.labels_changed, p.services_changed, p.access_changed),
            (1, 1, 1)
        );
        let mut ops = std::mem::take(&mut p.ops);
        ops.extend(rib.take_ops());
        t.apply(&ops);
        assert!(t.rejected().is_empty(), "{:?}", t.rejected());

        // hub changed in place; hub3 appended after the four there were;
        // client-b retired: unusable, its name gone.
        assert_eq!(t.next_hop(0).unwrap().labels(), &[100, 2009]);
        assert_eq!(p.names.next_hop("hub3"), Ok(4));
        assert_eq!(t.next_hop(4).unwrap().labels(), &[100, 2003]);
        assert!(p.names.next_hop("client-b").is_err());
        assert!(!t.adjacency(2).unwrap().usable);
        let svc = &t.services[0];
        assert_eq!(svc.upstream.lookup(u32::from_be_bytes([10, 9, 1, 1])), 4);
        assert_eq!(
            svc.downstream.lookup(u32::from_be_bytes([10, 0, 0, 20])),
            NO_ROUTE
        );
        assert!(!svc.anti_spoofing);
        assert_eq!(t.ports[0].vlan_service[100], NO_SERVICE);
        assert_eq!(t.ports[0].vlan_service[0], 0);
        assert_eq!(
            t.labels.get(1002),
            Some(LabelAction::Swap {
                label: 556,
                next_hop: 3
            })
        );

        // The same file again: nothing to do.
        let again = reload_batch(&t, &p.names, &mut rib, &b);
        assert!(again.is_empty(), "{again:?}");
        // And back to the first file: client-b returns under a new index.
        let mut back = plan(&t, &p.names, &Neighbors::default(), &a).unwrap();
        apply(&mut back, &mut rib);
        let mut ops = std::mem::take(&mut back.ops);
        ops.extend(rib.take_ops());
        t.apply(&ops);
        assert!(t.rejected().is_empty(), "{:?}", t.rejected());
        let id = back.names.next_hop("client-b").unwrap();
        assert_eq!(id, 5);
        assert_eq!(
            t.services[0]
                .downstream
                .lookup(u32::from_be_bytes([10, 0, 0, 20])),
            id
        );
        assert_eq!(t.ports[0].vlan_service[100], 0);
    }

    #[test]
    fn a_new_label_range_or_service_is_refused() {
        let a = load(SPOKE_EXAMPLE);
        let t = crate::router::build_tables(&a, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]).unwrap();
        let names = Names::from_config(&a.config);
        let range = load(&SPOKE_EXAMPLE.replace("label_count = 4096", "label_count = 2048"));
        let e = plan(&t, &names, &Neighbors::default(), &range).unwrap_err();
        assert!(e.contains("label range"), "{e}");
        let renamed = load(&SPOKE_EXAMPLE.replace("name = \"blue\"", "name = \"green\""));
        let e = plan(&t, &names, &Neighbors::default(), &renamed).unwrap_err();
        assert!(e.contains("needs a restart"), "{e}");
    }
}
