//! The forwarding tables from the configuration: `[router]`, `[[port]]`,
//! `[[next_hop]]`, `[[service]]` and `[[label]]` become one
//! [`dataplane::tables::Tables`], the state the pipeline reads.
//!
//! Ids are positions in the file: port `i` is the `i`-th `[[port]]`,
//! next hop `i` the `i`-th `[[next_hop]]` (the value routes carry in the
//! LPM tables), service `i` the `i`-th `[[service]]` (the value VLAN
//! bindings and VPN labels carry). Configuration validation
//! ([`crate::config::parse`]) has already refused anything that does not
//! resolve; what can still fail here is the data plane's own limits.

use std::collections::HashMap;

use dataplane::policy::Rule;
use dataplane::tables::{
    LabelAction, LabelTable, NextHop, PortInfo, PortRole, Role, Service, SharedLpm, Tables, TtlMode,
};

use crate::config::{
    parse_interface_address, parse_ipv4, parse_mac, parse_port_role, parse_prefix, parse_role,
    parse_ttl_mode, Loaded, RouteCfg,
};

fn label_u32(v: i64, field: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{field}: label {v} out of range"))
}

/// Builds the forwarding tables of a validated configuration.
/// `port_macs[i]` is the MAC address of port `i` (from the NIC, or chosen
/// in tests), the source of every frame sent on it.
pub fn build_tables(loaded: &Loaded, port_macs: &[[u8; 6]]) -> Result<Tables, String> {
    let cfg = &loaded.config;
    let r = cfg
        .router
        .as_ref()
        .map(|r| r.get_ref())
        .ok_or("no [router] section (forward_mode = \"router\" needs one)")?;
    let role = parse_role(r.role.get_ref())
        .ok_or_else(|| format!("router.role: unknown role {:?}", r.role.get_ref()))?;
    if port_macs.len() != cfg.ports.len() {
        return Err(format!(
            "{} port MAC addresses for {} ports",
            port_macs.len(),
            cfg.ports.len()
        ));
    }

    let mut port_by_name: HashMap<&str, u16> = HashMap::new();
    let mut ports = Vec::with_capacity(cfg.ports.len());
    for (i, (p, mac)) in cfg.ports.iter().zip(port_macs).enumerate() {
        let id = u16::try_from(i).map_err(|_| "more than 65535 ports".to_owned())?;
        port_by_name.insert(p.name.get_ref(), id);
        let role = match &p.role {
            None => PortRole::Core,
            Some(r) => parse_port_role(r.get_ref())
                .ok_or_else(|| format!("port[{i}].role: unknown role {:?}", r.get_ref()))?,
        };
        let mut info = PortInfo::new(role, *mac);
        if let Some(a) = &p.address {
            info.address = parse_interface_address(a.get_ref())
                .map_err(|m| format!("port[{i}].address: {m}"))?
                .0;
        }
        ports.push(info);
    }
    let port_id = |name: &str, field: &str| {
        port_by_name
            .get(name)
            .copied()
            .ok_or_else(|| format!("{field}: no port named {name:?}"))
    };

    let mut nh_by_name: HashMap<&str, u32> = HashMap::new();
    let mut next_hops = Vec::with_capacity(cfg.next_hops.len());
    for (i, n) in cfg.next_hops.iter().enumerate() {
        let field = format!("next_hop[{i}]");
        let labels = n.labels.get_ref();
        if labels.len() > 2 {
            return Err(format!("{field}.labels: more than 2 labels"));
        }
        let mut stack = [0u32; 2];
        for (k, l) in labels.iter().enumerate() {
            stack[k] = label_u32(*l.get_ref(), &field)?;
        }
        next_hops.push(NextHop {
            port: port_id(n.port.get_ref(), &format!("{field}.port"))?,
            vlan: n
                .vlan
                .as_ref()
                .map_or(Ok(0), |v| u16::try_from(*v.get_ref()))
                .map_err(|_| format!("{field}.vlan: out of range"))?,
            // Resolved by ARP (control::neighbor) when there is no static MAC.
            dst_mac: match &n.mac {
                Some(m) => parse_mac(m.get_ref()).map_err(|m| format!("{field}.mac: {m}"))?,
                None => dataplane::tables::UNRESOLVED_MAC,
            },
            labels: stack,
            n_labels: labels.len() as u8,
        });
        nh_by_name.insert(n.name.get_ref(), i as u32);
    }
    let nh_id = |name: &str, field: &str| {
        nh_by_name
            .get(name)
            .copied()
            .ok_or_else(|| format!("{field}: no next hop named {name:?}"))
    };

    let mut labels = LabelTable::new(
        label_u32(*r.label_base.get_ref(), "router.label_base")?,
        label_u32(*r.label_count.get_ref(), "router.label_count")?,
    );
    let mut bind = |label: i64, action: LabelAction, field: &str| {
        let l = label_u32(label, field)?;
        if labels.set(l, action) {
            Ok(())
        } else {
            Err(format!("{field}: label {l} is outside the local range"))
        }
    };
    if let Some(t) = &r.transport_label {
        bind(
            *t.get_ref(),
            LabelAction::PopContinue,
            "router.transport_label",
        )?;
    }

    let mut services = Vec::with_capacity(cfg.services.len());
    let table_memory = cfg.dataplane.route_table_memory_bytes();
    // Policy rules count in slots numbered in file order.
    let mut next_rule_slot = 0usize;
    for (i, s) in cfg.services.iter().enumerate() {
        let field = format!("service[{i}]");
        let id = u16::try_from(i)
            .ok()
            .filter(|&id| id != dataplane::tables::NO_SERVICE)
            .ok_or("more than 65534 services")?;
        let gateway = match &s.gateway {
            Some(g) => parse_ipv4(g.get_ref()).map_err(|m| format!("{field}.gateway: {m}"))?,
            None => 0,
        };
        let ttl_mode = match &s.ttl_mode {
            None => TtlMode::Uniform,
            Some(t) => parse_ttl_mode(t.get_ref())
                .ok_or_else(|| format!("{field}.ttl_mode: unknown mode {:?}", t.get_ref()))?,
        };
        let mut svc = Service::new(s.name.get_ref(), gateway, ttl_mode, table_memory)
            .map_err(|e| format!("{field}: {e}"))?;
        svc.anti_spoofing = s.anti_spoofing;
        for (k, a) in s.access.iter().enumerate() {
            let f = format!("{field}.access[{k}]");
            let p = port_id(a.port.get_ref(), &format!("{f}.port"))?;
            let vlan = a.vlan.as_ref().map_or(0, |v| *v.get_ref());
            let slot = usize::try_from(vlan)
                .ok()
                .and_then(|v| ports[p as usize].vlan_service.get_mut(v))
                .ok_or_else(|| format!("{f}.vlan: VLAN {vlan} out of range"))?;
            *slot = id;
        }
        add_routes(
            &mut svc.upstream,
            &s.upstream,
            &format!("{field}.upstream"),
            &nh_id,
        )?;
        add_routes(
            &mut svc.downstream,
            &s.downstream,
            &format!("{field}.downstream"),
            &nh_id,
        )?;
        add_routes(&mut svc.hub, &s.hub, &format!("{field}.hub"), &nh_id)?;
        for (k, r) in s.policy.iter().enumerate() {
            let (net, len, protocol, ports, action) = crate::config::policy_rule(r)
                .map_err(|(_, f, m)| format!("{field}.policy[{k}].{f}: {m}"))?;
            let slot = u16::try_from(next_rule_slot)
                .ok()
                .filter(|&s| usize::from(s) < dataplane::policy::MAX_RULES)
                .ok_or_else(|| {
                    format!(
                        "{field}.policy[{k}]: more than {} policy rules",
                        dataplane::policy::MAX_RULES
                    )
                })?;
            next_rule_slot += 1;
            svc.policy
                .push(Rule::new(net, len, protocol, ports, action, slot));
        }
        if let Some(l) = &s.vpn_label {
            let action = match role {
                Role::Spoke => Some(LabelAction::PopDownstream { service: id }),
                Role::Hub => Some(LabelAction::PopHub { service: id }),
                Role::P => None,
            };
            if let Some(action) = action {
                bind(*l.get_ref(), action, &format!("{field}.vpn_label"))?;
            }
        }
        services.push(svc);
    }

    for (i, l) in cfg.labels.iter().enumerate() {
        let field = format!("label[{i}]");
        let next_hop = || {
            l.next_hop
                .as_ref()
                .ok_or_else(|| format!("{field}.next_hop: missing"))
                .and_then(|n| nh_id(n.get_ref(), &format!("{field}.next_hop")))
        };
        let action = match l.action.get_ref().as_str() {
            "swap" => LabelAction::Swap {
                label: l
                    .out_label
                    .as_ref()
                    .ok_or_else(|| format!("{field}.out_label: missing"))
                    .and_then(|o| label_u32(*o.get_ref(), &format!("{field}.out_label")))?,
                next_hop: next_hop()?,
            },
            "php" => LabelAction::PopPhp {
                next_hop: next_hop()?,
            },
            "pop" => LabelAction::PopContinue,
            other => return Err(format!("{field}.action: unknown action {other:?}")),
        };
        bind(*l.label.get_ref(), action, &format!("{field}.label"))?;
    }

    Ok(Tables::new(role, ports, services, next_hops, labels))
}

fn add_routes(
    table: &mut SharedLpm,
    routes: &[RouteCfg],
    field: &str,
    nh_id: &impl Fn(&str, &str) -> Result<u32, String>,
) -> Result<(), String> {
    for (k, rt) in routes.iter().enumerate() {
        let f = format!("{field}[{k}]");
        let (prefix, len) =
            parse_prefix(rt.prefix.get_ref()).map_err(|m| format!("{f}.prefix: {m}"))?;
        let nh = match rt.next_hop.get_ref().as_str() {
            crate::config::DISCARD_NAME => dataplane::tables::DISCARD,
            name => nh_id(name, &format!("{f}.next_hop"))?,
        };
        table
            .add(prefix, len, nh)
            .map_err(|e| format!("{f}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, SPOKE_EXAMPLE};
    use dataplane::lpm::NO_ROUTE;
    use dataplane::pipeline::{process, Frame, Next, Outcome, VecFrame};
    use dataplane::tables::NO_SERVICE;
    use dataplane::topology::{ethernet, ipv4_udp, lse};
    use std::path::Path;

    const MAC_ACCESS: [u8; 6] = [0x02, 0xa0, 0, 0, 0, 1];
    const MAC_CORE: [u8; 6] = [0x02, 0xc0, 0, 0, 0, 1];
    const MAC_HUB: [u8; 6] = [0x02, 0x40, 0, 0, 0, 9];
    const MAC_A: [u8; 6] = [0x02, 0xca, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0xcb, 0, 0, 0, 0x0b];

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn tables(src: &str) -> Tables {
        let loaded = parse(Path::new("t.toml"), src).expect("valid");
        build_tables(&loaded, &[MAC_ACCESS, MAC_CORE]).expect("builds")
    }

    /// IPv4/UDP with a valid header checksum, DSCP 0, to port 9.
    fn ipv4(src: &str, dst: &str, ttl: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_udp(ip(src), ip(dst), ttl, 0, 9, payload)
    }

    fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        ethernet(dst, src, 0, ethertype, payload)
    }

    fn mpls(labels: &[[u8; 4]], payload: &[u8]) -> Vec<u8> {
        eth(
            MAC_CORE,
            MAC_HUB,
            0x8847,
            &[labels.concat(), payload.to_vec()].concat(),
        )
    }

    /// The Internet checksum over a header that holds its checksum: 0.
    fn csum(b: &[u8]) -> u16 {
        dataplane::wire::checksum::checksum(b)
    }

    fn run(t: &Tables, port: u16, bytes: &[u8]) -> (Next, Vec<u8>) {
        let mut f = VecFrame::new(bytes);
        let n = process(t, port, &mut f);
        (n, f.data().to_vec())
    }

    /// The frames of a pcap file (classic format, as scripts/gen-corpus
    /// writes it).
    fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
        let b = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut at = 24;
        while at + 16 <= b.len() {
            let n = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            out.push(b[at + 16..at + 16 + n].to_vec());
            at += 16 + n;
        }
        out
    }

    /// The malformed-packet corpus, class by class: each frame through
    /// the pipeline on tables from the corpus's own configuration, with
    /// the outcome `expected.json` specifies for its class.
    #[test]
    fn corpus_classes_have_their_outcomes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
        let t = tables(&std::fs::read_to_string(dir.join("spoke.toml")).unwrap());
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let mut wrong = Vec::new();
        for (port, name) in [(0u16, "access"), (1, "core")] {
            let frames = pcap_frames(&dir.join(format!("{name}.pcap")));
            let classes = expected[name]["classes"].as_array().unwrap();
            let mut at = 0;
            for c in classes {
                let n = c["frames"].as_u64().unwrap() as usize;
                let class = c["name"].as_str().unwrap();
                // A frame larger than an mbuf reaches the pipeline as its
                // first segment; here it is one contiguous buffer. The
                // DPDK test (tests/cli.rs) checks that class.
                if class != "a frame larger than an mbuf" {
                    for (i, f) in frames[at..at + n].iter().enumerate() {
                        let got = run(&t, port, f).0.outcome.name();
                        if got != c["outcome"] {
                            wrong.push(format!(
                                "{name}: {class} frame {i}: {got}, not {}",
                                c["outcome"]
                            ));
                        }
                    }
                }
                at += n;
            }
            assert_eq!(at, frames.len(), "{name}: the classes cover the pcap");
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn spoke_example_builds_the_tables() {
        let t = tables(SPOKE_EXAMPLE);
        assert_eq!(t.role, Role::Spoke);
        let (access, core) = (&t.ports[0], &t.ports[1]);
        assert_eq!(
            (access.role, access.mac, access.address),
            (PortRole::Access, MAC_ACCESS, 0)
        );
        assert_eq!(
            (core.role, core.mac, core.address),
            (PortRole::Core, MAC_CORE, ip("192.0.2.1"))
        );
        assert_eq!((access.vlan_service[0], access.vlan_service[100]), (0, 0));
        assert_eq!(access.vlan_service[200], NO_SERVICE);
        assert!(core.vlan_service.iter().all(|&s| s == NO_SERVICE));

        let s = &t.services[0];
        assert_eq!((s.name.as_str(), s.gateway), ("blue", ip("10.0.0.1")));
        assert_eq!((s.ttl_mode, s.anti_spoofing), (TtlMode::Uniform, true));
        // Every client destination, a neighbour on the same spoke
        // included, goes to the hub (next hop 0).
        for d in ["8.8.8.8", "10.0.0.20", "10.0.0.10"] {
            assert_eq!(s.upstream.lookup(ip(d)), 0, "{d}");
        }
        assert_eq!(s.downstream.lookup(ip("10.0.0.10")), 1);
        assert_eq!(s.downstream.lookup(ip("10.0.0.20")), 2);
        assert_eq!(s.downstream.lookup(ip("10.0.0.30")), NO_ROUTE);
        assert!(s.hub.is_empty());

        assert_eq!(
            t.next_hops(),
            [
                NextHop {
                    port: 1,
                    vlan: 0,
                    dst_mac: MAC_HUB,
                    labels: [100, 2001],
                    n_labels: 2
                },
                NextHop {
                    port: 0,
                    vlan: 0,
                    dst_mac: MAC_A,
                    labels: [0, 0],
                    n_labels: 0
                },
                NextHop {
                    port: 0,
                    vlan: 100,
                    dst_mac: MAC_B,
                    labels: [0, 0],
                    n_labels: 0
                },
                NextHop {
                    port: 1,
                    vlan: 0,
                    dst_mac: MAC_HUB,
                    labels: [0, 0],
                    n_labels: 0
                },
            ]
        );

        assert_eq!((t.labels.base(), t.labels.len()), (1000, 4096));
        assert_eq!(t.labels.get(1000), Some(LabelAction::PopContinue));
        assert_eq!(
            t.labels.get(1001),
            Some(LabelAction::PopDownstream { service: 0 })
        );
        assert_eq!(
            t.labels.get(1002),
            Some(LabelAction::Swap {
                label: 555,
                next_hop: 3
            })
        );
        assert_eq!(
            t.labels.get(1004),
            Some(LabelAction::PopPhp { next_hop: 3 })
        );
        for unbound in [999, 1003, 1005, 5095, 5096] {
            assert_eq!(t.labels.get(unbound), None, "{unbound}");
        }
    }

    #[test]
    fn spoke_example_forwards_upstream_and_downstream() {
        let t = tables(SPOKE_EXAMPLE);
        // Client A to client B on the same spoke: upstream, to the hub,
        // transport label outermost, VPN label at the bottom, uniform TTL.
        let inner = ipv4("10.0.0.10", "10.0.0.20", 64, b"hello");
        let (n, out) = run(&t, 0, &eth(MAC_ACCESS, MAC_A, 0x0800, &inner));
        assert_eq!((n.outcome, n.port), (Outcome::Upstream, 1));
        assert_eq!(out[0..6], MAC_HUB);
        assert_eq!(out[6..12], MAC_CORE);
        assert_eq!(out[12..14], [0x88, 0x47]);
        assert_eq!(out[14..18], lse(100, false, 63));
        assert_eq!(out[18..22], lse(2001, true, 63));
        assert_eq!(out[22 + 8], 63, "IPv4 TTL");
        assert_eq!(csum(&out[22..42]), 0, "IPv4 checksum");
        assert_eq!(&out[22 + 28..], b"hello");

        // Anti-spoofing is on: B's address from A's MAC is dropped.
        let spoofed = ipv4("10.0.0.20", "8.8.8.8", 64, b"");
        let (n, _) = run(&t, 0, &eth(MAC_ACCESS, MAC_A, 0x0800, &spoofed));
        assert_eq!(n.outcome, Outcome::Spoofed);

        // The reply from the core: transport and VPN label popped, routed
        // in the downstream table to B, tagged with B's VLAN.
        let reply = ipv4("8.8.8.8", "10.0.0.20", 64, b"reply");
        let (n, out) = run(
            &t,
            1,
            &mpls(&[lse(1000, false, 50), lse(1001, true, 50)], &reply),
        );
        assert_eq!((n.outcome, n.port), (Outcome::Downstream, 0));
        assert_eq!(out[0..6], MAC_B);
        assert_eq!(out[6..12], MAC_ACCESS);
        assert_eq!(out[12..16], [0x81, 0x00, 0, 100]);
        assert_eq!(out[16..18], [0x08, 0x00]);
        assert_eq!(out[18 + 8], 49, "IPv4 TTL");
        assert_eq!(csum(&out[18..38]), 0, "IPv4 checksum");
        assert_eq!(&out[18 + 28..], b"reply");

        // The static swap.
        let (n, out) = run(
            &t,
            1,
            &mpls(&[lse(1002, false, 20), lse(9, true, 20)], &reply),
        );
        assert_eq!((n.outcome, n.port), (Outcome::LabelSwap, 1));
        assert_eq!(out[14..18], lse(555, false, 19));
        // A label outside what the file binds.
        let (n, _) = run(&t, 1, &mpls(&[lse(1003, true, 20)], &reply));
        assert_eq!(n.outcome, Outcome::UnknownLabel);
    }

    const HUB: &str = r#"
[dataplane]
workers = [1]
forward_mode = "router"

[router]
role = "hub"
label_base = 2000
label_count = 16
transport_label = 2000

[[port]]
name = "uplink0"
device = "net_tap0"
role = "access"

[[port]]
name = "core0"
device = "net_tap1"
address = "192.0.2.9"

[[next_hop]]
name = "internet"
port = "uplink0"
mac = "02:ee:00:00:00:01"

[[next_hop]]
name = "spoke1"
port = "core0"
mac = "02:c0:00:00:00:01"
labels = [1000, 1001]

[[service]]
name = "blue"
vpn_label = 2001
ttl_mode = "pipe"
anti_spoofing = false
access = [ { port = "uplink0" } ]
hub = [
    { prefix = "10.0.0.0/24", next_hop = "spoke1" },
    { prefix = "0.0.0.0/0", next_hop = "internet" },
]
"#;

    #[test]
    fn route_tables_take_the_configured_memory_limit() {
        let t = tables(SPOKE_EXAMPLE);
        let s = &t.services[0];
        for table in [&s.upstream, &s.downstream, &s.hub] {
            assert_eq!(
                table.memory_limit(),
                dataplane::tables::DEFAULT_TABLE_MEMORY
            );
        }
        let t = tables(&SPOKE_EXAMPLE.replace(
            "workers = [1]\n",
            "workers = [1]\nroute_table_memory_mb = 3\n",
        ));
        let s = &t.services[0];
        for table in [&s.upstream, &s.downstream, &s.hub] {
            assert_eq!(table.memory_limit(), 3 << 20);
        }
    }

    #[test]
    fn hub_example_builds_its_policy_rules_in_order() {
        use dataplane::policy::Action;
        let t = tables(crate::config::HUB_EXAMPLE);
        let got: Vec<_> = t.services[0]
            .policy
            .iter()
            .map(|r| (r.net, r.len, r.protocol, r.ports, r.action, r.slot))
            .collect();
        assert_eq!(
            got,
            [
                (ip("10.0.0.0"), 24, None, None, Action::Count, 0),
                (ip("10.0.0.66"), 32, None, None, Action::Deny, 1),
                (
                    ip("10.0.0.0"),
                    24,
                    Some(17),
                    Some((5000, 5999)),
                    Action::Police {
                        rate_bps: 10_000_000,
                        burst_bytes: 15000
                    },
                    2
                ),
                (
                    ip("192.0.2.0"),
                    24,
                    Some(6),
                    Some((25, 25)),
                    Action::Deny,
                    3
                ),
            ]
        );
    }

    #[test]
    fn hub_binds_vpn_labels_to_the_hub_table() {
        let t = tables(HUB);
        assert_eq!(t.role, Role::Hub);
        assert_eq!(t.ports[1].role, PortRole::Core, "core is the default");
        assert_eq!(t.labels.get(2001), Some(LabelAction::PopHub { service: 0 }));
        let s = &t.services[0];
        assert_eq!(
            (s.gateway, s.ttl_mode, s.anti_spoofing),
            (0, TtlMode::Pipe, false)
        );
        assert_eq!(s.hub.lookup(ip("10.0.0.20")), 1);
        assert_eq!(s.hub.lookup(ip("9.9.9.9")), 0);
        assert!(s.upstream.is_empty() && s.downstream.is_empty());

        // From a spoke to another client: back to the spoke owning it.
        let p = ipv4("10.0.0.10", "10.0.0.20", 60, b"y");
        let (n, out) = run(
            &t,
            1,
            &mpls(&[lse(2000, false, 59), lse(2001, true, 59)], &p),
        );
        assert_eq!((n.outcome, n.port), (Outcome::HubToSpoke, 1));
        assert_eq!(out[0..6], [0x02, 0xc0, 0, 0, 0, 1]);
        assert_eq!(
            out[14..18],
            lse(1000, false, 255),
            "pipe: labels start at 255"
        );
        assert_eq!(out[18..22], lse(1001, true, 255));
        // To anything else: the uplink, unlabelled.
        let p = ipv4("10.0.0.10", "9.9.9.9", 60, b"y");
        let (n, out) = run(&t, 1, &mpls(&[lse(2001, true, 59)], &p));
        assert_eq!((n.outcome, n.port), (Outcome::HubToUplink, 0));
        assert_eq!(out[12..14], [0x08, 0x00]);
        // From the uplink toward a client: the return path.
        let p = ipv4("9.9.9.9", "10.0.0.20", 64, b"");
        let (n, _) = run(
            &t,
            0,
            &eth(MAC_ACCESS, [0x02, 0xee, 0, 0, 0, 1], 0x0800, &p),
        );
        assert_eq!((n.outcome, n.port), (Outcome::HubToSpoke, 1));
    }

    #[test]
    fn p_router_only_switches_labels() {
        let src = r#"
[dataplane]
workers = [1]
forward_mode = "router"
[router]
role = "p"
label_base = 16
label_count = 100
[[port]]
name = "west"
device = "net_tap0"
[[port]]
name = "east"
device = "net_tap1"
[[next_hop]]
name = "east-pe"
port = "east"
mac = "02:00:00:00:00:0e"
[[label]]
label = 20
action = "swap"
out_label = 1000
next_hop = "east-pe"
[[label]]
label = 21
action = "php"
next_hop = "east-pe"
[[label]]
label = 22
action = "pop"
"#;
        let t = tables(src);
        assert_eq!(t.role, Role::P);
        assert!(t.services.is_empty());
        assert_eq!(
            t.labels.get(20),
            Some(LabelAction::Swap {
                label: 1000,
                next_hop: 0
            })
        );
        assert_eq!(t.labels.get(21), Some(LabelAction::PopPhp { next_hop: 0 }));
        assert_eq!(t.labels.get(22), Some(LabelAction::PopContinue));
        let p = ipv4("1.1.1.1", "2.2.2.2", 64, b"");
        let (n, out) = run(&t, 0, &mpls(&[lse(20, false, 9), lse(1001, true, 9)], &p));
        assert_eq!((n.outcome, n.port), (Outcome::LabelSwap, 1));
        assert_eq!(out[0..6], [0x02, 0, 0, 0, 0, 0x0e]);
        assert_eq!(out[6..12], MAC_CORE);
        assert_eq!(out[14..18], lse(1000, false, 8));
        let (n, out) = run(&t, 0, &mpls(&[lse(21, false, 9), lse(1001, true, 9)], &p));
        assert_eq!((n.outcome, n.port), (Outcome::LabelPop, 1));
        assert_eq!(out[14..18], lse(1001, true, 8));
    }

    #[test]
    fn build_needs_a_router_and_one_mac_per_port() {
        let loaded = parse(Path::new("t.toml"), SPOKE_EXAMPLE).unwrap();
        let e = build_tables(&loaded, &[MAC_ACCESS]).err().unwrap();
        assert_eq!(e, "1 port MAC addresses for 2 ports");
        let io = "[dataplane]\nworkers = [1]\n[[port]]\nname = \"a\"\ndevice = \"net_null0\"\n";
        let loaded = parse(Path::new("t.toml"), io).unwrap();
        let e = build_tables(&loaded, &[MAC_ACCESS]).err().unwrap();
        assert!(e.starts_with("no [router] section"), "{e}");
    }
}
