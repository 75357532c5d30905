"""hdvrf's BGP speaker against a real GoBGP, with a real Kea:

    netns A (clients) [tap] <--fd--> access0   netns R (hdvrf, AS 65000)
                                     core0 <--fd--> [tap] netns C (the core)
                      rk 192.0.2.254 <--veth--> kk 192.0.2.50 kea-dhcp4 (netns K)
                      rg 198.18.0.1  <--veth--> gr 198.18.0.2 gobgpd, AS 65000 (netns G)

- A client's lease is advertised to GoBGP: RD 65000:100, label 1001
  (blue's VPN label), target 65000:2, next hop 198.18.0.1; so are 1,000
  more clients' (tests/e2e/dhcp_load.py), each with the same attributes.
- GoBGP's labelled 0/0 (RD 65000:1, target 65000:1, label 3001) lands in
  blue's upstream table, through next hop "hub" (transport label 100):
  the client's packets leave the core port with labels 100 and 3001.
- GoBGP withdraws it: the route goes and client packets are dropped as
  no route. RELEASE withdraws the client's route from GoBGP.
- GoBGP restarted: hdvrf reconnects, GoBGP relearns the live session's
  route, and the 0/0 it no longer has is gone from hdvrf (nothing stale).
  The new GoBGP's own routes: hdvrf's RIB-in equals GoBGP's Adj-RIB-Out,
  GoBGP's Adj-RIB-In equals hdvrf's RIB-out, and `show bgp rib out
  198.18.0.2` shows each route with the attributes GoBGP received
  (LOCAL_PREF 100 and an empty AS_PATH, iBGP); traffic takes the new 0/0,
  and hdvrf's mbufs in use are back where they were before the restart.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import (
    HDVRF_BIN,
    HERE,
    NS_PREFIX,
    PYTHON,
    LineProc,
    captured_frames,
    delete_netns,
    delete_stale_netns,
    make_netns,
    router_header,
    run,
    send_frames,
    start_kea,
    start_router,
    start_sniffer,
    veth,
    wait_until,
)
from test_sessions import KEA_ADDR, frames_from
from topology import labels_of

MAC1, MAC2 = "02:00:5e:20:00:01", "02:00:5e:20:00:02"
API = ["-u", "127.0.0.1", "-p", "50051"]
ME, PEER = "198.18.0.1", "198.18.0.2"


def hdvrf_config(path: Path, if_a: str, if_c: str, sock: Path) -> None:
    path.write_text(
        router_header(sock)
        + f"""
[[port]]
name = "access0"
device = "net_tap0,iface={if_a}"
role = "access"

[[port]]
name = "core0"
device = "net_tap1,iface={if_c}"
role = "core"

[[next_hop]]
name = "hub"
port = "core0"
mac = "02:00:5e:00:02:09"
labels = [100]

[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
address_server = "{KEA_ADDR}"
access = [ {{ port = "access0" }} ]
route_distinguisher = "65000:100"
import_targets = ["65000:1"]
export_targets = ["65000:2"]

[bgp]
asn = 65000
router_id = "{ME}"

[[bgp.neighbor]]
address = "{PEER}"
remote_asn = 65000
hold_time = 9
via = "hub"
"""
    )


GOBGP_CONFIG = f"""[global.config]
  as = 65000
  router-id = "{PEER}"
  port = 179
  local-address-list = ["{PEER}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{ME}"
    peer-as = 65000
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"""


BULK = 1000


def kea_config(path: Path, iface: str, leases: Path) -> None:
    """Room for the bulk clients: a /16 with 3,800 addresses."""
    path.write_text(
        json.dumps(
            {
                "Dhcp4": {
                    "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "udp"},
                    "lease-database": {"type": "memfile", "persist": True, "name": str(leases), "lfc-interval": 0},
                    "valid-lifetime": 3600,
                    "subnet4": [{"id": 1, "subnet": "10.0.0.0/16", "pools": [{"pool": "10.0.1.0 - 10.0.15.254"}]}],
                    "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "INFO"}],
                }
            }
        )
    )


class Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        pid = os.getpid()
        self.ns_r, self.ns_a, self.ns_k, self.ns_c, self.ns_g = (f"{NS_PREFIX}{pid}-b{x}" for x in "rakcg")
        self.if_a, self.if_c = f"hdv{pid}ba", f"hdv{pid}bc"
        self.sock = tmp / "hdvrf.sock"
        self.procs: list[LineProc] = []
        self.made: list[str] = []
        self.gobgp: LineProc | None = None

    def start_gobgp(self) -> None:
        cfg = self.tmp / "gobgpd.toml"
        cfg.write_text(GOBGP_CONFIG)
        self.gobgp = LineProc(["ip", "netns", "exec", self.ns_g, "gobgpd", "-t", "toml", "-f", str(cfg), "--api-hosts", "127.0.0.1:50051"], "gobgpd")
        self.procs.append(self.gobgp)
        wait_until(lambda: self.gobgp_cli("neighbor", "-j") is not None, 30, "gobgpd's API")

    def gobgp_cli(self, *args: str):
        p = run("ip", "netns", "exec", self.ns_g, "gobgp", *API, *args, check=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def gobgp_rib(self) -> dict[str, tuple[list[int], str, list[str]]]:
        """GoBGP's VPNv4 RIB: "RD:prefix" -> (labels, next hop, targets)."""
        out = {}
        for key, paths in (self.gobgp_cli("global", "rib", "-a", "vpnv4", "-j") or {}).items():
            best = next((p for p in paths if p.get("best")), None)
            if best is None:
                continue
            attrs = best["attrs"]
            nh = next((a["nexthop"] for a in attrs if a["type"] == 14), None)
            rts = [c["value"] for a in attrs if a["type"] == 16 for c in a["value"] if c.get("subtype") == 2]
            out[key] = (best["nlri"]["labels"], nh, rts)
        return out

    def gobgp_adj(self, direction: str) -> dict[str, list[tuple[list[int], str, list[str]]]]:
        """GoBGP's VPNv4 Adj-RIB-In from hdvrf (`adj-in`: what hdvrf
        advertised) or Adj-RIB-Out toward it (`adj-out`): "RD:prefix" ->
        each path's (labels, next hop, targets), to see duplicates too."""
        out: dict[str, list] = {}
        for key, paths in (self.gobgp_cli("neighbor", ME, direction, "-a", "vpnv4", "-j") or {}).items():
            for p in paths:
                attrs = p["attrs"]
                nh = next((a["nexthop"] for a in attrs if a["type"] == 14), None)
                rts = sorted(c["value"] for a in attrs if a["type"] == 16 for c in a["value"] if c.get("subtype") == 2)
                out.setdefault(key, []).append((p["nlri"]["labels"], nh, rts))
        return out

    def gobgp_received(self) -> dict[str, tuple]:
        """GoBGP's Adj-RIB-In from hdvrf with every attribute hdvrf
        sends: "RD:prefix" -> (labels, next hop, targets, AS_PATH,
        LOCAL_PREF, MED); an attribute absent is None (AS_PATH: [])."""
        out = {}
        for key, paths in (self.gobgp_cli("neighbor", ME, "adj-in", "-a", "vpnv4", "-j") or {}).items():
            for p in paths:
                attrs = {a["type"]: a for a in p["attrs"]}
                rts = sorted(c["value"] for c in attrs.get(16, {}).get("value", []) if c.get("subtype") == 2)
                as_path = [n for seg in attrs.get(2, {}).get("as_paths") or [] for n in seg.get("asns") or []]
                out[key] = (p["nlri"]["labels"], attrs[14]["nexthop"], rts, as_path, attrs.get(5, {}).get("value"), attrs.get(4, {}).get("metric"))
        return out

    def sent(self, peer: str) -> dict[str, tuple]:
        """`show bgp rib out PEER` in gobgp_received's form."""
        return {
            f"{r['rd']}:{r['prefix']}": ([r["label"]], r["next_hop"], sorted(r["route_targets"]), r["as_path"], r["local_pref"], r["med"])
            for r in self.ctl_json("show", "bgp", "rib", "out", peer)
        }

    def rib(self, direction: str) -> dict[str, list[tuple[list[int], str, list[str]]]]:
        """hdvrf's RIB-in or RIB-out in gobgp_adj's form."""
        out: dict[str, list] = {}
        for r in self.ctl_json("show", "bgp", "rib", direction):
            out.setdefault(f"{r['rd']}:{r['prefix']}", []).append(([r["label"]], r["next_hop"], sorted(r["route_targets"])))
        return out

    def mbufs(self) -> int:
        return self.ctl_json("show", "stats")["mbufs_in_use"]

    def ctl_json(self, *args: str):
        return json.loads(run(HDVRF_BIN, "ctl", "-s", str(self.sock), "-j", *args).stdout)

    def established(self) -> bool:
        return self.ctl_json("show", "bgp", "neighbors")[0]["state"] == "Established"

    def upstream(self) -> dict[str, str]:
        return {r["prefix"]: r["next_hop"] for r in self.ctl_json("show", "routes", "blue", "upstream")}

    def client(self, mac: str, *action: str) -> list[str]:
        p = run("ip", "netns", "exec", self.ns_a, PYTHON, str(HERE / "dhcp_client.py"), self.if_a, mac, "0", *action, check=False, timeout=60)
        assert p.returncode == 0, f"dhcp client {mac} {action}: {p.stderr.strip()}"
        return p.stdout.split()

    def outcome(self, name: str) -> int:
        return self.ctl_json("show", "stats")["total"]["outcomes"].get(name, 0)


@pytest.fixture
def env(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, tap interfaces, DPDK)")
    for tool in ("kea-dhcp4", "gobgpd", "gobgp"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: scripts/setup installs kea-dhcp4-server and gobgpd")
    delete_stale_netns()
    e = Env(tmp_path)
    try:
        for ns in (e.ns_r, e.ns_a, e.ns_k, e.ns_c, e.ns_g):
            e.made.append(ns)
            make_netns(ns)
        veth(("rk", e.ns_r, "192.0.2.254/24"), ("kk", e.ns_k, f"{KEA_ADDR}/24"))
        veth(("rg", e.ns_r, f"{ME}/24"), ("gr", e.ns_g, f"{PEER}/24"))
        run("ip", "-n", e.ns_k, "route", "add", "10.0.0.0/8", "via", "192.0.2.254")
        kea_cfg = tmp_path / "kea.json"
        kea_config(kea_cfg, "kk", tmp_path / "leases.csv")
        start_kea(e.procs, e.ns_k, "kk", kea_cfg, tmp_path)
        e.start_gobgp()
        e.cfg = tmp_path / "spoke.toml"
        hdvrf_config(e.cfg, e.if_a, e.if_c, e.sock)
        e.hdvrf = start_router(e.procs, e.ns_r, e.cfg, ((e.if_a, e.ns_a), (e.if_c, e.ns_c)))
        yield e
    finally:
        for p in e.procs:
            p.kill()
        for ns in e.made:
            delete_netns(ns)




def test_routes_both_ways_with_gobgp(env: Env):
    e = env
    wait_until(e.established, 30, "the session with GoBGP Established")

    # A lease: its host route is advertised with blue's RD, label, target
    # and our next hop.
    a1 = e.client(MAC1, "lease")[1]
    key1 = f"65000:100:{a1}/32"
    wait_until(lambda: key1 in e.gobgp_rib(), 20, f"{key1} in GoBGP's RIB")
    assert e.gobgp_rib()[key1] == ([1001], ME, ["65000:2"]), e.gobgp_rib()

    # 1,000 more clients (raw-frame DHCP, 32 exchanges in flight): every
    # session's route is in GoBGP's RIB with the right attributes.
    out = run("ip", "netns", "exec", e.ns_a, PYTHON, str(HERE / "dhcp_load.py"), e.if_a, "0", str(BULK), "48", "32", timeout=120).stdout
    assert f"acked={BULK}" in out, out
    sessions = {s["address"] for s in e.ctl_json("show", "sessions")}
    assert len(sessions) == BULK + 1 and a1 in sessions
    keys = {f"65000:100:{a}/32" for a in sessions}
    wait_until(lambda: keys <= set(e.gobgp_rib()), 60, f"{BULK + 1} session routes in GoBGP's RIB")
    rib = e.gobgp_rib()
    assert set(rib) == keys, set(rib) ^ keys
    assert {v == ([1001], ME, ["65000:2"]) for v in rib.values()} == {True}, [v for v in rib.values() if v != ([1001], ME, ["65000:2"])][:5]
    bulk = keys - {key1}

    # No upstream route yet: the client's packets have nowhere to go.
    nr0 = e.outcome("drop_no_route")
    send_frames(e.procs, e.ns_a, e.if_a, frames_from(MAC1, a1, 3), e.tmp / "before.hex")
    wait_until(lambda: e.outcome("drop_no_route") >= nr0 + 3, 10, "3 packets dropped as no route")

    # GoBGP's labelled default route lands in blue's upstream table ...
    assert e.gobgp_cli("global", "rib", "-a", "vpnv4", "add", "0.0.0.0/0", "label", "3001", "rd", "65000:1", "rt", "65000:1", "nexthop", PEER) is not None
    wait_until(lambda: "0.0.0.0/0" in e.upstream(), 20, "GoBGP's 0/0 in blue's upstream table")
    assert e.upstream() == {"0.0.0.0/0": "~bgp/hub/3001"}, e.upstream()
    learnt = e.ctl_json("show", "bgp", "rib", "in")
    assert [(r["prefix"], r["rd"], r["label"], r["best_for"]) for r in learnt] == [("0.0.0.0/0", "65000:1", 3001, ["blue"])], learnt

    # ... and the client's packets use it: out of the core port with the
    # hub's transport label over GoBGP's VPN label.
    sniff = start_sniffer(e.procs, e.ns_c, e.if_c, b"x" * 20, 5, 20)
    send_frames(e.procs, e.ns_a, e.if_a, frames_from(MAC1, a1, 5), e.tmp / "up.hex")
    assert sniff.wait(timeout=30) == 0, sniff.describe()
    got = captured_frames(sniff)
    assert len(got) == 5 and all(labels_of(f) == [100, 3001] for f in got), [f.hex() for f in got]

    # GoBGP withdraws it: the route goes, and packets are no route again.
    assert e.gobgp_cli("global", "rib", "-a", "vpnv4", "del", "0.0.0.0/0", "label", "3001", "rd", "65000:1") is not None
    wait_until(lambda: e.upstream() == {}, 20, "the 0/0 withdrawn from blue's upstream table")
    nr1 = e.outcome("drop_no_route")
    send_frames(e.procs, e.ns_a, e.if_a, frames_from(MAC1, a1, 2), e.tmp / "after.hex")
    wait_until(lambda: e.outcome("drop_no_route") >= nr1 + 2, 10, "2 packets dropped as no route")

    # A second client; then the first releases: only its route is withdrawn.
    a2 = e.client(MAC2, "lease")[1]
    key2 = f"65000:100:{a2}/32"
    wait_until(lambda: key2 in e.gobgp_rib(), 20, f"{key2} in GoBGP's RIB")
    e.client(MAC1, "release", a1, KEA_ADDR)
    wait_until(lambda: key1 not in e.gobgp_rib(), 20, f"{key1} withdrawn from GoBGP")
    assert set(e.gobgp_rib()) == bulk | {key2}, set(e.gobgp_rib()) ^ (bulk | {key2})

    # GoBGP announces 0/0 again, then restarts without it: hdvrf comes
    # back to it, GoBGP relearns the live session, and the 0/0 is gone.
    e.gobgp_cli("global", "rib", "-a", "vpnv4", "add", "0.0.0.0/0", "label", "3002", "rd", "65000:1", "rt", "65000:1", "nexthop", PEER)
    wait_until(lambda: e.upstream() == {"0.0.0.0/0": "~bgp/hub/3002"}, 20, "the new 0/0")
    base = e.mbufs()
    e.gobgp.kill()
    wait_until(lambda: not e.established(), 30, "the session down after GoBGP died")
    wait_until(lambda: e.upstream() == {}, 10, "GoBGP's routes gone with its session")
    e.start_gobgp()
    wait_until(e.established, 60, "the session back with the new GoBGP")
    wait_until(lambda: len(e.gobgp_rib()) == BULK + 1, 30, "every live session relearnt by GoBGP")
    rib = e.gobgp_rib()
    assert set(rib) == bulk | {key2}, set(rib) ^ (bulk | {key2})
    assert rib[key2] == ([1001], ME, ["65000:2"])
    assert e.upstream() == {}, e.upstream()
    n = e.ctl_json("show", "bgp", "neighbors")[0]
    assert n["routes_in"] == 0 and n["routes_out"] == BULK + 1, n

    # The new GoBGP announces routes of its own: each RIB equals the
    # other side's view of it, both ways, and the tables follow.
    for prefix, label in (("0.0.0.0/0", "3003"), ("10.200.0.0/16", "3004")):
        assert e.gobgp_cli("global", "rib", "-a", "vpnv4", "add", prefix, "label", label, "rd", "65000:1", "rt", "65000:1", "nexthop", PEER) is not None
    want_up = {"0.0.0.0/0": "~bgp/hub/3003", "10.200.0.0/16": "~bgp/hub/3004"}
    wait_until(lambda: e.upstream() == want_up, 20, f"GoBGP's new routes in blue's upstream table ({e.upstream()})")
    adj_out = e.gobgp_adj("adj-out")
    assert sorted(adj_out) == ["65000:1:0.0.0.0/0", "65000:1:10.200.0.0/16"], adj_out
    wait_until(lambda: e.rib("in") == adj_out, 10, f"hdvrf's RIB-in equal to GoBGP's Adj-RIB-Out\n{e.rib('in')}\n{adj_out}")
    wait_until(lambda: e.gobgp_adj("adj-in") == e.rib("out"), 10, "GoBGP's Adj-RIB-In equal to hdvrf's RIB-out")
    assert len(e.rib("out")) == BULK + 1 and all(len(v) == 1 for v in e.rib("out").values())
    # What hdvrf shows as sent to GoBGP is what GoBGP received, attribute
    # by attribute: an iBGP peer's LOCAL_PREF 100, an empty AS_PATH.
    sent = e.sent(PEER)
    assert len(sent) == BULK + 1, len(sent)
    received = e.gobgp_received()
    assert sent == received, [(k, sent.get(k), received.get(k)) for k in set(sent) | set(received) if sent.get(k) != received.get(k)][:5]
    assert {(tuple(v[3]), v[4], v[5]) for v in sent.values()} == {((), 100, None)}, sent
    n = e.ctl_json("show", "bgp", "neighbors")[0]
    assert n["routes_in"] == 2 and n["routes_out"] == BULK + 1, n
    # Traffic takes the relearnt default, and no mbuf stays behind.
    up0 = e.outcome("fwd_upstream")
    send_frames(e.procs, e.ns_a, e.if_a, frames_from(MAC2, a2, 5), e.tmp / "relearnt.hex")
    wait_until(lambda: e.outcome("fwd_upstream") >= up0 + 5, 10, "5 packets upstream by GoBGP's new 0/0")
    assert e.outcome("fwd_upstream") == up0 + 5
    wait_until(lambda: e.mbufs() == base, 10, f"mbufs in use back to {base} (now {e.mbufs()})")
