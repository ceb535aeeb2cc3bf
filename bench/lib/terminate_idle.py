"""`tlsgate terminate`'s resident KiB per idle TLS connection, measured exactly as bench/run.sh's
idle phase does (phases.idle_rss: 1000 connections from tlsgate-loadgen's idle mode, VmRSS after
minus before), for bench/inline.sh to print beside the inline engine's state per idle flow.

Prints one JSON line: {"idle_kib": ..., "conns": ..., "suite": ...}.
"""

import argparse
import json
import os
import signal
import sys

import bench
import peers
import phases
import procs

PARAMS = {"warm_conns": 50, "idle_conns": 1000, "idle_settle_s": 2.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True, help="scratch directory (made by inline.sh)")
    ap.add_argument("--tlsgate", required=True)
    ap.add_argument("--loadgen", required=True)
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    pidfile = os.path.join(args.dir, "pids")
    env = {
        "DIR": args.dir,
        "CA": os.path.join(args.dir, "ca.pem"),
        "CERT": os.path.join(args.dir, "server.pem"),
        "KEY": os.path.join(args.dir, "server.key"),
        "WWW": bench.make_www(args.dir),
        "BACKEND_PORT": procs.free_port(),
        "NGINX_MODULES": peers.NGINX_MODULES,
        "TLSGATE": args.tlsgate,
        "LISTEN_PORT": procs.free_port(),
    }
    start = dict(peers.TERMINATORS)["tlsgate"]
    backend = procs.Server("backend-nginx", peers.backend_argv(env), "1", args.dir, pidfile)
    try:
        procs.wait_port(env["BACKEND_PORT"], backend)
        server = procs.Server("tlsgate", start(env), "0", args.dir, pidfile)
        try:
            procs.wait_port(env["LISTEN_PORT"], server)
            ctx = phases.Ctx(args.loadgen, env["CA"], env["LISTEN_PORT"], PARAMS)
            # The same order as bench/run.sh: a few handshakes, then the idle phase.
            warm = phases.warm_up(server, ctx)
            idle = phases.idle_rss(server, ctx)
        finally:
            server.stop()
    finally:
        backend.stop()
    print(json.dumps({"idle_kib": idle["idle_kib"], "conns": PARAMS["idle_conns"], "suite": warm["suite"]}))


if __name__ == "__main__":
    main()
