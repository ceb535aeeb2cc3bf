#!/usr/bin/env python3
"""Test peers for STARTTLS. Prints `listening PORT` first, then one line per event.

starttls_server.py plain PROTO [PORT]
    A plaintext backend of PROTO (smtp, imap, pop3, ftp, ldap) on 127.0.0.1:PORT (default: a
    free port): sends its greeting (none for ldap), then answers each line with
    `backend got: LINE`; `QUIT` closes. tlsgate's server side sits in front of it.

starttls_server.py upstream smtp CERT KEY [refuse]
    An SMTP server that offers STARTTLS and upgrades (or, with `refuse`, answers 454). After
    TLS, EHLO no longer lists STARTTLS and other lines get `250 got LINE over TLS`. tlsgate's
    client side connects to it.
"""
import socket, ssl, sys, threading

GREETING = {
    "smtp": b"220 backend.test ESMTP plain backend\r\n",
    "imap": b"* OK [CAPABILITY IMAP4rev1] backend ready\r\n",
    "pop3": b"+OK backend ready\r\n",
    "ftp": b"220-backend.test\r\n220 plain FTP backend\r\n",
    "ldap": b"",
}


def lines(conn):
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield line.rstrip(b"\r")


def plain(conn, proto):
    print("accepted", flush=True)
    conn.sendall(GREETING[proto])
    for line in lines(conn):
        print(f"got {line.decode(errors='replace')}", flush=True)
        conn.sendall(b"backend got: " + line + b"\r\n")
        if line.upper() == b"QUIT":
            break
    conn.close()


def upstream(conn, context, refuse):
    print("accepted", flush=True)
    conn.sendall(b"220 upstream.test ESMTP\r\n")
    tls = False
    it = lines(conn)
    for line in it:
        verb = line.split(b" ")[0].upper()
        print(f"got {line.decode(errors='replace')} tls={tls}", flush=True)
        if verb == b"EHLO":
            offer = b"" if tls else b"250-STARTTLS\r\n"
            conn.sendall(b"250-upstream.test\r\n" + offer + b"250 AUTH PLAIN\r\n")
        elif verb == b"STARTTLS" and not tls:
            if refuse:
                conn.sendall(b"454 4.7.0 TLS not available\r\n")
                continue
            conn.sendall(b"220 2.0.0 go ahead\r\n")
            conn = context.wrap_socket(conn, server_side=True)
            tls = True
            print(f"tls established version={conn.version()}", flush=True)
            it = lines(conn)
            for line in it:
                verb = line.split(b" ")[0].upper()
                print(f"got {line.decode(errors='replace')} tls=True", flush=True)
                if verb == b"EHLO":
                    conn.sendall(b"250-upstream.test\r\n250 AUTH PLAIN\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    break
                else:
                    conn.sendall(b"250 got " + line + b" over TLS\r\n")
            break
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            break
        else:
            conn.sendall(b"530 5.7.0 STARTTLS first\r\n")
    conn.close()


def main():
    mode, proto = sys.argv[1], sys.argv[2]
    srv = socket.socket()
    port = int(sys.argv[3]) if mode == "plain" and len(sys.argv) > 3 else 0
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    if mode == "upstream":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
        refuse = len(sys.argv) > 5 and sys.argv[5] == "refuse"
        serve = lambda c: upstream(c, context, refuse)
    else:
        serve = lambda c: plain(c, proto)
    print(f"listening {srv.getsockname()[1]}", flush=True)

    def guarded(conn):
        try:
            serve(conn)
        except Exception as e:  # a test peer reports, it does not die
            print(f"connection error {e!r}", flush=True)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=guarded, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
