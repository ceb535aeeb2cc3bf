"""The five measurements, each against one running terminator.

Every phase reads the terminator's CPU time (utime + stime of all its processes and threads)
before and after its load, and divides by what the load did. Load generators run on CPU 1, the
terminator alone on CPU 0.
"""

import json
import re
import selectors
import subprocess
import time

import procs

BIG_BYTES = 100 * 1024 * 1024
SMALL_BYTES = 100
# Bulk compares the cost of moving bytes, which depends on the cipher: left to choose, tlsgate
# picks AES-128-GCM and the other terminators AES-256-GCM. The bulk client offers only this one
# suite, so every terminator encrypts with the same cipher (checked, and shown in the report).
BULK_SUITE = "TLS_AES_128_GCM_SHA256"
BULK_SUITE_NEGOTIATED = "TLS13_AES_128_GCM_SHA256"  # rustls's name for it


class Ctx:
    """Where the terminator listens and what the load generators need."""

    def __init__(self, loadgen, ca, port, params):
        self.loadgen = loadgen
        self.ca = ca
        self.port = port
        self.p = params

    def loadgen_argv(self, mode, conns, concurrency, path="/small", suite=None):
        return [
            self.loadgen, mode,
            "--addr", f"127.0.0.1:{self.port}",
            "--ca", self.ca,
            "--conns", str(conns),
            "--concurrency", str(concurrency),
            "--path", path,
        ] + (["--suite", suite] if suite else [])


def _loadgen(ctx, mode, conns, concurrency, path="/small", timeout=300, suite=None):
    out = procs.run(ctx.loadgen_argv(mode, conns, concurrency, path, suite), timeout=timeout)
    result = json.loads(out.strip().splitlines()[-1])
    if result["failed"]:
        raise RuntimeError(f"{mode}: {result['failed']} of {conns} connections failed: {result['first_error']}")
    return result


def _measured(server, load):
    """CPU seconds the server spent while `load()` ran, the system part of them, and load's
    result."""
    before_pids = set(server.pids())
    before, before_sys = server.cpu_seconds(), server.sys_seconds()
    result = load()
    after, after_sys = server.cpu_seconds(), server.sys_seconds()
    if set(server.pids()) != before_pids:
        raise RuntimeError("the terminator's processes changed during the phase (a worker died?)")
    return after - before, after_sys - before_sys, result


def warm_up(server, ctx):
    """A few full handshakes: proves the terminator works before anything is measured."""
    r = _loadgen(ctx, "full", ctx.p["warm_conns"], 4, timeout=60)
    return {"suite": r["suite"], "group": r["group"]}


def idle_rss(server, ctx):
    """KiB of RSS per TLS connection held open after its handshake."""
    n = ctx.p["idle_conns"]
    before = server.rss_kib()
    argv = ctx.loadgen_argv("idle", n, 50) + ["--hold-max-s", "120"]
    gen = subprocess.Popen(
        ["taskset", "-c", "1", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(gen, timeout=90)
        if not line.startswith("ready "):
            raise RuntimeError(f"idle loadgen: {line!r} {gen.stderr.read() if gen.poll() is not None else ''}")
        ready = json.loads(line[len("ready ") :])
        if ready["ok"] != n:
            raise RuntimeError(f"idle: only {ready['ok']} of {n} connections up: {ready['first_error']}")
        # The client is done when it has sent Finished; give the server a moment to read it.
        time.sleep(ctx.p["idle_settle_s"])
        if gen.poll() is not None:
            raise RuntimeError("idle loadgen exited while holding its connections")
        after = server.rss_kib()
    finally:
        try:
            gen.stdin.write("stop\n")
            gen.stdin.close()
        except OSError:
            pass
        try:
            gen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.wait(timeout=10)
    time.sleep(0.5)  # let the terminator tear the connections down before the next phase
    return {"idle_kib": (after - before) / n, "idle_rss_before_kib": before, "idle_rss_after_kib": after}


def _read_line(proc, timeout):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"no answer from the load generator in {timeout} s")
        return proc.stdout.readline().strip()
    finally:
        sel.close()


def full_handshake(server, ctx):
    """CPU per new connection with a full handshake and one small request relayed."""
    n = ctx.p["handshake_conns"]
    cpu, sys_cpu, r = _measured(server, lambda: _loadgen(ctx, "full", n, ctx.p["concurrency"]))
    if r["resumed"]:
        raise RuntimeError(f"full: {r['resumed']} of {r['ok']} connections resumed (resumption is disabled)")
    return {
        "full_cpu_ms": cpu * 1000 / r["ok"],
        "full_sys_ms": sys_cpu * 1000 / r["ok"],
        "full_cps": r["conns_per_s"],
        "full_ok": r["ok"],
        "full_resumed": r["resumed"],
        "full_hrr": r.get("hrr", 0),
        "suite": r["suite"],
        "group": r["group"],
    }


def resumed_handshake(server, ctx):
    """As full_handshake, each connection offering the ticket its predecessor got."""
    n = ctx.p["handshake_conns"]
    argv = ctx.loadgen_argv("resumed", n, ctx.p["concurrency"]) + ["--wait-go"]
    gen = subprocess.Popen(
        ["taskset", "-c", "1", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The loadgen warms one session per worker (full handshakes), then waits for "go".
        line = _read_line(gen, timeout=60)
        if line != "warmed":
            raise RuntimeError(f"resumed loadgen: {line!r} {gen.stderr.read() if gen.poll() is not None else ''}")
        before_pids = set(server.pids())
        before, before_sys = server.cpu_seconds(), server.sys_seconds()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        out, err = gen.communicate(timeout=300)
        after, after_sys = server.cpu_seconds(), server.sys_seconds()
        if set(server.pids()) != before_pids:
            raise RuntimeError("the terminator's processes changed during the phase (a worker died?)")
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(timeout=10)
    if gen.returncode != 0:
        raise RuntimeError(f"resumed loadgen exited with {gen.returncode}: {err.strip()[-500:]}")
    r = json.loads(out.strip().splitlines()[-1])
    if r["failed"]:
        raise RuntimeError(f"resumed: {r['failed']} of {n} connections failed: {r['first_error']}")
    return {
        "resumed_cpu_ms": (after - before) * 1000 / r["ok"],
        "resumed_sys_ms": (after_sys - before_sys) * 1000 / r["ok"],
        "resumed_cps": r["conns_per_s"],
        "resumed_count": r["resumed"],
        "resumed_ok": r["ok"],
    }


def keepalive(server, ctx):
    """wrk, 16 keep-alive connections on one thread, GET /small: CPU per request and req/s."""
    secs = ctx.p["wrk_s"]
    url = f"https://127.0.0.1:{ctx.port}/small"
    argv = ["wrk", "-t1", "-c16", f"-d{secs}s", url]
    cpu, sys_cpu, out = _measured(server, lambda: procs.run(argv, timeout=secs + 60))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise RuntimeError(f"wrk output not understood: {out[-500:]}")
    requests = int(m.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"wrk: {bad.group(1)} of {requests} responses were not 2xx/3xx")
    errors = re.search(r"Socket errors: (.*)", out)
    if requests == 0:
        raise RuntimeError(f"wrk made no request: {out[-500:]}")
    return {
        "keepalive_cpu_us": cpu * 1e6 / requests,
        "keepalive_sys_us": sys_cpu * 1e6 / requests,
        "keepalive_rps": float(rps.group(1)),
        "keepalive_socket_errors": errors.group(1) if errors else "",
    }


def bulk(server, ctx):
    """100 MiB bodies relayed, one at a time, on BULK_SUITE: CPU seconds per GiB and MB/s. One
    download first, not measured: the first large transfer through a terminator's process often
    cost up to 1.5-2 times the CPU of the ones after it (tlsgate and HAProxy alike), and one or
    three measured downloads then said more about that than about the steady cost."""
    n = ctx.p["bulk_runs"]
    _loadgen(ctx, "full", 1, 1, path="/big", timeout=120, suite=BULK_SUITE)
    cpu, sys_cpu, r = _measured(
        server, lambda: _loadgen(ctx, "full", n, 1, path="/big", timeout=120 * n, suite=BULK_SUITE)
    )
    if r["body_bytes"] != n * BIG_BYTES:
        raise RuntimeError(f"bulk: {r['body_bytes']} bytes, expected {n * BIG_BYTES}")
    if r["suite"] != BULK_SUITE_NEGOTIATED:
        raise RuntimeError(f"bulk: negotiated {r['suite']}, not {BULK_SUITE_NEGOTIATED}")
    return {
        "bulk_cpu_s_per_gib": cpu / (r["body_bytes"] / 2**30),
        "bulk_sys_s_per_gib": sys_cpu / (r["body_bytes"] / 2**30),
        "bulk_mb_s": r["body_bytes"] / 1e6 / r["elapsed_s"],
        "bulk_suite": r["suite"],
    }


# In this order: idle first, on a fresh process, before the other phases have grown its heap.
PHASES = [warm_up, idle_rss, full_handshake, resumed_handshake, keepalive, bulk]
