"""The conformance run's backend: answers with one write per request.

tlsfuzzer expects each reply in a single TLS record, and tlsgate seals what one backend read
returns, so every answer goes out in one `sendall`:
- `GET ...` (ended by a blank line, "\\r\\n\\r\\n" or a bare "\\n\\n"): a short HTTP/1.0 reply,
  then the connection is closed, as the scripts expect close_notify next;
- anything else is echoed line by line (what `openssl s_server` does), each batch of complete
  lines in one write, until the client closes: the length scripts check the size of the echo.
Arguments: `[PORT [HOST]]` (default 0 on 127.0.0.1). Prints `listening PORT` once bound (port 0
lets the kernel choose).
"""
import socket
import sys
import threading

REPLY = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
         b"Connection: close\r\n\r\nhello\n")
MAX_PENDING = 1 << 20


def serve(conn):
    with conn:
        conn.settimeout(60)
        buf = b""
        try:
            while len(buf) < MAX_PENDING:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                if buf.startswith(b"GET "):
                    if b"\r\n\r\n" in buf or b"\n\n" in buf:
                        conn.sendall(REPLY)
                        return
                elif b"\n" in buf:
                    end = buf.rindex(b"\n") + 1
                    conn.sendall(buf[:end])
                    buf = buf[end:]
        except OSError:
            return


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    srv.listen(128)
    print("listening", srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
