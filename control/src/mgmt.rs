//! The management API's protocol: one JSON request per line on a unix
//! socket, one JSON reply per line (`hdvrf ctl` is one client; `socat` or
//! any JSON-lines client is another). Requests name things as the
//! configuration does (services, next hops, tables) and the server maps
//! the names to table ids.
//!
//! ```text
//! -> {"cmd":"route-add","service":"blue","table":"upstream","prefix":"10.9.0.0/16","next_hop":"hub"}
//! <- {"ok":true,"result":{"generation":3,"visible_after_us":41,...}}
//! -> {"cmd":"show-routes","service":"nope"}
//! <- {"ok":false,"error":"no service named \"nope\" (services: blue)"}
//! ```

use serde::{Deserialize, Serialize};

use crate::config::{parse_prefix, Config};
use dataplane::tables::RouteTable;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Per-core and total packet counters, port counters, publication.
    ShowStats,
    /// Every drop and punt reason with its count.
    ShowDrops,
    ShowPorts,
    ShowServices,
    ShowNextHops,
    /// The local label range and every bound label's action.
    ShowLabels,
    /// Subscriber sessions: client, port, VLAN, address, lease.
    ShowSessions,
    /// BGP neighbours: state, what was negotiated, counters.
    ShowBgpNeighbors,
    /// Hub policy rules of one service (all when `None`), in order, with
    /// their counters.
    ShowPolicy {
        #[serde(default)]
        service: Option<String>,
    },
    /// Learnt routes (`in`), advertised routes (`out`: each neighbour's
    /// Adj-RIB-Out, every route as that neighbour is sent it), or both.
    /// With `neighbor` (its address), that neighbour's only. With
    /// `offset` or `limit` (of `in` or `out`), one page:
    /// `{"routes":[...],"offset":0,"total":100000,"next_offset":1000}`
    /// (`next_offset` null after the last page); without, every route as
    /// one array, as before.
    ShowBgpRib {
        #[serde(default)]
        which: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        neighbor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Routes of one service (all when `None`), one table (all when
    /// `None`).
    ShowRoutes {
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        table: Option<String>,
    },
    /// Counters shown from now on start at zero (the workers' own counters
    /// are never written by anyone else).
    ClearStats,
    RouteAdd {
        service: String,
        table: String,
        prefix: String,
        next_hop: String,
    },
    RouteDel {
        service: String,
        table: String,
        prefix: String,
    },
    /// Re-read the configuration file and apply its route changes through
    /// table publication; changes that need a restart are refused.
    Reload,
    /// Trace the next `count` packets arriving on `port` (any when absent).
    TraceAdd {
        count: u32,
        #[serde(default)]
        port: Option<String>,
    },
    /// The packets traced so far, each explained against the tables.
    TraceShow,
    /// Stop tracing and forget what was traced.
    TraceClear,
}

/// Routes in a page of `show bgp rib` given an `offset` and no `limit`.
pub const DEFAULT_RIB_PAGE: usize = 1000;

/// The page `show bgp rib` asks for, if any: (offset, limit).
pub fn rib_page(
    offset: Option<usize>,
    limit: Option<usize>,
) -> Result<Option<(usize, usize)>, String> {
    match (offset, limit) {
        (None, None) => Ok(None),
        (_, Some(0)) => Err("show bgp rib: limit 0: a page holds at least one route".into()),
        (o, l) => Ok(Some((o.unwrap_or(0), l.unwrap_or(DEFAULT_RIB_PAGE)))),
    }
}

/// The reply: `result` when `ok`, else `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
}

impl Reply {
    pub fn from_result(r: Result<serde_json::Value, String>) -> Reply {
        match r {
            Ok(result) => Reply {
                ok: true,
                error: None,
                result,
            },
            Err(e) => Reply {
                ok: false,
                error: Some(e),
                result: serde_json::Value::Null,
            },
        }
    }
}

/// A table's name as requests and replies spell it.
pub fn table_name(t: RouteTable) -> &'static str {
    match t {
        RouteTable::Upstream => "upstream",
        RouteTable::Downstream => "downstream",
        RouteTable::Hub => "hub",
    }
}

pub fn parse_table(s: &str) -> Result<RouteTable, String> {
    match s {
        "upstream" => Ok(RouteTable::Upstream),
        "downstream" => Ok(RouteTable::Downstream),
        "hub" => Ok(RouteTable::Hub),
        o => Err(format!("unknown table {o:?} (upstream, downstream or hub)")),
    }
}

/// The configuration's names for table ids.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub ports: Vec<String>,
    pub services: Vec<String>,
    pub next_hops: Vec<String>,
}

impl Names {
    pub fn from_config(c: &Config) -> Names {
        Names {
            ports: c.ports.iter().map(|p| p.name.get_ref().clone()).collect(),
            services: c
                .services
                .iter()
                .map(|s| s.name.get_ref().clone())
                .collect(),
            next_hops: c
                .next_hops
                .iter()
                .map(|n| n.name.get_ref().clone())
                .collect(),
        }
    }

    pub fn service(&self, name: &str) -> Result<u16, String> {
        find(&self.services, name, "service")
            .and_then(|i| u16::try_from(i).map_err(|_| "service id out of range".into()))
    }

    pub fn next_hop(&self, name: &str) -> Result<u32, String> {
        if name == crate::config::DISCARD_NAME {
            return Ok(dataplane::tables::DISCARD);
        }
        find(&self.next_hops, name, "next hop").map(|i| i as u32)
    }

    pub fn next_hop_name(&self, id: u32) -> String {
        if id == dataplane::tables::DISCARD {
            return crate::config::DISCARD_NAME.to_owned();
        }
        self.next_hops
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }

    pub fn port(&self, name: &str) -> Result<u16, String> {
        find(&self.ports, name, "port").map(|i| i as u16)
    }

    pub fn port_name(&self, id: u16) -> String {
        self.ports
            .get(usize::from(id))
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }
}

fn find(list: &[String], name: &str, what: &str) -> Result<usize, String> {
    list.iter().position(|n| n == name).ok_or_else(|| {
        format!(
            "no {what} named {name:?} ({what}s: {})",
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(", ")
            }
        )
    })
}

/// `a.b.c.d/len`, with the configuration's rules (no host bits).
pub fn parse_route_prefix(s: &str) -> Result<(u32, u8), String> {
    parse_prefix(s).map_err(|m| format!("prefix {s:?}: {m}"))
}

/// The parts of a configuration (parsed as plain TOML) that `reload`
/// cannot apply to a running router: everything but the services' routes.
/// Returns the names of the sections that differ.
pub fn restart_needed(old: &toml::Value, new: &toml::Value) -> Vec<String> {
    // What a reload applies in place (`crate::reload`): next hops, labels,
    // and everything of a service but its name. The set of service names
    // is compared (their order does not matter: they are matched by name).
    fn strip(v: &toml::Value) -> toml::Value {
        let mut v = v.clone();
        if let Some(t) = v.as_table_mut() {
            t.remove("next_hop");
            t.remove("label");
        }
        if let Some(list) = v.get_mut("service").and_then(|s| s.as_array_mut()) {
            let mut names: Vec<toml::Value> = list
                .iter()
                .map(|svc| {
                    svc.get("name")
                        .cloned()
                        .unwrap_or(toml::Value::Boolean(false))
                })
                .collect();
            names.sort_by_key(|n| n.to_string());
            *list = names;
        }
        v
    }
    let (a, b) = (strip(old), strip(new));
    let empty = toml::map::Map::new();
    let (ta, tb) = (
        a.as_table().unwrap_or(&empty),
        b.as_table().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| ta.get(*k) != tb.get(*k))
        .map(|k| match k.as_str() {
            "service" => "the set of services (added, removed or renamed)".to_owned(),
            o => o.to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_in_their_wire_form() {
        let r: Request = serde_json::from_str(
            r#"{"cmd":"route-add","service":"blue","table":"upstream","prefix":"10.9.0.0/16","next_hop":"hub"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::RouteAdd {
                service: "blue".into(),
                table: "upstream".into(),
                prefix: "10.9.0.0/16".into(),
                next_hop: "hub".into()
            }
        );
        let s = serde_json::to_string(&Request::ShowRoutes {
            service: Some("blue".into()),
            table: None,
        })
        .unwrap();
        assert_eq!(s, r#"{"cmd":"show-routes","service":"blue","table":null}"#);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"show-routes"}"#).unwrap(),
            Request::ShowRoutes {
                service: None,
                table: None
            }
        );
        let e = serde_json::from_str::<Request>(r#"{"cmd":"show-everything"}"#).unwrap_err();
        assert!(e.to_string().contains("show-everything"), "{e}");
        // A misspelt field is an error, not silently a default.
        let e = serde_json::from_str::<Request>(r#"{"cmd":"show-routes","servcie":"blue"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn rib_requests_page_only_when_asked() {
        let whole = Request::ShowBgpRib {
            which: Some("in".into()),
            neighbor: None,
            offset: None,
            limit: None,
        };
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            r#"{"cmd":"show-bgp-rib","which":"in"}"#,
            "the unpaged wire form is as before"
        );
        let paged: Request = serde_json::from_str(
            r#"{"cmd":"show-bgp-rib","which":"in","offset":2000,"limit":500}"#,
        )
        .unwrap();
        assert_eq!(
            paged,
            Request::ShowBgpRib {
                which: Some("in".into()),
                neighbor: None,
                offset: Some(2000),
                limit: Some(500)
            }
        );
        assert_eq!(rib_page(None, None), Ok(None));
        assert_eq!(rib_page(Some(5), None), Ok(Some((5, DEFAULT_RIB_PAGE))));
        assert_eq!(rib_page(None, Some(10)), Ok(Some((0, 10))));
        assert!(rib_page(Some(0), Some(0)).is_err());
    }

    #[test]
    fn rib_requests_name_a_neighbour_when_asked() {
        let out: Request =
            serde_json::from_str(r#"{"cmd":"show-bgp-rib","which":"out","neighbor":"198.18.0.2"}"#)
                .unwrap();
        assert_eq!(
            out,
            Request::ShowBgpRib {
                which: Some("out".into()),
                neighbor: Some("198.18.0.2".into()),
                offset: None,
                limit: None
            }
        );
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"cmd":"show-bgp-rib","which":"out","neighbor":"198.18.0.2"}"#
        );
    }

    #[test]
    fn what_a_reload_applies_and_what_needs_a_restart() {
        let t = |s: &str| -> toml::Value { toml::from_str(s).unwrap() };
        let base = r#"
[dataplane]
workers = [1]
[[port]]
name = "a"
device = "net_null0"
[[service]]
name = "blue"
upstream = [ { prefix = "0.0.0.0/0", next_hop = "hub" } ]
"#;
        let routes = base.replace("0.0.0.0/0", "10.0.0.0/8");
        assert!(restart_needed(&t(base), &t(&routes)).is_empty());
        let port = routes.replace("net_null0", "net_null1");
        assert_eq!(restart_needed(&t(base), &t(&port)), ["port"]);
        // A service's settings, next hops and labels are applied in place.
        let settings = format!("{base}gateway = \"10.0.0.1\"\naccess = [ {{ port = \"a\", vlan = 7 }} ]\n[[next_hop]]\nname = \"hub\"\n[[label]]\nlabel = 1\n");
        assert!(restart_needed(&t(base), &t(&settings)).is_empty());
        // Services matched by name: another order is no change.
        let two = format!("{base}[[service]]\nname = \"red\"\n");
        let swapped = two
            .replace("\"blue\"", "\"tmp\"")
            .replace("\"red\"", "\"blue\"")
            .replace("\"tmp\"", "\"red\"");
        assert!(restart_needed(&t(&two), &t(&swapped)).is_empty());
        let svc = base.replace("name = \"blue\"", "name = \"red\"");
        assert_eq!(
            restart_needed(&t(base), &t(&svc)),
            ["the set of services (added, removed or renamed)"]
        );
        let more = format!("{base}[control]\nsocket = \"/x\"\n");
        assert_eq!(restart_needed(&t(base), &t(&more)), ["control"]);
    }

    #[test]
    fn names_resolve_or_list_what_exists() {
        let n = Names {
            ports: vec!["a".into()],
            services: vec!["blue".into(), "red".into()],
            next_hops: vec!["hub".into()],
        };
        assert_eq!(n.service("red"), Ok(1));
        assert_eq!(
            n.service("green").unwrap_err(),
            "no service named \"green\" (services: blue, red)"
        );
        assert_eq!(n.next_hop("hub"), Ok(0));
        assert_eq!(n.next_hop_name(7), "#7");
        assert_eq!(parse_table("hub"), Ok(RouteTable::Hub));
        assert!(parse_table("up").unwrap_err().contains("upstream"));
        assert!(parse_route_prefix("10.0.0.0/33").is_err());
        assert_eq!(parse_route_prefix("10.1.0.0/16"), Ok((0x0a01_0000, 16)));
    }
}
