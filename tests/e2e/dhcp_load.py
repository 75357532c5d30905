"""DHCP load for scripts/bench-sessions, run inside a namespace:

    dhcp_load.py IFACE VLAN COUNT MAC_PREFIX_BYTE WINDOW

COUNT clients (MACs 02:PP:xx:xx:xx:01) each do DISCOVER -> OFFER ->
REQUEST -> ACK, at most WINDOW exchanges in flight. Prints one line:

    done acked=N elapsed=S rate=R retransmits=T wait_ms=W

(W: the median time from a message to its answer.)

The same generator drives both legs of the benchmark (through hdvrf's
relay, and straight to the server), so what it costs is the same in both.

Frames are built and read with struct on an AF_PACKET socket rather than
with scapy: scapy spends about a millisecond of CPU on every frame it
builds or dissects, which on two shared cores made the generator, not the
relay or the server, set the rate, and its jitter became the figure's.
Only the few fields a client needs are read (op, xid, yiaddr, options 53
and 54); tests/e2e/dhcp_client.py is the scapy client the e2e tests use.
"""

import random
import select
import socket
import struct
import sys
import time

iface, vlan, count, prefix, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.bind((iface, 0))
sock.setblocking(False)
TIMEOUT = 30.0
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5
COOKIE = b"\x63\x82\x53\x63"


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_of(i):
    return bytes([0x02, prefix, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01])


def frame(mac, xid, kind, requested=None, server=None):
    opts = bytes([53, 1, kind])
    if requested:
        opts += bytes([50, 4]) + requested
    if server:
        opts += bytes([54, 4]) + server
    opts += b"\xff"
    # BOOTREQUEST, Ethernet, broadcast flag, chaddr = mac
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                        bytes(4), mac, b"", b"") + COOKIE + opts
    src, dst = bytes(4), b"\xff" * 4
    udp_len = 8 + len(bootp)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 68, 67, udp_len, 0) + bootp
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = b"\xff" * 6 + mac
    if vlan:
        eth += struct.pack("!HH", 0x8100, vlan)
    return eth + b"\x08\x00" + ip + udp


def reply(data):
    """(xid, message type, yiaddr, server id) of a BOOTREPLY, or None."""
    off = 12
    ethertype = struct.unpack_from("!H", data, off)[0] if len(data) >= 14 else 0
    if ethertype == 0x8100 and len(data) >= 18:
        off += 4
        ethertype = struct.unpack_from("!H", data, off)[0]
    off += 2
    if ethertype != 0x0800 or len(data) < off + 20 or data[off + 9] != 17:
        return None
    off += (data[off] & 15) * 4
    if len(data) < off + 8 + 240 or struct.unpack_from("!H", data, off + 2)[0] != 68:
        return None
    b = off + 8
    if data[b] != 2 or data[b + 236:b + 240] != COOKIE:
        return None
    xid = struct.unpack_from("!I", data, b + 4)[0]
    yiaddr = data[b + 16:b + 20]
    kind = server = None
    i = b + 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        code, n = data[i], data[i + 1]
        v = data[i + 2:i + 2 + n]
        if code == 53 and n == 1:
            kind = v[0]
        elif code == 54 and n == 4:
            server = v
        i += 2 + n
    return xid, kind, yiaddr, server


clients = {}  # xid -> client index
state = {}  # xid -> DISCOVER | REQUEST | ACK (what was last sent, ACK once done)
# Like a real client, retransmit what got no answer (RFC 2131 section
# 4.1 backs off from 4 s; this impatient one waits 1 s).
RETRY = 1.0
pending = {}  # xid -> (last send, frame)
retransmits = 0
waits = []  # seconds from a message (or its last retransmission) to its answer
next_client = 0
acked = 0


def send(f):
    while True:
        try:
            sock.send(f)
            return
        except BlockingIOError:
            select.select([], [sock], [], 0.01)


def start_one():
    global next_client
    i = next_client
    next_client += 1
    xid = random.getrandbits(32)
    while xid in clients:
        xid = random.getrandbits(32)
    clients[xid] = i
    state[xid] = DISCOVER
    f = frame(mac_of(i), xid, DISCOVER)
    pending[xid] = (time.monotonic(), f)
    send(f)


start = time.monotonic()
deadline = start + TIMEOUT + count / 50
while next_client < min(window, count):
    start_one()
next_retry_check = start + RETRY
while acked < count and time.monotonic() < deadline:
    now = time.monotonic()
    if now >= next_retry_check:
        next_retry_check = now + 0.1
        for xid, (t, f) in list(pending.items()):
            if now - t >= RETRY:
                pending[xid] = (now, f)
                send(f)
                retransmits += 1
    r, _, _ = select.select([sock], [], [], 0.1)
    if not r:
        continue
    while True:
        try:
            data, addr = sock.recvfrom(4096)
        except BlockingIOError:
            break
        if addr[2] == PACKET_OUTGOING:
            continue
        got = reply(data)
        if got is None:
            continue
        xid, kind, yiaddr, server = got
        st = state.get(xid)
        if st == DISCOVER and kind == OFFER and server:
            waits.append(time.monotonic() - pending[xid][0])
            state[xid] = REQUEST
            f = frame(mac_of(clients[xid]), xid, REQUEST, yiaddr, server)
            pending[xid] = (time.monotonic(), f)
            send(f)
        elif st == REQUEST and kind == ACK:
            waits.append(time.monotonic() - pending[xid][0])
            state[xid] = ACK
            pending.pop(xid, None)
            acked += 1
            if next_client < count:
                start_one()
elapsed = time.monotonic() - start
waits.sort()
wait_ms = 1000 * waits[len(waits) // 2] if waits else 0.0
print(f"done acked={acked} elapsed={elapsed:.3f} rate={acked / elapsed:.1f} retransmits={retransmits} "
      f"wait_ms={wait_ms:.2f}", flush=True)
sock.close()
