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
configuration, and the checks found on the way (one reloads both
routers); the last test stops both routers.

Counters are read before and after, and each wait polls a condition
(`wait_until`); frames are captured with AF_PACKET sockets opened inside
the namespaces, which capture from the moment they exist.
"""

from __future__ import annotations

import os
import shutil
import sys
import signal
import time
from pathlib import Path

import pytest

from conftest import NS_PREFIX, delete_stale_netns

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from topology import Capture, run, HUB_TRANSPORT, HUB_UPLINK, HUB_VPN, POOL_NET, SPOKE_TRANSPORT, SPOKE_VPN, UPLINK_HOST, Topology, ethertype, ipv4_of, labels_of, wait_until  # noqa: E402

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


# --- faults (issue 9) ------------------------------------------------------------


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
    wait_until(lambda: mbufs() == base, 10, f"mbufs in use back to {base} (now {mbufs()})")


def test_spoke_killed_and_restarted_reconciles_from_its_journal(topo):
    """SIGKILL to the spoke: the new process rebuilds the sessions from
    its journal (the same clients, addresses, MACs), publishes their
    routes, and BGP gives the hub each client's route once again; the
    clients reach each other with the addresses they kept."""
    a, b = addr(topo, "a"), addr(topo, "b")
    key = lambda s: (s["service"], s["address"], s["mac"], s["port"], s["vlan"])  # noqa: E731
    before = sorted(map(key, topo.spoke.ctl("show", "sessions")))
    down_before = {svc: topo.spoke.routes(svc, "downstream") for svc in ("blue", "red")}
    assert len(before) == 3, before
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
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)


def test_hub_killed_and_restarted_relearns_what_the_spoke_advertises(topo):
    """SIGKILL to the hub: the spoke's session dies and its upstream
    defaults go; a new hub relearns from the spoke exactly what the spoke
    advertises (its RIB equals the peer's view), and traffic flows again
    both ways."""
    a, b = addr(topo, "a"), addr(topo, "b")
    assert topo.kill_and_restart_hub() == -signal.SIGKILL
    wait_until(lambda: not topo.spoke.established(), 4 * topo.hold_time, "the spoke's session down")
    topo.wait_bgp(60)
    view = lambda rows: sorted((r["prefix"], r["rd"], r["label"], tuple(r["route_targets"])) for r in rows)  # noqa: E731
    out = topo.spoke.ctl("show", "bgp", "rib", "out")
    wait_until(lambda: view(topo.hub.ctl("show", "bgp", "rib", "in")) == view(out), 20, "the hub's RIB-in equal to the spoke's RIB-out")
    assert len(out) == 3, out  # the three clients' sessions
    assert topo.ping("a", b, count=COUNT) == (COUNT, COUNT)
    assert topo.ping("a", UPLINK_HOST, count=COUNT) == (COUNT, COUNT)


def test_both_routers_stop_cleanly(topo):
    stopped = topo.stop_routers()
    assert stopped == {"spoke": (0, True), "hub": (0, True)}, (stopped, topo.describe())
