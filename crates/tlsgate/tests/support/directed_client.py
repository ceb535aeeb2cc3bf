#!/usr/bin/env python3
"""A plaintext application that directs tlsgate (originate --directed) through libtlsgate.

    directed_client.py LIB PORT full      the whole exchange, with refused directives on the way
    directed_client.py LIB PORT badname   start_tls with a name the server's certificate lacks
    directed_client.py LIB PORT as NAME PROTO   the exchange with client identity NAME offering
                                                ALPN PROTO (tlsgate_start_tls_with)
    directed_client.py LIB PORT as NAME         NAME unknown: the call fails, the connection ends

Prints what happened, one event a line.
"""
import socket
import sys

import ctypes

from directive_support import line, load, tls_options


def main():
    lib = load(sys.argv[1])
    port, mode = int(sys.argv[2]), sys.argv[3]
    s = socket.create_connection(("127.0.0.1", port))
    written = 0

    def send(data):
        nonlocal written
        s.sendall(data)
        written += len(data)

    def start(at, sni, options=None):
        if options is not None:
            result = lib.tlsgate_start_tls_with(s.fileno(), at, ctypes.byref(options))
        else:
            result = lib.tlsgate_start_tls(s.fileno(), at, sni, None)
        if result != 0:
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
    if mode == "as":
        name = sys.argv[4].encode()
        alpn = [p.encode() for p in sys.argv[5:6]]
        if not start(written, None, tls_options(sni=b"localhost", alpn=alpn, client_cert=name)):
            print("after failure: " + repr(s.recv(100)), flush=True)
            return
    else:
        start(2, b"localhost")          # refused: already relayed past byte 2
        start(written, b"localhost")
    send(b"PING\n")
    print("got " + line(s).decode().strip(), flush=True)
    if mode != "as":
        start(written, b"localhost")    # refused: already secured
    if lib.tlsgate_stop_tls(s.fileno(), written) != 0:
        print("stop_tls error: " + lib.tlsgate_last_error().decode(), flush=True)
        return
    print("stop_tls ok", flush=True)
    send(b"BYE\n")
    print("got " + line(s).decode().strip(), flush=True)


if __name__ == "__main__":
    main()
