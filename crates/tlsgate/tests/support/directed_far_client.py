#!/usr/bin/env python3
"""The far side for `terminate --directed`: a client that starts TLS after a plaintext prologue
and returns to the clear when the server ends TLS.

    directed_far_client.py PORT CA CERT KEY

Prints each answer it got.
"""
import socket
import ssl
import sys

from directive_support import line


def main():
    port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"HELLO\n")
    print("got " + line(s).decode().strip(), flush=True)
    tls = ctx.wrap_socket(s, server_hostname="localhost")
    print("tls " + tls.version(), flush=True)
    tls.sendall(b"PING\n")
    print("got " + line(tls).decode().strip(), flush=True)
    # The server's close_notify ends TLS; answer it and go on in the clear.
    assert tls.recv(1) == b""
    plain = tls.unwrap()
    plain.sendall(b"BYE\n")
    print("got " + line(plain).decode().strip(), flush=True)


if __name__ == "__main__":
    main()
