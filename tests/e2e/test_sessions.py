"""Subscriber sessions through hdvrf's DHCP relay, with a real Kea:

    netns A (clients)         netns R (hdvrf)                     netns K (Kea)
    [tap] <--fd--> access0 (untagged: blue, VLAN 100: red)
                   core0 <--fd--> [tap] netns C (labelled frames from "the hub")
                   relay sockets on 10.0.0.1:67 and 10.1.0.1:67 (on lo)
                   rk: 192.0.2.254/24  <--veth-->  kk: 192.0.2.50/24, kea-dhcp4

Two clients on the untagged port and one on VLAN 100 (scapy DHCP clients
with their own MACs) get leases from Kea through the relay; their host
routes appear in the downstream tables; the gateway answers ARP; a packet
with another client's source is dropped and counted; RELEASE removes the
route; red's 10-second lease expires and its route goes too. Each
session counts its own packets and bytes each way and the spoofed packets
its client sent.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from conftest import (
    HDVRF_BIN,
    HERE,
    MBUFS_RE,
    NS_PREFIX,
    PYTHON,
    LineProc,
    delete_netns,
    delete_stale_netns,
    make_netns,
    router_header,
    run,
    send_frames,
    start_kea,
    start_router,
    veth,
    wait_until,
)

MAC1, MAC2, MAC3, MAC4 = (f"02:00:5e:10:00:0{i}" for i in range(1, 5))
KEA_ADDR = "192.0.2.50"
# Red's lease, seconds: short enough to watch expire, long enough that a
# renewal at half of it is clearly before its end on a loaded machine.
RED_LEASE = 10
_seq = itertools.count()


def hdvrf_config(path: Path, if_a: str, if_c: str, sock: Path, journal: Path) -> None:
    path.write_text(
        router_header(sock, "127.0.0.1:9469", control_extra=f'session_journal = "{journal}"\nmax_sessions = 3\n')
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
labels = [100, 2001]

[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
address_server = "{KEA_ADDR}"
access = [ {{ port = "access0" }} ]
upstream = [ {{ prefix = "0.0.0.0/0", next_hop = "hub" }} ]

[[service]]
name = "red"
gateway = "10.1.0.1"
vpn_label = 1002
address_server = "{KEA_ADDR}"
access = [ {{ port = "access0", vlan = 100 }} ]
upstream = [ {{ prefix = "0.0.0.0/0", next_hop = "hub" }} ]
"""
    )


def kea_config(path: Path, iface: str, leases: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "Dhcp4": {
                    "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "udp"},
                    "lease-database": {"type": "memfile", "persist": True, "name": str(leases), "lfc-interval": 0},
                    "valid-lifetime": 3600,
                    "subnet4": [
                        {"id": 1, "subnet": "10.0.0.0/24", "pools": [{"pool": "10.0.0.100 - 10.0.0.150"}]},
                        {
                            "id": 2,
                            "subnet": "10.1.0.0/24",
                            "pools": [{"pool": "10.1.0.100 - 10.1.0.150"}],
                            "valid-lifetime": RED_LEASE,
                            "min-valid-lifetime": RED_LEASE,
                            "max-valid-lifetime": RED_LEASE,
                        },
                    ],
                    "loggers": [
                        {"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "INFO"}
                    ],
                }
            },
            indent=1,
        )
    )


class Env:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        n, pid = next(_seq), os.getpid()
        self.ns_r, self.ns_a, self.ns_k = (f"{NS_PREFIX}{pid}-s{n}{x}" for x in "rak")
        self.ns_c = f"{NS_PREFIX}{pid}-s{n}c"
        self.if_a, self.if_c = f"hdv{pid}s{n}a", f"hdv{pid}s{n}c"
        self.sock = tmp / "hdvrf.sock"
        self.procs: list[LineProc] = []
        self.made: list[str] = []
        self.hdvrf: LineProc | None = None

    def start_hdvrf(self) -> None:
        """Starts hdvrf in namespace R and moves its taps to A and C."""
        self.hdvrf = start_router(self.procs, self.ns_r, self.cfg, ((self.if_a, self.ns_a), (self.if_c, self.ns_c)))

    def start_kea(self) -> None:
        self.kea = start_kea(self.procs, self.ns_k, "kk", self.kea_cfg, self.tmp)

    def ctl_json(self, *args: str):
        return json.loads(run(HDVRF_BIN, "ctl", "-s", str(self.sock), "-j", *args).stdout)

    def client(self, mac: str, vlan: int, *action: str) -> list[str]:
        p = run("ip", "netns", "exec", self.ns_a, PYTHON, str(HERE / "dhcp_client.py"), self.if_a, mac, str(vlan), *action, check=False, timeout=60)
        assert p.returncode == 0, f"dhcp client {mac} {action}: {p.stderr.strip()}\n{self.hdvrf.describe() if self.hdvrf else ''}"
        return p.stdout.split()

    def send(self, frames: list[bytes], name: str) -> None:
        send_frames(self.procs, self.ns_a, self.if_a, frames, self.tmp / f"{name}.hex")

    def send_core(self, frames: list[bytes], name: str) -> None:
        send_frames(self.procs, self.ns_c, self.if_c, frames, self.tmp / f"{name}.hex")

    def counters(self) -> dict[str, dict]:
        """Each session's counters, by client MAC."""
        keys = ("up_packets", "up_bytes", "down_packets", "down_bytes", "spoofed_drops")
        return {s["mac"]: {k: s[k] for k in keys} for s in self.ctl_json("show", "sessions")}

    def routes(self, service: str) -> dict[str, str]:
        return {r["prefix"]: r["next_hop"] for r in self.ctl_json("show", "routes", service, "downstream")}

    def drops(self, reason: str) -> int:
        return self.ctl_json("show", "drops")["reasons"].get(reason, 0)

    def outcome(self, name: str) -> int:
        return self.ctl_json("show", "stats")["total"]["outcomes"].get(name, 0)


@pytest.fixture
def env(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, tap interfaces, DPDK)")
    if not shutil.which("kea-dhcp4"):
        pytest.fail("kea-dhcp4 not found: scripts/setup installs kea-dhcp4-server")
    delete_stale_netns()
    e = Env(tmp_path)
    try:
        for ns in (e.ns_r, e.ns_a, e.ns_k, e.ns_c):
            e.made.append(ns)
            make_netns(ns)
        # The server network between the router and Kea.
        veth(("rk", e.ns_r, "192.0.2.254/24"), ("kk", e.ns_k, f"{KEA_ADDR}/24"))
        run("ip", "-n", e.ns_k, "route", "add", "10.0.0.0/8", "via", "192.0.2.254")
        e.kea_cfg = tmp_path / "kea.json"
        kea_config(e.kea_cfg, "kk", tmp_path / "leases.csv")
        e.start_kea()

        e.cfg = tmp_path / "spoke.toml"
        hdvrf_config(e.cfg, e.if_a, e.if_c, e.sock, tmp_path / "sessions.journal")
        e.start_hdvrf()
        yield e
    finally:
        for p in e.procs:
            p.kill()
        for ns in e.made:
            delete_netns(ns)


def frames_from(mac: str, src: str, n: int, vlan: int = 0) -> list[bytes]:
    out = []
    for i in range(n):
        e = Ether(src=mac, dst="02:00:00:00:00:01")
        if vlan:
            e = e / Dot1Q(vlan=vlan)
        out.append(bytes(e / IP(src=src, dst="198.51.100.7") / UDP(sport=5000 + i, dport=9) / Raw(b"x" * 20)))
    return out


def frames_to(dst: str, n: int) -> list[bytes]:
    """From the hub: transport label 1000 over blue's VPN label 1001."""
    labels = struct.pack("!II", 1000 << 12 | 64, 1001 << 12 | 1 << 8 | 64)
    ip = IP(src="198.51.100.7", dst=dst) / UDP(sport=9, dport=5000) / Raw(b"y" * 30)
    return [bytes(Ether(src="02:00:5e:00:02:09", dst="02:00:00:00:00:02", type=0x8847) / Raw(labels + bytes(ip))) for _ in range(n)]


def counted(up: int = 0, up_bytes: int = 0, down: int = 0, down_bytes: int = 0, spoofed: int = 0) -> dict:
    return {"up_packets": up, "up_bytes": up_bytes, "down_packets": down, "down_bytes": down_bytes, "spoofed_drops": spoofed}


def test_dhcp_relay_sessions_routes_spoofing_release_and_expiry(env: Env):
    e = env
    l1 = e.client(MAC1, 0, "lease")
    l2 = e.client(MAC2, 0, "lease")
    l3 = e.client(MAC3, 100, "lease")
    (a1, sid, t1), (a2, _, _), (a3, _, t3) = l1[1:4], l2[1:4], l3[1:4]
    assert a1.startswith("10.0.0.") and a2.startswith("10.0.0.") and a1 != a2, (l1, l2)
    assert a3.startswith("10.1.0.") and int(t3) == RED_LEASE and int(t1) == 3600, (l1, l3)
    assert sid == KEA_ADDR
    # control.max_sessions is 3: a fourth client is not relayed (red's
    # lease is 10 s; this is within a second or two of it).
    p = run("ip", "netns", "exec", e.ns_a, "env", "DHCP_TIMEOUT=1", PYTHON, str(HERE / "dhcp_client.py"), e.if_a, MAC4, "0", "lease", check=False, timeout=60)
    assert p.returncode != 0 and "no OFFER" in p.stderr, p.stdout + p.stderr
    assert e.ctl_json("show", "stats")["relay"]["drops"].get("sessions_full", 0) >= 1
    assert len(e.ctl_json("show", "sessions")) == 3
    wait_until(lambda: any("the most control.max_sessions allows" in l for l in list(e.hdvrf.err)), 10, "the relay's sessions-full line")

    # Each lease is a downstream host route to its client.
    blue, red = e.routes("blue"), e.routes("red")
    assert blue == {f"{a1}/32": f"~{MAC1}", f"{a2}/32": f"~{MAC2}"}, blue
    assert red == {f"{a3}/32": f"~{MAC3}"}, red
    sessions = {s["mac"]: s for s in e.ctl_json("show", "sessions")}
    assert set(sessions) == {MAC1, MAC2, MAC3}, sessions
    assert (sessions[MAC3]["service"], sessions[MAC3]["vlan"], sessions[MAC3]["address"]) == ("red", 100, a3)

    # The metrics count them per service.
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9469/metrics', timeout=5).read().decode())"
    text = run("ip", "netns", "exec", e.ns_r, PYTHON, "-c", code).stdout
    assert 'hdvrf_sessions{service="blue"} 2' in text and 'hdvrf_sessions{service="red"} 1' in text, text[-2000:]

    # The gateway answers ARP on its service's port and VLAN.
    mac_access = e.client(MAC1, 0, "arp", "10.0.0.1")[1]
    assert e.client(MAC3, 100, "arp", "10.1.0.1")[1] == mac_access

    # Client 1 with its own address goes upstream; with client 2's it is
    # dropped as spoofed.
    up0, sp0 = e.outcome("fwd_upstream"), e.drops("drop_spoofed_source")
    e.send(frames_from(MAC1, a1, 10), "own")
    e.send(frames_from(MAC1, a2, 7), "spoofed")
    wait_until(lambda: e.outcome("fwd_upstream") >= up0 + 10, 10, "10 packets upstream")
    wait_until(lambda: e.drops("drop_spoofed_source") >= sp0 + 7, 10, "7 spoofed packets counted")
    assert e.outcome("fwd_upstream") == up0 + 10
    # From the hub, 4 packets to client 1 and 3 to client 2.
    dn0 = e.outcome("fwd_downstream")
    e.send_core(frames_to(a1, 4) + frames_to(a2, 3), "down")
    wait_until(lambda: e.outcome("fwd_downstream") >= dn0 + 7, 10, "7 packets downstream")
    # Per session: client 1's own 10 (48-byte IPv4 packets) up, 4 (58
    # bytes) down, and the 7 with client 2's source it sent, charged to
    # client 1 (the sender), not to client 2 (whose address it used).
    c = e.counters()
    assert c[MAC1] == counted(10, 480, 4, 232, 7), c
    assert c[MAC2] == counted(down=3, down_bytes=174), c

    # RELEASE: the route goes.
    e.client(MAC2, 0, "release", a2, KEA_ADDR)
    wait_until(lambda: f"{a2}/32" not in e.routes("blue"), 10, "client 2's route removed on RELEASE")
    assert f"{a1}/32" in e.routes("blue")

    # A second red client renews its short lease half way (unicast
    # REQUEST to the server, relayed): it outlives the first one's.
    a4 = e.client(MAC4, 100, "lease")[1]
    got4 = time.monotonic()
    wait_until(lambda: time.monotonic() - got4 >= RED_LEASE / 2, RED_LEASE, "half of the lease")
    renewed = e.client(MAC4, 100, "renew", a4, KEA_ADDR)
    assert renewed[:2] == ["renewed", a4], renewed

    # Red's first lease runs out: its route goes without any message; the
    # renewed one stays.
    wait_until(lambda: f"{a3}/32" not in e.routes("red"), 2 * RED_LEASE, "the expired lease's route removed")
    # Past the renewed lease's first term it is still there (its new end
    # is half a lease later).
    wait_until(lambda: time.monotonic() - got4 >= RED_LEASE + 1, 2 * RED_LEASE, "the renewed lease's first term to pass")
    assert e.routes("red") == {f"{a4}/32": f"~{MAC4}"}, "the renewal did not extend the session"
    # Then it too expires (not renewed again).
    wait_until(lambda: not e.routes("red"), 2 * RED_LEASE, "the renewed lease's route removed at its end")
    assert {s["mac"] for s in e.ctl_json("show", "sessions")} == {MAC1}

    # Kea stops: clients get nothing, no session appears without an ACK,
    # and hdvrf says so once per interval, not once per request.
    assert e.kea.stop(timeout=20) is not None
    sent0 = e.ctl_json("show", "stats")["relay"]["to_server"]
    t0 = time.monotonic()
    for _ in range(6):
        p = run("ip", "netns", "exec", e.ns_a, "env", "DHCP_TIMEOUT=1", PYTHON, str(HERE / "dhcp_client.py"), e.if_a, MAC2, "0", "lease", check=False, timeout=60)
        assert p.returncode != 0 and "no OFFER" in p.stderr, p.stdout + p.stderr
    took = time.monotonic() - t0
    assert e.ctl_json("show", "stats")["relay"]["to_server"] >= sent0 + 6
    silent = [l for l in e.hdvrf.err if "has not answered" in l]
    # 6 requests, one line per 10 s interval at most.
    assert 1 <= len(silent) <= 1 + int(took // 10), (took, silent)
    assert f"address server {KEA_ADDR}:67" in silent[0], silent
    assert {s["mac"] for s in e.ctl_json("show", "sessions")} == {MAC1}
    servers = e.ctl_json("show", "stats")["relay"]["servers"]
    assert servers[f"{KEA_ADDR}:67"]["answering"] is False, servers

    # Kea returns (same lease file): the relay notices and clients get
    # addresses again.
    e.start_kea()
    a2b = e.client(MAC2, 0, "lease")[1]
    assert f"{a2b}/32" in e.routes("blue")
    e.hdvrf.wait_line(lambda l: "answers again" in l, 10, "the relay's recovery line")
    lines = e.hdvrf.lines()
    assert any("session down: " + a2 in l for l in lines), e.hdvrf.describe()
    assert any("session down: " + a3 + " lease expired" in l for l in lines), e.hdvrf.describe()

    # hdvrf killed outright and started again: the journal brings both
    # sessions back, routes and anti-spoofing entries with them.
    before = {s["mac"]: s["address"] for s in e.ctl_json("show", "sessions")}
    assert before == {MAC1: a1, MAC2: a2b}, before
    e.hdvrf.proc.kill()
    e.hdvrf.wait(timeout=30)
    e.start_hdvrf()
    e.hdvrf.wait_line(lambda l: "2 sessions restored" in l, 10, "the journal's restore line")
    after = {s["mac"]: s["address"] for s in e.ctl_json("show", "sessions")}
    assert after == before, after
    assert e.routes("blue") == {f"{a1}/32": f"~{MAC1}", f"{a2b}/32": f"~{MAC2}"}
    e.send(frames_from(MAC1, a1, 5), "after-restart")
    wait_until(lambda: e.outcome("fwd_upstream") >= 5, 10, "client 1's packets upstream after the restart")
    assert e.drops("drop_spoofed_source") == 0
    # A restored session counts from the restart.
    wait_until(lambda: e.counters()[MAC1]["up_packets"] == 5, 10, "client 1's restored session counting")
    assert e.counters() == {MAC1: counted(5, 240), MAC2: counted()}

    rc = e.hdvrf.stop(timeout=30)
    assert rc == 0, e.hdvrf.describe()
    mbufs = [m for m in map(MBUFS_RE.match, e.hdvrf.lines()) if m]
    assert len(mbufs) == 1 and mbufs[0].group(1) == mbufs[0].group(2), e.hdvrf.describe()
