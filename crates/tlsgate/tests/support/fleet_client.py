#!/usr/bin/env python3
"""TLS resumption across a fleet: full handshakes, then resumptions with the same session.

fleet_client.py HOST PORT CAFILE bulk CLIENTS RESUMES VERSION [WORKERS]
    Each client: one full handshake (GET /, the answer names the instance), then RESUMES
    connections offering that first session. VERSION: 1.3 (tickets) or 1.2 (session IDs, no
    tickets). Prints one JSON line: connections, failures, resumed, cross (resumed on another
    instance than the issuing one), attempts, skipped (resumptions not tried because their
    client's first handshake failed); before it, "progress" once a quarter is done.
fleet_client.py HOST PORT CAFILE hold
    One full handshake (TLS 1.3); prints "ready UNIX_TIME", then answers each stdin line
    "resume" with "resumed yes|no NAME".
"""
import json
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


def request(ctx, session=None):
    """One connection: returns (instance name, reused, session)."""
    with socket.create_connection((HOST, PORT), timeout=10) as raw:
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
    t = dict(connections=0, failures=0, resumed=0, cross=0, attempts=0, skipped=0, errors=[])
    quarter = clients * (resumes + 1) // 4

    def count():  # with lock held
        t["connections"] += 1
        if t["connections"] == quarter:
            print("progress a quarter done", flush=True)

    def one(_):
        try:
            issuer, _, session = request(ctx)
        except Exception as e:  # noqa: BLE001 - counted and reported
            with lock:
                count()
                t["failures"] += 1
                t["skipped"] += resumes  # no session to resume
                t["errors"].append(repr(e))
            return
        with lock:
            count()
        for _ in range(resumes):
            try:
                name, reused, _ = request(ctx, session)
            except Exception as e:  # noqa: BLE001
                with lock:
                    count()
                    t["failures"] += 1
                    t["attempts"] += 1
                    t["errors"].append(repr(e))
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
