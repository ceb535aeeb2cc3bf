#!/usr/bin/env python3
"""A test backend that reads a PROXY protocol v2 header with its own parser (written from the
spec, independently of tlsgate's), prints what it found as one JSON line on stdout, then answers
one HTTP request per connection. Usage: proxy_v2_server.py [PORT] (on 127.0.0.1, default a free
port) — it prints `listening PORT` first."""
import json, socket, struct, sys

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

def recv_exact(conn, n, buf):
    while len(buf) < n:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("closed")
        buf += chunk
    return buf

def tlvs(data):
    out = []
    while data:
        kind, length = data[0], struct.unpack("!H", data[1:3])[0]
        out.append((kind, data[3:3 + length]))
        data = data[3 + length:]
    return out

def main():
    srv = socket.socket()
    srv.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    srv.listen(8)
    print(f"listening {srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        buf = recv_exact(conn, 16, b"")
        assert buf[:12] == SIG, buf
        fam, length = buf[13], struct.unpack("!H", buf[14:16])[0]
        buf = recv_exact(conn, 16 + length, buf)
        body, rest = buf[16:16 + length], buf[16 + length:]
        info = {"command": buf[12] & 0x0F, "family": fam}
        if fam == 0x11:
            s, d, sp, dp = struct.unpack("!4s4sHH", body[:12])
            info.update(src=f"{socket.inet_ntoa(s)}:{sp}", dst=f"{socket.inet_ntoa(d)}:{dp}")
            body = body[12:]
        for kind, value in tlvs(body):
            if kind == 0x01:
                info["alpn"] = value.decode()
            elif kind == 0x02:
                info["authority"] = value.decode()
            elif kind == 0x20:
                info["ssl_client"], info["ssl_verify"] = value[0], struct.unpack("!I", value[1:5])[0]
                for sk, sv in tlvs(value[5:]):
                    name = {0x21: "ssl_version", 0x22: "ssl_cn", 0x23: "ssl_cipher"}.get(sk, f"ssl_0x{sk:02x}")
                    info[name] = sv.decode()
            elif kind == 0xE7:
                for sk, sv in tlvs(value):
                    name = {1: "cert_subject", 2: "cert_dns", 3: "cert_uri", 4: "cert_ip"}[sk]
                    info.setdefault(name, []).append(sv.decode())
        print(json.dumps(info, sort_keys=True), flush=True)
        while b"\r\n\r\n" not in rest:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        conn.close()

main()
