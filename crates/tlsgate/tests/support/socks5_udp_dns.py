#!/usr/bin/env python3
"""A SOCKS5 UDP ASSOCIATE client (RFC 1928 section 7) asking one DNS A query through the proxy.

usage: socks5_udp_dns.py SOCKS_HOST SOCKS_PORT DNS_HOST DNS_PORT NAME
Prints the first A record; exits non-zero on any failure.
"""
import socket
import struct
import sys


def query(name, qid=0x4242):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def first_a(reply):
    qd, an = struct.unpack(">HH", reply[4:8])
    i = 12
    for _ in range(qd):
        while reply[i] != 0:
            i += reply[i] + 1
        i += 5
    for _ in range(an):
        i += 2 if reply[i] & 0xC0 == 0xC0 else 0
        rtype, _, _, rdlen = struct.unpack(">HHIH", reply[i:i + 10])
        i += 10
        if rtype == 1:
            return socket.inet_ntoa(reply[i:i + 4])
        i += rdlen
    raise SystemExit("no A record in the answer")


def main():
    socks_host, socks_port, dns_host, dns_port, name = sys.argv[1:6]
    ctl = socket.create_connection((socks_host, int(socks_port)), timeout=10)
    ctl.sendall(b"\x05\x01\x00")
    if ctl.recv(2) != b"\x05\x00":
        raise SystemExit("SOCKS method refused")
    # UDP ASSOCIATE, we will send from 0.0.0.0:0 (not known yet).
    ctl.sendall(b"\x05\x03\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")
    rep = ctl.recv(10)
    if len(rep) < 10 or rep[1] != 0:
        raise SystemExit(f"UDP ASSOCIATE refused: {rep!r}")
    relay = (socket.inet_ntoa(rep[4:8]), struct.unpack(">H", rep[8:10])[0])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(10)
    header = b"\x00\x00\x00\x01" + socket.inet_aton(dns_host) + struct.pack(">H", int(dns_port))
    udp.sendto(header + query(name), relay)
    data, _ = udp.recvfrom(65535)
    if data[:3] != b"\x00\x00\x00" or data[3] != 1:
        raise SystemExit(f"bad SOCKS UDP header: {data[:10]!r}")
    print(first_a(data[10:]))
    ctl.close()


if __name__ == "__main__":
    main()
