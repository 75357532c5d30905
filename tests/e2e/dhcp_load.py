"""DHCP load for scripts/bench-sessions, run inside a namespace:

    dhcp_load.py IFACE VLAN COUNT MAC_PREFIX_BYTE WINDOW

COUNT clients (MACs 02:PP:xx:xx:xx:xx) each do DISCOVER -> OFFER ->
REQUEST -> ACK, at most WINDOW exchanges in flight. Prints one line:

    done acked=N elapsed=S rate=R retransmits=T

The same generator drives both legs of the benchmark (through hdvrf's
relay, and straight to the server), so its own cost cancels in the ratio.
"""

import random
import select
import sys
import time

from scapy.all import conf
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

iface, vlan, count, prefix, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
conf.bufsize = 1 << 22
sock = conf.L2socket(iface=iface)
TIMEOUT = 30.0


def mac_of(i):
    return bytes([0x02, prefix, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01])


def frame(i, xid, kind, extra=()):
    m = mac_of(i)
    e = Ether(src=m, dst="ff:ff:ff:ff:ff:ff")
    if vlan:
        e = e / Dot1Q(vlan=vlan)
    return (
        e
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=m + b"\0" * 10, xid=xid, flags=0x8000)
        / DHCP(options=[("message-type", kind), *extra, "end"])
    )


def opt(p, name):
    for o in p[DHCP].options:
        if isinstance(o, tuple) and o[0] == name:
            return o[1]
    return None


xids = {}
state = {}  # xid -> "discover" | "request" | "done"
# Like a real client, retransmit what got no answer (RFC 2131 section
# 4.1 backs off from 4 s; this impatient one waits 1 s).
RETRY = 1.0
pending = {}  # xid -> (last send, frame)
retransmits = 0
next_client = 0
acked = 0
start = time.monotonic()
deadline = start + TIMEOUT + count / 50


def start_one():
    global next_client
    i = next_client
    next_client += 1
    xid = random.getrandbits(32)
    xids[xid] = i
    state[xid] = "discover"
    f = frame(i, xid, "discover")
    pending[xid] = (time.monotonic(), f)
    sock.send(f)


while next_client < min(window, count):
    start_one()
in_flight = next_client
while acked < count and time.monotonic() < deadline:
    now = time.monotonic()
    for xid, (t, f) in list(pending.items()):
        if now - t >= RETRY:
            pending[xid] = (now, f)
            sock.send(f)
            retransmits += 1
    r, _, _ = select.select([sock], [], [], 0.2)
    if not r:
        continue
    p = sock.recv()
    if p is None or BOOTP not in p or p[BOOTP].op != 2 or DHCP not in p:
        continue
    xid = p[BOOTP].xid
    st = state.get(xid)
    kind = opt(p, "message-type")
    if st == "discover" and kind == 2:
        state[xid] = "request"
        f = frame(xids[xid], xid, "request", (("requested_addr", p[BOOTP].yiaddr), ("server_id", opt(p, "server_id"))))
        pending[xid] = (time.monotonic(), f)
        sock.send(f)
    elif st == "request" and kind == 5:
        state[xid] = "done"
        pending.pop(xid, None)
        acked += 1
        if next_client < count:
            start_one()
elapsed = time.monotonic() - start
print(f"done acked={acked} elapsed={elapsed:.3f} rate={acked / elapsed:.1f} retransmits={retransmits}", flush=True)
sock.close()
