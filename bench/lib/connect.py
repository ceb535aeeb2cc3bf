"""bench/connect.sh's harness: one TLS destination (nginx), three proxies in front of it, curl
downloading the same file through each; the proxy's CPU time (user + system, every process of it)
per GiB moved. Prints a markdown table and the ratio line."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

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


def start(args, work, name, **kw):
    log = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True, **kw)
    with open(os.path.join(work, "pids"), "a") as f:
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


def curl(args, work):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}"] + args,
                         capture_output=True, text=True, cwd=work)
    if out.returncode != 0:
        sys.exit(f"curl {args}: {out.stderr}")
    return int(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--tlsgate", required=True)
    ap.add_argument("--size", type=int, required=True)
    a = ap.parse_args()
    w = a.dir
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
  server {{ listen 127.0.0.1:{dport} ssl; ssl_certificate {w}/server.pem;
    ssl_certificate_key {w}/server.key; ssl_protocols TLSv1.3; root {root}; }} }}
""")
    start(["/usr/sbin/nginx", "-p", w, "-c", f"{w}/nginx.conf"], w, "nginx")
    wait_port(dport)

    gport, pport, sport = free_port(), free_port(), free_port()
    gate = start([a.tlsgate, "--workers", "1", "connect", "gate", "--listen", f"127.0.0.1:{gport}",
                  "--cert", "server.pem", "--key", "server.key", "--client-ca", "ca.pem",
                  "--allow", f"*=127.0.0.1 {dport}"], w, "gate", cwd=w)
    portal = start([a.tlsgate, "--workers", "1", "connect", "portal", "--listen", f"127.0.0.1:{pport}",
                    "--gate", f"127.0.0.1:{gport}", "--ca", "ca.pem", "--cert", "portal.pem",
                    "--key", "portal.key", "--route", "*"], w, "portal", cwd=w)
    with open(os.path.join(w, "squid.conf"), "w") as f:
        f.write(f"""https_port 127.0.0.1:{sport} tls-cert={w}/server.pem tls-key={w}/server.key
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
    squid = start(["/usr/sbin/squid", "-N", "-f", f"{w}/squid.conf"], w, "squid")
    for p in (gport, pport, sport):
        wait_port(p)

    url = f"https://127.0.0.1:{dport}/big.bin"
    dest = ["--cacert", "ca.pem", url]
    nested_tls = ["--proxy-cacert", "ca.pem", "--proxy-cert", "portal.pem", "--proxy-key", "portal.key"]
    runs = [
        ("tlsgate downgrade (portal)", gate, ["--proxy", f"http://127.0.0.1:{pport}"] + dest),
        ("tlsgate nested", gate, ["--proxy", f"https://127.0.0.1:{gport}"] + nested_tls + dest),
        ("squid nested", squid, ["--proxy", f"https://127.0.0.1:{sport}", "--proxy-cacert", "ca.pem"] + dest),
    ]
    rows = []
    for name, proc, args in runs:
        curl(args[:-1] + [f"https://127.0.0.1:{dport}/"], w)  # warm-up (404 is fine)
        before, t0 = cpu_of_group(proc.pid), time.time()
        got = curl(args, w)
        cpu, secs = cpu_of_group(proc.pid) - before, time.time() - t0
        if got != a.size:
            sys.exit(f"{name}: {got} of {a.size} bytes")
        gib = got / (1 << 30)
        rows.append((name, cpu / gib, gib / secs))
        print(f"[bench] {name}: {cpu:.2f} CPU s for {gib:.2f} GiB", file=sys.stderr)
    print("| proxy (gate side) | CPU s per GiB | GiB/s |")
    print("|---|---|---|")
    for name, per, rate in rows:
        print(f"| {name} | {per:.3f} | {rate:.2f} |")
    down, nested, sq = (r[1] for r in rows)
    print(f"connect ratios: downgrade/nested CPU {down / nested:.2f}, nested/squid CPU {nested / sq:.2f}, "
          f"downgrade/squid CPU {down / sq:.2f}")
    for p in (portal, gate, squid):
        os.killpg(p.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
