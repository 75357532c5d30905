"""hdvrf as a spoke router between two namespaces, run inside a third:

    netns A (client)        netns R (hdvrf and its kernel)         netns B (core peer)
    [tap a] <--fd--> access0  hdvrf  core0 <--fd--> [tap b: 10.200.0.2/24]
                                  |
                             hd-core0 (host tap, 10.200.0.1/24, core0's MAC)

What it shows (issue 5): the router's core address answers ping and
accepts TCP from the core side through the host path; the hub next hop,
given only by address, is resolved by ARP; a next hop nobody answers for
counts its packets as unresolved while ARP keeps asking; metrics are
scraped; a static route added with `hdvrf ctl` takes the traffic at once;
a trace names the table, the route and the labels; shutdown returns every
mbuf. Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from conftest import (
    HDVRF_BIN,
    HERE,
    MBUFS_RE,
    NS_PREFIX,
    PYTHON,
    LineProc,
    captured_frames,
    delete_netns,
    delete_stale_netns,
    link_exists,
    make_netns,
    run,
    send_frames,
    start_sniffer,
    wait_until,
)

CORE_NET = "10.200.0"
ROUTER_CORE = f"{CORE_NET}.1"
PEER_CORE = f"{CORE_NET}.2"
GHOST = f"{CORE_NET}.99"
PEER_MAC = "02:00:5e:00:02:01"
HUB2_MAC = "02:00:5e:00:02:02"
CLIENT_MAC = "02:00:5e:00:0a:0a"
CLIENT = "10.0.0.10"
METRICS = "127.0.0.1:9469"
TCP_PORT = 1790
_seq = itertools.count()


def config(path: Path, if_a: str, if_b: str, sock: Path) -> Path:
    path.write_text(
        f"""# written by tests/e2e/test_router.py
[dataplane]
main_lcore = 0
workers = [1]
forward_mode = "router"
hugepages = "auto"
memory_mb = 512
idle_sleep_max_us = 100
stats_interval_ms = 0

[control]
socket = "{sock}"
metrics = "{METRICS}"

[router]
role = "spoke"
label_base = 1000
label_count = 64
transport_label = 1000

[[port]]
name = "access0"
device = "net_tap0,iface={if_a}"
role = "access"

[[port]]
name = "core0"
device = "net_tap1,iface={if_b}"
role = "core"
address = "{ROUTER_CORE}/24"

# The hub: resolved by ARP.
[[next_hop]]
name = "hub"
port = "core0"
address = "{PEER_CORE}"
labels = [100, 2001]

# A second path, static.
[[next_hop]]
name = "hub2"
port = "core0"
mac = "{HUB2_MAC}"
labels = [100, 2002]

# Nobody answers for this one.
[[next_hop]]
name = "ghost"
port = "core0"
address = "{GHOST}"
labels = [100, 2003]

[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
route_distinguisher = "65000:1"
import_targets = ["65000:100"]
export_targets = ["65000:200"]
anti_spoofing = false
access = [ {{ port = "access0" }} ]
upstream = [ {{ prefix = "0.0.0.0/0", next_hop = "hub" }} ]
"""
    )
    return path


@dataclass
class Router:
    hdvrf: LineProc
    sock: Path
    ns_r: str
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    access_mac: str
    procs: list[LineProc] = field(default_factory=list)

    def ctl(self, *args: str, check: bool = True):
        p = run(HDVRF_BIN, "ctl", "-s", str(self.sock), *args, check=check)
        return p

    def ctl_json(self, *args: str):
        return json.loads(self.ctl("-j", *args).stdout)

    def in_ns(self, netns: str, argv: list[str], name: str) -> LineProc:
        p = LineProc(["ip", "netns", "exec", netns] + argv, name)
        self.procs.append(p)
        return p

    def sniff(self, marker: bytes, count: int, timeout: float) -> LineProc:
        return start_sniffer(self.procs, self.ns_b, self.if_b, marker, count, timeout)

    def send_from_client(self, frames: list[bytes], tmp: Path) -> None:
        send_frames(self.procs, self.ns_a, self.if_a, frames, tmp)


@pytest.fixture
def router(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, tap interfaces, DPDK)")
    delete_stale_netns()
    n, pid = next(_seq), os.getpid()
    ns_r, ns_a, ns_b = (f"{NS_PREFIX}{pid}-r{n}{x}" for x in "rab")
    if_a, if_b = f"hdv{pid}r{n}a", f"hdv{pid}r{n}b"
    made = []
    try:
        for ns in (ns_r, ns_a, ns_b):
            made.append(ns)
            make_netns(ns)
        sock = tmp_path / "hdvrf.sock"
        cfg = config(tmp_path / "spoke.toml", if_a, if_b, sock)
        hd = LineProc(["ip", "netns", "exec", ns_r, HDVRF_BIN, "run", "--config", str(cfg)], "hdvrf")
        r = Router(hd, sock, ns_r, ns_a, ns_b, if_a, if_b, "")
        try:
            hd.wait_line(lambda l: l.startswith("hdvrf: management socket"), 60, "hdvrf's socket line")
            line = hd.wait_line(lambda l: l.startswith("hdvrf: port access0 = "), 5, "access0's MAC")
            r.access_mac = line.split(" mac ")[1].strip()
            for iface in (if_a, if_b):
                wait_until(lambda: link_exists(iface, ns_r), 10, f"tap {iface} in {ns_r}")
            run("ip", "-n", ns_r, "link", "set", "dev", if_a, "netns", ns_a)
            run("ip", "-n", ns_r, "link", "set", "dev", if_b, "netns", ns_b)
            # The core peer gets a MAC of its own (a net_tap's kernel side
            # starts with the port's), then its address.
            run("ip", "-n", ns_b, "link", "set", "dev", if_b, "address", PEER_MAC)
            run("ip", "-n", ns_b, "addr", "add", f"{PEER_CORE}/24", "dev", if_b)
            for ns, iface in ((ns_a, if_a), (ns_b, if_b)):
                run("ip", "-n", ns, "link", "set", "dev", iface, "up")
            yield r
        finally:
            for p in r.procs:
                p.kill()
            hd.kill()
    finally:
        for ns in made:
            delete_netns(ns)


def client_frames(r: Router, marker: bytes, dst: str, n: int) -> list[bytes]:
    return [
        bytes(
            Ether(dst=r.access_mac, src=CLIENT_MAC)
            / IP(src=CLIENT, dst=dst, ttl=64)
            / UDP(sport=40000 + i, dport=9)
            / Raw(marker + b"#%04d" % i)
        )
        for i in range(n)
    ]


def labels_of(frame: bytes) -> list[int]:
    """The MPLS label stack of an untagged frame."""
    assert frame[12:14] == b"\x88\x47", f"not MPLS: {frame[:20].hex()}"
    out, off = [], 14
    while True:
        lse = int.from_bytes(frame[off : off + 4], "big")
        out.append(lse >> 12)
        off += 4
        if lse & 0x100:
            return out


def mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def exchange(r: Router, tmp: Path, dst: str, n: int, tag: str) -> list[bytes]:
    marker = f"HDVRF-{tag}-".encode() + uuid.uuid4().hex[:12].encode()
    sniffer = r.sniff(marker, n, 30)
    r.send_from_client(client_frames(r, marker, dst, n), tmp / f"{tag}.hex")
    assert sniffer.wait(timeout=60) == 0, sniffer.describe()
    got = captured_frames(sniffer)
    assert len(got) == n, f"{len(got)} of {n} {tag} frames reached the core peer\n{r.hdvrf.describe()}"
    return got


def scrape(r: Router) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen('http://{METRICS}/metrics', timeout=5).read().decode())"
    return run("ip", "netns", "exec", r.ns_r, PYTHON, "-c", code).stdout


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
            found = True
    assert found, f"no sample {name}{labels} in the metrics"
    return total


def test_spoke_host_path_arp_ctl_route_trace_and_metrics(router: Router, tmp_path):
    r = router

    svc = r.ctl_json("show", "services")[0]
    assert (svc["route_distinguisher"], svc["import_targets"], svc["export_targets"]) == (
        "65000:1",
        ["65000:100"],
        ["65000:200"],
    ), svc

    # The router's core address answers ping from the core peer (ARP and
    # ICMP through the host tap, both ways).
    wait_until(
        lambda: run("ip", "netns", "exec", r.ns_b, "ping", "-c", "1", "-W", "1", ROUTER_CORE, check=False).returncode == 0,
        15,
        f"a ping reply from {ROUTER_CORE}",
    )
    p = run("ip", "netns", "exec", r.ns_b, "ping", "-c", "5", "-i", "0.2", "-W", "2", ROUTER_CORE, check=False)
    assert " 5 received" in p.stdout, p.stdout + p.stderr

    # TCP from the core peer reaches a kernel socket on the router's
    # address (what BGP needs).
    server = r.in_ns(
        r.ns_r,
        [
            PYTHON,
            "-c",
            "import socket,sys\n"
            f"s=socket.create_server(('{ROUTER_CORE}',{TCP_PORT}))\n"
            "print('listening',flush=True)\n"
            "c,a=s.accept(); d=c.recv(100); c.sendall(b'pong:'+d); print('peer',a[0],d.decode(),flush=True)\n",
        ],
        "tcp server",
    )
    server.wait_line(lambda l: l == "listening", 10, "the TCP server")
    client = run(
        "ip", "netns", "exec", r.ns_b, PYTHON, "-c",
        "import socket\n"
        f"c=socket.create_connection(('{ROUTER_CORE}',{TCP_PORT}),timeout=10)\n"
        "c.sendall(b'hello'); print(c.recv(100).decode())\n",
    )
    assert client.stdout.strip() == "pong:hello", client.stdout + client.stderr
    server.wait_line(lambda l: l == f"peer {PEER_CORE} hello", 10, "the server's view of the peer")

    # The hub next hop was resolved by ARP to the peer's MAC; the ghost
    # was asked for and stays unresolved.
    def hops():
        return {h["name"]: h for h in r.ctl_json("show", "next-hops")}

    wait_until(lambda: hops()["hub"]["state"] == "resolved", 10, "the hub next hop resolved")
    h = hops()
    assert h["hub"]["mac"] == PEER_MAC, h["hub"]
    assert h["hub2"]["state"] == "static" and h["hub2"]["mac"] == HUB2_MAC, h["hub2"]
    assert h["ghost"]["state"] == "unresolved" and h["ghost"]["mac"] is None, h["ghost"]
    assert h["ghost"]["arp_requests"] >= 1, h["ghost"]

    # Client traffic follows the default route to the hub, labelled.
    got = exchange(r, tmp_path, "198.51.100.7", 20, "default")
    for f in got:
        assert mac_str(f[0:6]) == PEER_MAC, f[:14].hex()
        assert labels_of(f) == [100, 2001], f[:30].hex()

    # A static route added with ctl takes the traffic at once.
    p = r.ctl("route", "add", "blue", "upstream", "198.51.100.0/24", "hub2")
    assert p.returncode == 0, p.stderr
    routes = r.ctl_json("show", "routes", "blue", "upstream")
    assert any(x["prefix"] == "198.51.100.0/24" and x["next_hop"] == "hub2" for x in routes), routes
    got = exchange(r, tmp_path, "198.51.100.7", 20, "static")
    for f in got:
        assert mac_str(f[0:6]) == HUB2_MAC, f[:14].hex()
        assert labels_of(f) == [100, 2002], f[:30].hex()

    # A trace of the next three client packets names the table, the
    # route and the labels pushed.
    r.ctl("trace", "add", "3", "access0")
    exchange(r, tmp_path, "198.51.100.9", 3, "traced")
    traced = wait_until(
        lambda: (lambda t: t if len(t["packets"]) >= 3 else None)(r.ctl_json("trace", "show")),
        10,
        "three traced packets",
    )
    for t in traced["packets"][:3]:
        assert t["outcome"] == "fwd_upstream", t
        assert t["service"] == "blue" and t["table"] == "upstream", t
        assert t["route"]["prefix"] == "198.51.100.0/24" and t["route"]["next_hop"] == "hub2", t
        assert t["labels_out"] == [100, 2002], t
        assert t["in_port"] == "access0" and t["out_port"] == "core0", t
    human = r.ctl("trace", "show").stdout
    assert "198.51.100.0/24" in human and "upstream" in human, human

    # A route to the ghost: its packets are counted as unresolved, never
    # sent, and ARP keeps asking for it on the core link.
    r.ctl("route", "add", "blue", "upstream", "203.0.113.0/24", "ghost")
    before = r.ctl_json("show", "drops")["reasons"].get("drop_unresolved_next_hop", 0)
    who_has = r.sniff(bytes([10, 200, 0, 99]), 1, 10)
    marker = b"HDVRF-ghost-" + uuid.uuid4().hex[:12].encode()
    r.send_from_client(client_frames(r, marker, "203.0.113.5", 10), tmp_path / "ghost.hex")
    wait_until(
        lambda: r.ctl_json("show", "drops")["reasons"].get("drop_unresolved_next_hop", 0) >= before + 10,
        10,
        "10 packets counted as drop_unresolved_next_hop",
    )
    assert who_has.wait(timeout=30) == 0, who_has.describe()
    arp = captured_frames(who_has)
    assert len(arp) == 1 and arp[0][12:14] == b"\x08\x06", [f.hex() for f in arp]
    assert arp[0][20:22] == b"\x00\x01" and arp[0][38:42] == bytes([10, 200, 0, 99]), arp[0].hex()

    # Reload: the file now gives the hub another VPN label. The route
    # added with ctl is gone (the file does not have it) and traffic takes
    # the default route with the new label, without a restart.
    cfg = Path(r.hdvrf.cmd[-1])
    cfg.write_text(cfg.read_text().replace("labels = [100, 2001]", "labels = [100, 2011]"))
    rep = r.ctl_json("reload")
    assert rep["next_hops"]["changed"] == 1 and rep["removed"] == 2, rep
    got = exchange(r, tmp_path, "198.51.100.7", 10, "reloaded")
    for f in got:
        assert mac_str(f[0:6]) == PEER_MAC, f[:14].hex()
        assert labels_of(f) == [100, 2011], f[:30].hex()
    assert {h["name"]: h for h in r.ctl_json("show", "next-hops")}["hub"]["state"] == "resolved"

    # The metrics say the same.
    text = scrape(r)
    assert metric(text, "hdvrf_packets_total", outcome="fwd_upstream") >= 53
    assert metric(text, "hdvrf_packets_total", outcome="drop_unresolved_next_hop") >= 10
    assert metric(text, "hdvrf_next_hop_resolved", next_hop="hub") == 1
    assert metric(text, "hdvrf_next_hop_resolved", next_hop="ghost") == 0
    assert metric(text, "hdvrf_host_packets_total", port="core0", direction="to_kernel") >= 5
    assert metric(text, "hdvrf_host_packets_total", port="core0", direction="from_kernel") >= 5
    assert metric(text, "hdvrf_host_packets_total", port="core0", direction="injected") >= 1
    ports = {p["name"]: p for p in r.ctl_json("show", "ports")}
    assert ports["core0"]["host"]["iface"] == "hd-core0", ports["core0"]
    assert ports["access0"]["host"]["iface"] is None, ports["access0"]

    # Shutdown: every mbuf back, punted ones included.
    rc = r.hdvrf.stop(timeout=30)
    assert rc == 0, r.hdvrf.describe()
    mbufs = [m for m in map(MBUFS_RE.match, r.hdvrf.lines()) if m]
    assert len(mbufs) == 1 and mbufs[0].group(1) == mbufs[0].group(2), r.hdvrf.describe()
    assert not link_exists("hd-core0", r.ns_r), "the host tap outlived hdvrf"
