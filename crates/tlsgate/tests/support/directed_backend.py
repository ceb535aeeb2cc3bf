#!/usr/bin/env python3
"""A plaintext backend behind `terminate --directed` that has tlsgate secure its connection.

    directed_backend.py LIB

Prints `listening PORT`, then per connection: `HELLO` -> `OK` in the clear; tlsgate_start_tls
at the end of `OK` (tlsgate answers the client's handshake); `peer` (the client's certificate);
`PING` -> `PONG`; tlsgate_stop_tls;
`BYE` -> `CIAO` in the clear. Each step is printed. With ADMIN_FILE (a file holding tlsgate's
admin address, read per connection), the connection's `/status.json` row is printed before
start_tls, after it and after stop_tls: `status state=… identity=… version=… up=… down=…`.
"""
import ctypes
import json
import os
import socket
import urllib.request
import sys
import threading

from directive_support import Peer, line, load


def status():
    """The directed rows of tlsgate's /status.json, one line each (nothing without ADMIN_FILE)."""
    path = os.environ.get("ADMIN_FILE")
    if not path:
        return
    with open(path) as f:
        admin = f.read().strip()
    with urllib.request.urlopen(f"http://{admin}/status.json", timeout=10) as r:
        rows = json.load(r)["connections"]
    for row in rows:
        print("status state={state} identity={identity} version={version} up={up} down={down}"
              .format(**row), flush=True)


def serve(conn, lib):
    written = 0

    def send(data):
        nonlocal written
        conn.sendall(data)
        written += len(data)

    fd = conn.fileno()
    if line(conn) != b"HELLO\n":
        return
    send(b"OK\n")
    status()
    if lib.tlsgate_start_tls(fd, written, None, None) != 0:
        print("start_tls error: " + lib.tlsgate_last_error().decode(), flush=True)
        return
    print("start_tls ok", flush=True)
    status()
    # The session is there to ask about now.
    peer = ctypes.POINTER(Peer)()
    if lib.tlsgate_peer(fd, ctypes.byref(peer)) == 0:
        print("peer subject=" + peer.contents.subject.decode(), flush=True)
        lib.tlsgate_peer_free(peer)
    else:
        print("peer error: " + lib.tlsgate_last_error().decode(), flush=True)
    if line(conn) != b"PING\n":
        return
    send(b"PONG\n")
    if lib.tlsgate_stop_tls(fd, written) != 0:
        print("stop_tls error: " + lib.tlsgate_last_error().decode(), flush=True)
        return
    print("stop_tls ok", flush=True)
    status()
    if line(conn) == b"BYE\n":
        send(b"CIAO\n")
    conn.close()


def main():
    lib = load(sys.argv[1])
    server = socket.create_server(("127.0.0.1", 0))
    print(f"listening {server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, lib), daemon=True).start()


if __name__ == "__main__":
    main()
