"""Sender for the end-to-end tests, run inside a namespace:

    scapy_send.py IFACE FILE

Sends each frame of FILE (one hex-encoded Ethernet frame per line) out of
IFACE as is, through scapy's layer-2 socket, then prints `sent <n>`.
"""

import sys

from scapy.all import Raw, conf

iface, path = sys.argv[1], sys.argv[2]
frames = [bytes.fromhex(l) for l in open(path).read().split()]
sock = conf.L2socket(iface=iface)
try:
    for f in frames:
        sock.send(Raw(f))
finally:
    sock.close()
print("sent", len(frames), flush=True)
