"""A client behind a hand-written PROXY v2 header: sends the header (command LOCAL or PROXY,
claiming source 10.9.9.9:1000), then TLS, then one HTTP/1.1 GET; prints the response body.

usage: proxy_v2_client.py local|proxy BIND_IP PORT CA PATH
"""
import socket
import ssl
import struct
import sys

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def header(command):
    ver_cmd = 0x20 | (1 if command == "proxy" else 0)
    addrs = socket.inet_aton("10.9.9.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 1000, 443)
    return SIGNATURE + bytes([ver_cmd, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def main():
    command, bind_ip, port, ca, path = sys.argv[1:6]
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10, source_address=(bind_ip, 0))
    raw.sendall(header(command))
    ctx = ssl.create_default_context(cafile=ca)
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    print(head.split(b"\r\n")[0].decode())
    sys.stdout.write(body.decode())


main()
