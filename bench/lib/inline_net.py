"""bench/inline.sh's section "inline run on real packets vs terminate".

Three network namespaces, client - gate - server, joined by veth pairs, GRO off, TSO/GSO and
checksum offload on (the veth default: the hosts hand 64 KiB segments to the veth whole) or, with
--offloads off, off (every frame wire-sized). The same curl in the client downloads the
same file from the same nginx in the server, TLS 1.3 TLS_AES_128_GCM_SHA256:

  A. inline: one IPv4 subnet across the gate; `tlsgate inline run` bridges the gate's two veths
     and turns the TLS records into plaintext inside the passing TCP segments (the client's TCP
     connection ends at nginx's port 80);
  B. terminate: the gate routes between two subnets; `tlsgate terminate` listens on its
     client-side address and relays to nginx's port 80.

Per run, on a freshly started tlsgate: first idle TLS connections (one request each, then kept
open): the process's RSS growth per flow and, inline, the engine's own per-flow accounting if the
admin listener shows one (before the bulk downloads, whose buffers the allocator would otherwise
be handing back while the idle flows are counted); then, with the idle connections still open (a
gate always holds idle connections beside its busy ones), the tlsgate process's CPU seconds
(utime + stime) per GiB downloaded and the wall-clock throughput. With --rounds N every run goes N
times, the order rotated, and each ratio is the median of the per-round ratios; with --baseline an
older tlsgate's inline run joins every round (an A/B in the same minutes). Prints a markdown section on stdout; progress on stderr. Exits 1 if a run
failed (after printing what it has).
"""

import argparse
import hashlib
import json
import os
import re
import select
import statistics
import signal
import subprocess
import sys
import time

import bench
import netns
import peers
import procs

SUITE = "TLS_AES_128_GCM_SHA256"
FILE_BYTES = 64 * 1024 * 1024
GIB = 1 << 30
SERVER_NAME = "localhost"  # in the benchmark certificate's SAN; curl --resolve maps it
ADMIN = "127.0.0.1:9900"  # the gate namespace's own loopback
WARM_FLOWS = 50
PERF_S = 5  # seconds of `perf record` with --perf
BASELINE = "inline run (baseline)"
# After the idle flows' last response, before reading RSS: inline parks a flow 500 ms after its last
# packet (`Limits::park_after`) and its bridge thread gives freed memory back at its next round, at
# most a second after the last release (crates/io/src/inline/release.rs) with a round at least every
# second (driver.rs), so everything is parked and released 2.5 s after the last response. Nothing
# asks the admin listener before the reading: its report of every connection is built, sent and
# freed by other threads, whose allocator pages would count as idle-flow memory (polling it for
# the parkings tripled the RSS growth per flow).
SETTLE_S = 3.0
RING_KIB = 256 * 128  # the default receive ring of `inline run` (crates/io/src/inline/ring.rs)
TICK = os.sysconf("SC_CLK_TCK")
BACKGROUND_S = 1.0  # CPU 0's softirq rate with no transfer, measured just before and just after
# CPU 0 busy this much (s/s) or less around both runs of a round: its busy ratio counts.
QUIET_BUSY = 0.1
QUIET_NOTE = f" (rounds with CPU 0 busy more than {QUIET_BUSY:g} s/s around either run left out: –)"


def cpu0_softirq_ticks():
    """The softirq column of cpu0 in /proc/stat (USER_HZ ticks)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                return int(line.split()[7])
    raise RuntimeError("no cpu0 line in /proc/stat")


def cpu0_busy_seconds():
    """Seconds CPU 0 was neither idle nor waiting for I/O nor stolen by the hypervisor, as a
    clock: monotonic time less /proc/stat's idle and iowait of cpu0 (with NO_HZ measured at each
    idle entry and exit, not sampled by the tick) and its steal. Whatever ran there counts once:
    tlsgate, softirq in any context, other tenants (the background rate takes those off)."""
    now = time.monotonic()
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                v = [int(x) for x in line.split()[1:]]
                return now - (v[3] + v[4] + v[7]) / TICK
    raise RuntimeError("no cpu0 line in /proc/stat")


def voluntary_switches(server):
    """Voluntary context switches of every thread of the server's processes: each is a sleep in
    poll(2) or epoll and a wakeup, counted exactly (not sampled), so it moves with the code and
    hardly with the load."""
    total = 0
    for pid in server.pids():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def softirq_background():
    """CPU 0's softirq ticks per second and its busy fraction over BACKGROUND_S with no transfer
    (other tenants' work)."""
    s0, b0, t0 = cpu0_softirq_ticks(), cpu0_busy_seconds(), time.monotonic()
    time.sleep(BACKGROUND_S)
    wall = time.monotonic() - t0
    return (cpu0_softirq_ticks() - s0) / wall, (cpu0_busy_seconds() - b0) / wall


def log(*parts):
    print("[inline-net]", *parts, file=sys.stderr, flush=True)


def wait_listening(topo, role, port, proc, timeout=15.0):
    """Polls `ss` in the namespace until a TCP socket listens on port; fails if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with status {proc.poll()} before listening: {tail(proc.log_path)}")
        if netns.sh(topo.exec(role) + ["ss", "-Hltn", f"sport = :{port}"]).strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not listening on port {port} after {timeout:.0f} s (log: {proc.log_path})")


def wait_log_line(proc, needle, timeout=20.0):
    """Polls proc's log until a line contains needle; fails if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(proc.log_path, errors="replace") as f:
            if needle in f.read():
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with status {proc.poll()} before '{needle}': {tail(proc.log_path)}")
        time.sleep(0.05)
    raise RuntimeError(f"no '{needle}' from {proc.name} after {timeout:.0f} s: {tail(proc.log_path)}")


def tail(path, lines=5):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip())
    except OSError:
        return "(no log)"


def curl_argv(topo, ca, connect_ip, url, max_time):
    return topo.exec("client") + [
        "taskset", "-c", "1", "curl", "-sS", "--fail", "--cacert", ca, "--tlsv1.3", "--tls13-ciphers", SUITE,
        "--resolve", f"{SERVER_NAME}:443:{connect_ip}", "--connect-timeout", "10", "--max-time", str(max_time),
        url,
    ]


def check_download(topo, ca, connect_ip, want_sha, log_path):
    """One download hashed as it arrives; returns the suite curl negotiated."""
    argv = curl_argv(topo, ca, connect_ip, f"https://{SERVER_NAME}/random", 120)
    argv.insert(argv.index("-sS") + 1, "-v")
    with open(log_path, "wb") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        digest, n = hashlib.sha256(), 0
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            digest.update(chunk)
            n += len(chunk)
        rc = p.wait(timeout=130)
    if rc != 0:
        raise RuntimeError(f"curl (check download) exited with {rc}: {tail(log_path)}")
    if n != FILE_BYTES or digest.hexdigest() != want_sha:
        raise RuntimeError(f"check download: {n} bytes, sha256 {digest.hexdigest()[:16]}…, expected {FILE_BYTES} and {want_sha[:16]}…")
    with open(log_path, errors="replace") as f:
        m = re.search(r"SSL connection using (\S+) / (\S+)", f.read())
    return f"{m.group(1)} {m.group(2)}" if m else "unknown"


def retransmits(topo, role):
    """TCP segments the namespace `role` has retransmitted (the sender's, toward the gate)."""
    out = netns.sh(topo.exec(role) + ["cat", "/proc/net/snmp"])
    tcp = [line.split() for line in out.splitlines() if line.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("RetransSegs")])


def measure(name, topo, server, ca, connect_ip, want_sha, gib, workdir, perf=None, messages=None, direction="down"):
    """The check download (unmeasured), then ceil(gib GiB / file) downloads (direction "up":
    uploads) on one connection;
    with perf (a directory), `perf record -g` on tlsgate for the first PERF_S s of them."""
    suite = check_download(topo, ca, connect_ip, want_sha, os.path.join(workdir, f"curl-check-{name}.log"))
    count = max(1, -(-int(gib * GIB) // FILE_BYTES))
    if direction == "up":
        # POSTs of the same file to a location that answers 204 and discards the body as it reads.
        argv = curl_argv(topo, ca, connect_ip, f"https://{SERVER_NAME}/sink?n=[1-{count}]", int(60 + 600 * gib))
        argv[-1:-1] = ["--data-binary", "@" + os.path.join(workdir, "www", "random"), "-H", "Expect:",
                       "-o", "/dev/null", "-w", "%{size_upload}\\n"]
    else:
        argv = curl_argv(topo, ca, connect_ip, f"https://{SERVER_NAME}/random?n=[1-{count}]", int(60 + 600 * gib))
        argv[-1:-1] = ["-o", "/dev/null", "-w", "%{size_download}\\n"]
    verb = "uploads" if direction == "up" else "downloads"
    log(f"{name}: {count} {verb} of {FILE_BYTES >> 20} MiB on one connection")
    sender = "client" if direction == "up" else "server"
    retrans0 = retransmits(topo, sender)
    messages0 = messages(topo) if messages else None
    bg0, busy_bg0 = softirq_background()
    soft0, rx0, busy0 = cpu0_softirq_ticks(), netns.net_rx_per_cpu(), cpu0_busy_seconds()
    cpu0, sys0, t0 = server.cpu_seconds(), server.sys_seconds(), time.monotonic()
    switches0 = voluntary_switches(server)
    recorder = None
    if perf:
        out = os.path.join(perf, f"perf-{name}.data")
        log(f"{name}: perf record -g -p {server.pid} for {PERF_S} s into {out}")
        recorder = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(server.pid), "-o", out, "--",
                                     "sleep", str(PERF_S)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=int(90 + 600 * gib))
    wall, cpu = time.monotonic() - t0, server.cpu_seconds() - cpu0
    switches = voluntary_switches(server) - switches0
    user = cpu - (server.sys_seconds() - sys0)
    soft_raw, rx = (cpu0_softirq_ticks() - soft0) / TICK, [b - a for a, b in zip(rx0, netns.net_rx_per_cpu())]
    busy_raw = cpu0_busy_seconds() - busy0
    bg1, busy_bg1 = softirq_background()
    bg, busy_bg = (bg0 + bg1) / 2, (busy_bg0 + busy_bg1) / 2
    # CPU 0 busy: tlsgate and every softirq there counted once, less the other tenants' rate.
    busy = max(0.0, busy_raw - busy_bg * wall)
    # The gate's receive processing that RPS runs in softirq on CPU 0 outside tlsgate's context,
    # net of the background. Without CONFIG_IRQ_TIME_ACCOUNTING a softirq tick that lands while
    # tlsgate runs counts here and in its stime: process + softirq is an upper bound.
    softirq = max(0.0, soft_raw - bg * wall / TICK)
    log(f"{name}: CPU 0 softirq {soft_raw:.2f} s raw, background {bg / TICK:.3f} s/s over {wall:.1f} s; "
        f"NET_RX softirqs per CPU {rx}; CPU 0 busy {busy_raw:.2f} s raw, background {busy_bg:.3f} s/s")
    if recorder is not None:
        recorder.wait(timeout=PERF_S + 60)
    retrans = retransmits(topo, sender) - retrans0
    messages1 = messages(topo) if messages0 is not None else None
    if r.returncode != 0:
        raise RuntimeError(f"curl exited with {r.returncode}: {r.stderr.strip()[-300:]}")
    got = sum(int(x) for x in r.stdout.split())
    if got != count * FILE_BYTES:
        raise RuntimeError(f"{verb}: {got} bytes, expected {count * FILE_BYTES}")
    row = {
        "gib": got / GIB,
        "wall_s": wall,
        "mb_s": got / 1e6 / wall,
        "cpu_s": cpu,
        "cpu_per_gib": cpu / (got / GIB),
        "user_per_gib": user / (got / GIB),
        "softirq_per_gib": softirq / (got / GIB),
        "host_per_gib": (cpu + softirq) / (got / GIB),
        "background": bg,
        "busy_per_gib": busy / (got / GIB),
        "wakeups_per_gib": switches / (got / GIB),
        "busy_background": busy_bg,
        "suite": suite,
        "retrans": retrans,
    }
    if messages1 is not None:
        row["messages_per_gib"] = [(b - a) / (got / GIB) for a, b in zip(messages0, messages1)]
    return row


def inline_status(topo):
    """The "inline" object of the admin listener's /status.json, or None without an answer."""
    r = subprocess.run(topo.exec("gate") + ["curl", "-sS", "--max-time", "5", f"http://{ADMIN}/status.json"],
                       capture_output=True, text=True, timeout=15)
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout).get("inline")
    except ValueError:
        return None


def ring_messages(topo):
    """Messages the bridge handed to the kernel so far on each ring (client side, server side):
    a GSO run or a single frame each; None without an answer."""
    inline = inline_status(topo)
    rings = (inline or {}).get("rings")
    if not rings or len(rings) != 2:
        return None
    return [r.get("tx_messages", 0) for r in rings]


def flows_parked(topo):
    """The inline engine's count of parkings so far, or None (terminate: no inline section)."""
    inline = inline_status(topo)
    return None if not inline else (inline.get("engine") or {}).get("flows_parked")


def mappings_rss(server):
    """Resident KiB of each mapping of the server's processes (/proc/PID/smaps), by (pid, address
    range, size KiB, name)."""
    out = {}
    for pid in server.pids():
        try:
            with open(f"/proc/{pid}/smaps") as f:
                key = None
                for line in f:
                    first = line.split(None, 1)[0]
                    if "-" in first and not first.endswith(":"):
                        parts = line.split()
                        lo, hi = (int(x, 16) for x in first.split("-"))
                        key = (pid, first, (hi - lo) >> 10, parts[5] if len(parts) > 5 else "")
                    elif first == "Rss:" and key is not None:
                        out[key] = int(line.split()[1])
        except OSError:
            pass
    return out


def mapping_kind(key, ring_kib):
    """"ring" for a packet ring (a mapping of an AF_PACKET socket, its size the ring's), "heap"
    for anonymous and [heap] memory (both allocators), "other" (binary, libraries, stacks)."""
    _, _, size, name = key
    if name.startswith("socket:") or (name == "" and size == ring_kib):
        return "ring"
    return "heap" if name in ("", "[heap]") else "other"


def rss_growth_by_kind(before, after, ring_kib):
    # A mapping is the same across the readings by its start: a malloc arena's heap grows at its
    # end, and by its whole range its growth would be logged as a new mapping.
    def by_start(maps):
        return {(pid, rng.split("-")[0], name): (size, kib) for (pid, rng, size, name), kib in maps.items()}

    before, after = by_start(before), by_start(after)
    kinds = {"ring": 0, "heap": 0, "other": 0}
    grown = []
    for key in set(before) | set(after):
        size = (after.get(key) or before[key])[0]
        kib0, kib1 = before.get(key, (0, 0))[1], after.get(key, (0, 0))[1]
        pid, start, name = key
        kinds[mapping_kind((pid, start, size, name), ring_kib)] += kib1 - kib0
        grown.append((kib1 - kib0, start, size, name))
    for kib, start, size, name in sorted(grown, reverse=True)[:6]:
        log(f"  RSS {kib:+d} KiB in mapping at {start} ({size} KiB) {name or '[anon]'}")
    return kinds


def engine_state_bytes(topo):
    """The engine's own state accounting from the admin listener, per flow: the mean of
    `state_bytes` over the connection rows of /status.json (each row holds its flow's share of
    the flow table). None without an answer or without rows."""
    inline = inline_status(topo) or {}
    rows = inline.get("connections")
    if not rows:
        return None
    return sum(row.get("state_bytes", 0) for row in rows) / len(rows)


def read_ready(p, timeout):
    """The hold client's "ready SUITE" line, within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"idle client exited with {p.poll()}: {p.stderr.read().strip()[-300:]}")
        ready, _, _ = select.select([p.stdout], [], [], 0.5)
        if ready:
            line = p.stdout.readline().strip()
            if line.startswith("ready"):
                return line.split(" ", 1)[1] if " " in line else "unknown"
            raise RuntimeError(f"idle client said {line!r}")
    raise RuntimeError(f"idle client not ready after {timeout:.0f} s")


def hold(topo, ca, connect_ip, count, pidfile):
    """Starts the hold client in the client namespace, in its own process group listed in the pid
    file (the exit trap stops it); returns (process, suite) once it holds count connections."""
    argv = topo.exec("client") + ["taskset", "-c", "1", sys.executable,
                                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle_tls.py"),
                                  "--host", connect_ip, "--ca", ca, "--count", str(count)]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    with open(pidfile, "a") as f:
        f.write(f"{p.pid}\n")
    try:
        return p, read_ready(p, 30 + count * 0.5)
    except BaseException:
        p.kill()  # not ready: it reads stdin only once it holds every connection
        p.wait(timeout=5)
        raise


def release(p):
    """Closes the ready hold client's stdin: it closes its connections and exits."""
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)


def idle_flows(topo, server, ca, connect_ip, flows, pidfile, held):
    """RSS growth and the engine's accounting per idle flow, after WARM_FLOWS held flows. The hold
    clients go into `held`, still holding their connections, for `release_all` after the bulk run."""
    parked0 = flows_parked(topo)
    warm, _ = hold(topo, ca, connect_ip, WARM_FLOWS, pidfile)
    held.append(warm)
    time.sleep(SETTLE_S)  # the warm flows parked and released before the first reading too
    # Nothing asks the admin listener between the two readings (see SETTLE_S): the engine's
    # accounting is read once, after, as the mean over every flow held then.
    rss0, maps0 = server.rss_kib(), mappings_rss(server)
    p, suite = hold(topo, ca, connect_ip, flows, pidfile)
    held.append(p)
    time.sleep(SETTLE_S)
    rss1, maps1 = server.rss_kib(), mappings_rss(server)
    per_flow, parked1 = engine_state_bytes(topo), flows_parked(topo)
    # Parkings counted after the reading: every flow parked 500 ms after its last packet, long
    # before it, or the figure says it was not.
    all_parked = None if parked0 is None else (parked1 or 0) - parked0 >= WARM_FLOWS + flows
    return {"flows": flows, "rss_kib_per_flow": (rss1 - rss0) / flows, "state_bytes_per_flow": per_flow, "suite": suite,
            "all_parked": all_parked,
            "rss_kib_per_flow_by_kind": {k: v / flows for k, v in rss_growth_by_kind(maps0, maps1, RING_KIB).items()}}


def release_all(held):
    for p in reversed(held):
        release(p)


def idle_or_error(name, topo, server, ca, connect_ip, flows, pidfile, held):
    """idle_flows, or {"error": why}: a failure here keeps the bulk run's row."""
    log(f"{name}: {flows} idle flows")
    try:
        return idle_flows(topo, server, ca, connect_ip, flows, pidfile, held)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        log(f"{name}: idle flows failed: {e}")
        return {"error": str(e)}


def backend(topo, workdir, pidfile):
    env = {"DIR": workdir, "WWW": os.path.join(workdir, "www"), "BACKEND_HOST": topo.server_ip, "BACKEND_PORT": 80,
           "NGINX_MODULES": peers.NGINX_MODULES}
    server = procs.Server("backend-nginx", topo.exec("server") + peers.backend_argv(env), "1", workdir, pidfile)
    wait_listening(topo, "server", 80, server)
    return server


def run_inline(topo, args, pidfile, want_sha, tlsgate, flows, tag):
    nginx = backend(topo, args.dir, pidfile)
    try:
        argv = topo.exec("gate") + [
            tlsgate, "inline", "run",
            "--client-iface", topo.ifs["gate_client"], "--server-iface", topo.ifs["gate_server"],
            "--service", f"{topo.server_ip}:443=80", "--cert", args.cert, "--key", args.key,
            "--mode", args.mode, "--admin", ADMIN,
        ]
        log(f"{tlsgate} " + " ".join(argv[argv.index(tlsgate) + 1:]))
        gate = procs.Server(f"tlsgate-{tag}", argv, "0", args.dir, pidfile)
        try:
            try:
                wait_log_line(gate, "inline running")
            except RuntimeError as e:
                if "unrecognized subcommand" in str(e):
                    raise RuntimeError(f"this tlsgate has no `inline run` subcommand: {e}") from None
                raise RuntimeError(f"tlsgate inline run did not start: {e}") from None
            held = []
            try:
                idle = idle_or_error("inline run", topo, gate, args.ca, topo.server_ip, flows, pidfile,
                                     held) if flows else None
                return measure(tag, topo, gate, args.ca, topo.server_ip, want_sha, args.gib, args.dir,
                               args.perf, ring_messages, args.direction), idle
            finally:
                release_all(held)
        finally:
            gate.stop()
    finally:
        nginx.stop()


def run_terminate(topo, args, pidfile, want_sha, tlsgate, flows, tag):
    nginx = backend(topo, args.dir, pidfile)
    try:
        env = {"TLSGATE": tlsgate, "LISTEN_HOST": topo.gate_client_ip, "LISTEN_PORT": 443,
               "CERT": args.cert, "KEY": args.key, "BACKEND_HOST": topo.server_ip, "BACKEND_PORT": 80}
        gate = procs.Server("tlsgate-terminate", topo.exec("gate") + dict(peers.TERMINATORS)["tlsgate"](env), "0",
                            args.dir, pidfile)
        try:
            wait_listening(topo, "gate", 443, gate)
            held = []
            try:
                idle = idle_or_error("terminate", topo, gate, args.ca, topo.gate_client_ip, flows, pidfile,
                                     held) if flows else None
                return measure(tag, topo, gate, args.ca, topo.gate_client_ip, want_sha, args.gib, args.dir,
                               args.perf, direction=args.direction), idle
            finally:
                release_all(held)
        finally:
            gate.stop()
    finally:
        nginx.stop()


def fmt(value, spec, missing="n/a"):
    return missing if value is None else format(value, spec)


def spread(values, spec=".2f"):
    """"median (min–max)" of values, or "n/a"."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = format(statistics.median(values), spec)
    return med if len(values) == 1 else f"{med} ({format(min(values), spec)}–{format(max(values), spec)})"


def per_gib_ratio(a, b, key):
    return None if a is None or b is None or not b[f"{key}_per_gib"] else a[f"{key}_per_gib"] / b[f"{key}_per_gib"]


def quiet(rows, a, b, key):
    """The two runs of a round, or (None, None) for the busy figure when CPU 0 was not quiet
    around either: another tenant's work there is not a rate the subtraction can take off, since
    tlsgate takes CPU 0 from it while it runs."""
    ra, rb = rows.get(a), rows.get(b)
    if key == "busy" and any(r is None or r["busy_background"] > QUIET_BUSY for r in (ra, rb)):
        return None, None
    return ra, rb


def report(args, rounds, idles, errors, names):
    print(f"## inline run on real packets vs terminate ({args.mode}, {'uploads' if args.direction == 'up' else 'downloads'})")
    transfers = "uploads" if args.direction == "up" else "downloads"
    print()
    offloads = "TSO/GSO/checksum offload on, GRO off" if args.offloads == "on" else "offloads off"
    print(f"- client - gate - server in network namespaces over veth pairs ({offloads}); tlsgate on CPU 0, "
          f"curl and nginx on CPU 1; {FILE_BYTES >> 20} MiB file (sha256 checked), one connection, "
          f"{args.gib:g} GiB per run; curl --tls13-ciphers {SUITE}")
    print(f"- {len(rounds)} round(s), each run on fresh namespaces and a fresh tlsgate, the order of the runs "
          "rotated from round to round; idle flows in the first round only, held open through its downloads")
    if args.baseline:
        print(f"- inline run (baseline) = `{args.baseline}`, the same runs with an older build, interleaved")
    print(f"- CPU = utime + stime of the tlsgate process (/proc/PID/stat), before and after the {transfers}")
    print()
    print(f"- retransmitted = segments the sender ({'curl' if args.direction == 'up' else 'nginx'}) retransmitted "
          f"during the {transfers} (`RetransSegs` of its namespace's /proc/net/snmp): each costs the gate the "
          "segment again")
    print()
    print("- user s/GiB = utime alone: tlsgate's own code and libc, without the kernel work (system calls, "
          "softirq) done in its context")
    print()
    if args.steer == "on":
        print("- steering on: RPS runs the client's and the server's receive processing on CPU 1, the gate's "
              "interfaces' on CPU 0 (each peer as its own host); softirq cpu0 = CPU 0's softirq column "
              f"(/proc/stat) during the {transfers} less its background rate (bg, ticks/s, measured over a second "
              "just before and just after); host = CPU + softirq cpu0, an upper "
              "bound (a softirq tick taken while tlsgate ran counts in both); cpu0 busy = the time CPU 0 was "
              f"not idle during the {transfers} (/proc/stat: wall less idle, iowait, steal; NO_HZ measures idle "
              "at each entry and exit) less its busy rate before and after (busy bg, s/s): tlsgate and all "
              "softirq on CPU 0, each counted once; wakeups/GiB = tlsgate's voluntary context switches "
              "(/proc/PID/task/*/status), exact where the CPU figures are sampled")
    else:
        print("- steering off: a veth runs its peer's receive processing on the sender's CPU, so the client's "
              "TCP receive counts as the gate's CPU and the gate's own receive as nginx's or curl's")
    print()
    print("| round | run | GiB | wall s | MB/s | tlsgate CPU s | CPU s/GiB | user s/GiB | softirq cpu0 s/GiB | "
          "bg ticks/s | host s/GiB | cpu0 busy s/GiB | busy bg | wakeups/GiB | retransmitted | suite |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, rows in enumerate(rounds, 1):
        for name in names:
            r = rows.get(name)
            if r is None:
                print(f"| {i} | {name} | failed (below) | | | | | | | | | | | | | |")
            else:
                print(f"| {i} | {name} | {r['gib']:.2f} | {r['wall_s']:.1f} | {r['mb_s']:.0f} | {r['cpu_s']:.2f} | "
                      f"{r['cpu_per_gib']:.2f} | {r['user_per_gib']:.2f} | {r['softirq_per_gib']:.2f} | "
                      f"{r['background']:.1f} | {r['host_per_gib']:.2f} | {r['busy_per_gib']:.2f} | "
                      f"{r['busy_background']:.2f} | {r['wakeups_per_gib']:.0f} | {r['retrans']} | {r['suite']} |")
    for name in names:
        got = [rows[name]["messages_per_gib"] for rows in rounds if "messages_per_gib" in rows.get(name, {})]
        if got:
            print(f"\n- {name}: messages sent per GiB (admin listener's ring counters), to the client "
                  f"{spread([m[0] for m in got], '.0f')}, to the server {spread([m[1] for m in got], '.0f')}")
    for name, error in errors.items():
        print(f"\n{name} failed: {error}")
    print()
    if len(rounds) > 1:
        print(f"| median (min–max) of {len(rounds)} rounds | MB/s | CPU s/GiB | softirq cpu0 s/GiB | host s/GiB | "
              "cpu0 busy s/GiB | wakeups/GiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in names:
            got = [rows[name] for rows in rounds if name in rows]
            print(f"| {name} | {spread([r['mb_s'] for r in got], '.0f')} | {spread([r['cpu_per_gib'] for r in got])} | "
                  f"{spread([r['softirq_per_gib'] for r in got])} | {spread([r['host_per_gib'] for r in got])} | "
                  f"{spread([r['busy_per_gib'] for r in got])} | {spread([r['wakeups_per_gib'] for r in got], '.0f')} |")
        print()
    # Steered, the gate's own receive runs in softirq on CPU 0, often outside tlsgate's context:
    # what a gate host pays is the host figure. Unsteered, the process figure (as before). Each
    # round's ratio is taken within the round (same minutes, same neighbours), then the median.
    target = "host" if args.steer == "on" else "cpu"
    for key in ("host", "cpu", "busy"):
        ratios = [per_gib_ratio(*quiet(rows, "inline run", "terminate", key), key) for rows in rounds]
        med = spread(ratios)
        mark = f"**{med}** (target ≤ 0.7)" if key == target else med
        each = ", ".join(fmt(x, ".2f", "–") for x in ratios)
        print(f"inline_{key}_per_gib / terminate_{key}_per_gib: {mark}" +
              (f"; median of {len(rounds)} rounds, each {each}" if len(rounds) > 1 else "") +
              (QUIET_NOTE if key == "busy" else ""))
        print()
    if args.baseline:
        for key in ("cpu", "host", "busy"):
            ratios = [per_gib_ratio(*quiet(rows, "inline run", BASELINE, key), key) for rows in rounds]
            print(f"inline run / baseline, {key} per GiB: {spread(ratios)}; each round "
                  f"{', '.join(fmt(x, '.2f', '–') for x in ratios)}" + (QUIET_NOTE if key == "busy" else ""))
            print()
    print()
    print("| idle state per flow (one request each, then idle) | flows | KiB | target |")
    print("|---|---:|---:|---|")
    lines = (("inline run", "engine's accounting (admin listener)", "state", "≤ 1 KiB"),
             ("inline run", "process RSS growth", "rss", ""),
             ("terminate", "process RSS growth", "rss", ""))
    for name, what, key, target in lines:
        idle = idles.get(name)
        if idle is None or "error" in idle:
            flows, kib = "", "n/a" if idle is None else "failed (above)"
        elif key == "state":
            state = idle["state_bytes_per_flow"]
            flows, kib = idle["flows"], fmt(None if state is None else state / 1024, ".2f")
        else:
            flows, kib = idle["flows"], f"{idle['rss_kib_per_flow']:.2f}"
        print(f"| {name}, {what} | {flows} | {kib} | {target} |")
    print()
    for name in ("inline run", "terminate"):
        idle = idles.get(name)
        if idle is not None and "error" not in idle:
            when = {None: "", True: ", every idle flow parked by then",
                    False: ", **not every idle flow parked by then**"}[idle["all_parked"]]
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in idle["rss_kib_per_flow_by_kind"].items())
            print(f"- {name}: RSS read {SETTLE_S:g} s after the idle flows' last response{when}; "
                  f"growth per flow by mapping (KiB): {kinds}")


def bench_main(args):
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    pidfile = os.path.join(args.dir, "pids")
    registry = os.path.join(args.dir, "netns")
    bench.make_www(args.dir)
    data = os.urandom(FILE_BYTES)  # random: a byte misplaced by the bridge shows in the digest
    with open(os.path.join(args.dir, "www", "random"), "wb") as f:
        f.write(data)
    want_sha = hashlib.sha256(data).hexdigest()
    del data
    tag = f"{args.prefix}{os.getpid()}"
    octet = 20 + os.getpid() % 200
    runs = [("inline run", "a", run_inline, args.tlsgate)]
    if args.baseline:
        runs.append((BASELINE, "c", run_inline, args.baseline))
    runs.append(("terminate", "b", run_terminate, args.tlsgate))
    names = [name for name, _, _, _ in runs]
    rounds, errors, idles = [], {}, {}
    for r in range(args.rounds):
        rows = {}
        # Rotated: no run always goes first, right after the previous round's busy minute.
        for name, suffix, run, binary in runs[r % len(runs):] + runs[:r % len(runs)]:
            routed = run is run_terminate
            if args.only and args.only != ("terminate" if routed else "inline"):
                continue
            topo = netns.Topology(tag + suffix, octet, routed, registry, args.offloads == "on", args.steer == "on")
            what = f"{name}, round {r + 1}/{args.rounds}"
            try:
                log(f"{what}: namespaces {', '.join(topo.ns.values())}")
                topo.up()
                flows = args.flows if r == 0 else 0
                perf = args.perf if r == 0 else None
                tagname = {"inline run": "inline", BASELINE: "baseline"}.get(name, "terminate")
                rows[name], idle = run(topo, argparse.Namespace(**{**vars(args), "perf": perf}), pidfile, want_sha,
                                       binary, flows, tagname)
                if idle is not None:
                    idles[name] = idle
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                errors[what] = str(e)
                log(f"{what} failed: {e}")
            finally:
                topo.down()
        rounds.append(rows)
    for name, idle in idles.items():
        if "error" in idle:
            errors[f"{name} idle flows"] = idle["error"]
    report(args, rounds, idles, errors, names)
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="scratch directory (made by inline.sh, with bench/lib/pki.sh's PKI)")
    ap.add_argument("--tlsgate", required=True)
    ap.add_argument("--gib", type=float, default=1.0, help="GiB downloaded (or uploaded) per run")
    ap.add_argument("--direction", choices=("down", "up"), default="down",
                    help="down: curl downloads the file; up: curl POSTs it to nginx, which discards it")
    ap.add_argument("--flows", type=int, default=200, help="idle flows through the inline gate")
    ap.add_argument("--mode", choices=("buffered", "cut-through"), default="buffered")
    ap.add_argument("--offloads", choices=("on", "off"), default="on",
                    help="TSO/GSO/checksum offload on the veths (GRO stays off)")
    ap.add_argument("--steer", choices=("on", "off"), default="on",
                    help="RPS: each peer's receive processing on its own CPU, the gate's on the gate's")
    ap.add_argument("--prefix", default="tb", help="prefix of the namespaces' and interfaces' names")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every run, interleaved; ratios are medians")
    ap.add_argument("--baseline", help="an older tlsgate binary: its inline run beside the new one in every round")
    ap.add_argument("--only", choices=("inline", "terminate"), help="one of the runs alone (inline: the baseline too)")
    ap.add_argument("--perf", help="a directory: record a perf profile (-g) of tlsgate during each run's downloads")
    args = ap.parse_args()
    args.ca, args.cert, args.key = (os.path.join(args.dir, n) for n in ("ca.pem", "server.pem", "server.key"))
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
