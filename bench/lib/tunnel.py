"""tlsgate tunnel (portal + gate) beside OpenSSH (ssh -L/-D + a private sshd); bench/tunnel.sh
calls this. See docs/benchmarks.md, "Tunnel vs OpenSSH".

stdout carries only the report (ending with the ratio line); progress goes to stderr.
"""

import argparse
import datetime
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import procs
import sink

MIB = 1 << 20
GIB = 1 << 30

PARAMS = {
    # --quick: the whole run in well under 3 minutes.
    "quick": {"rounds": 1, "one_stream": 256 * MIB, "parallel": 256 * MIB, "streams": 64, "rtts": 1000},
    # Three rounds, the peers alternating; best round per column (see FOLD).
    "full": {"rounds": 3, "one_stream": GIB, "parallel": GIB, "streams": 64, "rtts": 1000},
}
MSG = 64  # bytes per latency exchange
TUNNEL_SUITE = "TLS13_AES_128_GCM_SHA256"  # the cipher of ssh's aes128-gcm@openssh.com
IO_TIMEOUT = 60.0  # seconds any single socket operation may block
BULK_RAMP_S = 1.0  # the drain runs this long before the latency probe starts


# --- the client side of the measurements ---------------------------------------------------------


def connect(port, socks_target=None):
    """A TCP connection to 127.0.0.1:port, through SOCKS5 (no auth, CONNECT) if socks_target."""
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if socks_target is not None:
        host, dport = socks_target
        s.sendall(b"\x05\x01\x00")
        if sink.recv_exact(s, 2) != b"\x05\x00":
            raise RuntimeError("SOCKS5: method 'none' refused")
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", dport))
        reply = sink.recv_exact(s, 10)  # IPv4 bound address; both servers answer with one
        if reply[1] != 0:
            raise RuntimeError(f"SOCKS5 CONNECT refused: reply {reply[1]}")
    return s


def echo(port, count, socks_target=None):
    """count round trips of MSG bytes; returns each one's duration in µs."""
    s = connect(port, socks_target)
    try:
        s.sendall(sink.HEADER.pack(b"E", MSG))
        msg = os.urandom(MSG)
        out = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            back = sink.recv_exact(s, MSG)
            out.append((time.perf_counter_ns() - t0) / 1000)
            if back != msg:
                raise RuntimeError("echo came back different")
        return out
    finally:
        s.close()


def upload(port, n):
    """Seconds to send n bytes and hear that the destination has all of them."""
    s = connect(port)
    try:
        t0 = time.monotonic()
        s.sendall(sink.HEADER.pack(b"U", n))
        sink.send_zeros(s, n)
        if sink.recv_exact(s, 1) != b"K":
            raise RuntimeError("upload: no acknowledgement")
        return time.monotonic() - t0
    finally:
        s.close()


def download(port, n):
    s = connect(port)
    try:
        t0 = time.monotonic()
        s.sendall(sink.HEADER.pack(b"D", n))
        sink.drain(s, n)
        return time.monotonic() - t0
    finally:
        s.close()


def parallel_download(port, total, streams, socks_target, at_start=lambda: None):
    """`streams` connections (through SOCKS5 when socks_target), all set up first, then each
    downloads total/streams bytes at once. Returns the wall-clock seconds of the transfer and the
    bytes moved; `at_start` is called once all are connected, just before the transfer."""
    each = total // streams
    socks_list = [connect(port, socks_target) for _ in range(streams)]
    errors = []
    start = threading.Barrier(streams + 1, timeout=IO_TIMEOUT)

    def one(s):
        try:
            start.wait()
            s.sendall(sink.HEADER.pack(b"D", each))
            sink.drain(s, each)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in socks_list]
    for t in threads:
        t.start()
    at_start()
    start.wait()
    t0 = time.monotonic()
    deadline = t0 + 10 * IO_TIMEOUT
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    if any(t.is_alive() for t in threads):
        raise RuntimeError("parallel: streams still running at the deadline")
    if errors:
        raise RuntimeError(f"parallel: {len(errors)} streams failed, first: {errors[0]}")
    return elapsed, each * streams


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


# --- the peers -----------------------------------------------------------------------------------


class Tunnel:
    """A started tunnel: `forward` and `socks` ports on this side, the processes whose CPU counts."""

    def __init__(self, name, servers, forward, socks, cipher):
        self.name, self.servers, self.forward, self.socks, self.cipher = name, servers, forward, socks, cipher

    def cpu_seconds(self):
        return sum(s.cpu_seconds() for s in self.servers)

    def sys_seconds(self):
        return sum(s.sys_seconds() for s in self.servers)

    def pids(self):
        return sorted(p for s in self.servers for p in s.pids())

    def check_alive(self):
        for s in self.servers:
            if s.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.poll()} (log: {s.log_path})")

    def stop(self):
        for s in reversed(self.servers):
            s.stop()


def wait_through(port, socks_target, servers, timeout=20.0):
    """Waits until an echo goes through the tunnel (a listener may be up before the tunnel is)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for s in servers:
            if s.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.poll()} (log: {s.log_path})")
        try:
            echo(port, 3, socks_target)
            return
        except (OSError, EOFError, RuntimeError) as e:
            last = e
            time.sleep(0.2)
    raise RuntimeError(f"nothing goes through port {port} after {timeout:.0f} s: {last}")


def start_tlsgate(env, pidfile, binary_key="TLSGATE", name="tlsgate"):
    d = env["DIR"]
    gate_port, fwd, socks, admin = (procs.free_port() for _ in range(4))
    common = [env[binary_key], "--workers", "1", "--log-level", "warn", "tunnel"]
    gate = procs.Server(
        "tlsgate-gate",
        common + ["gate", "--listen", f"127.0.0.1:{gate_port}", "--cert", f"{d}/server.pem",
                  "--key", f"{d}/server.key", "--client-ca", f"{d}/ca.pem"],
        "0", d, pidfile,
    )
    servers = [gate]
    try:
        procs.wait_port(gate_port, gate)
        portal = procs.Server(
            "tlsgate-portal",
            common + ["portal", "--gate", f"127.0.0.1:{gate_port}", "--ca", f"{d}/ca.pem",
                      "--cert", f"{d}/portal.pem", "--key", f"{d}/portal.key",
                      "--socks", f"127.0.0.1:{socks}",
                      "--forward", f"tcp:127.0.0.1:{fwd}=127.0.0.1:{env['SINK_PORT']}",
                      "--admin", f"127.0.0.1:{admin}"],
            "0", d, pidfile,
        )
        servers.append(portal)
        wait_through(fwd, None, servers)
        wait_through(socks, ("127.0.0.1", env["SINK_PORT"]), servers)
        # The negotiated suite, from the portal's status page (its one live TLS connection).
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=10) as r:
            page = r.read().decode("utf-8", "replace")
        suites = sorted(set(re.findall(r"TLS13_[A-Z0-9_]+|TLS_[A-Z0-9_]+", page)))
        cipher = "TLS 1.3 " + (", ".join(suites) or "suite not shown")
        # The comparison is on equal ciphers: ssh is given aes128-gcm (tunnel.sh), and the gate
        # prefers AES-128-GCM over whatever order the portal offers.
        if suites != [TUNNEL_SUITE]:
            raise RuntimeError(f"the tunnel negotiated {cipher}, not {TUNNEL_SUITE}")
    except Exception:
        for s in reversed(servers):
            s.stop()
        raise
    return Tunnel(name, servers, fwd, socks, cipher)


def start_before(env, pidfile):
    """Another tlsgate build (--before): the same tunnel, for an A/B in one run."""
    return start_tlsgate(env, pidfile, "TLSGATE_BEFORE", BEFORE)


def start_ssh(env, pidfile):
    d = env["DIR"]
    port, fwd, socks = (procs.free_port() for _ in range(3))
    cfg = os.path.join(d, "sshd_config")
    with open(cfg, "w") as f:
        f.write(
            f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
AllowTcpForwarding yes
PermitTTY no
X11Forwarding no
PrintMotd no
UseDNS no
LogLevel ERROR
"""
        )
    with open(f"{d}/ssh_host_ed25519_key.pub") as f:
        host_key = " ".join(f.read().split()[:2])
    with open(f"{d}/known_hosts", "w") as f:
        f.write(f"[127.0.0.1]:{port} {host_key}\n")
    sshd = procs.Server("sshd", [env["SSHD"], "-D", "-e", "-f", cfg], "0", d, pidfile)
    servers = [sshd]
    try:
        procs.wait_port(port, sshd)
        ssh = procs.Server(
            "ssh",
            ["ssh", "-v", "-N", "-F", "/dev/null", "-p", str(port), "-i", f"{d}/id_ed25519",
             "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", f"Ciphers={env['SSH_CIPHER']}",
             "-o", "Compression=no", "-o", "ExitOnForwardFailure=yes", "-o", "ControlMaster=no",
             "-o", "ControlPath=none", "-o", "ServerAliveInterval=0",
             "-L", f"127.0.0.1:{fwd}:127.0.0.1:{env['SINK_PORT']}", "-D", f"127.0.0.1:{socks}",
             f"{env['USER']}@127.0.0.1"],
            "0", d, pidfile,
        )
        servers.append(ssh)
        procs.wait_port(fwd, ssh, timeout=20)
        wait_through(fwd, None, servers)
        wait_through(socks, ("127.0.0.1", env["SINK_PORT"]), servers)
        with open(ssh.log_path, errors="replace") as f:
            log = f.read()
        m = re.search(r"kex: server->client cipher: (\S+) MAC: (\S+)", log)
        cipher = f"{m.group(1)} (MAC {m.group(2)})" if m else "cipher not logged"
    except Exception:
        for s in reversed(servers):
            s.stop()
        raise
    return Tunnel("ssh", servers, fwd, socks, cipher)


class Direct:
    """No tunnel: the client straight to the destination, to show what the harness itself can do."""

    name = "direct (no tunnel)"
    cipher = "none"

    def __init__(self, port):
        self.forward = self.socks = port

    def cpu_seconds(self):
        return 0.0

    def sys_seconds(self):
        return 0.0

    def pids(self):
        return []

    def check_alive(self):
        pass

    def stop(self):
        pass


class Load:
    """CPU 1's side of every measurement: the clients (this process: all its threads, also those
    that ended) and the destination (the sink and its per-connection children, once reaped),
    with the kernel work charged to them (their socket calls, and the loopback receive path run
    in the sender's context). It is the same work for every tunnel, and bounds what any tunnel
    can carry on this machine (see bound_line)."""

    def __init__(self, sink_pid):
        self.sink_pid = sink_pid

    def cpu(self, wait=True):
        """(cpu, system) seconds so far. With `wait`, first waits (bounded) until the sink has
        reaped its finished children, whose time then is in its own (cutime, cstime); live
        children are counted one by one."""
        if wait and not procs.wait_children_reaped(self.sink_pid):
            raise RuntimeError("the destination still has children 3 s after the phase")
        me = resource.getrusage(resource.RUSAGE_SELF)
        dest, dest_sys = procs.cpu_with_reaped(self.sink_pid)
        for pid in procs.tree(self.sink_pid)[1:]:
            dest += procs.cpu_seconds(pid)
            dest_sys += procs.sys_seconds(pid)
        return me.ru_utime + me.ru_stime + dest, me.ru_stime + dest_sys


PEERS = [("tlsgate", start_tlsgate), ("ssh", start_ssh)]
BEFORE = "tlsgate (--before)"


# --- the phases ----------------------------------------------------------------------------------


def measure(t, env, params, pidfile, load):
    """All measurements on one started tunnel; returns its row. `load` is CPU 1's side."""
    row = {"errors": [], "cipher": t.cipher}
    n = params["one_stream"]
    sink_target = ("127.0.0.1", env["SINK_PORT"])
    via_socks = not isinstance(t, Direct)

    def phase(name, fn):
        t.check_alive()
        pids = t.pids()
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failed phase must not hide the others
            row["errors"].append((name, str(e)))
            procs.log(f"{t.name}: {name} FAILED: {e}")
            return
        if t.pids() != pids:
            row["errors"].append((name, "the set of tunnel processes changed"))
        procs.log(f"{t.name}: {name} done in {time.monotonic() - t0:.1f} s")

    def one_stream():
        load0, load_sys0 = load.cpu()
        cpu0, sys0 = t.cpu_seconds(), t.sys_seconds()
        up = upload(t.forward, n)
        down = download(t.forward, n)
        cpu, sys_s = t.cpu_seconds() - cpu0, t.sys_seconds() - sys0
        load1, load_sys1 = load.cpu()
        row["load_s_per_gib"] = (load1 - load0) / (2 * n / GIB)
        row["load_sys_s_per_gib"] = (load_sys1 - load_sys0) / (2 * n / GIB)
        row["load_busy"] = (load1 - load0) / (up + down)
        row["up_mb_s"] = n / up / 1e6
        row["down_mb_s"] = n / down / 1e6
        row["one_stream_mb_s"] = 2 * n / (up + down) / 1e6
        if not isinstance(t, Direct):
            row["cpu_s_per_gib"] = cpu / (2 * n / GIB)
            row["sys_s_per_gib"] = sys_s / (2 * n / GIB)
            row["user_s_per_gib"] = (cpu - sys_s) / (2 * n / GIB)
            row["tunnel_busy"] = cpu / (up + down)

    def parallel():
        cpu0, sys0 = t.cpu_seconds(), t.sys_seconds()
        # CPU 1's side and how busy each CPU is: over the transfer alone (the destination's
        # children, one per connection, are alive then; connecting forked them).
        at = {}

        def at_start():
            at["load"], _ = load.cpu(wait=False)
            at["cpu"] = t.cpu_seconds()

        elapsed, moved = parallel_download(
            t.socks, params["parallel"], params["streams"], sink_target if via_socks else None, at_start
        )
        cpu, sys_s = t.cpu_seconds() - cpu0, t.sys_seconds() - sys0
        cpu_transfer = t.cpu_seconds() - at["cpu"]
        load1, _ = load.cpu()
        row["parallel_mb_s"] = moved / elapsed / 1e6
        row["parallel_load_s_per_gib"] = (load1 - at["load"]) / (moved / GIB)
        row["parallel_load_busy"] = (load1 - at["load"]) / elapsed
        if not isinstance(t, Direct):
            row["parallel_cpu_s_per_gib"] = cpu / (moved / GIB)
            row["parallel_sys_s_per_gib"] = sys_s / (moved / GIB)
            row["parallel_tunnel_busy"] = cpu_transfer / elapsed

    def latency():
        idle = echo(t.forward, params["rtts"])
        row["idle_p50_us"] = percentile(idle, 50)
        row["idle_p99_us"] = percentile(idle, 99)
        drain = procs.Server(
            f"drain-{t.name.split()[0]}",
            [sys.executable, os.path.join(env["LIB"], "sink.py"), "drain", str(t.forward)],
            "1", env["DIR"], pidfile,
        )
        try:
            time.sleep(BULK_RAMP_S)
            if drain.poll() is not None:
                raise RuntimeError(f"the bulk drain exited (log: {drain.log_path})")
            busy = echo(t.forward, params["rtts"])
            if drain.poll() is not None:
                raise RuntimeError(f"the bulk drain exited during the probe (log: {drain.log_path})")
        finally:
            drain.stop(grace=2)
        row["busy_p50_us"] = percentile(busy, 50)
        row["busy_p99_us"] = percentile(busy, 99)

    phase("one_stream", one_stream)
    phase("parallel", parallel)
    phase("latency", latency)
    return row


# --- folding rounds, the table and the ratio line -------------------------------------------------

# key, column title, format, ratio name (None: not in the ratio line), higher is better
COLUMNS = [
    ("up_mb_s", "upload MB/s", "{:.0f}", None, True),
    ("down_mb_s", "download MB/s", "{:.0f}", None, True),
    ("one_stream_mb_s", "one_stream MB/s", "{:.0f}", "one_stream_mbps", True),
    ("cpu_s_per_gib", "cpu_s/GiB", "{:.2f}", "cpu_per_gib", False),
    ("sys_s_per_gib", "of it system", "{:.2f}", None, False),
    ("user_s_per_gib", "of it user", "{:.2f}", None, False),
    ("load_s_per_gib", "clients + dest cpu_s/GiB", "{:.2f}", None, False),
    ("parallel_mb_s", "64 streams MB/s", "{:.0f}", "parallel_mbps", True),
    ("parallel_cpu_s_per_gib", "64 streams cpu_s/GiB", "{:.2f}", None, False),
    ("parallel_sys_s_per_gib", "of it system", "{:.2f}", None, False),
    ("parallel_load_s_per_gib", "64 streams clients + dest cpu_s/GiB", "{:.2f}", None, False),
    ("idle_p50_us", "idle p50 µs", "{:.0f}", None, False),
    ("idle_p99_us", "idle p99 µs", "{:.0f}", None, False),
    ("busy_p50_us", "p50 µs under bulk", "{:.0f}", "latency_p50", False),
    ("busy_p99_us", "p99 µs under bulk", "{:.0f}", "latency_p99", False),
]
RATIO_ORDER = ["one_stream_mbps", "parallel_mbps", "latency_p50", "latency_p99", "cpu_per_gib"]


def fold(rounds):
    """Other work on the machine only adds time: the best round per column is the least
    disturbed (highest rate, least CPU, lowest latency)."""
    row = {"rounds": len(rounds), "errors": [], "cipher": rounds[0].get("cipher") if rounds else None}
    for key, _, _, _, higher in COLUMNS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            row[key] = (max if higher else min)(values)
    for r in rounds:
        row["errors"] += r.get("errors", [])
    # How busy each CPU was, from the round with the best rate (they belong together).
    for rate, keys in (("one_stream_mb_s", ("tunnel_busy", "load_busy")),
                       ("parallel_mb_s", ("parallel_tunnel_busy", "parallel_load_busy"))):
        timed = [r for r in rounds if r.get(rate) is not None]
        if timed:
            best = max(timed, key=lambda r: r[rate])
            for key in keys:
                if best.get(key) is not None:
                    row[key] = best[key]
    return row


def table(rows):
    head = ["peer"] + [c[1] for c in COLUMNS] + ["cipher / checks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS) + ["---"]) + "|"]
    for name, row in rows:
        cells = [name] + ["—" if row.get(k) is None else fmt.format(row[k]) for k, _, fmt, _, _ in COLUMNS]
        checks = [row.get("cipher") or ""] + [f"{p} FAILED: {e}" for p, e in row["errors"]]
        cells.append("; ".join(c for c in checks if c))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_line(rows, peer="tlsgate"):
    rows = dict(rows)
    mine, theirs = rows.get(peer, {}), rows.get("ssh", {})
    parts = {}
    for key, _, _, name, _ in COLUMNS:
        if name is None:
            continue
        a, b = mine.get(key), theirs.get(key)
        parts[name] = f"{a / b:.2f}" if a is not None and b else "n/a"
    label = "tunnel ratios vs ssh" if peer == "tlsgate" else f"{peer} ratios vs ssh"
    return f"{label}: " + " ".join(f"{n}={parts[n]}" for n in RATIO_ORDER)


def split_line(rows):
    """One stream's CPU split: what the kernel spends for each tunnel (system time: socket copies,
    loopback TCP), which a user-space relay cannot avoid, and the user-space rest."""
    rows = dict(rows)
    mine, theirs = rows.get("tlsgate", {}), rows.get("ssh", {})
    parts = []
    for key, name in (("sys_s_per_gib", "system"), ("user_s_per_gib", "user")):
        a, b, whole = mine.get(key), theirs.get(key), theirs.get("cpu_s_per_gib")
        ours = f"{a / b:.2f}" if a is not None and b else "n/a"
        of_whole = f"{a / whole:.2f}" if a is not None and whole else "n/a"
        parts.append(f"{name}={ours} (of ssh's whole: {of_whole})")
    return "one-stream CPU per GiB, tlsgate ÷ ssh by part: " + " ".join(parts)


def bound_line(rows):
    """What this machine allows whatever the tunnel does. CPU 1 runs the clients and the
    destination, and their CPU per GiB (clients + dest: the same work beside either tunnel) caps
    any tunnel at GiB / that per second, even one costing nothing; the tunnel's own CPU 0 caps it
    at GiB / (its CPU per GiB), and its system part alone (socket calls, loopback TCP, page
    faults) is a floor under that CPU per GiB. Each bound is given as a ratio to ssh twice: to
    ssh's CPU-bound rate on the same CPUs (GiB / its busier CPU's seconds per GiB; what the ratio
    line reads on a quiet machine) and to ssh's measured rate in this run."""
    rows = dict(rows)
    mine, ssh = rows.get("tlsgate", {}), rows.get("ssh", {})
    parts = []

    def add(name, value, fmt="{:.2f}"):
        parts.append(f"{name}=" + ("n/a" if value is None else fmt.format(value)))

    def cap(*per_gib):
        """MB/s when the CPU with the most seconds per GiB is fully busy."""
        if any(p is None for p in per_gib) or not max(per_gib):
            return None
        return GIB / max(per_gib) / 1e6

    def ratio(a, b):
        return a / b if a is not None and b else None

    for phase, prefix, rate in (("one_stream", "", "one_stream_mb_s"), ("parallel", "parallel_", "parallel_mb_s")):
        load = mine.get(prefix + "load_s_per_gib")
        ssh_cpu = ssh.get("cpu_s_per_gib" if phase == "one_stream" else "parallel_cpu_s_per_gib")
        ssh_cap = cap(ssh_cpu, ssh.get(prefix + "load_s_per_gib"))
        free = cap(load)  # the tunnel's own CPU at zero
        kept = cap(load, mine.get(prefix + "sys_s_per_gib"))  # its user part at zero
        add(f"bound_{phase}_mbps", free, "{:.0f}")
        add(f"bound_{phase}", ratio(free, ssh_cap))
        add(f"bound_{phase}_keeping_system", ratio(kept, ssh_cap))
        add(f"bound_{phase}_vs_measured", ratio(free, ssh.get(rate)))
    add("floor_cpu_per_gib", ratio(mine.get("sys_s_per_gib"), ssh.get("cpu_s_per_gib")))
    busy = []
    for name in ("tlsgate", "ssh"):
        r = rows.get(name, {})
        for phase, prefix in (("one stream", ""), ("64 streams", "parallel_")):
            t, c = r.get(prefix + "tunnel_busy"), r.get(prefix + "load_busy")
            if t is not None and c is not None:
                busy.append(f"{name} {phase} CPU0 {t:.2f} CPU1 {c:.2f}")
    return ("bounds on this machine (ratios vs ssh; CPUs busy: " + ", ".join(busy) + "): "
            + " ".join(parts))


def versions(env):
    def first(argv, stderr=False):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return ((r.stderr if stderr else r.stdout).strip().splitlines() or ["unknown"])[0]
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    describe = first(["git", "-C", env["REPO"], "describe", "--always", "--dirty"])
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "tlsgate": f"{first([env['TLSGATE'], '--version'])} (git {describe})",
        "OpenSSH": first(["ssh", "-V"], stderr=True),
        "python3": sys.version.split()[0],
        "kernel": os.uname().release,
        "cpu": cpu,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", required=True, help="scratch directory (made by tunnel.sh)")
    ap.add_argument("--tlsgate", required=True)
    ap.add_argument("--sshd", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--ssh-cipher", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--before", help="another tlsgate binary, measured in the same rounds")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    params = PARAMS["quick" if args.quick else "full"]
    pidfile = os.path.join(args.dir, "pids")
    env = {
        "DIR": args.dir,
        "TLSGATE": args.tlsgate,
        "SSHD": args.sshd,
        "USER": args.user,
        "SSH_CIPHER": args.ssh_cipher,
        "REPO": args.repo,
        "TLSGATE_BEFORE": args.before,
        "LIB": os.path.dirname(os.path.abspath(__file__)),
        "SINK_PORT": procs.free_port(),
    }
    started = datetime.datetime.now(datetime.timezone.utc)
    peers = PEERS + ([(BEFORE, start_before)] if args.before else [])
    rounds = {name: [] for name, _ in peers}
    direct_rounds = []
    dest = procs.Server(
        "sink", [sys.executable, os.path.join(env["LIB"], "sink.py"), "serve", str(env["SINK_PORT"])],
        "1", args.dir, pidfile,
    )
    try:
        procs.wait_port(env["SINK_PORT"], dest)
        procs.log("direct (no tunnel)")
        load = Load(dest.pid)
        direct_rounds.append(measure(Direct(env["SINK_PORT"]), env, params, pidfile, load))
        for i in range(params["rounds"]):
            order = peers[i % len(peers) :] + peers[: i % len(peers)]
            for name, start in order:
                procs.log(f"round {i + 1}/{params['rounds']}: {name}")
                try:
                    t = start(env, pidfile)
                except Exception as e:  # noqa: BLE001
                    procs.log(f"{name}: FAILED to start: {e}")
                    rounds[name].append({"errors": [("start", str(e))]})
                    continue
                try:
                    row = measure(t, env, params, pidfile, load)
                finally:
                    t.stop()
                procs.log(f"{name}: {json.dumps(row)}")
                rounds[name].append(row)
                if dest.poll() is not None:
                    raise RuntimeError(f"the destination exited (log: {dest.log_path})")
    finally:
        dest.stop()
    rows = [(name, fold(rounds[name])) for name, _ in peers]
    rows.append(("direct (no tunnel)", fold(direct_rounds)))
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()

    v = versions(env)
    mode = "--quick" if args.quick else "full"
    print(f"# tlsgate tunnel vs OpenSSH, {started:%Y-%m-%d %H:%M} UTC, {mode} run, {elapsed:.0f} s")
    print()
    print(f"- CPU: {v['cpu']} ({os.cpu_count()} CPUs; both ends of each tunnel pinned to CPU 0, "
          "destination and clients to CPU 1)")
    for key in ("tlsgate", "OpenSSH", "python3", "kernel"):
        print(f"- {key}: {v[key]}")
    print(
        f"- one stream: {params['one_stream'] // MIB} MiB up, then {params['one_stream'] // MIB} MiB down, "
        f"through the forward (tlsgate --forward, ssh -L); {params['streams']} streams: "
        f"{params['parallel'] // MIB} MiB down in total through SOCKS5 (tlsgate --socks, ssh -D); "
        f"latency: {params['rtts']} round trips of {MSG} bytes through the forward, idle and beside "
        f"an endless download on another forwarded connection of the same tunnel; "
        f"{params['rounds']} round(s), best round per column"
    )
    print("- CPU is the tunnel's (portal + gate; ssh + sshd and its session processes), "
          "per GiB carried; MB/s = 10^6 bytes/s")
    print()
    print(table(rows))
    print()
    print("ratios are tlsgate ÷ ssh: one_stream_mbps and parallel_mbps higher is better; "
          "latency_p50, latency_p99 and cpu_per_gib lower is better")
    print(split_line(rows))
    print(bound_line(rows))
    if args.before:
        print(ratio_line(rows, BEFORE))
    print(ratio_line(rows))
    return 1 if any(r["errors"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
