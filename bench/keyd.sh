#!/usr/bin/env bash
# Benchmark: CPU per full handshake of terminate with its key in-process against terminate with
# `keyd:` keys, both running at once and driven in alternating rounds (curl, new connection and
# no session reuse per request, ECDSA P-256, TLS 1.3). CPU is the processes' on-CPU time summed
# over their threads (/proc/PID/task/*/schedstat, nanoseconds). See docs/benchmarks.md.
#
#   bench/keyd.sh [--rounds N] [--handshakes N] [--key ec|rsa] [--bin PATH]
#
# --key: ECDSA P-256 (default) or RSA 2048 (RSA-PSS).
# --bin: a tlsgate binary to measure (default: built with profile "profiling").
# Prints one line per round and, last, "ratios: terminator X, terminator+keyd Y" (keyd / in-process).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
rounds=5 handshakes=500 bin="" key=ec
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift ;;
    --handshakes) handshakes=$2; shift ;;
    --bin) bin=$2; shift ;;
    --key) key=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/keyd.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$bin" ]; then
  cargo build -q --profile profiling -p tlsgate
  bin="${CARGO_TARGET_DIR:-$repo/target}/profiling/tlsgate"
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

case $key in
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *) echo "bench/keyd.sh: --key ec or rsa" >&2; exit 2 ;;
esac
openssl req -x509 -nodes -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  "${newkey[@]}" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 600 "$work/key.pem"

start() { # log name, args...: starts tlsgate, records its pid
  local log=$1; shift
  "$bin" "$@" 2>"$work/$log.log" &
  pids+=($!)
}
addr_of() { # log, needle: waits for the line and prints its addr= field
  for _ in $(seq 100); do
    if line=$(grep -m1 "$2" "$work/$1.log" 2>/dev/null); then
      sed -E 's/.*addr=([^ ]+).*/\1/' <<<"$line"; return
    fi
    sleep 0.1
  done
  echo "bench/keyd.sh: $1 did not start:" >&2; cat "$work/$1.log" >&2; exit 1
}
# Per-thread on-CPU ns ("tid ns" lines). A round's CPU is the sum over threads of what each ran
# between two snapshots: summing whole snapshots instead loses a thread that exits in between
# (a runtime's idle blocking thread) together with all the CPU it had ever used.
cpu_snap() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null)"; done; }
cpu_delta() { # before-snapshot after-snapshot: ns used in between (threads new since count whole)
  awk 'NR == FNR { before[$1] = $2; next } { d = $2 - (($1 in before) ? before[$1] : 0); if (d > 0) s += d }
       END { printf "%d", s }' <(echo "$1") <(echo "$2")
}

start backend backend --listen 127.0.0.1:0; backend=$(addr_of backend "backend listening")
start keyd keyd --socket "$work/keyd.sock" --key "web=$work/key.pem"; keyd_pid=${pids[-1]}
for _ in $(seq 100); do [ -S "$work/keyd.sock" ] && break; sleep 0.1; done
start inproc terminate --listen 127.0.0.1:0 --cert "$work/cert.pem" --key "$work/key.pem" --backend "$backend"
inproc_pid=${pids[-1]}; inproc=$(addr_of inproc "listening listener")
start remote terminate --listen 127.0.0.1:0 --cert "$work/cert.pem" --key "keyd:$work/keyd.sock#web" --backend "$backend"
remote_pid=${pids[-1]}; remote=$(addr_of remote "listening listener")

drive() { # addr: $handshakes full handshakes, each with one request; fails unless all are 200
  local port=${1##*:} ok
  ok=$(curl -s --ipv4 --cacert "$work/cert.pem" --resolve "bench.test:$port:127.0.0.1" --no-sessionid \
    -H 'Connection: close' -o /dev/null -w '%{http_code}\n' "https://bench.test:$port/?n=[1-$handshakes]" | grep -c '^200$' || true)
  [ "$ok" -eq "$handshakes" ] || { echo "bench/keyd.sh: $ok of $handshakes succeeded on $1" >&2; exit 1; }
}

drive "$inproc"; drive "$remote"   # warm-up: connection pools, allocator
sum_in=0 sum_gate=0 sum_keyd=0
echo "| round | in-process µs/hs | keyd: terminator µs/hs | keyd: keyd µs/hs | terminator ratio | sum ratio |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  a0=$(cpu_snap "$inproc_pid"); drive "$inproc"; a=$(cpu_delta "$a0" "$(cpu_snap "$inproc_pid")")
  g0=$(cpu_snap "$remote_pid"); k0=$(cpu_snap "$keyd_pid"); drive "$remote"
  g=$(cpu_delta "$g0" "$(cpu_snap "$remote_pid")"); k=$(cpu_delta "$k0" "$(cpu_snap "$keyd_pid")")
  sum_in=$((sum_in + a)) sum_gate=$((sum_gate + g)) sum_keyd=$((sum_keyd + k))
  awk -v r="$r" -v a="$a" -v g="$g" -v k="$k" -v n="$handshakes" 'BEGIN {
    printf "| %d | %.1f | %.1f | %.1f | %.2f | %.2f |\n", r, a/n/1000, g/n/1000, k/n/1000, g/a, (g+k)/a }'
done
awk -v a="$sum_in" -v g="$sum_gate" -v k="$sum_keyd" 'BEGIN {
  printf "ratios: terminator %.2f, terminator+keyd %.2f (keyd / in-process, all rounds)\n", g/a, (g+k)/a }'
