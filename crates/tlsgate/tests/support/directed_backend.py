#!/usr/bin/env python3
"""A plaintext backend behind `terminate --directed` that has tlsgate secure its connection.

    directed_backend.py LIB

Prints `listening PORT`, then per connection: `HELLO` -> `OK` in the clear; tlsgate_start_tls
at the end of `OK` (tlsgate answers the client's handshake); `peer` (the client's certificate);
`PING` -> `PONG`; tlsgate_stop_tls;
`BYE` -> `CIAO` in the clear. Each step is printed.
"""
import ctypes
import socket
import sys
import threading

from directive_support import Peer, line, load


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
    if lib.tlsgate_start_tls(fd, written, None, None) != 0:
        print("start_tls error: " + lib.tlsgate_last_error().decode(), flush=True)
        return
    print("start_tls ok", flush=True)
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
