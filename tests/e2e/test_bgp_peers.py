"""BGP between two hdvrf (a spoke and a hub), and a running hdvrf facing a
peer that sends a bad OPEN and a malformed UPDATE.

    netns S: hdvrf spoke, AS 65000, sh 198.18.1.1 <--veth--> hs 198.18.1.2, netns H: hdvrf hub

The spoke advertises its downstream route 10.0.0.0/24 (label 1001) and
learns the hub's 0/0 (label 2001, the hub's own uplink route); the hub
puts the spoke's route in its hub table (the return path). No NIC: the
data ports are net_null.

The hostile peer is this test on a raw TCP socket: the byte layouts are
those of RFC 4271 section 4, RFC 4760 and RFC 8277, written out here so
that the test controls every byte.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from conftest import NS_PREFIX, PYTHON, CtlRouter, LineProc, netns_linked, router_header, run, wait_until

SPOKE, HUB = "198.18.1.1", "198.18.1.2"


def config(role: str, me: str, peer: str, passive: bool) -> str:
    """A router's configuration; `CtlRouter` fills in its socket for SOCK."""
    ports = (
        '[[port]]\nname = "access0"\ndevice = "net_null0,no-rx=1"\nrole = "access"\n'
        if role == "spoke"
        else '[[port]]\nname = "uplink0"\ndevice = "net_null0,no-rx=1"\nrole = "core"\n'
    )
    if role == "spoke":
        service = f"""[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
access = [ {{ port = "access0" }} ]
downstream = [ {{ prefix = "10.0.0.0/24", next_hop = "lan" }} ]
route_distinguisher = "65000:100"
import_targets = ["65000:1"]
export_targets = ["65000:2"]
"""
        lan = '[[next_hop]]\nname = "lan"\nport = "access0"\nmac = "02:00:5e:00:0a:01"\nlabels = []\n'
    else:
        service = f"""[[service]]
name = "blue"
vpn_label = 2001
hub = [ {{ prefix = "0.0.0.0/0", next_hop = "uplink" }} ]
route_distinguisher = "65000:1"
import_targets = ["65000:2"]
export_targets = ["65000:1"]
"""
        lan = '[[next_hop]]\nname = "uplink"\nport = "uplink0"\nmac = "02:00:5e:00:0b:01"\nlabels = []\n'
    return router_header("SOCK", role=role, label_base=1000 if role == "spoke" else 2000) + f"""
{ports}
[[port]]
name = "core0"
device = "net_null1,no-rx=1"
role = "core"

[[next_hop]]
name = "peer"
port = "core0"
mac = "02:00:5e:00:0c:01"
labels = [{2000 if role == "spoke" else 1000}]

{lan}
{service}
[bgp]
asn = 65000
router_id = "{me}"

[[bgp.neighbor]]
address = "{peer}"
remote_asn = 65000
hold_time = 9
passive = {"true" if passive else "false"}
via = "peer"
"""




@pytest.fixture
def namespaces(tmp_path):
    pid = os.getpid()
    s, h = f"{NS_PREFIX}{pid}-ps", f"{NS_PREFIX}{pid}-ph"
    with netns_linked((s, h), (("sh", s, f"{SPOKE}/24"), ("hs", h, f"{HUB}/24"))) as procs:
        yield s, h, procs


def test_a_spoke_and_a_hub_exchange_routes(namespaces, tmp_path):
    s, h, procs = namespaces
    hub = CtlRouter(procs, tmp_path, h, "hub", config("hub", HUB, SPOKE, passive=True))
    spoke = CtlRouter(procs, tmp_path, s, "spoke", config("spoke", SPOKE, HUB, passive=False))
    wait_until(lambda: spoke.neighbor()["state"] == "Established" and hub.neighbor()["state"] == "Established", 30, "spoke and hub Established")
    # The hub's uplink route is the spoke's upstream default, through the
    # hub's transport label and the hub's VPN label.
    wait_until(lambda: spoke.routes("upstream") == {"0.0.0.0/0": "~bgp/peer/2001"}, 20, "the hub's 0/0 at the spoke")
    nh = {n["name"]: n for n in spoke.ctl("show", "next-hops")}["~bgp/peer/2001"]
    assert nh["labels"] == [2000, 2001], nh
    # The spoke's downstream route is in the hub table: the return path.
    wait_until(lambda: hub.routes("hub").get("10.0.0.0/24") == "~bgp/peer/1001", 20, "the spoke's route at the hub")
    assert hub.routes("hub") == {"0.0.0.0/0": "uplink", "10.0.0.0/24": "~bgp/peer/1001"}
    learnt = hub.ctl("show", "bgp", "rib", "in")
    assert [(r["prefix"], r["rd"], r["label"], r["next_hop"], r["route_targets"]) for r in learnt] == [
        ("10.0.0.0/24", "65000:100", 1001, SPOKE, ["65000:2"])
    ], learnt
    # The spoke stops: its neighbour sends a Cease, the hub drops its route.
    assert spoke.proc.stop(timeout=30) == 0, spoke.proc.describe()
    wait_until(lambda: "10.0.0.0/24" not in hub.routes("hub"), 20, "the spoke's route gone at the hub")
    assert hub.neighbor()["notifications_received"] == 1, hub.neighbor()


# Raw BGP for the hostile peer.
MARKER = b"\xff" * 16


def message(kind: int, body: bytes) -> bytes:
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def open_msg(asn: int, hold: int, router_id: str) -> bytes:
    caps = bytes([1, 4, 0, 1, 0, 128]) + bytes([65, 4]) + struct.pack("!I", asn)
    params = bytes([2, len(caps)]) + caps
    return message(1, struct.pack("!BHH4sB", 4, asn if asn < 65536 else 23456, hold, socket.inet_aton(router_id), len(params)) + params)


def update_default(label: int, origin_len: int = 1) -> bytes:
    """An iBGP UPDATE for 0/0, RD 65000:1, target 65000:2 (which the hub
    imports: routes no service imports are not stored), next hop
    198.18.1.1; ORIGIN `origin_len` bytes long (1 is right)."""
    origin = bytes([0x40, 1, origin_len]) + bytes(origin_len)
    as_path = bytes([0x40, 2, 0])
    local_pref = bytes([0x40, 5, 4]) + struct.pack("!I", 100)
    rt = bytes([0xC0, 16, 8, 0x00, 0x02]) + struct.pack("!HI", 65000, 2)
    nlri = bytes([24 + 64]) + struct.pack("!I", label << 4 | 1)[1:] + struct.pack("!HHI", 0, 65000, 1)
    mp = struct.pack("!HBB", 1, 128, 12) + bytes(8) + socket.inet_aton(SPOKE) + b"\x00" + nlri
    mp_reach = bytes([0x80, 14, len(mp)]) + mp
    attrs = origin + as_path + local_pref + rt + mp_reach
    return message(2, struct.pack("!H", 0) + struct.pack("!H", len(attrs)) + attrs)


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 19:
        chunk = sock.recv(19 - len(head))
        assert chunk, "connection closed"
        head += chunk
    length, kind = struct.unpack("!HB", head[16:19])
    body = b""
    while len(body) < length - 19:
        chunk = sock.recv(length - 19 - len(body))
        assert chunk, "connection closed"
        body += chunk
    return kind, body


def connect(netns_peer_ip: str) -> socket.socket:
    sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sk.settimeout(20)
    sk.bind((netns_peer_ip, 0))
    sk.connect((HUB, 179))
    return sk


def test_a_bad_open_and_a_malformed_update_against_a_running_router(namespaces, tmp_path):
    s, h, procs = namespaces
    # hdvrf is the hub (passive); this test, in the spoke's namespace, is
    # its neighbour 198.18.1.1.
    hub = CtlRouter(procs, tmp_path, h, "hub", config("hub", HUB, SPOKE, passive=True))
    # Passive, nobody connected yet: the FSM waits in Active.
    wait_until(lambda: hub.neighbor()["state"] == "Active", 10, "the hub's neighbour in Active")
    peer = LineProc(["ip", "netns", "exec", s, PYTHON, __file__, "peer"], "peer")
    procs.append(peer)
    peer.wait_line(lambda l: l == "sent", 60, "the peer's UPDATEs sent")
    lines = peer.lines()
    # AS 65099 where 65000 is configured: NOTIFICATION 2/2 (Bad Peer AS).
    assert lines[:2] == ["bad-open notification 2 2", "established"], lines
    wait_until(lambda: hub.neighbor()["routes_in"] == 1, 10, "the good UPDATE's route learnt")
    n = hub.neighbor()
    assert (n["state"], n["malformed_updates"], n["notifications_sent"]) == ("Established", 1, 1), n
    assert "notification" not in " ".join(peer.lines()[2:]), peer.lines()
    # The malformed ORIGIN was treated as a withdrawal (RFC 7606 section
    # 7.1): the session stayed up and only the good UPDATE's route is in.
    assert hub.routes("hub").get("0.0.0.0/0") == "uplink"  # configured routes stay over BGP's
    learnt = hub.ctl("show", "bgp", "rib", "in")
    assert [(r["prefix"], r["label"]) for r in learnt] == [("0.0.0.0/0", 3002)], learnt
    assert any("malformed UPDATE" in l for l in hub.proc.err), hub.proc.describe()


def hostile_peer() -> None:
    """Run inside the spoke's namespace by the test above; prints what it
    saw, then holds the session open until killed."""
    # 1. A bad OPEN: the wrong AS.
    sk = connect(SPOKE)
    sk.sendall(open_msg(65099, 9, SPOKE))
    while True:
        kind, body = read_message(sk)
        if kind == 3:
            print(f"bad-open notification {body[0]} {body[1]}", flush=True)
            break
    sk.close()
    # 2. The right OPEN. hdvrf takes connections again after its restart
    # back-off (a second); until then it closes them: poll.
    deadline = time.monotonic() + 30
    while True:
        try:
            sk = connect(SPOKE)
            sk.sendall(open_msg(65000, 9, SPOKE))
            kind, _ = read_message(sk)
            break
        except (AssertionError, OSError):
            assert time.monotonic() < deadline, "hdvrf never took the second connection"
            time.sleep(0.2)
    assert kind == 1, kind
    sk.sendall(message(4, b""))
    kind, _ = read_message(sk)
    assert kind == 4, kind
    print("established", flush=True)
    # 3. ORIGIN two bytes long (treat-as-withdraw), then a good UPDATE.
    sk.sendall(update_default(3001, origin_len=2))
    sk.sendall(update_default(3002))
    print("sent", flush=True)
    # Hold the session (answering nothing is fine for 9 s; the test is
    # done well before) and report a NOTIFICATION if one comes.
    sk.settimeout(None)
    while True:
        try:
            kind, body = read_message(sk)
        except (AssertionError, OSError):
            print("closed", flush=True)
            return
        if kind == 3:
            print(f"notification {body[0]} {body[1]}", flush=True)
            return
        if kind == 4:
            sk.sendall(message(4, b""))


# RFC 7606 attribute by attribute, against one running hub. This test
# process is the peer: its socket is made in the spoke's namespace (setns
# on this thread, then back), so each case drives the session directly.
# The peer proposes hold time 0 (RFC 4271 section 4.2): no KEEPALIVEs to
# answer while the cases run.

CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name: str):
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/ns/net") as home, open(f"/var/run/netns/{name}") as there:
        if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


def attr(flags: int, kind: int, value: bytes) -> bytes:
    if flags & 0x10:
        return bytes([flags, kind]) + struct.pack("!H", len(value)) + value
    return bytes([flags, kind, len(value)]) + value


RT_IMPORTED = b"\x00\x02" + struct.pack("!HI", 65000, 2)  # the hub imports 65000:2
WELL_FORMED = {
    1: attr(0x40, 1, b"\x00"),
    2: attr(0x40, 2, b""),
    5: attr(0x40, 5, struct.pack("!I", 100)),
    16: attr(0xC0, 16, RT_IMPORTED),
}


def vpn_update(prefix: str, label: int, replace: dict[int, bytes] | None = None, extra: bytes = b"") -> bytes:
    """An iBGP VPNv4 UPDATE for `prefix` (RD 65000:100, next hop the
    spoke's address) with the well-formed attributes above, those of
    `replace` in their place and `extra` added."""
    net, plen = prefix.split("/")
    plen = int(plen)
    nlri = bytes([88 + plen]) + struct.pack("!I", label << 4 | 1)[1:] + struct.pack("!HHI", 0, 65000, 100) + socket.inet_aton(net)[: (plen + 7) // 8]
    mp = struct.pack("!HBB", 1, 128, 12) + bytes(8) + socket.inet_aton(SPOKE) + b"\x00" + nlri
    attrs = b"".join({**WELL_FORMED, **(replace or {})}.values()) + extra + attr(0x80, 14, mp)
    return message(2, struct.pack("!HH", 0, len(attrs)) + attrs)


# (attribute, type code, what is wrong, the attribute as sent, RFC 7606's
# action). `replace` cases swap a well-formed attribute for the bad one.
MALFORMED = [
    ("ORIGIN", 1, "length 2", {1: attr(0x40, 1, b"\x00\x00")}, "treat-as-withdraw"),
    ("ORIGIN", 1, "value 3", {1: attr(0x40, 1, b"\x03")}, "treat-as-withdraw"),
    ("ORIGIN", 1, "flagged optional", {1: attr(0xC0, 1, b"\x00")}, "treat-as-withdraw"),
    ("AS_PATH", 2, "segment overruns", {2: attr(0x40, 2, b"\x02\x02" + struct.pack("!I", 65001))}, "treat-as-withdraw"),
    ("AS_PATH", 2, "segment type 5", {2: attr(0x40, 2, b"\x05\x01" + struct.pack("!I", 65001))}, "treat-as-withdraw"),
    ("NEXT_HOP", 3, "length 5", attr(0x40, 3, bytes(5)), "treat-as-withdraw"),
    ("MULTI_EXIT_DISC", 4, "length 2", attr(0x80, 4, bytes(2)), "treat-as-withdraw"),
    ("LOCAL_PREF", 5, "length 3", {5: attr(0x40, 5, b"\x00\x00\x64")}, "treat-as-withdraw"),
    ("ATOMIC_AGGREGATE", 6, "length 1", attr(0x40, 6, b"\x00"), "attribute discard"),
    ("AGGREGATOR", 7, "length 6 with 4-octet ASNs", attr(0xC0, 7, bytes(6)), "attribute discard"),
    ("COMMUNITIES", 8, "length 5", attr(0xC0, 8, bytes(5)), "treat-as-withdraw"),
    ("ORIGINATOR_ID", 9, "length 3", attr(0x80, 9, bytes(3)), "treat-as-withdraw"),
    ("CLUSTER_LIST", 10, "length 6", attr(0x80, 10, bytes(6)), "treat-as-withdraw"),
    ("EXTENDED_COMMUNITIES", 16, "length 12", {16: attr(0xC0, 16, RT_IMPORTED + bytes(4))}, "treat-as-withdraw"),
    ("AS4_PATH", 17, "length 5", attr(0xC0, 17, bytes(5)), "attribute discard"),
    ("AS4_AGGREGATOR", 18, "length 6", attr(0xC0, 18, bytes(6)), "attribute discard"),
    ("LARGE_COMMUNITY", 32, "length 8", attr(0xC0, 32, bytes(8)), "treat-as-withdraw"),
]


class RawPeer:
    """The hub's neighbour 198.18.1.1 on a raw socket, Established."""

    def __init__(self, netns: str):
        with in_netns(netns):
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.sk = connect(SPOKE)
                    self.sk.sendall(open_msg(65000, 0, SPOKE))
                    kind, _ = read_message(self.sk)
                    break
                except (AssertionError, OSError):
                    # hdvrf closes connections until its neighbour is
                    # past its start back-off: poll.
                    assert time.monotonic() < deadline, "hdvrf never took the connection"
                    time.sleep(0.2)
        assert kind == 1, kind
        self.sk.sendall(message(4, b""))
        kind, _ = read_message(self.sk)
        assert kind == 4, kind
        self.buf = b""

    def notifications(self) -> list[tuple[int, int]]:
        """The NOTIFICATIONs (code, subcode) among the messages the hub has
        sent so far (its UPDATEs are read and passed over); closed: (0, 0)."""
        got = []
        self.sk.setblocking(False)
        try:
            while True:
                try:
                    chunk = self.sk.recv(65536)
                except BlockingIOError:
                    break
                if not chunk:
                    got.append((0, 0))
                    break
                self.buf += chunk
        finally:
            self.sk.settimeout(20)
        while len(self.buf) >= 19 and len(self.buf) >= struct.unpack("!H", self.buf[16:18])[0]:
            length, kind = struct.unpack("!HB", self.buf[16:19])
            if kind == 3:
                got.append((self.buf[19], self.buf[20]))
            self.buf = self.buf[length:]
        return got


@pytest.fixture(scope="module")
def raw_hub(tmp_path_factory):
    """One hub for the module, its neighbour this test's raw socket."""
    tmp = tmp_path_factory.mktemp("rfc7606")
    pid = os.getpid()
    s, h = f"{NS_PREFIX}{pid}-7606s", f"{NS_PREFIX}{pid}-7606h"
    with netns_linked((s, h), (("sh", s, f"{SPOKE}/24"), ("hs", h, f"{HUB}/24"))) as procs:
        hub = CtlRouter(procs, tmp, h, "hub", config("hub", HUB, SPOKE, passive=True))
        wait_until(lambda: hub.neighbor()["state"] == "Active", 10, "the hub's neighbour in Active")
        peer = RawPeer(s)
        wait_until(lambda: hub.neighbor()["state"] == "Established", 10, "the hub's neighbour Established")
        yield hub, peer


def rib_in(hub: CtlRouter) -> dict[str, int]:
    return {r["prefix"]: r["label"] for r in hub.ctl("show", "bgp", "rib", "in")}


@pytest.mark.parametrize("case", MALFORMED, ids=[f"{c[0]}-{c[2].replace(' ', '-')}" for c in MALFORMED])
def test_rfc7606_a_malformed_attribute_against_a_running_hub(raw_hub, case):
    hub, peer = raw_hub
    name, code, _, bad, action = case
    i = MALFORMED.index(case)
    prefix, label = f"10.76.{i}.0/24", 3100 + i
    # Advertised well formed first: learnt, and in the hub table.
    peer.sk.sendall(vpn_update(prefix, label))
    wait_until(lambda: rib_in(hub).get(prefix) == label, 10, f"{prefix} learnt")
    wait_until(lambda: hub.routes("hub").get(prefix) == f"~bgp/peer/{label}", 10, f"{prefix} in the hub table")
    before = hub.neighbor()["malformed_updates"]
    err_at = len(hub.proc.err)
    # The same route again (with another label), one attribute malformed.
    if isinstance(bad, dict):
        peer.sk.sendall(vpn_update(prefix, label + 100, replace=bad))
    else:
        peer.sk.sendall(vpn_update(prefix, label + 100, extra=bad))
    wait_until(lambda: hub.neighbor()["malformed_updates"] == before + 1, 10, "malformed_updates counts it")
    if action == "treat-as-withdraw":
        # RFC 7606 section 2: the route the UPDATE advertises is withdrawn,
        # the one it replaced too.
        wait_until(lambda: prefix not in rib_in(hub), 10, f"{prefix} withdrawn")
        wait_until(lambda: prefix not in hub.routes("hub"), 10, f"{prefix} out of the hub table")
    else:
        # Attribute discard: the rest of the UPDATE is used.
        wait_until(lambda: rib_in(hub).get(prefix) == label + 100, 10, f"{prefix} relearnt without the attribute")
    marker = f"{name} (type {code})"
    lines = lambda: [l for l in hub.proc.err[err_at:] if "malformed UPDATE" in l]  # noqa: E731
    wait_until(lambda: lines(), 10, "a log line")
    assert len(lines()) == 1 and marker in lines()[0] and lines()[0].endswith(action), lines()
    # The session stayed up, and said nothing.
    n = hub.neighbor()
    assert (n["state"], n["malformed_updates"], n["notifications_sent"]) == ("Established", before + 1, 0), n
    assert peer.notifications() == []


def test_rfc7606_an_mp_reach_nlri_that_cannot_be_read_resets_the_session(raw_hub):
    """Section 7.11: a VPNv4 next hop of length 4 leaves the NLRI
    unlocatable: NOTIFICATION 3/9 (Optional Attribute Error), and the
    peer's routes leave (runs last: it ends the module's session)."""
    hub, peer = raw_hub
    peer.sk.sendall(vpn_update("10.76.200.0/24", 3300))
    wait_until(lambda: "10.76.200.0/24" in rib_in(hub), 10, "a route learnt")
    before = hub.neighbor()["malformed_updates"]
    mp = struct.pack("!HBB", 1, 128, 4) + socket.inet_aton(SPOKE) + b"\x00" + bytes([112]) + struct.pack("!I", 3301 << 4 | 1)[1:] + struct.pack("!HHI", 0, 65000, 100) + bytes([10, 76, 201])
    attrs = WELL_FORMED[1] + WELL_FORMED[2] + attr(0x80, 14, mp)
    peer.sk.sendall(message(2, struct.pack("!HH", 0, len(attrs)) + attrs))
    kind, body = read_message(peer.sk)
    assert (kind, body[0], body[1]) == (3, 3, 9), (kind, body)
    wait_until(lambda: rib_in(hub) == {}, 10, "the peer's routes gone")
    assert hub.neighbor()["malformed_updates"] == before + 1
    assert any("MP_REACH_NLRI (type 14)" in l and "session reset" in l for l in hub.proc.err), hub.proc.describe()


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["peer"]:
        hostile_peer()
