"""The destination of bench/tunnel.sh: a plaintext sink, source and echo server, and a drain client.

    sink.py serve PORT          forking TCP server on 127.0.0.1:PORT (a process per connection)
    sink.py drain PORT          downloads from 127.0.0.1:PORT until killed (the bulk transfer
                                that runs beside the latency probe)

Every connection starts with a 9-byte request, OP (1 byte) and N (u64, big-endian):

    b"U" N   upload: the server reads N bytes, then answers b"K" (so the client's clock stops
             when the last byte has reached the destination)
    b"D" N   download: the server sends N zero bytes, then closes
    b"E" N   echo: the server reads N-byte messages and sends each back, until EOF

A process per connection keeps the GIL out of the way; each moves data in 1 MiB calls, so the
destination costs a fraction of what the tunnel costs for the same bytes.
"""

import os
import signal
import socket
import socketserver
import struct
import sys

CHUNK = 1 << 20
ZEROS = bytes(CHUNK)
HEADER = struct.Struct(">cQ")


def recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError(f"EOF after {got} of {n} bytes")
        got += k
    return bytes(buf)


def send_zeros(sock, n):
    view = memoryview(ZEROS)
    while n > 0:
        k = min(n, CHUNK)
        sock.sendall(view[:k])
        n -= k


def drain(sock, n):
    """Reads and discards n bytes (all of them: n may be huge for an endless download)."""
    buf = bytearray(CHUNK)
    got = 0
    while got < n:
        k = sock.recv_into(buf, min(CHUNK, n - got))
        if k == 0:
            raise EOFError(f"EOF after {got} of {n} bytes")
        got += k
    return got


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            op, n = HEADER.unpack(recv_exact(sock, HEADER.size))
            if op == b"U":
                drain(sock, n)
                sock.sendall(b"K")
            elif op == b"D":
                send_zeros(sock, n)
            elif op == b"E":
                while True:
                    try:
                        msg = recv_exact(sock, n)
                    except EOFError:
                        break
                    sock.sendall(msg)
        except (OSError, EOFError):
            pass  # the client went away (the drain is killed mid-transfer)


class Server(socketserver.ForkingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 256
    block_on_close = False
    max_children = 1000


def serve(port):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with Server(("127.0.0.1", port), Handler) as srv:
        print(f"sink listening on 127.0.0.1:{port}", flush=True)
        srv.serve_forever()


def drain_forever(port):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(HEADER.pack(b"D", 1 << 62))
    buf = bytearray(CHUNK)
    total = 0
    print("draining", flush=True)
    while True:  # bounded by the harness: it kills this process after the latency probe
        k = sock.recv_into(buf)
        if k == 0:
            sys.exit(f"drain: EOF after {total} bytes")
        total += k


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("serve", "drain"):
        sys.exit(__doc__)
    (serve if sys.argv[1] == "serve" else drain_forever)(int(sys.argv[2]))
