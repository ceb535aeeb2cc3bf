"""SOCKS5 CONNECT with the destination as a domain name sent verbatim (curl would rewrite `0`
and `0x0` to 0.0.0.0 before asking). Prints the server's reply code: 0 succeeded, 2 not allowed
by ruleset, 5 connection refused.

usage: socks5_connect.py SOCKS_PORT HOST PORT
"""
import socket
import struct
import sys

port, host, dport = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=20)
s.sendall(b"\x05\x01\x00")
assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack("!H", dport))
reply = s.recv(4)
print(reply[1])
