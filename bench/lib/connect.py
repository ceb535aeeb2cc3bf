"""bench/connect.sh's harness: one TLS destination (nginx), three proxies in front of it, curl
downloading the same file through each; the proxy's CPU per GiB moved. Two topologies, each
printed as a table with its ratio line:

- loopback: everything on 127.0.0.1, unpinned; the proxy's CPU is its processes' user + system
  time (on loopback that includes its peers' receive processing, see docs/benchmarks.md);
- netns: curl and the portal in one network namespace, the proxy in a second, nginx in a third,
  joined by veth pairs (see connect_netns.py); the proxy alone on CPU 0, everything else on CPU 1,
  the other namespaces' receive processing steered to CPU 1; the proxy's CPU is its processes'
  time, plus the softirq time of CPU 0, plus its interfaces' NAPI threads.

Within a topology the three proxies run interleaved, `--runs` times."""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import connect_netns

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


# bench/lib/scratch.sh's list of process groups to stop on exit (the scratch directory's).
PIDS = None


def start(args, work, name, **kw):
    log = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True, **kw)
    with open(PIDS, "a") as f:
        f.write(f"{p.pid}\n")
    return p


def cpu_of_group(pgid):
    """CPU seconds of every process in the process group (Squid forks its workers)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5: pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def curl(prefix, args, work):
    out = subprocess.run(prefix + ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}"] + args,
                         capture_output=True, text=True, cwd=work)
    if out.returncode != 0:
        sys.exit(f"curl {args}: {out.stderr}")
    return int(out.stdout)


class Loopback:
    """Everything on 127.0.0.1 in the caller's namespace, unpinned."""

    name = "loopback"
    client_host = gate_host = dest_host = "127.0.0.1"
    cert = ("server.pem", "server.key")

    def run(self, role, args):
        return args

    def wait(self, role, host, port):
        wait_port(port)

    def begin(self, proc):
        return cpu_of_group(proc.pid)

    def end(self, proc, before):
        return {"process": cpu_of_group(proc.pid) - before}

    parts = ("process",)

    def close(self):
        pass


def measure(a, topo):
    w = os.path.join(a.dir, f"topology-{topo.name}")
    os.makedirs(w)
    for f in ("ca.pem", "portal.pem", "portal.key") + topo.cert:
        os.symlink(os.path.join(a.dir, f), os.path.join(w, f))
    cert, key = topo.cert
    root = os.path.join(w, "www")
    os.makedirs(root)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.truncate(a.size)

    dport = free_port()
    with open(os.path.join(w, "nginx.conf"), "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1; user root; pid {w}/nginx.pid;
error_log stderr warn; events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; client_body_temp_path {w}/body; proxy_temp_path {w}/p;
  fastcgi_temp_path {w}/f; uwsgi_temp_path {w}/u; scgi_temp_path {w}/s;
  server {{ listen {topo.dest_host}:{dport} ssl; ssl_certificate {w}/{cert};
    ssl_certificate_key {w}/{key}; ssl_protocols TLSv1.3; root {root}; }} }}
""")
    nginx = start(topo.run("dest", ["/usr/sbin/nginx", "-p", w, "-c", f"{w}/nginx.conf"]), w, "nginx")
    topo.wait("dest", topo.dest_host, dport)

    def gate_and_portal(binary, label, more=()):
        gport, pport = free_port(), free_port()
        gate = start(topo.run("gate", [
            binary, "--workers", "1", "connect", "gate", "--listen", f"{topo.gate_host}:{gport}",
            "--cert", cert, "--key", key, "--client-ca", "ca.pem",
            "--allow", f"*={topo.dest_host} {dport}", *more]), w, f"gate{label}", cwd=w)
        portal = start(topo.run("client", [
            binary, "--workers", "1", "connect", "portal", "--listen", f"{topo.client_host}:{pport}",
            "--gate", f"{topo.gate_host}:{gport}", "--ca", "ca.pem", "--cert", "portal.pem",
            "--key", "portal.key", "--route", "*"]), w, f"portal{label}", cwd=w)
        topo.wait("gate", topo.gate_host, gport)
        topo.wait("client", topo.client_host, pport)
        return gate, portal, gport, pport

    gate, portal, gport, pport = gate_and_portal(a.tlsgate, "")
    sport = free_port()
    with open(os.path.join(w, "squid.conf"), "w") as f:
        f.write(f"""https_port {topo.gate_host}:{sport} tls-cert={w}/{cert} tls-key={w}/{key}
http_access allow all
acl SSL_ports port {dport}
http_access allow CONNECT SSL_ports
cache deny all
cache_mem 0 MB
workers 1
pid_filename {w}/squid.pid
cache_log {w}/squid-cache.log
access_log none
coredump_dir {w}
""")
    squid = start(topo.run("gate", ["/usr/sbin/squid", "-N", "-f", f"{w}/squid.conf"]), w, "squid")
    topo.wait("gate", topo.gate_host, sport)

    url = f"https://{topo.dest_host}:{dport}/big.bin"
    dest = ["--cacert", "ca.pem", url]
    nested_tls = ["--proxy-cacert", "ca.pem", "--proxy-cert", "portal.pem", "--proxy-key", "portal.key"]
    proxies = [
        ("tlsgate downgrade (portal)", gate, ["--proxy", f"http://{topo.client_host}:{pport}"] + dest),
        ("tlsgate nested", gate, ["--proxy", f"https://{topo.gate_host}:{gport}"] + nested_tls + dest),
        ("squid nested", squid,
         ["--proxy", f"https://{topo.gate_host}:{sport}", "--proxy-cacert", "ca.pem"] + dest),
    ]
    extra = []
    ifaces = getattr(topo, "gate_ifaces", ())
    if ifaces:
        # The same build with the kernel splice: the gate host's interfaces carry the program.
        kgate, kportal, _, kpport = gate_and_portal(
            a.tlsgate, "-kernel", [x for i in ifaces for x in ("--kernel-splice", i)])
        extra += [kgate, kportal]
        proxies.insert(1, ("tlsgate downgrade kernel-spliced (portal)", kgate,
                           ["--proxy", f"http://{topo.client_host}:{kpport}"] + dest))
    if a.baseline:
        # Another build of tlsgate, measured in the same rounds (an A/B of a change).
        bgate, bportal, bgport, bpport = gate_and_portal(a.baseline, "-baseline")
        extra += [bgate, bportal]
        proxies += [
            ("baseline downgrade (portal)", bgate, ["--proxy", f"http://{topo.client_host}:{bpport}"] + dest),
            ("baseline nested", bgate, ["--proxy", f"https://{topo.gate_host}:{bgport}"] + nested_tls + dest),
        ]
    client = topo.run("client", [])
    for name, proc, args in proxies:
        curl(client, args[:-1] + [f"https://{topo.dest_host}:{dport}/"], w)  # warm-up (404 is fine)
    gib = a.size / (1 << 30)
    rows = []  # (run, name, {part: CPU s}, GiB/s)
    for run in range(1, a.runs + 1):
        for name, proc, args in proxies:
            before, t0 = topo.begin(proc), time.time()
            got = curl(client, args, w)
            parts, secs = topo.end(proc, before), time.time() - t0
            if got != a.size:
                sys.exit(f"{topo.name} {name}: {got} of {a.size} bytes")
            shown = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
            print(f"[bench] {topo.name} run {run} {name}: CPU s {shown} for {gib:.2f} GiB", file=sys.stderr)
            rows.append((run, name, parts, gib / secs))
    for p in [portal, gate, squid, nginx] + extra:
        os.killpg(p.pid, signal.SIGTERM)
    report(topo, rows, gib)


def report(topo, rows, gib):
    cols = topo.parts + (("sum",) if len(topo.parts) > 1 else ())
    print(f"\n### {topo.name}\n")
    print("| run | proxy (gate side) | " + " | ".join(f"{c} CPU s/GiB" for c in cols) + " | GiB/s |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    total = {}
    for run, name, parts, rate in rows:
        per = {k: v / gib for k, v in parts.items()}
        per["sum"] = sum(per.values())
        total[(run, name)] = per
        print(f"| {run} | {name} | " + " | ".join(f"{per[c]:.3f}" for c in cols) + f" | {rate:.2f} |")
    runs = sorted({r for r, *_ in rows})
    down, nested, squid = "tlsgate downgrade (portal)", "tlsgate nested", "squid nested"
    print()
    for c in cols:
        def ratio(a, b):
            if any(total[(r, b)][c] == 0 for r in runs):
                return "n/a"
            return f"{statistics.median(total[(r, a)][c] / total[(r, b)][c] for r in runs):.2f}"
        line = (f"{topo.name} ratios ({c}, median of {len(runs)} runs): downgrade/nested CPU "
                f"{ratio(down, nested)}, nested/squid CPU {ratio(nested, squid)}, "
                f"downgrade/squid CPU {ratio(down, squid)}")
        if (1, "tlsgate downgrade kernel-spliced (portal)") in total:
            line += (f"; kernel-spliced/nested CPU "
                     f"{ratio('tlsgate downgrade kernel-spliced (portal)', nested)}, kernel-spliced/squid CPU "
                     f"{ratio('tlsgate downgrade kernel-spliced (portal)', squid)}")
        if (1, "baseline nested") in total:
            line += (f"; downgrade/baseline downgrade CPU {ratio(down, 'baseline downgrade (portal)')}"
                     f", nested/baseline nested CPU {ratio(nested, 'baseline nested')}")
        print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--tlsgate", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", choices=("loopback", "netns"))
    ap.add_argument("--baseline", help="another tlsgate binary, measured alongside (A/B)")
    a = ap.parse_args()
    global PIDS
    PIDS = os.path.join(a.dir, "pids")
    topos = []
    if a.only != "netns":
        topos.append(Loopback())
    if a.only != "loopback":
        topos.append(connect_netns.Netns(a.dir))
    try:
        for topo in topos:
            measure(a, topo)
    finally:
        for topo in topos:
            topo.close()


if __name__ == "__main__":
    main()
