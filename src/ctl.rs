//! `hdvrf ctl`: one request to a running hdvrf's management socket, the
//! reply as a table for people or, with `-j`, as JSON for scripts (like
//! `gobgp -j`). Exit status 0 on success, 1 when the router refused the
//! request (the reason on stderr), 2 when it could not be reached.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use control::mgmt::{Reply, Request};
use serde_json::Value;

use crate::log::say;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The router's management socket (its control.socket).
    #[arg(short, long, default_value = control::config::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the reply as JSON.
    #[arg(short, long)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// Show state: stats, drops, ports, services, next-hops, routes.
    Show {
        #[command(subcommand)]
        what: Show,
    },
    /// Reset the shown counters to zero.
    Clear {
        #[command(subcommand)]
        what: Clear,
    },
    /// Add or delete a route (applied to every worker without a pause).
    Route {
        #[command(subcommand)]
        op: RouteOp,
    },
    /// Re-read the configuration file and apply its route changes.
    Reload,
    /// Packet trace: the path of the next packets through the pipeline.
    Trace {
        #[command(subcommand)]
        op: TraceOp,
    },
}

#[derive(Subcommand, Debug)]
enum TraceOp {
    /// trace add N [PORT]: trace the next N packets (arriving on PORT).
    Add { count: u32, port: Option<String> },
    /// The packets traced so far, explained.
    Show,
    /// Stop tracing and forget what was traced.
    Clear,
}

#[derive(Subcommand, Debug)]
enum Show {
    Stats,
    Drops,
    Ports,
    Services,
    NextHops,
    Labels,
    /// Subscriber sessions (DHCP relay).
    Sessions,
    /// Hub policy rules in order, with their counters.
    Policy {
        service: Option<String>,
    },
    /// BGP: neighbors, or rib [in|out] [NEIGHBOR].
    Bgp {
        #[command(subcommand)]
        what: BgpShow,
    },
    /// Routes of one service (or all), one table (or all).
    Routes {
        service: Option<String>,
        /// upstream, downstream or hub.
        table: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BgpShow {
    /// Neighbours: state, negotiated hold time and capabilities, counters.
    Neighbors,
    /// Routes learnt (in), advertised (out), or both. `out`: each
    /// neighbour's Adj-RIB-Out, every route as that neighbour is sent it
    /// (AS_PATH, LOCAL_PREF, MED, next hop, label, RD, targets; while it
    /// is down, as it will be sent when it comes up), one neighbour after
    /// the other.
    Rib {
        /// in or out (both when absent).
        which: Option<String>,
        /// Only this neighbour's routes (its address, as configured).
        neighbor: Option<String>,
        /// One page of in or out, from this route on (see --limit).
        #[arg(long)]
        offset: Option<usize>,
        /// One page of in or out, of at most this many routes (default
        /// 1000 when --offset is given); the reply names the next offset.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand, Debug)]
enum Clear {
    Stats,
}

#[derive(Subcommand, Debug)]
enum RouteOp {
    /// route add SERVICE TABLE PREFIX NEXT_HOP
    Add {
        service: String,
        table: String,
        prefix: String,
        next_hop: String,
    },
    /// route del SERVICE TABLE PREFIX
    Del {
        service: String,
        table: String,
        prefix: String,
    },
}

fn request(cmd: CtlCmd) -> Request {
    match cmd {
        CtlCmd::Show { what } => match what {
            Show::Stats => Request::ShowStats,
            Show::Drops => Request::ShowDrops,
            Show::Ports => Request::ShowPorts,
            Show::Services => Request::ShowServices,
            Show::NextHops => Request::ShowNextHops,
            Show::Labels => Request::ShowLabels,
            Show::Sessions => Request::ShowSessions,
            Show::Policy { service } => Request::ShowPolicy { service },
            Show::Bgp {
                what: BgpShow::Neighbors,
            } => Request::ShowBgpNeighbors,
            Show::Bgp {
                what:
                    BgpShow::Rib {
                        which,
                        neighbor,
                        offset,
                        limit,
                    },
            } => Request::ShowBgpRib {
                which,
                neighbor,
                offset,
                limit,
            },
            Show::Routes { service, table } => Request::ShowRoutes { service, table },
        },
        CtlCmd::Clear { what: Clear::Stats } => Request::ClearStats,
        CtlCmd::Reload => Request::Reload,
        CtlCmd::Trace { op } => match op {
            TraceOp::Add { count, port } => Request::TraceAdd { count, port },
            TraceOp::Show => Request::TraceShow,
            TraceOp::Clear => Request::TraceClear,
        },
        CtlCmd::Route { op } => match op {
            RouteOp::Add {
                service,
                table,
                prefix,
                next_hop,
            } => Request::RouteAdd {
                service,
                table,
                prefix,
                next_hop,
            },
            RouteOp::Del {
                service,
                table,
                prefix,
            } => Request::RouteDel {
                service,
                table,
                prefix,
            },
        },
    }
}

/// Sends one request and reads its reply.
pub fn call(socket: &std::path::Path, req: &Request) -> Result<Reply> {
    let reply = exchange(socket, req)?;
    serde_json::from_str(&reply).with_context(|| format!("reply {reply:?}"))
}

/// Sends one request; its reply's line as it came.
fn exchange(socket: &std::path::Path, req: &Request) -> Result<String> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "{}: cannot reach hdvrf (is it running? --socket names its control.socket)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&s)
        .read_line(&mut reply)
        .with_context(|| format!("{}: reading the reply", socket.display()))?;
    if reply.is_empty() {
        return Err(anyhow!("{}: hdvrf closed the connection", socket.display()));
    }
    Ok(reply)
}

/// A reply whose result stays the text it came as: `-j` reformats it
/// without building it as a `Value` (at 100k sessions, parsing the reply
/// into a tree and printing it took half a second).
#[derive(serde::Deserialize)]
struct RawReply<'a> {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(borrow, default)]
    result: Option<&'a serde_json::value::RawValue>,
}

pub fn ctl(a: CtlArgs) -> Result<ExitCode> {
    let req = request(a.cmd);
    if a.json {
        let line = exchange(&a.socket, &req)?;
        let reply: RawReply =
            serde_json::from_str(&line).with_context(|| format!("reply {line:?}"))?;
        if !reply.ok {
            eprintln!(
                "hdvrf ctl: {}",
                reply.error.as_deref().unwrap_or("refused without a reason")
            );
            return Ok(ExitCode::from(1));
        }
        say!("{}", pretty(reply.result.map_or("null", |r| r.get())));
        return Ok(ExitCode::SUCCESS);
    }
    let reply = call(&a.socket, &req)?;
    if !reply.ok {
        eprintln!(
            "hdvrf ctl: {}",
            reply.error.as_deref().unwrap_or("refused without a reason")
        );
        return Ok(ExitCode::from(1));
    }
    human(&req, &reply.result);
    Ok(ExitCode::SUCCESS)
}

/// Valid JSON laid out as `serde_json::to_string_pretty` lays it out
/// (two-space indent, `"key": value`, `[]` and `{}` when empty), in one
/// pass over the text: tokens are copied as they are.
fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 2);
    let mut depth = 0usize;
    // After an opening bracket or a comma: the next token starts a line.
    let mut fresh = false;
    let mut chars = json.chars();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => continue,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if !fresh {
                    newline(&mut out, depth);
                }
                fresh = false;
                out.push(c);
                continue;
            }
            _ => {}
        }
        if fresh {
            newline(&mut out, depth);
            fresh = false;
        }
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
                fresh = true;
            }
            ',' => {
                out.push(',');
                fresh = true;
            }
            ':' => out.push_str(": "),
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        o => o.to_string(),
    }
}

/// Columns padded to their widest cell.
fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    say!("{}", line(head.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        say!("{}", line(r));
    }
}

fn human(req: &Request, v: &Value) {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    match req {
        Request::ShowStats => {
            table(
                &["lcore", "rx", "tx", "drops", "bursts", "empty polls"],
                list(&v["cores"])
                    .iter()
                    .map(|c| {
                        ["lcore", "rx", "tx", "drops", "bursts", "empty_polls"]
                            .iter()
                            .map(|k| s(&c[*k]))
                            .collect()
                    })
                    .collect(),
            );
            let t = &v["total"];
            say!(
                "total: rx {} tx {} drops {}",
                u(&t["rx"]),
                u(&t["tx"]),
                u(&t["drops"])
            );
            if let Some(o) = t["outcomes"].as_object() {
                for (k, n) in o {
                    say!("  {k:<24} {}", u(n));
                }
            }
            let p = &v["publication"];
            say!(
                "tables: {} commits ({} ops, {} failed), last visible on every worker after {} us, worst {} us",
                u(&p["commits"]),
                u(&p["ops"]),
                u(&p["failed"]),
                u(&p["last_visible_after_us"]),
                u(&p["max_visible_after_us"])
            );
        }
        Request::ShowDrops => {
            let rows = v["reasons"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, n)| u(n) != 0)
                        .map(|(k, n)| vec![k.clone(), u(n).to_string()])
                        .collect()
                })
                .unwrap_or_default();
            table(&["reason", "packets"], rows);
            say!("total: {}", u(&v["total"]));
        }
        Request::ShowPorts => table(
            &[
                "port",
                "device",
                "link",
                "rx",
                "tx",
                "missed",
                "rx errors",
                "tx errors",
                "no mbuf",
            ],
            list(v)
                .iter()
                .map(|p| {
                    [
                        "name",
                        "device",
                        "link",
                        "rx",
                        "tx",
                        "missed",
                        "rx_errors",
                        "tx_errors",
                        "rx_nombuf",
                    ]
                    .iter()
                    .map(|k| s(&p[*k]))
                    .collect()
                })
                .collect(),
        ),
        Request::ShowServices => table(
            &[
                "service",
                "rd",
                "import",
                "export",
                "gateway",
                "ttl",
                "anti-spoofing",
                "upstream",
                "downstream",
                "hub",
            ],
            list(v)
                .iter()
                .map(|x| {
                    let join = |k: &str| {
                        let l = list(&x[k]);
                        if l.is_empty() {
                            "-".to_owned()
                        } else {
                            l.iter().map(s).collect::<Vec<_>>().join(",")
                        }
                    };
                    vec![
                        s(&x["name"]),
                        s(&x["route_distinguisher"]),
                        join("import_targets"),
                        join("export_targets"),
                        s(&x["gateway"]),
                        s(&x["ttl_mode"]),
                        s(&x["anti_spoofing"]),
                        s(&x["routes"]["upstream"]),
                        s(&x["routes"]["downstream"]),
                        s(&x["routes"]["hub"]),
                    ]
                })
                .collect(),
        ),
        Request::ShowBgpNeighbors => table(
            &[
                "neighbor",
                "as",
                "type",
                "state",
                "up (s)",
                "hold",
                "via",
                "routes in",
                "max",
                "not imported",
                "routes out",
                "updates",
                "malformed",
                "failures",
                "idle hold (ms)",
                "last down",
            ],
            list(v)
                .iter()
                .map(|x| {
                    vec![
                        format!("{}:{}", s(&x["address"]), s(&x["port"])),
                        s(&x["remote_asn"]),
                        s(&x["type"]),
                        s(&x["state"]),
                        s(&x["up_for_s"]),
                        s(&x["hold_time"]),
                        s(&x["via"]),
                        s(&x["routes_in"]),
                        s(&x["max_prefixes"]),
                        s(&x["not_imported"]),
                        s(&x["routes_out"]),
                        s(&x["updates_in"]),
                        s(&x["malformed_updates"]),
                        s(&x["failures_in_a_row"]),
                        s(&x["idle_hold_ms"]),
                        s(&x["last_down"]),
                    ]
                })
                .collect(),
        ),
        Request::ShowBgpRib { which, .. } => {
            // An empty AS_PATH (iBGP) as "-", like an absent LOCAL_PREF.
            let as_path = |v: &Value| match v.as_array() {
                Some(a) if !a.is_empty() => a.iter().map(s).collect::<Vec<_>>().join(" "),
                _ => "-".to_owned(),
            };
            let rows = |v: &Value, who: &str| -> Vec<Vec<String>> {
                list(v)
                    .iter()
                    .map(|x| {
                        let mut row = vec![
                            s(&x["prefix"]),
                            s(&x["rd"]),
                            s(&x["label"]),
                            s(&x["next_hop"]),
                        ];
                        if who == "service" {
                            // What the neighbour is sent.
                            row.insert(0, s(&x["neighbor"]));
                            row.extend([as_path(&x["as_path"]), s(&x["local_pref"]), s(&x["med"])]);
                        }
                        row.extend([
                            x["route_targets"]
                                .as_array()
                                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                            s(&x[who]),
                        ]);
                        row
                    })
                    .collect()
            };
            let head_in = ["prefix", "rd", "label", "next hop", "targets", "neighbor"];
            let head_out = [
                "neighbor",
                "prefix",
                "rd",
                "label",
                "next hop",
                "as path",
                "local pref",
                "med",
                "targets",
                "service",
            ];
            // A page: its routes, then where the next one starts.
            let page = |v: &Value, head: &[&str], who: &str| {
                table(head, rows(&v["routes"], who));
                match v["next_offset"].as_u64() {
                    Some(next) => say!(
                        "routes {} to {} of {}; next page: --offset {next}",
                        s(&v["offset"]),
                        next,
                        s(&v["total"])
                    ),
                    None => say!("of {} routes, the last page", s(&v["total"])),
                }
            };
            match which.as_deref() {
                Some("in") if v.is_object() => page(v, &head_in, "neighbor"),
                Some("out") if v.is_object() => page(v, &head_out, "service"),
                Some("in") => table(&head_in, rows(v, "neighbor")),
                Some("out") => table(&head_out, rows(v, "service")),
                _ => {
                    say!("learnt:");
                    table(&head_in, rows(&v["in"], "neighbor"));
                    say!("advertised:");
                    table(&head_out, rows(&v["out"], "service"));
                }
            }
        }
        Request::ShowPolicy { .. } => table(
            &[
                "service", "rule", "prefix", "protocol", "port", "action", "rate", "burst",
                "packets", "bytes", "dropped",
            ],
            list(v)
                .iter()
                .map(|x| {
                    [
                        "service",
                        "index",
                        "prefix",
                        "protocol",
                        "port",
                        "action",
                        "rate_bps",
                        "burst_bytes",
                        "packets",
                        "bytes",
                        "dropped",
                    ]
                    .iter()
                    .map(|k| {
                        if x[*k].is_null() {
                            "-".to_owned()
                        } else {
                            s(&x[*k])
                        }
                    })
                    .collect()
                })
                .collect(),
        ),
        Request::ShowSessions => table(
            &[
                "service",
                "address",
                "mac",
                "port",
                "vlan",
                "lease left (s)",
                "up (s)",
                "up pkts",
                "up bytes",
                "down pkts",
                "down bytes",
                "spoofed",
            ],
            list(v)
                .iter()
                .map(|x| {
                    vec![
                        s(&x["service"]),
                        s(&x["address"]),
                        s(&x["mac"]),
                        s(&x["port"]),
                        s(&x["vlan"]),
                        s(&x["lease_remaining_s"]),
                        s(&x["up_s"]),
                        s(&x["up_packets"]),
                        s(&x["up_bytes"]),
                        s(&x["down_packets"]),
                        s(&x["down_bytes"]),
                        s(&x["spoofed_drops"]),
                    ]
                })
                .collect(),
        ),
        Request::ShowNextHops => table(
            &[
                "next hop", "port", "vlan", "address", "mac", "state", "labels",
            ],
            list(v)
                .iter()
                .map(|x| {
                    vec![
                        s(&x["name"]),
                        s(&x["port"]),
                        s(&x["vlan"]),
                        s(&x["address"]),
                        s(&x["mac"]),
                        s(&x["state"]),
                        list(&x["labels"])
                            .iter()
                            .map(s)
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]
                })
                .collect(),
        ),
        Request::ShowLabels => {
            say!(
                "local labels {} to {}",
                u(&v["base"]),
                (u(&v["base"]) + u(&v["count"])).saturating_sub(1)
            );
            table(
                &["label", "action", "detail"],
                list(&v["bound"])
                    .iter()
                    .map(|x| {
                        let detail = x["detail"]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| format!("{k}={}", s(v)))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .unwrap_or_default();
                        vec![s(&x["label"]), s(&x["action"]), detail]
                    })
                    .collect(),
            );
        }
        Request::ShowRoutes { .. } => table(
            &["service", "table", "prefix", "next hop"],
            list(v)
                .iter()
                .map(|x| {
                    ["service", "table", "prefix", "next_hop"]
                        .iter()
                        .map(|k| s(&x[*k]))
                        .collect()
                })
                .collect(),
        ),
        Request::ClearStats => say!("counters cleared"),
        Request::TraceAdd { .. } => say!("tracing the next {} packets", u(&v["armed"])),
        Request::TraceClear => say!("trace cleared"),
        Request::TraceShow => {
            for (i, p) in list(&v["packets"]).iter().enumerate() {
                let mut line = format!(
                    "#{} lcore {} {} vlan {}",
                    i + 1,
                    s(&p["lcore"]),
                    s(&p["in_port"]),
                    s(&p["vlan"])
                );
                let labels = |k: &str| list(&p[k]).iter().map(s).collect::<Vec<_>>().join(" ");
                if !labels("labels_in").is_empty() {
                    line += &format!(" labels [{}]", labels("labels_in"));
                }
                line += &format!(" {} -> {}", s(&p["src"]), s(&p["dst"]));
                if !p["service"].is_null() {
                    line += &format!(": service {}", s(&p["service"]));
                }
                if !p["table"].is_null() {
                    line += &format!(", {} table", s(&p["table"]));
                }
                if !p["route"].is_null() {
                    line += &format!(
                        ", route {} via {}",
                        s(&p["route"]["prefix"]),
                        s(&p["route"]["next_hop"])
                    );
                }
                if !labels("labels_out").is_empty() {
                    line += &format!(", out with labels [{}]", labels("labels_out"));
                }
                line += &format!(" => {}", s(&p["outcome"]));
                if !p["out_port"].is_null() {
                    line += &format!(" on {}", s(&p["out_port"]));
                }
                if p["tables_changed"] == Value::Bool(true) {
                    line += " (tables changed since)";
                }
                say!("{line}");
            }
            say!("{} still to trace", u(&v["remaining"]));
        }
        Request::Reload => say!(
            "reloaded: {} routes added, {} changed, {} removed{}{}{}",
            u(&v["added"]),
            u(&v["changed"]),
            u(&v["removed"]),
            match u(&v["kept_for_sessions"]) {
                0 => String::new(),
                n => format!(" ({n} left to live sessions)"),
            },
            match u(&v["bgp_table_ops"]) {
                0 => String::new(),
                n => format!("; BGP: {n} table changes"),
            },
            v["generation"]
                .as_u64()
                .map(|g| format!(" (table generation {g})"))
                .unwrap_or_else(|| " (nothing to publish)".into())
        ),
        Request::RouteAdd { .. } | Request::RouteDel { .. } => say!(
            "done: table generation {}, visible on every worker after {} us",
            u(&v["generation"]),
            u(&v["visible_after_us"])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_lays_out_json_as_serde_json_does() {
        for text in [
            r#"{"a":[],"b":{},"c":[1,{"d":null,"e":[[]]}],"f":"x,y:{[\"]}\\","g":-1.5e-7}"#,
            r#"[{"address":"10.0.0.7","mac":"02:ab","up_bytes":null},{"address":"10.0.0.8"}]"#,
            r#"[]"#,
            r#"{}"#,
            r#""just a string""#,
            r#"42"#,
            r#"{"nested":{"deeper":{"deepest":[true,false]}},"u":"\u0001é"}"#,
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                pretty(text),
                serde_json::to_string_pretty(&v).unwrap(),
                "{text}"
            );
            // Whitespace in the input does not matter.
            let spaced = serde_json::to_string_pretty(&v).unwrap();
            assert_eq!(pretty(&spaced), spaced, "{text}");
        }
    }

    #[test]
    fn raw_replies_keep_their_result_text() {
        let r: RawReply = serde_json::from_str(r#"{"ok":true,"result":{"b":1,"a":[2]}}"#).unwrap();
        assert!(r.ok);
        assert_eq!(r.result.unwrap().get(), r#"{"b":1,"a":[2]}"#);
        let r: RawReply = serde_json::from_str(r#"{"ok":false,"error":"no"}"#).unwrap();
        assert_eq!(
            (r.ok, r.error.as_deref(), r.result.is_none()),
            (false, Some("no"), true)
        );
    }
}
