#!/usr/bin/env python3
"""The far side of a made-up protocol whose application decides when TLS starts and stops.

    directed_server.py CERT KEY CA

Prints `listening PORT`, then per connection: `HELLO` -> `OK` in the clear; TLS as server,
requiring a client certificate from CA, ALPN `x-one` or `x-two` if offered; `PING` ->
`PONG <client CN> <ALPN or None>`; once the peer's
close_notify arrives, back to the clear (unwrap); `BYE` -> `CIAO`. A failed handshake closes the
connection.
"""
import socket
import ssl
import sys
import threading

from directive_support import line


def serve(conn, ctx):
    try:
        assert line(conn) == b"HELLO\n"
        conn.sendall(b"OK\n")
        tls = ctx.wrap_socket(conn, server_side=True)
        assert line(tls) == b"PING\n"
        cn = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
        tls.sendall(f"PONG {cn} {tls.selected_alpn_protocol()}\n".encode())
        # The client's close_notify ends the TLS stream; answer it and go on in the clear.
        assert tls.recv(1) == b""
        plain = tls.unwrap()
        assert line(plain) == b"BYE\n"
        plain.sendall(b"CIAO\n")
        plain.close()
    except (ssl.SSLError, OSError, AssertionError) as e:
        print(f"connection failed: {e!r}", flush=True)
        conn.close()


def main():
    cert, key, ca = sys.argv[1:4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["x-one", "x-two"])
    server = socket.create_server(("127.0.0.1", 0))
    print(f"listening {server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
