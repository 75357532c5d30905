//! Prometheus text metrics (exposition format 0.0.4) over HTTP, served by
//! the control thread at `control.metrics` (loopback by default).
//!
//! Counters are the workers' own, never reset (`clear stats` only moves
//! `hdvrf ctl`'s baseline), so rates computed by Prometheus stay right.
//!
//! The HTTP side is written here rather than taken from hyper: it is one
//! GET endpoint answered once per connection, which is a few lines,
//! against a server stack and its dependencies in the router binary.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use dataplane::pipeline::{Outcome, OutcomeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::log::say;
use crate::mgmt::Control;

/// The largest request head read (the rest is ignored).
const MAX_HEAD: usize = 8 * 1024;

/// Binds the metrics listener; a busy or unusable default address only
/// turns metrics off for this instance, a configured one is an error.
pub async fn bind(addr: SocketAddr, configured: bool) -> Result<Option<TcpListener>> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if !configured => {
            say!("hdvrf: warning: no metrics ({addr}: {e}); set control.metrics");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("control.metrics: binding {addr}")),
    }
}

pub async fn serve(listener: TcpListener, state: Rc<RefCell<Option<Control>>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(client(stream, state.clone()));
            }
            Err(e) => {
                say!("hdvrf: metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(mut stream: TcpStream, state: Rc<RefCell<Option<Control>>>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    // The request line is all that matters; a slow or silent client is
    // dropped after a few seconds rather than held forever.
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = match line {
        b"GET /metrics HTTP/1.1" | b"GET /metrics HTTP/1.0" => {
            match state.borrow().as_ref().map(render) {
                Some(body) => ("200 OK", body),
                None => ("503 Service Unavailable", "shutting down\n".to_owned()),
            }
        }
        l if l.starts_with(b"GET ") => ("404 Not Found", "only /metrics is here\n".to_owned()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_owned()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values are names from the configuration; escape what the format
/// requires anyway.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(c: &Control) -> String {
    let mut o = String::with_capacity(8 * 1024);
    let cores = c.engine.running.cores();
    family(
        &mut o,
        "hdvrf_rx_packets_total",
        "counter",
        "Packets received, per worker core.",
    );
    for (l, s) in &cores {
        let _ = writeln!(
            o,
            "hdvrf_rx_packets_total{{lcore=\"{l}\"}} {}",
            s.rx_packets
        );
    }
    family(
        &mut o,
        "hdvrf_tx_packets_total",
        "counter",
        "Packets sent, per worker core.",
    );
    for (l, s) in &cores {
        let _ = writeln!(
            o,
            "hdvrf_tx_packets_total{{lcore=\"{l}\"}} {}",
            s.tx_packets
        );
    }
    family(
        &mut o,
        "hdvrf_packets_total",
        "counter",
        "How packets ended (forward, punt or drop reason), per worker core.",
    );
    for (l, s) in &cores {
        for out in Outcome::ALL {
            let kind = match out.kind() {
                OutcomeKind::Forward => "forward",
                OutcomeKind::Punt => "punt",
                OutcomeKind::Drop => "drop",
            };
            let _ = writeln!(
                o,
                "hdvrf_packets_total{{lcore=\"{l}\",kind=\"{kind}\",outcome=\"{}\"}} {}",
                out.name(),
                s.reason_count(*out)
            );
        }
    }
    let ports = c.engine.running.port_stats();
    let names = c.port_names();
    for (metric, help, get) in [
        (
            "hdvrf_port_rx_packets_total",
            "Packets the port received.",
            (|s: &dataplane::dpdk::PortStats| s.ipackets) as fn(&dataplane::dpdk::PortStats) -> u64,
        ),
        (
            "hdvrf_port_tx_packets_total",
            "Packets the port sent.",
            |s| s.opackets,
        ),
        (
            "hdvrf_port_rx_bytes_total",
            "Bytes the port received.",
            |s| s.ibytes,
        ),
        ("hdvrf_port_tx_bytes_total", "Bytes the port sent.", |s| {
            s.obytes
        }),
        (
            "hdvrf_port_rx_missed_total",
            "Packets the NIC dropped for lack of rx descriptors.",
            |s| s.imissed,
        ),
        (
            "hdvrf_port_rx_errors_total",
            "Erroneous packets received.",
            |s| s.ierrors,
        ),
        (
            "hdvrf_port_tx_errors_total",
            "Packets the port failed to send.",
            |s| s.oerrors,
        ),
        (
            "hdvrf_port_rx_nombuf_total",
            "Receive failures for lack of mbufs.",
            |s| s.rx_nombuf,
        ),
    ] {
        family(&mut o, metric, "counter", help);
        for ((_, st, _), name) in ports.iter().zip(&names) {
            let _ = writeln!(o, "{metric}{{port=\"{}\"}} {}", esc(name), get(st));
        }
    }
    let p = c.engine.running.publication_stats();
    family(
        &mut o,
        "hdvrf_table_commits_total",
        "counter",
        "Route table commits published to the workers.",
    );
    let _ = writeln!(o, "hdvrf_table_commits_total {}", p.commits);
    family(
        &mut o,
        "hdvrf_table_commit_failures_total",
        "counter",
        "Route table commits that failed.",
    );
    let _ = writeln!(o, "hdvrf_table_commit_failures_total {}", p.failed);
    family(
        &mut o,
        "hdvrf_table_ops_total",
        "counter",
        "Route changes committed.",
    );
    let _ = writeln!(o, "hdvrf_table_ops_total {}", p.ops);
    family(
        &mut o,
        "hdvrf_table_visible_after_seconds",
        "gauge",
        "The last commit's time from submit until every worker used it.",
    );
    let _ = writeln!(
        o,
        "hdvrf_table_visible_after_seconds {}",
        p.last_visible_after.as_secs_f64()
    );
    for (name, kind, help, n) in [
        (
            "hdvrf_rib_refused_ops_total",
            "counter",
            "Route and next-hop ops the forwarding tables refused (a route table's memory limit, say): their routes are not installed, shown as rejected and not advertised.",
            c.engine.rib.stats.rejected_ops,
        ),
        (
            "hdvrf_rib_refused_routes",
            "gauge",
            "Routes the RIB manager holds that the tables refused and do not hold.",
            c.engine.rib.refused_count() as u64,
        ),
        (
            "hdvrf_rib_routes",
            "gauge",
            "Route keys the RIB manager holds, from every source.",
            c.engine.rib.len() as u64,
        ),
        (
            "hdvrf_rib_next_hops",
            "gauge",
            "Next hop ids in use (the file's, sessions', BGP's).",
            c.engine.rib.next_hops_in_use() as u64,
        ),
        (
            "hdvrf_rib_groups",
            "gauge",
            "ECMP group ids in use.",
            c.engine.rib.groups_in_use() as u64,
        ),
        (
            "hdvrf_rib_next_hops_freed_total",
            "counter",
            "Next hop ids freed (and so reusable) as the last route let go.",
            c.engine.rib.stats.next_hops_freed,
        ),
    ] {
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {n}");
    }
    if let Some(b) = c.engine.bgp.as_ref() {
        type Of = fn(&control::bgp::speaker::Neighbor) -> u64;
        let per_neighbor: [(&str, &str, &str, Of); 6] = [
            (
                "hdvrf_bgp_routes_in",
                "gauge",
                "Routes a neighbour sent that are stored (a service imports them).",
                |n| n.rib_in.len() as u64,
            ),
            (
                "hdvrf_bgp_rib_in_bytes",
                "gauge",
                "Estimated memory of a neighbour's stored routes.",
                |n| n.rib_in_bytes() as u64,
            ),
            (
                "hdvrf_bgp_not_imported_total",
                "counter",
                "Routes a neighbour sent that no service imports: counted, not stored.",
                |n| n.not_imported,
            ),
            (
                "hdvrf_bgp_malformed_updates_total",
                "counter",
                "UPDATEs RFC 7606 handled: treat-as-withdraw, attribute discard or session reset.",
                |n| n.malformed,
            ),
            (
                "hdvrf_bgp_loops_dropped_total",
                "counter",
                "Routes dropped as loops (our AS in the path, our own next hop).",
                |n| n.loops_dropped,
            ),
            (
                "hdvrf_bgp_max_prefixes_hits_total",
                "counter",
                "Sessions stopped with Cease 6/1 for sending more than max_prefixes.",
                |n| n.prefix_limit_hits,
            ),
        ];
        for (name, kind, help, of) in per_neighbor {
            family(&mut o, name, kind, help);
            for n in &b.neighbors {
                let _ = writeln!(o, "{name}{{neighbor=\"{}\"}} {}", n.address, of(n));
            }
        }
    }
    if let Some(t) = c.engine.running.tables() {
        family(
            &mut o,
            "hdvrf_routes",
            "gauge",
            "Routes per service and table.",
        );
        for s in &t.services {
            for (table, n) in [
                ("upstream", s.upstream.len()),
                ("downstream", s.downstream.len()),
                ("hub", s.hub.len()),
            ] {
                let _ = writeln!(
                    o,
                    "hdvrf_routes{{service=\"{}\",table=\"{table}\"}} {n}",
                    esc(&s.name)
                );
            }
        }
    }
    if let Some(h) = c.engine.running.host() {
        family(
            &mut o,
            "hdvrf_host_packets_total",
            "counter",
            "Host path: punted packets into the port's kernel interface, the kernel's frames out of the port, frames the router built (ARP requests).",
        );
        for (i, st) in h.stats().iter().enumerate() {
            if h.iface(i).is_none() {
                continue;
            }
            for (dir, n) in [
                ("to_kernel", st.to_kernel),
                ("from_kernel", st.from_kernel),
                ("injected", st.injected),
            ] {
                let _ = writeln!(
                    o,
                    "hdvrf_host_packets_total{{port=\"{}\",direction=\"{dir}\"}} {n}",
                    esc(&names[i])
                );
            }
        }
        family(
            &mut o,
            "hdvrf_host_drops_total",
            "counter",
            "Host path drops: punts for a port without a kernel interface, a full tap or inject queue, the punt queue full (per core), the worker's tx ring full.",
        );
        for (i, st) in h.stats().iter().enumerate() {
            let name = esc(&names[i]);
            let _ = writeln!(
                o,
                "hdvrf_host_drops_total{{port=\"{name}\",reason=\"no_tap\"}} {}",
                st.no_tap_drops
            );
            let _ = writeln!(
                o,
                "hdvrf_host_drops_total{{port=\"{name}\",reason=\"tx\"}} {}",
                st.tx_drops
            );
        }
        for (l, s) in &cores {
            let _ = writeln!(
                o,
                "hdvrf_host_drops_total{{lcore=\"{l}\",reason=\"punt_queue_full\"}} {}",
                s.punt_drops
            );
            let _ = writeln!(
                o,
                "hdvrf_host_drops_total{{lcore=\"{l}\",reason=\"worker_tx_full\"}} {}",
                s.host_tx_drops
            );
        }
    }
    if !c.engine.neighbors.entries().is_empty() {
        family(
            &mut o,
            "hdvrf_next_hop_resolved",
            "gauge",
            "1 when ARP has resolved the next hop's MAC, 0 while packets to it are dropped as unresolved.",
        );
        for e in c.engine.neighbors.entries() {
            let _ = writeln!(
                o,
                "hdvrf_next_hop_resolved{{next_hop=\"{}\"}} {}",
                esc(&c.next_hop_name(e.next_hop)),
                u8::from(e.mac.is_some())
            );
        }
    }
    let rules = c
        .policy(None)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    if !rules.is_empty() {
        for (name, key, help) in [
            (
                "hdvrf_policy_packets_total",
                "packets",
                "Packets a hub policy rule matched.",
            ),
            (
                "hdvrf_policy_bytes_total",
                "bytes",
                "Bytes (IPv4 total length) a hub policy rule matched.",
            ),
            (
                "hdvrf_policy_drops_total",
                "dropped",
                "Packets a hub policy rule dropped (deny, or beyond a police rate).",
            ),
        ] {
            family(&mut o, name, "counter", help);
            for r in &rules {
                let _ = writeln!(
                    o,
                    "{name}{{service=\"{}\",rule=\"{}\",action=\"{}\"}} {}",
                    esc(r["service"].as_str().unwrap_or("")),
                    r["index"],
                    r["action"].as_str().unwrap_or(""),
                    r[key]
                );
            }
        }
    }
    if let Some(r) = c.engine.relay.as_ref() {
        family(
            &mut o,
            "hdvrf_sessions",
            "gauge",
            "Subscriber sessions up, per service.",
        );
        let mut per: std::collections::BTreeMap<u16, u64> = Default::default();
        for s in r.sessions.iter() {
            *per.entry(s.service).or_default() += 1;
        }
        for (i, name) in c.service_names().iter().enumerate() {
            let _ = writeln!(
                o,
                "hdvrf_sessions{{service=\"{}\"}} {}",
                esc(name),
                per.get(&(i as u16)).copied().unwrap_or(0)
            );
        }
        family(
            &mut o,
            "hdvrf_dhcp_relay_packets_total",
            "counter",
            "DHCP messages relayed to address servers and to clients.",
        );
        let _ = writeln!(
            o,
            "hdvrf_dhcp_relay_packets_total{{direction=\"to_server\"}} {}",
            r.stats.to_server
        );
        let _ = writeln!(
            o,
            "hdvrf_dhcp_relay_packets_total{{direction=\"to_client\"}} {}",
            r.stats.to_client
        );
        family(
            &mut o,
            "hdvrf_dhcp_relay_drops_total",
            "counter",
            "Frames the relay dropped, by reason.",
        );
        let mut reasons: Vec<_> = r.stats.drops.iter().collect();
        reasons.sort();
        for (why, n) in reasons {
            let _ = writeln!(o, "hdvrf_dhcp_relay_drops_total{{reason=\"{why}\"}} {n}");
        }
        if let Some(j) = r.journal.as_ref() {
            let st = j.stats();
            for (name, kind, help, n) in [
                (
                    "hdvrf_session_journal_write_errors_total",
                    "counter",
                    "Session journal appends, syncs and rewrites that failed (a full disk, say); the sessions stay up.",
                    st.write_errors,
                ),
                (
                    "hdvrf_session_journal_torn_lines_total",
                    "counter",
                    "Session journal lines found cut short at start (a crash mid-write) and dropped.",
                    st.torn_lines,
                ),
                (
                    "hdvrf_session_journal_bad_lines_total",
                    "counter",
                    "Session journal lines skipped at start as unreadable (not UTF-8, not JSON).",
                    st.bad_lines,
                ),
                (
                    "hdvrf_session_journal_compactions_total",
                    "counter",
                    "Session journal rewrites while running (grown past its live sessions, or missing a change).",
                    st.compactions,
                ),
                (
                    "hdvrf_session_journal_lines",
                    "gauge",
                    "Lines in the session journal file now.",
                    st.lines,
                ),
            ] {
                family(&mut o, name, kind, help);
                let _ = writeln!(o, "{name} {n}");
            }
        }
    }
    family(
        &mut o,
        "hdvrf_mbufs_in_use",
        "gauge",
        "Mbufs handed out from the pools.",
    );
    let _ = writeln!(o, "hdvrf_mbufs_in_use {}", c.engine.running.mbufs_in_use());
    o
}
