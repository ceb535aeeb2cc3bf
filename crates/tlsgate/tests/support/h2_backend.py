#!/usr/bin/env python3
"""A test backend speaking just enough HTTP/2 with prior knowledge (RFC 9113): it checks the
client connection preface, answers the first request with 200 and `hello from NAME`, then says
GOAWAY and closes. For every connection it prints what the connection started with, so a test
sees which bytes reached it. Usage: h2_backend.py NAME [PORT] — it prints `listening PORT` first."""
import socket, struct, sys, threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, GOAWAY = 0, 1, 4, 7
END_STREAM, ACK, END_HEADERS = 1, 1, 4


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + struct.pack("!I", stream) + payload


def recv_until(conn, n, buf):
    while len(buf) < n:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def serve(conn, body):
    buf = b""
    try:
        buf = recv_until(conn, len(PREFACE), buf)
    except EOFError:
        pass
    start = buf[: len(PREFACE)]
    print(f"connection preface={start == PREFACE} start={start!r}", flush=True)
    if start != PREFACE:
        return
    conn.sendall(frame(SETTINGS, 0, 0))
    buf = buf[len(PREFACE):]
    while True:
        buf = recv_until(conn, 9, buf)
        length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = struct.unpack("!I", buf[5:9])[0] & 0x7FFFFFFF
        buf = recv_until(conn, 9 + length, buf)[9 + length:]
        if kind == SETTINGS and not flags & ACK:
            conn.sendall(frame(SETTINGS, ACK, 0))
        elif kind == HEADERS and flags & END_HEADERS:
            # 0x88: `:status 200` from the HPACK static table.
            conn.sendall(frame(HEADERS, END_HEADERS, stream, b"\x88") + frame(DATA, END_STREAM, stream, body))
            conn.sendall(frame(GOAWAY, 0, 0, struct.pack("!II", stream, 0)))
            print(f"answered stream {stream}", flush=True)
            return
        elif kind == GOAWAY:
            return


def handle(conn, body):
    try:
        serve(conn, body)
        # Half-close, then wait for the client's end: closing with its late frames unread
        # would reset the connection under the response.
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    body = f"hello from {sys.argv[1]}\n".encode()
    srv = socket.socket()
    srv.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    srv.listen(16)
    print(f"listening {srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, body), daemon=True).start()


main()
