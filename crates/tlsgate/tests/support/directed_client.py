#!/usr/bin/env python3
"""A plaintext application that directs tlsgate (originate --directed) through libtlsgate.

    directed_client.py LIB PORT full      the whole exchange, with refused directives on the way
    directed_client.py LIB PORT badname   start_tls with a name the server's certificate lacks

Prints what happened, one event a line.
"""
import socket
import sys

from directive_support import line, load


def main():
    lib = load(sys.argv[1])
    port, mode = int(sys.argv[2]), sys.argv[3]
    s = socket.create_connection(("127.0.0.1", port))
    written = 0

    def send(data):
        nonlocal written
        s.sendall(data)
        written += len(data)

    def start(at, sni):
        if lib.tlsgate_start_tls(s.fileno(), at, sni, None) != 0:
            print("start_tls error: " + lib.tlsgate_last_error().decode(), flush=True)
            return False
        print("start_tls ok", flush=True)
        return True

    send(b"HELLO\n")
    print("got " + line(s).decode().strip(), flush=True)
    if mode == "badname":
        start(written, b"wrong.test")
        print("after failure: " + repr(s.recv(100)), flush=True)
        return
    start(2, b"localhost")          # refused: already relayed past byte 2
    start(written, b"localhost")
    send(b"PING\n")
    print("got " + line(s).decode().strip(), flush=True)
    start(written, b"localhost")    # refused: already secured
    if lib.tlsgate_stop_tls(s.fileno(), written) != 0:
        print("stop_tls error: " + lib.tlsgate_last_error().decode(), flush=True)
        return
    print("stop_tls ok", flush=True)
    send(b"BYE\n")
    print("got " + line(s).decode().strip(), flush=True)


if __name__ == "__main__":
    main()
