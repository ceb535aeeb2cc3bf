#!/usr/bin/env python3
"""TLS resumption across a fleet: full handshakes, then resumptions with the same session.

fleet_client.py HOST PORT CAFILE bulk CLIENTS RESUMES VERSION [WORKERS]
    Each client: one full handshake (GET /, the answer names the instance), then RESUMES
    connections offering that first session. VERSION: 1.3 (tickets) or 1.2 (session IDs, no
    tickets). Prints one JSON line: connections, failures, resumed, cross (resumed on another
    instance than the issuing one), attempts, skipped (resumptions not tried because their
    client's first handshake failed), failed_ports (the local port of each failed connection,
    so a test can find where the balancer sent it); before it, "progress" once a quarter is
    done.
fleet_client.py HOST PORT CAFILE hold
    One full handshake (TLS 1.3); prints "ready UNIX_TIME", then answers each stdin line
    "resume" with "resumed yes|no NAME".
"""
import errno
import itertools
import json
import os
import select
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HOST, PORT, CAFILE, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def context(version):
    ctx = ssl.create_default_context(cafile=CAFILE)
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_TICKET
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


# Each connection of a run from its own local port, counting from $FIRST_PORT (the kernel's choice
# wraps around within a couple of thousand connections), so the port names one connection
# wherever it is seen.
NEXT_PORT = itertools.count(int(os.environ.get("FIRST_PORT", "10000")))
PORT_LOCK = threading.Lock()


def connect(ports):
    """A TCP connection to HOST:PORT; its local port goes to `ports` before the SYN is sent, so
    a connection that fails still names its port."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with PORT_LOCK:
            local = next(NEXT_PORT)
        raw.bind(("0.0.0.0", local))
        ports.append(local)
        raw.setblocking(False)
        rc = raw.connect_ex((HOST, PORT))
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, f"connect: {errno.errorcode.get(rc, rc)}")
        if not select.select([], [raw], [], 10)[1]:
            raise OSError(errno.ETIMEDOUT, "connect: timed out")
        rc = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc:
            raise OSError(rc, f"connect: {errno.errorcode.get(rc, rc)}")
        raw.setblocking(True)
        raw.settimeout(10)
        return raw
    except BaseException:
        raw.close()
        raise


def request(ctx, session=None, ports=None):
    """One connection: returns (instance name, reused, session)."""
    with connect([] if ports is None else ports) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
            name = body.rsplit(" ", 1)[-1]
            return name, s.session_reused, s.session


def bulk(clients, resumes, version, workers):
    ctx = context(version)
    lock = threading.Lock()
    t = dict(connections=0, failures=0, resumed=0, cross=0, attempts=0, skipped=0, errors=[],
             failed_ports=[])
    quarter = clients * (resumes + 1) // 4

    def count():  # with lock held
        t["connections"] += 1
        if t["connections"] == quarter:
            print("progress a quarter done", flush=True)

    def failed(ports, e):  # with lock held
        count()
        t["failures"] += 1
        t["errors"].append(repr(e))
        if ports:
            t["failed_ports"].append(ports[-1])

    def one(_):
        ports = []
        try:
            issuer, _, session = request(ctx, ports=ports)
        except Exception as e:  # noqa: BLE001 - counted and reported
            with lock:
                failed(ports, e)
                t["skipped"] += resumes  # no session to resume
            return
        with lock:
            count()
        for _ in range(resumes):
            ports = []
            try:
                name, reused, _ = request(ctx, session, ports)
            except Exception as e:  # noqa: BLE001
                with lock:
                    failed(ports, e)
                    t["attempts"] += 1
                continue
            with lock:
                count()
                t["attempts"] += 1
                if reused:
                    t["resumed"] += 1
                    if name != issuer:
                        t["cross"] += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(clients)))
    t["errors"] = t["errors"][:5]
    print(json.dumps(t), flush=True)


def hold():
    ctx = context("1.3")
    _, _, session = request(ctx)
    print(f"ready {time.time():.3f}", flush=True)
    for line in sys.stdin:
        if line.strip() != "resume":
            continue
        try:
            name, reused, _ = request(ctx, session)
            print(f"resumed {'yes' if reused else 'no'} {name}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"failed {e!r}", flush=True)


if MODE == "bulk":
    workers = int(sys.argv[8]) if len(sys.argv) > 8 else 16
    bulk(int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], workers)
elif MODE == "hold":
    hold()
else:
    sys.exit(f"unknown mode {MODE}")
