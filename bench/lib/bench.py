"""Runs every terminator through the phases and prints the report; bench/run.sh calls this.

stdout carries only the report (ending with the ratio line); progress goes to stderr.
"""

import argparse
import datetime
import json
import os
import signal
import sys
import time

import peers
import phases
import procs
import report

PARAMS = {
    # --quick: the whole run in well under 3 minutes.
    "quick": {
        "rounds": 1,
        "warm_conns": 50,
        "idle_conns": 1000,
        "idle_settle_s": 1.0,
        "handshake_conns": 3000,
        "concurrency": 16,
        "wrk_s": 5,
        "bulk_runs": 3,
    },
    # Three rounds, the terminators in a rotated order each time (see run_round); report.FOLD.
    "full": {
        "rounds": 3,
        "warm_conns": 200,
        "idle_conns": 1000,
        "idle_settle_s": 2.0,
        "handshake_conns": 6000,
        "concurrency": 16,
        "wrk_s": 8,
        "bulk_runs": 5,
    },
}


def make_www(dir):
    www = os.path.join(dir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"x" * (phases.SMALL_BYTES - 1) + b"\n")
    with open(os.path.join(www, "big"), "wb") as f:
        f.truncate(phases.BIG_BYTES)  # sparse zeros: the content costs nothing to read
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(dir, "backend-nginx-tmp", sub), exist_ok=True)
    return www


def run_round(i, terminators, env, params, loadgen, pidfile):
    """One round: every terminator started fresh on CPU 0, each on its own port, then each phase
    run on all of them in turn (in an order rotated by the round), so that a terminator's
    measurement of a phase is seconds, not minutes, from its peers' and whatever else the
    machine is doing weighs on all of them alike. A terminator is idle while another is
    measured. Returns {name: row}."""
    order = terminators[i % len(terminators) :] + terminators[: i % len(terminators)]
    rows = {name: {"errors": []} for name, _ in order}
    running = {}
    try:
        for name, start in order:
            own = dict(env, LISTEN_PORT=procs.free_port())
            server = procs.Server(name, start(own), "0", own["DIR"], pidfile)
            running[name] = (server, phases.Ctx(loadgen, own["CA"], own["LISTEN_PORT"], params))
            try:
                procs.wait_port(own["LISTEN_PORT"], server)
            except Exception as e:  # noqa: BLE001 - one that fails to start must not stop the rest
                rows[name]["errors"].append(("start", str(e)))
                procs.log(f"{name}: FAILED to start: {e}")
                server.stop()
                del running[name]
        for phase in phases.PHASES:
            for name, _ in order:
                if name not in running:
                    continue
                server, ctx = running[name]
                procs.log(f"round {i + 1}/{params['rounds']}: {name}: {phase.__name__}")
                t0 = time.monotonic()
                try:
                    rows[name].update(phase(server, ctx))
                except Exception as e:  # noqa: BLE001 - one failed phase must not hide the others
                    rows[name]["errors"].append((phase.__name__, str(e)))
                    procs.log(f"{name}: {phase.__name__} FAILED: {e}")
                    if phase is phases.warm_up or server.poll() is not None:
                        server.stop()
                        del running[name]
                        continue
                procs.log(f"{name}: {phase.__name__} done in {time.monotonic() - t0:.1f} s")
    finally:
        for server, _ in running.values():
            server.stop()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", required=True, help="scratch directory (made by run.sh)")
    ap.add_argument("--tlsgate", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--only", help="comma-separated terminators to run (default: all)")
    args = ap.parse_args()

    # SIGTERM/SIGHUP from run.sh's trap: unwind through the finally blocks that stop servers.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    params = PARAMS["quick" if args.quick else "full"]
    pidfile = os.path.join(args.dir, "pids")
    env = {
        "DIR": args.dir,
        "CA": os.path.join(args.dir, "ca.pem"),
        "CERT": os.path.join(args.dir, "server.pem"),
        "KEY": os.path.join(args.dir, "server.key"),
        "PEM": os.path.join(args.dir, "server-combined.pem"),
        "WWW": make_www(args.dir),
        "BACKEND_PORT": procs.free_port(),
        "NGINX_MODULES": peers.NGINX_MODULES,
        "TLSGATE": args.tlsgate,
    }
    wanted = args.only.split(",") if args.only else [n for n, _ in peers.TERMINATORS]
    unknown = set(wanted) - {n for n, _ in peers.TERMINATORS}
    if unknown:
        sys.exit(f"unknown terminator(s): {', '.join(sorted(unknown))}")

    started = datetime.datetime.now(datetime.timezone.utc)
    skipped = {n: why for n, why in peers.skipped().items() if n in wanted}
    for name, why in skipped.items():
        procs.log(f"{name}: skipped: {why}")
    terminators = [(n, start) for n, start in peers.TERMINATORS if n in wanted and n not in skipped]
    rounds = {name: [] for name, _ in terminators}
    backend = procs.Server("backend-nginx", peers.backend_argv(env), "1", args.dir, pidfile)
    try:
        procs.wait_port(env["BACKEND_PORT"], backend)
        for i in range(params["rounds"]):
            for name, row in run_round(i, terminators, env, params, args.loadgen, pidfile).items():
                procs.log(f"{name}: {json.dumps(row)}")
                rounds[name].append(row)
            if backend.poll() is not None:
                raise RuntimeError(f"the backend nginx exited (log: {backend.log_path})")
    finally:
        backend.stop()
    rows = [(name, report.fold(rounds[name])) for name, _ in terminators]
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()

    v = peers.versions(args.tlsgate, args.repo)
    mode = "--quick" if args.quick else "full"
    print(f"# tlsgate benchmark, {started:%Y-%m-%d %H:%M} UTC, {mode} run, {elapsed:.0f} s")
    print()
    print(f"- CPU: {v['cpu']} ({os.cpu_count()} CPUs; terminator pinned to CPU 0, load and backend to CPU 1)")
    for key in ("tlsgate", "haproxy", "nginx", "hitch", "stunnel", "openssl", "wrk", "kernel"):
        print(f"- {key}: {v[key]}")
    print(
        f"- load: {params['handshake_conns']} connections per handshake phase over "
        f"{params['concurrency']} workers; wrk -t1 -c16 -d{params['wrk_s']}s; "
        f"{params['bulk_runs']} x 100 MiB; {params['idle_conns']} idle connections; "
        f"{params['rounds']} round(s), best round per column (median for idle_KiB)"
    )
    print()
    print(report.table(rows))
    for name, why in skipped.items():
        print(f"\n{name}: skipped: {why}")
    print()
    print(report.kernel_table(rows))
    print()
    print(report.kernel_floor(rounds))
    print(report.user_ratios(rounds))
    print()
    if "tlsgate-ktls" in rounds:
        print("tlsgate-ktls " + report.ratios(rounds, subject="tlsgate-ktls")[2])
    per_round, best, ratio = report.ratios(rounds)
    print(per_round)
    print(best)
    print(ratio)
    return 1 if any(r["errors"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
