"""DHCP load for scripts/bench-sessions, run inside a namespace:

    dhcp_load.py IFACE VLAN COUNT MAC_PREFIX_BYTE WINDOW
                 [--release] [--macs M] [--progress SECONDS] [--retry SECONDS]

COUNT clients (MACs 02:PP:xx:xx:xx:01) each do DISCOVER -> OFFER ->
REQUEST -> ACK, at most WINDOW exchanges in flight. Prints one line:

    done acked=N elapsed=S rate=R retransmits=T wait_ms=W

(W: the median time from a message to its answer.)

For session churn (scripts/bench-rib-churn): with --release each client
sends a RELEASE for its lease once it has its ACK (unicast to the server
id, through the router that answered: session up, then down); --macs M
makes the COUNT exchanges rotate over M MACs (exchange i is MAC i % M,
never two exchanges of one MAC in flight at once), so COUNT can be far
more than the clients; --progress prints `progress acked=N released=N
elapsed=S rate=R retransmits=T` every SECONDS. The last line then also
has `released=N`. --retry sets the wait before a retransmission (1 s).
Without them, nothing changes.

The same generator drives both legs of the benchmark (through hdvrf's
relay, and straight to the server), so what it costs is the same in both.

Frames are built and read with struct on an AF_PACKET socket rather than
with scapy: scapy spends about a millisecond of CPU on every frame it
builds or dissects, which on two shared cores made the generator, not the
relay or the server, set the rate, and its jitter became the figure's.
Only the few fields a client needs are read (op, xid, yiaddr, options 53
and 54); tests/e2e/dhcp_client.py is the scapy client the e2e tests use.
"""

import argparse
import array
import random
import select
import socket
import struct
import time

ap = argparse.ArgumentParser()
for name in ("iface", "vlan", "count", "prefix", "window"):
    ap.add_argument(name, type=str if name == "iface" else int)
ap.add_argument("--release", action="store_true", help="RELEASE each lease once ACKed")
ap.add_argument("--macs", type=int, default=0, help="rotate the exchanges over this many MACs")
ap.add_argument("--progress", type=float, default=0, help="a progress line every this many seconds")
ap.add_argument("--retry", type=float, default=1.0, help="seconds without an answer before a retransmission")
args = ap.parse_args()
iface, vlan, count, prefix, window = args.iface, args.vlan, args.count, args.prefix, args.window
macs = args.macs or count
if macs < count and macs <= window:
    ap.error("--macs must be more than WINDOW")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.bind((iface, 0))
sock.setblocking(False)
TIMEOUT = 30.0
DISCOVER, OFFER, REQUEST, ACK, RELEASE = 1, 2, 3, 5, 7
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


def frame(mac, xid, kind, requested=None, server=None, release=None):
    """A client's message; `release` = (address, router MAC) makes it a
    RELEASE from that address, unicast to `server` (RFC 2131 section
    4.4.6: ciaddr set, no broadcast flag)."""
    opts = bytes([53, 1, kind])
    if requested:
        opts += bytes([50, 4]) + requested
    if server:
        opts += bytes([54, 4]) + server
    opts += b"\xff"
    ciaddr, flags = (release[0], 0) if release else (bytes(4), 0x8000)
    # BOOTREQUEST, Ethernet, broadcast flag, chaddr = mac
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, flags, ciaddr, bytes(4), bytes(4),
                        bytes(4), mac, b"", b"") + COOKIE + opts
    src, dst = (release[0], server) if release else (bytes(4), b"\xff" * 4)
    udp_len = 8 + len(bootp)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 68, 67, udp_len, 0) + bootp
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = (release[1] if release else b"\xff" * 6) + mac
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
busy = set()  # MAC indexes with an exchange in flight (--macs)
# Like a real client, retransmit what got no answer (RFC 2131 section
# 4.1 backs off from 4 s; this impatient one waits 1 s unless --retry).
RETRY = args.retry
pending = {}  # xid -> (last send, frame)
retransmits = 0
waits = array.array("d")  # seconds from a message (or its last retransmission) to its answer
next_client = 0
started = 0
acked = 0
released = 0


def send(f):
    while True:
        try:
            sock.send(f)
            return
        except BlockingIOError:
            select.select([], [sock], [], 0.01)


def start_one():
    global next_client, started
    # Exchange i is MAC i % macs; one whose MAC is still in flight (an
    # exchange retransmitting since the last lap) waits for the next lap.
    while next_client % macs in busy:
        next_client += 1
    i = next_client % macs
    next_client += 1
    started += 1
    busy.add(i)
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
while started < min(window, count):
    start_one()
next_retry_check = start + RETRY
next_progress = start + args.progress
while acked < count and time.monotonic() < deadline:
    now = time.monotonic()
    if args.progress and now >= next_progress:
        next_progress += args.progress
        print(f"progress acked={acked} released={released} elapsed={now - start:.1f} "
              f"rate={acked / (now - start):.1f} retransmits={retransmits}", flush=True)
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
            busy.discard(clients[xid])
            if args.release:
                # Through the router that answered (the reply's source
                # MAC), to the server id; no answer comes, so the client
                # forgets the exchange.
                send(frame(mac_of(clients.pop(xid)), xid, RELEASE, server=server, release=(yiaddr, data[6:12])))
                del state[xid]
                released += 1
            if started < count:
                start_one()
elapsed = time.monotonic() - start
waits = sorted(waits)
wait_ms = 1000 * waits[len(waits) // 2] if waits else 0.0
print(f"done acked={acked} elapsed={elapsed:.3f} rate={acked / elapsed:.1f} retransmits={retransmits} "
      f"wait_ms={wait_ms:.2f}" + (f" released={released}" if args.release else ""), flush=True)
sock.close()
