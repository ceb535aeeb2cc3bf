"""Idle TLS connections for bench/lib/inline_net.py, run inside the client namespace: opens COUNT
TLS 1.3 connections to HOST:443 (server name "localhost", verified against CA), sends one
`GET /small` on each and reads the whole response, prints "ready VERSION SUITE", then keeps every
connection open, idle, until its standard input closes.

  idle_tls.py --host IP --ca CA --count N
"""

import argparse
import re
import socket
import ssl
import sys

SERVER_NAME = "localhost"


def one_request(s):
    """Sends GET /small and reads the response through its last body byte."""
    s.sendall(f"GET /small HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode())
    got, want = b"", None
    while want is None or len(got) < want:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("idle client: the connection closed before the response's end")
        got += chunk
        head, sep, _ = got.partition(b"\r\n\r\n")
        if sep and want is None:
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if not head.startswith(b"HTTP/1.1 200") or not m:
                raise SystemExit(f"idle client: unexpected response {head[:60]!r}")
            want = len(head) + 4 + int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--count", type=int, required=True)
    args = ap.parse_args()
    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    conns, suite = [], "unknown"
    for _ in range(args.count):
        s = ctx.wrap_socket(socket.create_connection((args.host, 443), timeout=10), server_hostname=SERVER_NAME)
        one_request(s)
        suite = f"{s.version()} {s.cipher()[0]}"
        conns.append(s)
    print(f"ready {suite}", flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
