"""FRR's bgpd as a second BGP implementation against an hdvrf hub.

    netns I: bgpd AS 65000 (iBGP)  fi 198.18.21.2 <--veth--> if 198.18.21.1 \\
                                                                             netns H: hdvrf hub AS 65000
    netns E: bgpd AS 65100 (eBGP)  fe 198.18.22.2 <--veth--> ef 198.18.22.1 /

Both sessions run VPNv4 with TCP-MD5 (RFC 2385) and GTSM (RFC 5082, one
hop) on both sides; the hub is passive toward I and connects to E, so the
listener's and the connecting socket's options are both on the path.
Each bgpd runs alone in its namespace (no zebra: `-Z`, no kernel routes:
`-n`, its vty socket, pid file and zebra socket path in the test's tmp
directory) and is read with `vtysh --vty_socket DIR -c '... json'`.

What FRR 8.4 needs for this (and what differs from GoBGP):
- `no bgp ebgp-requires-policy` (RFC 8212 is on by default: without a
  policy an eBGP peer is sent and accepts nothing), `no bgp default
  ipv4-unicast`, and `address-family ipv4 vpn` with `neighbor X activate`;
- static VPN routes: `network P rd RD label L route-map M` under
  `address-family ipv4 vpn`, the targets and next hop set by the route
  map (`set extcommunity rt`, `set ip vpn next-hop`);
- `neighbor X ttl-security hops 1` (FRR's minimum TTL is 256 - hops, so
  255: whatever hdvrf sends, SYN-ACKs of its listener included, must
  leave with TTL 255) and `neighbor X password P`; its neighbour JSON
  shows them as `internalBgpNbrMaxHopsAway` / `externalBgpNbrMaxHopsAway`
  and `authenticationEnabled`;
- in 8.4 `set ip vpn next-hop` is ambiguous (`set ipv4 vpn next-hop`),
  and `no network P rd RD label L` takes no route map;
- toward an eBGP peer FRR sends its own address as next hop whatever the
  route map set; over iBGP the set one goes through;
- with no zebra, next hops are taken as reachable (the hub's router id
  192.0.2.100, on no link, is valid and best);
- `show bgp ipv4 vpn rd RD P json` is keyed by the RD.

Peers start once for the module; the tests run in file order and each
leaves the sessions up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
from pathlib import Path

import pytest

from conftest import HDVRF_BIN, NS_PREFIX, LineProc, netns_linked, router_header, run, start_router, wait_until

HUB_I, FRR_I = "198.18.21.1", "198.18.21.2"
HUB_E, FRR_E = "198.18.22.1", "198.18.22.2"
HUB_ID = "192.0.2.100"
KEY_I, KEY_E = "frr-ibgp-key", "frr-ebgp-key"
BGPD = "/usr/lib/frr/bgpd"

HUB_CONFIG = """
[[port]]
name = "uplink0"
device = "net_null0,no-rx=1"
role = "core"

[[port]]
name = "core0"
device = "net_null1,no-rx=1"
role = "core"

[[next_hop]]
name = "uplink"
port = "uplink0"
mac = "02:00:5e:00:0b:01"
labels = []

[[next_hop]]
name = "to-i"
port = "core0"
mac = "02:00:5e:00:0c:01"
labels = [3000]

[[next_hop]]
name = "to-e"
port = "core0"
mac = "02:00:5e:00:0c:02"
labels = [3001]

[[service]]
name = "blue"
vpn_label = 2001
hub = [ { prefix = "0.0.0.0/0", next_hop = "uplink" } ]
route_distinguisher = "65000:1"
import_targets = ["65000:2"]
export_targets = ["65000:1", "65000:7"]

[bgp]
asn = 65000
router_id = "HUB_ID"

[[bgp.neighbor]]
address = "FRR_I"
remote_asn = 65000
hold_time = 9
passive = true
via = "to-i"
md5_password = "KEY_I"
ttl_security = true

[[bgp.neighbor]]
address = "FRR_E"
remote_asn = 65100
hold_time = 9
via = "to-e"
md5_password = "KEY_E"
ttl_security = 1
"""


def bgpd_config(asn: int, me: str, hub: str, key: str, rd: str, label: int, rt: str, nh: str, prefix: str) -> str:
    return f"""frr defaults traditional
hostname frr{asn}
log stdout debugging
route-map EXPORT permit 10
 set extcommunity rt {rt}
 set ipv4 vpn next-hop {nh}
exit
router bgp {asn}
 bgp router-id {me}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 timers bgp 3 9
 neighbor {hub} remote-as 65000
 neighbor {hub} password {key}
 neighbor {hub} ttl-security hops 1
 neighbor {hub} timers connect 1
 address-family ipv4 vpn
  neighbor {hub} activate
  network {prefix} rd {rd} label {label} route-map EXPORT
 exit-address-family
exit
"""


class Frr:
    """One bgpd in `netns`, everything it writes in `dir`."""

    def __init__(self, netns: str, dir: Path, asn: int, me: str, hub: str, key: str, route: tuple):
        self.netns, self.dir, self.asn, self.me, self.hub = netns, dir, asn, me, hub
        self.route = route  # (prefix, rd, label, rt, next hop)
        dir.mkdir(exist_ok=True)
        prefix, rd, label, rt, nh = route
        self.conf = dir / "bgpd.conf"
        self.conf.write_text(bgpd_config(asn, me, hub, key, rd, label, rt, nh, prefix))
        self.proc: LineProc | None = None

    def start(self, procs: list) -> None:
        (self.dir / "bgpd.vty").unlink(missing_ok=True)
        self.proc = LineProc(
            ["ip", "netns", "exec", self.netns, BGPD, "-f", str(self.conf), "-i", str(self.dir / "bgpd.pid"),
             "-z", str(self.dir / "zserv.api"), "--vty_socket", str(self.dir), "-S", "-Z", "-n", "-P", "0"],
            f"bgpd{self.asn}",
        )
        procs.append(self.proc)
        wait_until(lambda: (self.dir / "bgpd.vty").exists(), 20, f"bgpd {self.asn}'s vty socket")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(signal.SIGKILL, timeout=10)

    def vtysh(self, *cmds: str) -> str:
        argv = ["ip", "netns", "exec", self.netns, "vtysh", "--vty_socket", str(self.dir)]
        for c in cmds:
            argv += ["-c", c]
        return run(*argv).stdout

    def json(self, cmd: str):
        return json.loads(self.vtysh(cmd))

    def configure(self, *lines: str) -> None:
        self.vtysh("configure terminal", f"router bgp {self.asn}", *lines)

    def neighbor(self) -> dict:
        return self.json(f"show bgp neighbors {self.hub} json").get(self.hub, {})

    def established(self) -> bool:
        return self.neighbor().get("bgpState") == "Established"

    def vpn_routes(self) -> dict:
        """{(rd, prefix): (label, next hop, targets, AS_PATH)} of the routes
        FRR learnt from the hub (its own left out)."""
        out = {}
        table = self.json("show bgp ipv4 vpn json").get("routes", {}).get("routeDistinguishers", {})
        for rd, prefixes in table.items():
            for prefix, paths in prefixes.items():
                for p in paths:
                    if p.get("peerId") != self.hub:
                        continue
                    d = self.json(f"show bgp ipv4 vpn rd {rd} {prefix} json")[rd]["paths"][0]
                    out[(rd, prefix)] = (
                        d.get("remoteLabel"),
                        d["nexthops"][0]["ip"],
                        sorted(d.get("extendedCommunity", {}).get("string", "").replace("RT:", "").split()),
                        [a for seg in d["aspath"]["segments"] for a in seg["list"]],
                    )
        return out


class Hub:
    def __init__(self, procs: list, tmp: Path, netns: str):
        self.sock = tmp / "hub.sock"
        cfg = tmp / "hub.toml"
        text = HUB_CONFIG
        for k, v in {"HUB_ID": HUB_ID, "FRR_I": FRR_I, "FRR_E": FRR_E, "KEY_I": KEY_I, "KEY_E": KEY_E}.items():
            text = text.replace(k, v)
        cfg.write_text(router_header(str(self.sock), role="hub", label_base=2000) + text)
        self.proc = start_router(procs, netns, cfg, name="hub")

    def ctl(self, *args: str):
        p = run(HDVRF_BIN, "ctl", "-s", str(self.sock), "-j", *args)
        return json.loads(p.stdout) if p.stdout.strip() else None

    def neighbor(self, address: str) -> dict:
        return {n["address"]: n for n in self.ctl("show", "bgp", "neighbors")}[address]

    def rib_in(self, address: str) -> dict:
        return {
            (r["rd"], f'{r["prefix"]}'): (r["label"], r["next_hop"], sorted(r["route_targets"]), r.get("as_path"))
            for r in self.ctl("show", "bgp", "rib", "in")
            if r["neighbor"] == address
        }

    def rib_out(self, address: str) -> dict:
        return {
            (r["rd"], r["prefix"]): (r["label"], r["next_hop"], sorted(r["route_targets"]), r.get("as_path"))
            for r in self.ctl("show", "bgp", "rib", "out")
            if r["neighbor"] == address
        }


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.access(BGPD, os.X_OK):
        pytest.skip("FRR's bgpd is not installed (Debian package frr; scripts/setup)")
    tmp = tmp_path_factory.mktemp("frr")
    pid = os.getpid()
    h, i, e = (f"{NS_PREFIX}{pid}-fr{x}" for x in "hie")
    with netns_linked(
        (h, i, e),
        ((f"hf{pid % 10000}i", h, f"{HUB_I}/24"), (f"fh{pid % 10000}i", i, f"{FRR_I}/24")),
        ((f"hf{pid % 10000}e", h, f"{HUB_E}/24"), (f"fh{pid % 10000}e", e, f"{FRR_E}/24")),
    ) as procs:
        env = Env()
        env.h, env.i, env.e, env.procs = h, i, e, procs
        env.hub = Hub(procs, tmp, h)
        env.frr_i = Frr(i, tmp / "i", 65000, FRR_I, HUB_I, KEY_I, ("10.21.0.0/24", "65000:21", 3021, "65000:2", "192.0.2.21"))
        env.frr_e = Frr(e, tmp / "e", 65100, FRR_E, HUB_E, KEY_E, ("10.22.0.0/24", "65100:22", 3022, "65000:2", "192.0.2.22"))
        env.frr_i.start(procs)
        env.frr_e.start(procs)
        yield env


def both_up(env) -> bool:
    return (
        env.frr_i.established()
        and env.frr_e.established()
        and env.hub.neighbor(FRR_I)["state"] == "Established"
        and env.hub.neighbor(FRR_E)["state"] == "Established"
    )


def hub_default(as_path: list[int]) -> dict:
    """The hub's 0/0 as a FRR peer should learn it."""
    return {("65000:1", "0.0.0.0/0"): (2001, HUB_ID, ["65000:1", "65000:7"], as_path)}


def test_ibgp_and_ebgp_up_with_md5_and_gtsm(env):
    wait_until(lambda: both_up(env), 40, "both FRR sessions Established")
    for frr, kind in ((env.frr_i, "ibgp"), (env.frr_e, "ebgp")):
        n = env.hub.neighbor(frr.me)
        assert (n["type"], n["md5"], n["ttl_security_hops"]) == (kind, True, 1), n
        f = frr.neighbor()
        assert f["addressFamilyInfo"].get("ipv4Vpn", {}).get("acceptedPrefixCounter") is not None, f
        # FRR's side: MD5 and GTSM (one hop: its sockets take only TTL
        # 255, so everything the hub sent, its listener's SYN-ACKs
        # included, left with 255) on, and VPNv4 negotiated.
        assert f["authenticationEnabled"] == 1, f
        assert f.get(f"{'in' if kind == 'ibgp' else 'ex'}ternalBgpNbrMaxHopsAway") == 1, f
        assert f["neighborCapabilities"]["multiprotocolExtensions"]["ipv4Vpn"]["advertisedAndReceived"], f


def test_routes_both_ways_exactly_as_sent(env):
    wait_until(lambda: both_up(env), 40, "both FRR sessions Established")
    # hdvrf -> FRR: RD, label, targets and next hop as the hub's Adj-RIB-Out has them.
    for frr, path in ((env.frr_i, []), (env.frr_e, [65000])):
        want = hub_default(path)
        out = {k: v[:3] for k, v in env.hub.rib_out(frr.me).items()}
        assert out == {k: v[:3] for k, v in want.items()}, out
        wait_until(lambda: frr.vpn_routes() == want, 20, f"the hub's 0/0 at FRR {frr.asn}")
    # FRR -> hdvrf: what FRR advertises, as FRR says it sends it.
    for frr, path in ((env.frr_i, []), (env.frr_e, [65100])):
        prefix, rd, label, rt, nh = frr.route
        if frr is env.frr_e:
            # Toward an eBGP peer FRR puts its own address in the next hop
            # (RFC 4271 section 5.1.3), whatever the route map set; over
            # iBGP the route map's goes through unchanged.
            nh = frr.neighbor()["nexthop"]
            assert nh == FRR_E
        want = {(rd, prefix): (label, nh, [rt], path)}
        wait_until(lambda: env.hub.rib_in(frr.me) == want, 20, f"FRR {frr.asn}'s route at the hub")
        adv = frr.json(f"show bgp ipv4 vpn neighbors {frr.hub} advertised-routes json")
        assert prefix in json.dumps(adv) and rd in json.dumps(adv), adv
    # Both imported (target 65000:2) into the hub table through each neighbour's next hop.
    routes = {r["prefix"]: r["next_hop"] for r in env.hub.ctl("show", "routes", "blue", "hub")}
    assert routes == {"0.0.0.0/0": "uplink", "10.21.0.0/24": "~bgp/to-i/3021", "10.22.0.0/24": "~bgp/to-e/3022"}, routes


def test_withdraws_both_ways(env):
    wait_until(lambda: both_up(env), 40, "both FRR sessions Established")
    # hdvrf -> FRR: a route added by ctl is advertised, then withdrawn.
    env.hub.ctl("route", "add", "blue", "hub", "10.99.0.0/24", "uplink")
    for frr in (env.frr_i, env.frr_e):
        wait_until(lambda: ("65000:1", "10.99.0.0/24") in frr.vpn_routes(), 20, f"10.99.0.0/24 at FRR {frr.asn}")
    env.hub.ctl("route", "del", "blue", "hub", "10.99.0.0/24")
    for frr in (env.frr_i, env.frr_e):
        wait_until(lambda: ("65000:1", "10.99.0.0/24") not in frr.vpn_routes(), 20, f"10.99.0.0/24 withdrawn at FRR {frr.asn}")
    # FRR -> hdvrf: `no network` withdraws; `network` brings it back.
    for frr in (env.frr_i, env.frr_e):
        prefix, rd, label, _, _ = frr.route
        frr.configure("address-family ipv4 vpn", f"no network {prefix} rd {rd} label {label}")
        wait_until(lambda: env.hub.rib_in(frr.me) == {}, 20, f"FRR {frr.asn}'s route withdrawn at the hub")
        frr.configure("address-family ipv4 vpn", f"network {prefix} rd {rd} label {label} route-map EXPORT")
        wait_until(lambda: len(env.hub.rib_in(frr.me)) == 1, 20, f"FRR {frr.asn}'s route back at the hub")
    assert all(env.hub.neighbor(a)["notifications_received"] == 0 for a in (FRR_I, FRR_E))


def md5_failures(netns: str) -> int:
    t = run("ip", "netns", "exec", netns, "cat", "/proc/net/netstat").stdout
    rows = [l.split() for l in t.splitlines() if l.startswith("TcpExt:")]
    return int(rows[1][rows[0].index("TCPMD5Failure")])


def test_a_wrong_password_keeps_the_session_down(env):
    wait_until(lambda: both_up(env), 40, "both FRR sessions Established")
    frr = env.frr_i
    before = md5_failures(env.h)
    frr.configure(f"neighbor {HUB_I} password not-{KEY_I}")
    wait_until(lambda: env.hub.neighbor(FRR_I)["state"] != "Established", 20, "the hub's iBGP session down")
    # Its SYNs reach the hub's kernel and are refused there, again and again.
    wait_until(lambda: md5_failures(env.h) >= before + 3, 30, "badly signed SYNs refused by the hub")
    assert env.hub.neighbor(FRR_I)["state"] != "Established"
    assert not frr.established()
    frr.configure(f"neighbor {HUB_I} password {KEY_I}")
    wait_until(lambda: both_up(env), 40, "the iBGP session back with the right password")
    # The keys appear in neither the hub's log nor what `show` says.
    said = "\n".join(list(env.hub.proc.out) + list(env.hub.proc.err)) + json.dumps(env.hub.ctl("show", "bgp", "neighbors"))
    assert KEY_I not in said and KEY_E not in said


GTSM_PROBE = """
import socket, struct, sys
peer, key, ttl = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton(peer)
sig = addr.ljust(128, b"\\0") + struct.pack("=BBHi", 0, 0, len(key), 0) + key.ljust(80, b"\\0")
sk.setsockopt(socket.IPPROTO_TCP, 14, sig)  # TCP_MD5SIG
sk.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
sk.settimeout(20)
sk.connect((peer, 179))
print("connected", flush=True)
print("closed" if sk.recv(1) == b"" else "data", flush=True)
"""


def test_gtsm_refuses_a_connection_from_further_away(env, tmp_path):
    """A connection from FRR I's address, signed with its key, but sent
    with TTL 253 (two hops away as it arrives): the hub closes it and
    counts it; the session stays up."""
    wait_until(lambda: both_up(env), 40, "both FRR sessions Established")
    probe = tmp_path / "probe.py"
    probe.write_text(GTSM_PROBE)
    p = run("ip", "netns", "exec", env.i, "python3", str(probe), HUB_I, KEY_I, "253", timeout=30)
    assert p.stdout.split() == ["connected", "closed"], p.stdout
    n = env.hub.neighbor(FRR_I)
    assert (n["ttl_refused"], n["state"]) == (1, "Established"), n


def test_frr_restarted_is_relearnt(env):
    wait_until(lambda: both_up(env), 40, "both FRR sessions Established")
    frr = env.frr_e
    frr.kill()
    # No NOTIFICATION from a killed bgpd: the hold timer (9 s) or the
    # connection's reset takes the session and its route down.
    wait_until(lambda: env.hub.rib_in(FRR_E) == {}, 30, "FRR E's route gone at the hub")
    frr.start(env.procs)
    wait_until(lambda: both_up(env), 40, "FRR E back up")
    prefix, rd, label, rt, _ = frr.route
    wait_until(lambda: env.hub.rib_in(FRR_E) == {(rd, prefix): (label, FRR_E, [rt], [65100])}, 20, "FRR E's route relearnt")
    wait_until(lambda: frr.vpn_routes() == hub_default([65000]), 20, "the hub's 0/0 relearnt by FRR E")
