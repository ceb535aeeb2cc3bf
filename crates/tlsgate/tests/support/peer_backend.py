#!/usr/bin/env python3
"""A plaintext HTTP backend that asks tlsgate who its client is, through libtlsgate (ctypes).

    peer_backend.py serve LIB       answer each GET with the client's subject and session
    peer_backend.py ask LIB FD      ask `peer` for an inherited socket, print the answer or error
    peer_backend.py unknown LIB     ask `peer` for a loopback connection tlsgate never saw

`/as-nobody` asks for the request's own connection from a child running as uid 65534.
"""
import ctypes
import http.server
import os
import socket
import subprocess
import sys

from directive_support import Peer, load


def ask(lib, fd):
    """The peer's facts as text lines, or `error=…`."""
    out = ctypes.POINTER(Peer)()
    if lib.tlsgate_peer(fd, ctypes.byref(out)) != 0:
        return "error=" + lib.tlsgate_last_error().decode() + "\n"
    p = out.contents
    text = lambda v: v.decode() if v is not None else "-"
    sans, i = [], 0
    while p.sans[i] is not None:
        sans.append(p.sans[i].decode())
        i += 1
    lines = [f"subject={text(p.subject)}", f"identity={text(p.identity)}", f"sans={','.join(sans)}",
             f"version={text(p.version)}", f"suite={text(p.suite)}", f"alpn={text(p.alpn)}",
             f"sni={text(p.sni)}", f"cert={'pem' if p.cert_pem and p.cert_pem.startswith(b'-----BEGIN CERTIFICATE-----') else '-'}"]
    lib.tlsgate_peer_free(out)
    return "\n".join(lines) + "\n"


def serve(lib_path):
    lib = load(lib_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            fd = self.connection.fileno()
            if self.path == "/as-nobody":
                child = subprocess.run(
                    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, __file__, "ask", lib_path, str(fd)],
                    pass_fds=[fd], capture_output=True, text=True)
                body = (child.stdout + child.stderr).encode()
            else:
                body = ask(lib, fd).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


def main():
    mode, lib_path = sys.argv[1], sys.argv[2]
    if mode == "serve":
        serve(lib_path)
    elif mode == "ask":
        sys.stdout.write(ask(load(lib_path), int(sys.argv[3])))
    elif mode == "unknown":
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        sys.stdout.write(ask(load(lib_path), client.fileno()))


if __name__ == "__main__":
    main()
