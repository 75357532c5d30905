"""The end-to-end HD-VRF topology (scripts/topology.py): a spoke and a hub
hdvrf joined by an MPLS core link (a Linux bridge), iBGP between them over
that link, blue and red services with overlapping pools, a Kea per
service, an uplink host behind the hub:

    A, B (blue), C (red) -- spoke (1000: transport, 1001 blue, 1002 red)
        == core bridge == hub (2000: transport, 2001 blue, 2002 red) -- U 203.0.113.1

One topology for the whole module (it takes a few seconds to build: two
routers, two Keas, three DHCP clients). The scenarios run in file order:
1, 3, 4 (traffic only), 5 (a release; B leases again at the end), 6 (the
hub's BGP cut; let back in at the end), then 2, which reloads the hub's
configuration, the reloads that change what a router advertises (a hub
route at the hub, a downstream route at the spoke, each added and
removed again), and the checks found on the way (one reloads both
routers, one reloads the spoke with a route on a live session's
address, one ends a session on an address the spoke's file routes);
then the faults (the core link down and up, blue's Kea, the
spoke and the hub each killed with SIGKILL and started again), after each
of which the topology must converge (`converged`: sessions equal to
Kea's leases, each RIB to the other side's view, the tables to the RIBs)
with no mbuf left behind by a router that stayed up; the last test stops
both routers.

Counters are read before and after, and each wait polls a condition
(`wait_until`); frames are captured with AF_PACKET sockets opened inside
the namespaces, which capture from the moment they exist.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import NS_PREFIX, delete_stale_netns

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from topology import (  # noqa: E402
    Capture,
    run,
    HUB_CORE,
    HUB_EXPORT,
    HUB_RD,
    HUB_TRANSPORT,
    HUB_UPLINK,
    HUB_VPN,
    KEA,
    POOL,
    POOL_NET,
    SPOKE_CORE,
    SPOKE_EXPORT,
    SPOKE_RD,
    SPOKE_TRANSPORT,
    SPOKE_VPN,
    UPLINK_HOST,
    Topology,
    ethertype,
    ipv4_of,
    labels_of,
    wait_until,
)

COUNT = 3  # pings per check


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, tap interfaces, DPDK)")
    for tool in ("kea-dhcp4", "nft", "ping"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: scripts/setup installs it")
    delete_stale_netns()
    t = Topology(f"{NS_PREFIX}{os.getpid()}-t", tmp_path_factory.mktemp("topology"), python=sys.executable)
    try:
        t.up()
    except BaseException:
        desc = t.describe()
        t.down()
        raise AssertionError(f"the topology did not come up\n{desc}")
    yield t
    t.down()


class Delta:
    """A router's outcome and drop counters since construction."""

    def __init__(self, router):
        self.r = router
        self.o0, self.d0 = router.outcomes(), router.drops()

    def outcome(self, name: str) -> int:
        return self.r.outcome(name) - self.o0.get(name, 0)

    def drop(self, name: str) -> int:
        return self.r.drop(name) - self.d0.get(name, 0)

    def outcomes(self) -> dict[str, int]:
        now = self.r.outcomes()
        return {k: v - self.o0.get(k, 0) for k, v in now.items() if v != self.o0.get(k, 0)}


def settle(delta: Delta, name: str, n: int, what: str) -> None:
    """Waits until `name` moved by `n`, then checks it moved by exactly `n`."""
    wait_until(lambda: delta.outcome(name) >= n, 10, f"{what}: {name} +{n} (now {delta.outcomes()})")
    assert delta.outcome(name) == n, f"{what}: {name} moved by {delta.outcome(name)}, not {n}: {delta.outcomes()}"


def addr(topo, name: str) -> str:
    a = topo.clients[name].address
    assert a, f"client {name} has no address"
    return a


def twin_and_other(topo) -> tuple[str, str]:
    """The blue client whose address C (red) holds too, if one does (both
    pools hand out 10.1.0.10 first, so one does from the start), and the
    other blue client."""
    c = addr(topo, "c")
    twins = [n for n in ("a", "b") if addr(topo, n) == c]
    twin = twins[0] if twins else "a"
    return twin, "b" if twin == "a" else "a"


# --- 1 -------------------------------------------------------------------------


def test_1_client_to_client_on_one_spoke_goes_through_the_hub(topo):
    a, b = addr(topo, "a"), addr(topo, "b")
    assert a != b and topo.clients["a"].service == topo.clients["b"].service == "blue"
    marker = b"hd-s1-ab"
    spoke, hub = Delta(topo.spoke), Delta(topo.hub)
    with topo.capture_core() as core, topo.capture_client("b") as at_b:
        assert topo.ping("a", b, count=COUNT, marker=marker) == (COUNT, COUNT)
        # Each request and each reply crosses the core twice: to the hub
        # and back.
        wait_until(lambda: len(core.frames(marker)) >= 4 * COUNT, 10, "the pings on the core bridge")
        frames = core.frames(marker)
        delivered = [f for f in at_b.frames(marker) if not f.outgoing]
    stacks = [labels_of(f.data) for f in frames]
    to_hub = [HUB_TRANSPORT, HUB_VPN["blue"]]
    to_spoke = [SPOKE_TRANSPORT, SPOKE_VPN["blue"]]
    assert sorted(map(tuple, stacks)) == sorted([tuple(to_hub)] * 2 * COUNT + [tuple(to_spoke)] * 2 * COUNT), stacks
    # Requests A -> B, then replies B -> A, each way labelled.
    assert sorted(ipv4_of(f.data)[:2] for f in frames if labels_of(f.data) == to_hub) == sorted([(a, b)] * COUNT + [(b, a)] * COUNT)
    assert len(delivered) == COUNT and all(ipv4_of(f.data)[:2] == (a, b) for f in delivered), delivered
    # Counted at the hub as sent back to the spoke; at the spoke every
    # packet went up to the hub and came down from it: none was switched
    # locally.
    settle(hub, "fwd_hub_to_spoke", 2 * COUNT, "hub")
    settle(spoke, "fwd_upstream", 2 * COUNT, "spoke")
    settle(spoke, "fwd_downstream", 2 * COUNT, "spoke")
    assert hub.outcome("fwd_hub_to_uplink") == 0


# --- 3 -------------------------------------------------------------------------


def test_3_client_to_the_uplink_and_back(topo):
    a = addr(topo, "a")
    marker = b"hd-s3-au"
    hub = Delta(topo.hub)
    with topo.capture_core() as core, topo.capture_client("a") as at_a:
        with Capture(topo.ns["u"], "hu0") as at_u:
            assert topo.ping("a", UPLINK_HOST, count=COUNT, marker=marker) == (COUNT, COUNT)
            wait_until(lambda: len(core.frames(marker)) >= 2 * COUNT, 10, "the pings on the core bridge")
            uplink = at_u.frames(marker)
        frames = core.frames(marker)
        replies = [f for f in at_a.frames(marker) if not f.outgoing]
    # On the uplink: plain IPv4 both ways, A's own address.
    assert all(ethertype(f.data) == 0x0800 for f in uplink), [f.data[:20].hex() for f in uplink]
    assert sorted(ipv4_of(f.data)[:2] for f in uplink) == sorted([(a, UPLINK_HOST)] * COUNT + [(UPLINK_HOST, a)] * COUNT)
    # On the core: up with the hub's labels, back (the return path) with the spoke's.
    assert sorted(tuple(labels_of(f.data)) for f in frames) == sorted(
        [(HUB_TRANSPORT, HUB_VPN["blue"])] * COUNT + [(SPOKE_TRANSPORT, SPOKE_VPN["blue"])] * COUNT
    ), [labels_of(f.data) for f in frames]
    assert len(replies) == COUNT and all(ipv4_of(f.data)[:2] == (UPLINK_HOST, a) for f in replies)
    settle(hub, "fwd_hub_to_uplink", COUNT, "hub, requests")
    settle(hub, "fwd_hub_to_spoke", COUNT, "hub, replies from the uplink")


# --- 4 -------------------------------------------------------------------------


def test_4_services_with_overlapping_pools_stay_isolated(topo):
    c = addr(topo, "c")
    assert topo.clients["c"].service == "red"
    # Both pools are 10.1.0.10-19: C (red) likely holds the address of one
    # of the blue clients, its twin; the other blue client holds one C
    # does not have.
    twin, other = twin_and_other(topo)
    t, o = addr(topo, twin), addr(topo, other)
    sessions = {(s["service"], s["address"]) for s in topo.spoke.ctl("show", "sessions")}
    assert {("blue", t), ("blue", o), ("red", c)} <= sessions, sessions

    # C (red) sends to the other blue client's address: nothing reaches a
    # blue client; the spoke sends it to the hub in red, where red has no
    # route to blue's clients.
    marker = b"hd-s4-cb"
    spoke, hub = Delta(topo.spoke), Delta(topo.hub)
    topo.hub.ctl("trace", "clear")
    topo.hub.ctl("trace", "add", "20", "core0")
    with topo.capture_core() as core, topo.capture_client(twin) as at_t, topo.capture_client(other) as at_o:
        assert topo.ping("c", o, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
        wait_until(lambda: len(core.frames(marker)) >= COUNT, 10, "C's packets on the core bridge")
        frames = core.frames(marker)
        assert at_o.frames(marker) == [] and at_t.frames(marker) == []
    assert [labels_of(f.data) for f in frames] == [[HUB_TRANSPORT, HUB_VPN["red"]]] * COUNT, [labels_of(f.data) for f in frames]
    settle(spoke, "fwd_upstream", COUNT, "spoke, C's packets up")
    assert hub.outcome("fwd_hub_to_spoke") == 0 and spoke.outcome("fwd_downstream") == 0, (hub.outcomes(), spoke.outcomes())
    # At the hub, in red: its only route covering the blue address is
    # red's own default, a null route (red has no uplink). Red's hub
    # table has no route to blue's clients: the packets die there as no
    # route.
    traced = [p for p in topo.hub.ctl("trace", "show")["packets"] if p.get("dst") == o and p.get("src") == c]
    assert len(traced) == COUNT, topo.hub.ctl("trace", "show")
    for p in traced:
        assert (p["service"], p["table"], p["route"]["prefix"], p["route"]["next_hop"]) == ("red", "hub", "0.0.0.0/0", "discard"), p
        assert p["outcome"] == "drop_no_route", p
    settle(hub, "drop_no_route", COUNT, "hub, C's packets dropped in red")

    # The other blue client sends to the twin's address: the requests
    # reach the twin, not C, which holds the same address in red (when it
    # does: Kea decides).
    marker = b"hd-s4-ba"
    hub = Delta(topo.hub)
    with topo.capture_core() as core, topo.capture_client(twin) as at_t, topo.capture_client("c") as at_c:
        assert topo.ping(other, t, count=COUNT, marker=marker) == (COUNT, COUNT)
        wait_until(lambda: len(core.frames(marker)) >= 4 * COUNT, 10, "the blue pings on the core bridge")
        frames = core.frames(marker)
        got_t = [f for f in at_t.frames(marker) if not f.outgoing]
        assert at_c.frames(marker) == []
    assert len(got_t) == COUNT and all(ipv4_of(f.data)[:2] == (o, t) for f in got_t)
    assert {tuple(labels_of(f.data)) for f in frames} == {(HUB_TRANSPORT, HUB_VPN["blue"]), (SPOKE_TRANSPORT, SPOKE_VPN["blue"])}
    settle(hub, "fwd_hub_to_spoke", 2 * COUNT, "hub, blue <-> blue")

    # Red has no uplink: C's packets for the internet die at the hub too.
    marker = b"hd-s4-cu"
    hub = Delta(topo.hub)
    with Capture(topo.ns["u"], "hu0") as at_u:
        assert topo.ping("c", UPLINK_HOST, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
        assert at_u.frames(marker) == []
    assert hub.outcome("fwd_hub_to_uplink") == 0, hub.outcomes()


# --- 5 -------------------------------------------------------------------------


def test_5_release_withdraws_the_route_at_the_hub(topo):
    # The client that leaves is the blue one whose address C does not
    # share: the twin keeps its address, so the overlap stays for the
    # checks after this one. `a` (the one staying) and `b` (the one
    # leaving) are their addresses.
    stays, leaves = twin_and_other(topo)
    a, b = addr(topo, stays), addr(topo, leaves)
    blue_rd = "65000:100"
    assert f"{b}/32" in topo.hub.routes("blue", "hub")
    topo.release(leaves)
    # The spoke drops the session and withdraws its route: it leaves the
    # hub's RIB and hub table; the other client's stays.
    wait_until(lambda: b not in {s["address"] for s in topo.spoke.ctl("show", "sessions") if s["service"] == "blue"}, 10, f"{leaves.upper()}'s session gone at the spoke")
    wait_until(lambda: f"{b}/32" not in topo.hub.routes("blue", "hub"), 10, "the /32 withdrawn from the hub's blue table")
    rib = {(r["prefix"], r["rd"]) for r in topo.hub.ctl("show", "bgp", "rib", "in")}
    assert (f"{b}/32", blue_rd) not in rib and (f"{a}/32", blue_rd) in rib, rib
    assert f"{b}/32" not in topo.spoke.routes("blue", "downstream")

    # Traffic to the old address: not sent back to the spoke, not delivered.
    marker = b"hd-s5-ab"
    spoke, hub = Delta(topo.spoke), Delta(topo.hub)
    with topo.capture_client(leaves) as at_b:
        assert topo.ping(stays, b, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
        assert at_b.frames(marker) == []
    settle(spoke, "fwd_upstream", COUNT, "spoke")
    assert hub.outcome("fwd_hub_to_spoke") == 0 and spoke.outcome("fwd_downstream") == 0, (hub.outcomes(), spoke.outcomes())
    # With the /32 gone, the route in blue's hub table that covers the
    # old address is the pool's null route: dropped at the hub as no
    # route, not sent on to the uplink.
    settle(hub, "drop_no_route", COUNT, "hub, the old address by the pool's null route")
    assert hub.outcome("fwd_hub_to_uplink") == 0, hub.outcomes()

    # The client leases again: advertised again, delivered again.
    topo.lease(leaves)
    b2 = addr(topo, leaves)
    wait_until(lambda: f"{b2}/32" in topo.hub.routes("blue", "hub"), 10, "the new /32 at the hub")
    assert topo.ping(stays, b2, count=COUNT) == (COUNT, COUNT)


# --- 6 -------------------------------------------------------------------------


def test_6_hub_bgp_down_withdraws_the_spokes_default(topo):
    a, b = addr(topo, "a"), addr(topo, "b")
    via_hub = f"~bgp/hub/{HUB_VPN['blue']}"
    assert topo.spoke.routes("blue", "upstream") == {"0.0.0.0/0": via_hub, POOL_NET: via_hub}
    # BGP (TCP 179) blocked on the hub's host side: its data plane keeps
    # running, its sessions die of their hold timer.
    topo.block_hub_bgp()
    try:
        wait_until(lambda: not topo.spoke.established(), 4 * topo.hold_time, "the spoke's session down")
        wait_until(lambda: topo.spoke.routes("blue", "upstream") == {} and topo.spoke.routes("red", "upstream") == {}, 10, "the hub's defaults withdrawn at the spoke")

        # Client traffic: no route at the spoke, nothing on the core, and
        # above all nothing unlabelled.
        marker = b"hd-s6-au"
        spoke, hub = Delta(topo.spoke), Delta(topo.hub)
        with topo.capture_core() as core:
            assert topo.ping("a", UPLINK_HOST, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
            assert topo.ping("a", b, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
            frames = core.frames()
        wait_until(lambda: spoke.drop("drop_no_route") >= 2 * COUNT, 10, f"{2 * COUNT} drops as no route at the spoke")
        assert spoke.drop("drop_no_route") == 2 * COUNT and spoke.outcome("fwd_upstream") == 0, spoke.outcomes()
        assert [f for f in frames if marker in f.data] == []
        from_clients = [f for f in frames if (ip := ipv4_of(f.data)) and ip[0].startswith("10.1.0.")]
        assert from_clients == [], [f.data[:40].hex() for f in from_clients]
        assert all(labels_of(f.data) == [] for f in frames), "labelled frames on the core with the session down"
        assert hub.outcome("fwd_hub_to_spoke") == 0 and hub.outcome("fwd_hub_to_uplink") == 0
    finally:
        topo.unblock_hub_bgp()
    # BGP back: the defaults return and the hub relearns the clients.
    topo.wait_bgp(30)
    wait_until(lambda: {f"{a}/32", f"{b}/32"} <= set(topo.hub.routes("blue", "hub")), 10, "the clients' routes back at the hub")
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)


# --- 2 (reloads the hub's configuration: after the scenarios above) --------------


def test_2_hub_deny_rule_drops_and_counts_then_removal_restores(topo):
    a, b = addr(topo, "a"), addr(topo, "b")
    marker = b"hd-s2-ab"
    applied = False
    try:
        p = topo.set_hub_policy("blue", [{"prefix": f"{b}/32", "action": "deny"}])
        assert p.returncode == 0, f"hdvrf ctl reload with a deny rule: {p.stderr.strip() or p.stdout.strip()}"
        applied = True
        # The reload changes the policy only: the return paths BGP put in
        # the hub table stay.
        assert {f"{a}/32", f"{b}/32"} <= set(topo.hub.routes("blue", "hub")), f"the reload removed BGP's routes: {topo.hub.routes('blue', 'hub')}"
        rules = topo.hub.ctl("show", "policy", "blue")
        assert [(r["index"], r["action"]) for r in rules] == [(0, "deny")], rules
        before = rules[0]
        hub = Delta(topo.hub)
        with topo.capture_client("b") as at_b:
            assert topo.ping("a", b, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
            assert at_b.frames(marker) == []
        wait_until(lambda: hub.drop("drop_policy_deny") >= COUNT, 10, f"{COUNT} drops as policy deny at the hub")
        assert hub.drop("drop_policy_deny") == COUNT and hub.outcome("fwd_hub_to_spoke") == 0, hub.outcomes()
        rule = topo.hub.ctl("show", "policy", "blue")[0]
        assert rule["packets"] - before["packets"] == COUNT and rule["dropped"] - before["dropped"] == COUNT, (before, rule)
        assert rule["bytes"] - before["bytes"] >= COUNT * 84, (before, rule)  # 84-byte IPv4 echo requests

        # The rule goes: A reaches B again.
        p = topo.set_hub_policy("blue", None)
        assert p.returncode == 0, f"hdvrf ctl reload without the rule: {p.stderr.strip() or p.stdout.strip()}"
        applied = False
        assert {f"{a}/32", f"{b}/32"} <= set(topo.hub.routes("blue", "hub")), f"the reload removed BGP's routes: {topo.hub.routes('blue', 'hub')}"
        assert topo.hub.ctl("show", "policy", "blue") == []
        hub = Delta(topo.hub)
        assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
        assert hub.drop("drop_policy_deny") == 0
    finally:
        # The file back as it was; reloaded only if the rule was applied
        # (a refused reload left the running configuration as it was).
        topo.set_hub_policy("blue", None, reload=applied)


# --- reloads that change what a router advertises --------------------------------

# BGP's view of a route: (prefix, RD, label, targets, next hop).
view_of = lambda r: (r["prefix"], r["rd"], r["label"], tuple(sorted(r["route_targets"])), r["next_hop"])  # noqa: E731


def rib(router, which: str) -> set[tuple]:
    return {view_of(r) for r in router.ctl("show", "bgp", "rib", which)}


def traced(router, dst: str) -> list[dict]:
    return [p for p in router.ctl("trace", "show")["packets"] if p.get("dst") == dst]


def start_trace(router, port: str, n: int = 20) -> None:
    router.ctl("trace", "clear")
    router.ctl("trace", "add", str(n), port)


def test_reload_advertises_and_withdraws_a_hub_route(topo):
    """A blue hub route added to the hub's file and reloaded is advertised
    at once (the hub's RIB-out) and learnt by the spoke (its blue
    upstream gets exactly that prefix, via the hub's VPN label), and A's
    packets to it go up labelled by it and out of the uplink by it.
    Removed from the file and reloaded, it is withdrawn from both, and
    A's packets fall back to the default."""
    a = addr(topo, "a")
    prefix, dst = "172.16.1.0/24", "172.16.1.9"
    via_hub = f"~bgp/hub/{HUB_VPN['blue']}"
    converged(topo)
    up_before = {svc: topo.spoke.routes(svc, "upstream") for svc in ("blue", "red")}
    assert up_before["blue"] == {"0.0.0.0/0": via_hub, POOL_NET: via_hub}, up_before
    out_before, spoke_in_before = rib(topo.hub, "out"), rib(topo.spoke, "in")
    route = (prefix, HUB_RD["blue"], HUB_VPN["blue"], (HUB_EXPORT["blue"],), HUB_CORE)

    def a_to_dst(marker: bytes, route_at_spoke: str, route_at_hub: str) -> None:
        """A pings `dst` (nobody answers): up the core with the hub's blue
        labels, routed at the spoke by `route_at_spoke`, at the hub by
        `route_at_hub` (to the uplink), and out to U unlabelled."""
        spoke, hub = Delta(topo.spoke), Delta(topo.hub)
        start_trace(topo.spoke, "access0")
        start_trace(topo.hub, "core0")
        with topo.capture_core() as core, Capture(topo.ns["u"], "hu0") as at_u:
            assert topo.ping("a", dst, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
            wait_until(lambda: len(at_u.frames(marker)) >= COUNT, 10, f"A's packets to {dst} at U")
            frames, uplink = core.frames(marker), at_u.frames(marker)
        assert [labels_of(f.data) for f in frames] == [[HUB_TRANSPORT, HUB_VPN["blue"]]] * COUNT, [labels_of(f.data) for f in frames]
        assert len(uplink) == COUNT and all(ethertype(f.data) == 0x0800 for f in uplink), [f.data[:20].hex() for f in uplink]
        assert all(ipv4_of(f.data)[:2] == (a, dst) for f in frames + uplink)
        settle(spoke, "fwd_upstream", COUNT, f"spoke, A -> {dst}")
        settle(hub, "fwd_hub_to_uplink", COUNT, f"hub, A -> {dst}")
        ts, th = traced(topo.spoke, dst), traced(topo.hub, dst)
        assert len(ts) == COUNT and len(th) == COUNT, (ts, th)
        for t in ts:
            assert (t["service"], t["table"], t["route"], t["labels_out"], t["outcome"]) == (
                "blue", "upstream", {"prefix": route_at_spoke, "next_hop": via_hub}, [HUB_TRANSPORT, HUB_VPN["blue"]], "fwd_upstream"
            ), t
        for t in th:
            assert (t["service"], t["table"], t["route"], t["outcome"]) == ("blue", "hub", {"prefix": route_at_hub, "next_hop": "uplink"}, "fwd_hub_to_uplink"), t

    applied = False
    try:
        p = topo.set_hub_routes("blue", [(prefix, "uplink")])
        assert p.returncode == 0, f"hdvrf ctl reload with {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = True
        r = json.loads(p.stdout)
        assert (r["added"], r["changed"], r["removed"]) == (1, 0, 0) and "bgp_table_ops" in r, r
        assert topo.hub.routes("blue", "hub").get(prefix) == "uplink"
        # Advertised by the time the reload answers.
        assert rib(topo.hub, "out") == out_before | {route}, rib(topo.hub, "out")
        # Learnt by the spoke: exactly that prefix more in blue, red as it was.
        wait_until(lambda: topo.spoke.routes("blue", "upstream") == {**up_before["blue"], prefix: via_hub}, 5, f"{prefix} in the spoke's blue upstream table (now {topo.spoke.routes('blue', 'upstream')})")
        assert topo.spoke.routes("red", "upstream") == up_before["red"]
        assert rib(topo.spoke, "in") == spoke_in_before | {route}
        converged(topo)
        a_to_dst(b"hd-rl-h1", prefix, prefix)

        p = topo.set_hub_routes("blue", None)
        assert p.returncode == 0, f"hdvrf ctl reload without {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = False
        r = json.loads(p.stdout)
        assert (r["added"], r["changed"], r["removed"]) == (0, 0, 1), r
        assert prefix not in topo.hub.routes("blue", "hub")
        # Withdrawn by the time the reload answers, gone at the spoke.
        assert rib(topo.hub, "out") == out_before, rib(topo.hub, "out")
        wait_until(lambda: topo.spoke.routes("blue", "upstream") == up_before["blue"], 5, f"{prefix} out of the spoke's blue upstream table (now {topo.spoke.routes('blue', 'upstream')})")
        assert rib(topo.spoke, "in") == spoke_in_before
        converged(topo)
        # A's packets to it: the defaults at both ends, still to the uplink.
        a_to_dst(b"hd-rl-h2", "0.0.0.0/0", "0.0.0.0/0")
    finally:
        if applied:
            topo.set_hub_routes("blue", None)
        topo.spoke.ctl("trace", "clear")
        topo.hub.ctl("trace", "clear")


def test_reload_advertises_and_withdraws_a_spoke_downstream_route(topo):
    """A static blue downstream route (10.1.0.77/32, outside Kea's range,
    to a next hop with A's MAC, both new in the spoke's file) reloaded at
    the spoke is advertised like a session's host route: in the spoke's
    RIB-out, the hub's RIB-in and blue hub table (not red's); U's packets
    to it reach A through hub and spoke. The sessions' routes stay.
    Removed again (route and next hop), it is withdrawn from both and U's
    packets die at the hub on the pool's null route."""
    host = "10.1.0.77"
    prefix = f"{host}/32"
    assert not (int(POOL[0].split(".")[-1]) <= int(host.split(".")[-1]) <= int(POOL[1].split(".")[-1]))
    via_spoke = f"~bgp/spoke/{SPOKE_VPN['blue']}"
    converged(topo)
    down_before = topo.spoke.routes("blue", "downstream")
    hub_before = {svc: topo.hub.routes(svc, "hub") for svc in ("blue", "red")}
    out_before, hub_in_before = rib(topo.spoke, "out"), rib(topo.hub, "in")
    route = (prefix, SPOKE_RD["blue"], SPOKE_VPN["blue"], (SPOKE_EXPORT["blue"],), SPOKE_CORE)
    assert prefix not in down_before and prefix not in hub_before["blue"]

    def u_to_host(marker: bytes, delivered: bool) -> None:
        spoke, hub = Delta(topo.spoke), Delta(topo.hub)
        with topo.capture_core() as core, topo.capture_client("a") as at_a:
            assert topo.ping("u", host, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
            if delivered:
                wait_until(lambda: len([f for f in at_a.frames(marker) if not f.outgoing]) >= COUNT, 10, f"U's packets to {host} at A")
            frames = core.frames(marker)
            at_a_frames = [f for f in at_a.frames(marker) if not f.outgoing]
        if delivered:
            assert [labels_of(f.data) for f in frames] == [[SPOKE_TRANSPORT, SPOKE_VPN["blue"]]] * COUNT, [labels_of(f.data) for f in frames]
            assert len(at_a_frames) == COUNT and all(ipv4_of(f.data)[:2] == (UPLINK_HOST, host) for f in at_a_frames)
            settle(hub, "fwd_hub_to_spoke", COUNT, f"hub, U -> {host}")
            settle(spoke, "fwd_downstream", COUNT, f"spoke, U -> {host}")
        else:
            assert frames == [] and at_a_frames == [], (frames, at_a_frames)
            settle(hub, "drop_no_route", COUNT, f"hub, U -> {host} by the pool's null route")
            assert hub.outcome("fwd_hub_to_spoke") == 0 and spoke.outcome("fwd_downstream") == 0, (hub.outcomes(), spoke.outcomes())

    applied = False
    try:
        p = topo.set_spoke_downstream("blue", [(prefix, "client-a")], next_hops=[("client-a", "access0", topo.clients["a"].mac)])
        assert p.returncode == 0, f"hdvrf ctl reload at the spoke with {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = True
        r = json.loads(p.stdout)
        assert (r["added"], r["changed"], r["removed"], r["next_hops"]["added"]) == (1, 0, 0, 1) and "bgp_table_ops" in r, r
        # The file's route added, the sessions' host routes kept.
        assert topo.spoke.routes("blue", "downstream") == {**down_before, prefix: "client-a"}
        assert rib(topo.spoke, "out") == out_before | {route}, rib(topo.spoke, "out")
        wait_until(lambda: topo.hub.routes("blue", "hub").get(prefix) == via_spoke, 5, f"{prefix} in the hub's blue table (now {topo.hub.routes('blue', 'hub')})")
        assert topo.hub.routes("blue", "hub") == {**hub_before["blue"], prefix: via_spoke}
        assert topo.hub.routes("red", "hub") == hub_before["red"]
        assert rib(topo.hub, "in") == hub_in_before | {route}
        best = [x["best_for"] for x in topo.hub.ctl("show", "bgp", "rib", "in") if view_of(x) == route]
        assert best == [["blue"]], best
        converged(topo)
        u_to_host(b"hd-rl-s1", delivered=True)

        p = topo.set_spoke_downstream("blue", None, next_hops=[])
        assert p.returncode == 0, f"hdvrf ctl reload at the spoke without {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = False
        r = json.loads(p.stdout)
        assert (r["added"], r["changed"], r["removed"], r["next_hops"]["removed"]) == (0, 0, 1, 1), r
        assert topo.spoke.routes("blue", "downstream") == down_before
        assert rib(topo.spoke, "out") == out_before, rib(topo.spoke, "out")
        wait_until(lambda: prefix not in topo.hub.routes("blue", "hub"), 5, f"{prefix} out of the hub's blue table (now {topo.hub.routes('blue', 'hub')})")
        assert topo.hub.routes("blue", "hub") == hub_before["blue"]
        assert rib(topo.hub, "in") == hub_in_before
        converged(topo)
        u_to_host(b"hd-rl-s2", delivered=False)
    finally:
        if applied:
            topo.set_spoke_downstream("blue", None, next_hops=[])


# --- found on the way ------------------------------------------------------------


def test_reload_of_an_unchanged_configuration_keeps_bgp_routes(topo):
    """`hdvrf ctl reload` applies the file's route changes; BGP's routes
    (session routes at the hub, the hub's defaults at the spoke) are not
    in the file and must stay."""
    a, b = addr(topo, "a"), addr(topo, "b")
    hub_before, up_before = topo.hub.routes("blue", "hub"), topo.spoke.routes("blue", "upstream")
    assert f"{b}/32" in hub_before and "0.0.0.0/0" in up_before
    for r in (topo.hub, topo.spoke):
        out = r.ctl("reload")
        assert (out["added"], out["changed"], out["removed"]) == (0, 0, 0), f"{r.name}: reload of an unchanged file: {out}"
    assert topo.hub.routes("blue", "hub") == hub_before
    assert topo.spoke.routes("blue", "upstream") == up_before
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)


def test_rib_in_names_as_best_only_the_services_importing_a_route(topo):
    """A and C hold the same address in blue and red: two routes for one
    prefix from one neighbour, told apart by RD and targets."""
    imports = {"blue": "65000:2", "red": "65000:12"}
    twin, _ = twin_and_other(topo)
    assert addr(topo, twin) == addr(topo, "c"), "no blue client shares C's address: nothing to check here"
    rib = topo.hub.ctl("show", "bgp", "rib", "in")
    for r in rib:
        want = sorted(s for s, t in imports.items() if t in r["route_targets"])
        assert sorted(r["best_for"]) == want, f"{r['prefix']} RD {r['rd']} targets {r['route_targets']}: best_for {r['best_for']}, not {want}\n{rib}"


def test_a_release_does_not_make_the_relay_call_its_server_silent(topo):
    """A RELEASE has no answer (RFC 2131 section 4.4.6): it must not count
    as a request the server left unanswered. C is red's only client: after
    its release nothing else talks to red's Kea."""
    server = f"{topo.clients['c'].server}:67"
    topo.release("c")
    # The relay calls a server silent after 3 s without answers.
    wait_until(lambda: time.monotonic() - topo.released_at > 4, 10, "4 s after the release")
    silent = [l for l in topo.spoke.proc.err if "has not answered" in l and server in l]
    answering = topo.spoke.ctl("show", "stats")["relay"]["servers"][server]
    topo.lease("c")
    assert silent == [] and answering["answering"], (silent, answering)


def test_the_uplink_host_resolves_the_hubs_uplink_address(topo):
    """U learnt the hub's MAC from the hub's own ARP request; once that
    entry is gone U has to ask, and the hub's uplink address (a host tap,
    like its core address) must answer, or the return path from the
    uplink dies with U's neighbour cache."""
    topo.exec("u", "ip", "neigh", "flush", "dev", "hu0")
    assert topo.ping("u", HUB_UPLINK, count=COUNT) == (COUNT, COUNT), (
        f"U's neighbour table: {topo.exec('u', 'ip', 'neigh').stdout.strip()}; "
        f"hub relay drops: {topo.hub.ctl('show', 'stats')['relay']['drops']}"
    )
    assert topo.ping("a", UPLINK_HOST, count=COUNT) == (COUNT, COUNT)


def rib_list(router, which: str) -> list:
    """A router's RIB-in or RIB-out as a sorted list of view_of() tuples
    (a list, so that a duplicate shows)."""
    return sorted(view_of(r) for r in router.ctl("show", "bgp", "rib", which))


def session_route_before(topo, client: str):
    """Converged, and `client`'s session /32 as a session makes it: its
    ~MAC route at the spoke, advertised once, via the spoke at the hub.
    Returns (prefix, host route, via_spoke, RIB view of the route, the
    spoke's blue downstream table, the hub's blue table, the spoke's
    RIB-out, the hub's RIB-in)."""
    prefix, host_route = f"{addr(topo, client)}/32", f"~{topo.clients[client].mac}"
    via_spoke = f"~bgp/spoke/{SPOKE_VPN['blue']}"
    route = (prefix, SPOKE_RD["blue"], SPOKE_VPN["blue"], (SPOKE_EXPORT["blue"],), SPOKE_CORE)
    converged(topo)
    down_before, hub_before = topo.spoke.routes("blue", "downstream"), topo.hub.routes("blue", "hub")
    out_before, hub_in_before = rib_list(topo.spoke, "out"), rib_list(topo.hub, "in")
    assert down_before.get(prefix) == host_route, down_before
    assert out_before.count(route) == 1 and hub_in_before.count(route) == 1, (out_before, hub_in_before)
    assert hub_before.get(prefix) == via_spoke, hub_before
    return prefix, host_route, via_spoke, route, down_before, hub_before, out_before, hub_in_before


def test_a_spoke_reload_leaves_a_live_sessions_host_route_to_the_session(topo):
    """A live session's host route is the session's. A's /32 added to the
    spoke's file as a blue downstream route (to a new next hop with A's
    MAC) and reloaded: the reload leaves it to the session
    (kept_for_sessions 1), the table still points at the session's ~MAC
    next hop and the spoke advertises the /32 once, as before. Removed
    again (route and next hop) and reloaded: the file's route never made
    it into the table, so nothing is deleted (removed 0) and nothing
    withdrawn: the /32 stays in the downstream table to ~MAC, in the
    spoke's RIB-out, the hub's RIB-in and blue table, and B reaches A
    through the hub. (It used to: the first reload replaced the
    session's route by the file's, the second deleted it, BGP withdrew
    it and B's packets to A died at the hub; a renewal did not bring it
    back.)"""
    a, mac_a = addr(topo, "a"), topo.clients["a"].mac
    prefix, host_route, via_spoke, route, down_before, hub_before, out_before, hub_in_before = session_route_before(topo, "a")

    def still_the_sessions(what: str) -> None:
        """A's /32 as the session made it, at the spoke and at the hub,
        and B's packets to A delivered through the hub."""
        down = topo.spoke.routes("blue", "downstream")
        assert down.get(prefix) == host_route and down == down_before, f"{what}: the spoke's blue downstream table {down}, not {down_before}"
        # Withdrawn, it would be gone from the RIB-out by the time the
        # reload answers.
        assert rib_list(topo.spoke, "out") == out_before, f"{what}: spoke RIB-out {rib_list(topo.spoke, 'out')}"
        # A withdrawal takes a moment to reach the hub: the pings give it
        # that moment, the hub's table is checked after them as well.
        assert topo.ping("b", a, count=COUNT, wait=1) == (COUNT, COUNT), f"{what}: B -> A"
        assert topo.hub.routes("blue", "hub") == hub_before, f"{what}: the hub's blue table {topo.hub.routes('blue', 'hub')}"
        assert rib_list(topo.hub, "in") == hub_in_before, f"{what}: hub RIB-in {rib_list(topo.hub, 'in')}"
        converged(topo)

    applied = False
    try:
        p = topo.set_spoke_downstream("blue", [(prefix, "client-a")], next_hops=[("client-a", "access0", mac_a)])
        assert p.returncode == 0, f"hdvrf ctl reload at the spoke with {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = True
        r = json.loads(p.stdout)
        # The file's new route is not added: "kept_for_sessions" says it
        # was left to the live session (not published).
        assert (r["added"], r["changed"], r["removed"], r["kept_for_sessions"], r["next_hops"]["added"]) == (0, 0, 0, 1, 1), r
        still_the_sessions(f"after the reload adding {prefix} to the file")

        p = topo.set_spoke_downstream("blue", None, next_hops=[])
        assert p.returncode == 0, f"hdvrf ctl reload at the spoke without {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = False
        r = json.loads(p.stdout)
        # The table holds the session's route, not the file's: no route of
        # the file's to delete (the bug deleted it: removed 1), none left
        # to the session either; the next hop goes.
        assert (r["added"], r["changed"], r["removed"], r["kept_for_sessions"], r["next_hops"]["removed"]) == (0, 0, 0, 0, 1), r
        still_the_sessions(f"after the reload removing {prefix} from the file")
    finally:
        if applied:
            topo.set_spoke_downstream("blue", None, next_hops=[])


FILE_MAC = "02:00:5e:10:00:fb"  # the file's next hop for B's address: nobody's interface


def test_a_session_ending_on_an_address_the_spoke_file_routes_gives_it_back_to_the_file(topo):
    """The reverse of the check above. B's /32 added to the spoke's file
    (a blue downstream route to a static next hop `client-x` on B's port,
    with a MAC of its own) while B's session lives is left to the session;
    B then releases. The file's route comes back in the same commit that
    takes the session's out: the /32 is never missing from the spoke's
    blue downstream table (a sampler reads it, and the hub's blue table,
    all through the release), it goes to client-x, and BGP does not
    withdraw it: the spoke's RIB-out still holds it once (same RD, label),
    the hub's RIB-in and blue table keep it toward the spoke, the hub gets
    no UPDATE at all, and U's packets to the address go through hub and
    spoke out of B's port to client-x's MAC (counted fwd_downstream, traced
    on the file's route). A reload of the unchanged file then changes
    nothing. B leases again: on the same address the session's ~MAC route
    takes over again (advertised once, nothing withdrawn); on another, the
    old one stays the file's. Removed from the file (route and next hop)
    and reloaded, the /32 goes with it (or, if B holds it again, stays the
    session's and goes with B's next release). (It used to: the release
    took the /32 out of the table and BGP withdrew it; the next reload put
    the file's route back in the table, but BGP never advertised it
    again.)"""
    b, mac_b = addr(topo, "b"), topo.clients["b"].mac
    prefix, host_route, via_spoke, route, down_before, hub_before, out_before, hub_in_before = session_route_before(topo, "b")
    nh = "client-x"
    down_file = {**down_before, prefix: nh}

    def advertised_as_before(what: str) -> None:
        """The /32 advertised once as before, nothing else changed: the
        spoke's RIB-out, the hub's RIB-in and blue table as at the start."""
        out = rib_list(topo.spoke, "out")
        assert out == out_before and out.count(route) == 1, f"{what}: spoke RIB-out {out}, not {out_before}"
        assert rib_list(topo.hub, "in") == hub_in_before, f"{what}: hub RIB-in {rib_list(topo.hub, 'in')}"
        assert topo.hub.routes("blue", "hub") == hub_before, f"{what}: the hub's blue table {topo.hub.routes('blue', 'hub')}"

    def u_to_file_route(marker: bytes) -> None:
        """U pings B's old address (nobody answers): the hub sends it to
        the spoke with the spoke's blue labels, the spoke out of B's port
        to client-x's MAC, by the file's route."""
        spoke, hub = Delta(topo.spoke), Delta(topo.hub)
        start_trace(topo.spoke, "core0")
        with topo.capture_core() as core, Capture(topo.clients["b"].netns, topo.clients["b"].iface, promisc=True) as at_b:
            assert topo.ping("u", b, count=COUNT, marker=marker, wait=1) == (COUNT, 0)
            wait_until(lambda: len([f for f in at_b.frames(marker) if not f.outgoing]) >= COUNT, 10, f"U's packets to {b} on B's link")
            frames = core.frames(marker)
            at_b_frames = [f for f in at_b.frames(marker) if not f.outgoing]
        assert [labels_of(f.data) for f in frames] == [[SPOKE_TRANSPORT, SPOKE_VPN["blue"]]] * COUNT, [labels_of(f.data) for f in frames]
        assert len(at_b_frames) == COUNT, [f.data[:20].hex() for f in at_b_frames]
        for f in at_b_frames:
            assert f.data[:6] == bytes.fromhex(FILE_MAC.replace(":", "")) and ipv4_of(f.data)[:2] == (UPLINK_HOST, b), f.data[:40].hex()
        settle(hub, "fwd_hub_to_spoke", COUNT, f"hub, U -> {b}")
        settle(spoke, "fwd_downstream", COUNT, f"spoke, U -> {b}")
        ts = traced(topo.spoke, b)
        assert len(ts) == COUNT, ts
        for t in ts:
            assert (t["service"], t["table"], t["route"], t["outcome"]) == ("blue", "downstream", {"prefix": prefix, "next_hop": nh}, "fwd_downstream"), t

    def unchanged_reload(kept: int, what: str) -> None:
        """A reload of the unchanged file changes nothing, in the tables
        or in BGP. While a session holds the address the file's route
        counts as kept for the session (not added), as in the check above."""
        down, r = topo.spoke.routes("blue", "downstream"), topo.spoke.ctl("reload")
        assert (r["added"], r["changed"], r["removed"], r["kept_for_sessions"], r["bgp_table_ops"]) == (0, 0, 0, kept, 0), f"{what}: {r}"
        assert r["generation"] is None, f"{what}: {r}"
        assert topo.spoke.routes("blue", "downstream") == down, f"{what}: {topo.spoke.routes('blue', 'downstream')}, not {down}"

    applied = False
    try:
        p = topo.set_spoke_downstream("blue", [(prefix, nh)], next_hops=[(nh, "access1", FILE_MAC)])
        assert p.returncode == 0, f"hdvrf ctl reload at the spoke with {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = True
        r = json.loads(p.stdout)
        assert (r["added"], r["changed"], r["removed"], r["kept_for_sessions"], r["next_hops"]["added"]) == (0, 0, 0, 1, 1), r
        assert topo.spoke.routes("blue", "downstream") == down_before
        advertised_as_before(f"after the reload adding {prefix} to the file")
        converged(topo)

        # B releases, with the spoke's table and the hub's read all along.
        seen: list[tuple[Optional[str], Optional[str]]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                seen.append((topo.spoke.routes("blue", "downstream").get(prefix), topo.hub.routes("blue", "hub").get(prefix)))

        updates_in = topo.hub.neighbor()["updates_in"]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            topo.release("b")
            wait_until(lambda: b not in {s["address"] for s in topo.sessions("blue")}, 10, "B's session gone at the spoke")
            # At once: the file's route, still advertised.
            down = topo.spoke.routes("blue", "downstream")
            assert down == down_file, f"right after the release: the spoke's blue downstream table {down}, not {down_file}"
            advertised_as_before("right after the release")
        finally:
            stop.set()
            sampler.join(timeout=10)
        assert seen and seen[-1] == (nh, via_spoke), seen[-5:]
        assert {s for s, _ in seen} <= {host_route, nh}, f"the spoke's {prefix} while B released: {sorted(set(seen), key=str)}"
        assert {h for _, h in seen} == {via_spoke}, f"the hub's {prefix} while B released: {sorted(set(seen), key=str)}"
        # Still there once U's packets have made the trip through the hub.
        u_to_file_route(b"hd-fr-u1")
        advertised_as_before("after U's packets")
        assert topo.spoke.routes("blue", "downstream") == down_file
        assert topo.hub.neighbor()["updates_in"] == updates_in, f"the hub got {topo.hub.neighbor()['updates_in'] - updates_in} UPDATEs since the release"
        converged(topo)

        unchanged_reload(0, "reload of the unchanged file after the release")
        advertised_as_before("after the unchanged reload")
        converged(topo)

        # B leases again.
        topo.lease("b")
        b2 = addr(topo, "b")
        prefix2 = f"{b2}/32"
        wait_until(lambda: topo.hub.routes("blue", "hub").get(prefix2) == via_spoke, 10, f"{prefix2} at the hub")
        converged(topo)
        if b2 == b:
            # The session's route wins again; still one advertisement.
            assert topo.spoke.routes("blue", "downstream") == down_before
            advertised_as_before(f"B back on {b}")
            unchanged_reload(1, f"reload of the unchanged file with B back on {b}")
            assert topo.spoke.routes("blue", "downstream") == down_before
        else:
            # The old address stays the file's, the new one is B's.
            assert topo.spoke.routes("blue", "downstream") == {**down_file, prefix2: f"~{topo.clients['b'].mac}"}
            assert route in rib_list(topo.spoke, "out") and rib_list(topo.spoke, "out").count(route) == 1
            u_to_file_route(b"hd-fr-u2")
            assert topo.ping("a", b2, count=COUNT) == (COUNT, COUNT)
            unchanged_reload(0, f"reload of the unchanged file with B on {b2}")
        converged(topo)

        p = topo.set_spoke_downstream("blue", None, next_hops=[])
        assert p.returncode == 0, f"hdvrf ctl reload at the spoke without {prefix}: {p.stderr.strip() or p.stdout.strip()}"
        applied = False
        r = json.loads(p.stdout)
        if b2 == b:
            # The session's route stays, and the file's is forgotten: B's
            # next release takes the /32 out and withdraws it.
            assert (r["added"], r["changed"], r["removed"], r["kept_for_sessions"], r["next_hops"]["removed"]) == (0, 0, 0, 0, 1), r
            assert topo.spoke.routes("blue", "downstream") == down_before
            advertised_as_before("after the reload removing the file's route")
            converged(topo)
            topo.release("b")
            wait_until(lambda: prefix not in topo.hub.routes("blue", "hub"), 10, f"{prefix} withdrawn at B's release")
            assert prefix not in topo.spoke.routes("blue", "downstream")
            assert route not in rib_list(topo.spoke, "out")
            converged(topo)
            topo.lease("b")
        else:
            assert (r["added"], r["changed"], r["removed"], r["kept_for_sessions"], r["next_hops"]["removed"]) == (0, 0, 1, 0, 1), r
            assert prefix not in topo.spoke.routes("blue", "downstream")
            # Withdrawn by the time the reload answers, gone at the hub.
            assert route not in rib_list(topo.spoke, "out")
            wait_until(lambda: prefix not in topo.hub.routes("blue", "hub"), 5, f"{prefix} out of the hub's blue table")
        converged(topo)
    finally:
        if applied:
            topo.set_spoke_downstream("blue", None, next_hops=[])
        topo.spoke.ctl("trace", "clear")
        if topo.clients["b"].address is None:
            topo.lease("b")


# --- faults (issue 9) ------------------------------------------------------------


def converged(topo, timeout: float = 30) -> None:
    """Waits until the topology has converged (Topology.mismatches: the
    spoke's sessions equal to Kea's active leases, host routes and
    advertisements one per session, each RIB-in equal to the other side's
    RIB-out, the tables equal to the RIBs); fails with what still differs."""
    left: list[str] = []

    def done() -> bool:
        left[:] = topo.mismatches()
        return not left

    try:
        wait_until(done, timeout, "the topology to converge", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}:\n" + "\n".join(left)) from None


def mbufs(*routers) -> dict[str, int]:
    return {r.name: r.mbufs() for r in routers}


def mbufs_back(routers, base: dict[str, int]) -> None:
    """Waits until each router holds as many mbufs as in `base` (a packet
    in flight holds one for a moment)."""
    now: dict[str, int] = {}

    def back() -> bool:
        now.update(mbufs(*routers))
        return now == base

    try:
        wait_until(back, 10, f"mbufs in use back to {base}", interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}: still {now}") from None


def blue_sessions(topo) -> set[tuple[str, str]]:
    return {(s["address"], s["mac"]) for s in topo.sessions("blue")}


def kea_rows(topo, svc: str, address: str) -> list[dict]:
    """Every row Kea's lease file holds for `address`, oldest first."""
    with open(topo.dir / f"kea-{svc}" / "leases.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["address"] == address]


EXTRA_MAC = "02:00:5e:10:00:fa"  # a blue client behind A's port that only talks DHCP


def test_core_link_down_and_up_converges_without_leaks(topo):
    """The spoke's core link goes down: both BGP sessions die of their
    hold timers, the spoke loses its upstream defaults and the hub its
    return routes, client traffic is dropped as no route. The link comes
    back: BGP, routes and delivery return, and neither router holds more
    mbufs than before."""
    a, b = addr(topo, "a"), addr(topo, "b")
    mbufs = lambda: {r.name: r.ctl("show", "stats")["mbufs_in_use"] for r in (topo.spoke, topo.hub)}  # noqa: E731
    base = mbufs()
    sessions = {(s["service"], s["address"]) for s in topo.spoke.ctl("show", "sessions")}
    run("ip", "-n", topo.ns["core"], "link", "set", "dev", "sc0", "down")
    try:
        wait_until(lambda: not topo.spoke.established() and not topo.hub.established(), 4 * topo.hold_time, "both sessions down")
        wait_until(lambda: topo.spoke.routes("blue", "upstream") == {}, 10, "the spoke's blue upstream empty")
        wait_until(lambda: not any(p.endswith("/32") for p in topo.hub.routes("blue", "hub")), 10, "the hub's return routes gone")
        spoke = Delta(topo.spoke)
        assert topo.ping("a", b, count=COUNT, wait=1) == (COUNT, 0)
        wait_until(lambda: spoke.drop("drop_no_route") >= COUNT, 10, "no route at the spoke")
        assert spoke.drop("drop_no_route") == COUNT, spoke.outcomes()
    finally:
        run("ip", "-n", topo.ns["core"], "link", "set", "dev", "sc0", "up")
    topo.wait_bgp(60)
    wait_until(lambda: {f"{a}/32", f"{b}/32"} <= set(topo.hub.routes("blue", "hub")), 20, "the clients' routes back at the hub")
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
    # Sessions are the spoke's own: the link changed none.
    assert {(s["service"], s["address"]) for s in topo.spoke.ctl("show", "sessions")} == sessions
    converged(topo)
    wait_until(lambda: mbufs() == base, 10, f"mbufs in use back to {base} (now {mbufs()})")


def test_kea_killed_and_restarted_sessions_converge_with_its_leases(topo):
    """SIGKILL to blue's Kea (A's and B's address server) while the spoke
    runs on: the sessions it granted keep forwarding; a new client's
    DISCOVER and A's renewal are relayed and answered by nobody: no lease,
    no new session, A's unchanged. Kea back on its lease file: A renews,
    a new client leases and releases, and the spoke's sessions, host
    routes and advertisements converge with Kea's leases; neither router
    holds an mbuf more than before."""
    a, b = addr(topo, "a"), addr(topo, "b")
    mac_a, server = topo.clients["a"].mac, KEA["blue"][1]
    relay = lambda: topo.spoke.ctl("show", "stats")["relay"]["servers"][f"{server}:67"]  # noqa: E731
    converged(topo)
    before = blue_sessions(topo)
    assert before == {(a, mac_a), (b, topo.clients["b"].mac)}, before
    down_before = topo.spoke.routes("blue", "downstream")
    rows_a = kea_rows(topo, "blue", a)
    base = mbufs(topo.spoke, topo.hub)

    assert topo.kill_kea("blue") == -signal.SIGKILL
    try:
        # What Kea granted goes on forwarding.
        assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
        # A new client's DISCOVER: relayed, unanswered; nothing new.
        r0 = relay()
        p = topo.dhcp("a", EXTRA_MAC, "lease", timeout=2)
        assert p.returncode != 0 and "no OFFER" in p.stderr, p.stdout + p.stderr
        r1 = relay()
        assert (r1["requests"], r1["replies"]) == (r0["requests"] + 1, r0["replies"]), (r0, r1)
        # A's renewal: relayed, unanswered; A's session stays as it was.
        p = topo.dhcp("a", mac_a, "renew", a, server, timeout=2)
        assert p.returncode != 0 and "no ACK" in p.stderr, p.stdout + p.stderr
        r2 = relay()
        assert (r2["requests"], r2["replies"]) == (r1["requests"] + 1, r1["replies"]), (r1, r2)
        assert blue_sessions(topo) == before
        assert topo.spoke.routes("blue", "downstream") == down_before
        assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
    finally:
        topo.start_kea("blue")
    # Kea started again on the file as it was (no row for A rewritten).
    assert kea_rows(topo, "blue", a) == rows_a, (rows_a, kea_rows(topo, "blue", a))

    # Kea is back with its lease file: A's renewal is answered, Kea
    # writes it down, and the session's lease runs to Kea's new end.
    p = topo.dhcp("a", mac_a, "renew", a, server)
    assert p.returncode == 0 and p.stdout.split()[:2] == ["renewed", a], p.stdout + p.stderr
    rows = kea_rows(topo, "blue", a)
    assert len(rows) == len(rows_a) + 1 and int(rows[-1]["expire"]) > int(rows_a[-1]["expire"]), (rows_a, rows)
    end = lambda: next((time.time() + s["lease_remaining_s"] for s in topo.sessions("blue") if s["address"] == a), float("nan"))  # noqa: E731
    wait_until(lambda: abs(end() - int(rows[-1]["expire"])) <= 2, 10, f"A's session to end with Kea's renewed lease ({rows[-1]['expire']})")

    # A new client leases: a session, a host route, a route at the hub ...
    p = topo.dhcp("a", EXTRA_MAC, "lease")
    assert p.returncode == 0 and p.stdout.startswith("lease "), p.stdout + p.stderr
    extra = p.stdout.split()[1]
    assert extra not in (a, b), extra
    wait_until(lambda: (extra, EXTRA_MAC) in blue_sessions(topo), 10, "the new client's session")
    converged(topo)
    assert blue_sessions(topo) == before | {(extra, EXTRA_MAC)}
    assert f"{extra}/32" in topo.hub.routes("blue", "hub")
    # ... and releases: all of it goes again.
    p = topo.dhcp("a", EXTRA_MAC, "release", extra, server)
    assert p.returncode == 0 and "released" in p.stdout, p.stdout + p.stderr
    wait_until(lambda: (extra, EXTRA_MAC) not in blue_sessions(topo), 10, "the new client's session gone")
    converged(topo)
    assert blue_sessions(topo) == before
    assert f"{extra}/32" not in topo.hub.routes("blue", "hub")
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
    mbufs_back((topo.spoke, topo.hub), base)


def test_spoke_killed_and_restarted_reconciles_from_its_journal(topo):
    """SIGKILL to the spoke: the new process rebuilds the sessions from
    its journal (the same clients, addresses, MACs), publishes their
    routes, and BGP gives the hub each client's route once again; the
    clients reach each other with the addresses they kept."""
    a, b = addr(topo, "a"), addr(topo, "b")
    key = lambda s: (s["service"], s["address"], s["mac"], s["port"], s["vlan"])  # noqa: E731
    converged(topo)
    before = sorted(map(key, topo.spoke.ctl("show", "sessions")))
    down_before = {svc: topo.spoke.routes(svc, "downstream") for svc in ("blue", "red")}
    assert len(before) == 3, before
    # The killed spoke's pools die with it: the hub's are the ones to
    # come back to where they were.
    base = mbufs(topo.hub)
    assert topo.kill_and_restart_spoke() == -signal.SIGKILL
    assert sorted(map(key, topo.spoke.ctl("show", "sessions"))) == before
    # The same host routes (their next hops are named by MAC, so the
    # same names).
    assert {svc: topo.spoke.routes(svc, "downstream") for svc in ("blue", "red")} == down_before
    topo.wait_bgp(60)
    wait_until(lambda: {f"{a}/32", f"{b}/32"} <= set(topo.hub.routes("blue", "hub")), 20, "the clients' routes back at the hub")
    # Each session's route once in the hub's RIB: no duplicates, no stale.
    rib = [(r["prefix"], r["rd"]) for r in topo.hub.ctl("show", "bgp", "rib", "in") if r["prefix"].endswith("/32")]
    rds = {"blue": "65000:100", "red": "65000:200"}
    assert sorted(rib) == sorted((f"{s[1]}/32", rds[s[0]]) for s in before), rib
    # The journal's sessions are Kea's leases; routes, advertisements and
    # both RIBs agree with them.
    converged(topo)
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
    mbufs_back((topo.hub,), base)


def test_hub_killed_and_restarted_relearns_what_the_spoke_advertises(topo):
    """SIGKILL to the hub: the spoke's session dies and its upstream
    defaults go; a new hub relearns from the spoke exactly what the spoke
    advertises (its RIB equals the peer's view), and traffic flows again
    both ways."""
    a, b = addr(topo, "a"), addr(topo, "b")
    view = lambda rows: sorted((r["prefix"], r["rd"], r["label"], tuple(r["route_targets"])) for r in rows)  # noqa: E731
    converged(topo)
    out_before = view(topo.spoke.ctl("show", "bgp", "rib", "out"))
    in_before = view(topo.spoke.ctl("show", "bgp", "rib", "in"))
    up_before = {svc: topo.spoke.routes(svc, "upstream") for svc in ("blue", "red")}
    base = mbufs(topo.spoke)
    assert topo.kill_and_restart_hub() == -signal.SIGKILL
    wait_until(lambda: not topo.spoke.established(), 4 * topo.hold_time, "the spoke's session down")
    topo.wait_bgp(60)
    out = topo.spoke.ctl("show", "bgp", "rib", "out")
    wait_until(lambda: view(topo.hub.ctl("show", "bgp", "rib", "in")) == view(out), 20, "the hub's RIB-in equal to the spoke's RIB-out")
    assert len(out) == 3, out  # the three clients' sessions
    # The other way: the spoke's RIB-in is the new hub's RIB-out, its
    # upstream tables what it imports of it; and the spoke advertises
    # what it did before (its sessions did not change).
    converged(topo)
    assert view(topo.spoke.ctl("show", "bgp", "rib", "in")) == in_before
    assert view(out) == out_before
    assert {svc: topo.spoke.routes(svc, "upstream") for svc in ("blue", "red")} == up_before
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
    assert topo.ping("a", UPLINK_HOST, count=COUNT) == (COUNT, COUNT)
    mbufs_back((topo.spoke,), base)


def test_both_routers_stop_cleanly(topo):
    stopped = topo.stop_routers()
    assert stopped == {"spoke": (0, True), "hub": (0, True)}, (stopped, topo.describe())
