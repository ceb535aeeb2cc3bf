#!/usr/bin/env bash
# User-space instructions tlsgate terminate spends per new connection (full handshake, then
# resumed) and per keep-alive request, counted by valgrind's callgrind: repeatable to a few in a
# million where CPU time moves by 10-30 % between runs, so it shows what a change to tlsgate's
# own code buys. Kernel time is not counted (see bench/run.sh for that). docs/benchmarks.md.
#
#   bench/instructions.sh [--conns N] [TLSGATE_BINARY ...]
#
# With no binary it builds and measures this checkout's; given several (say the build before a
# change and the one after), it measures each on the same backend and load. With hitch installed
# it also counts hitch's instructions per keep-alive request under the same load, the peer with
# the least user space per request in bench/run.sh, and prints each build's ratio to it.
# Installs nothing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

conns=300
bins=()
while [ $# -gt 0 ]; do
  case $1 in
    --conns) conns=$2; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) bins+=("$(realpath "$1")") ;;
  esac
  shift
done

declare -A need=([valgrind]=/usr/bin/callgrind_control [nginx-core]=/usr/sbin/nginx [wrk]=/usr/bin/wrk
  [openssl]=/usr/bin/openssl [iproute2]=/usr/bin/ss [curl]=/usr/bin/curl)
missing=()
for pkg in "${!need[@]}"; do [ -e "${need[$pkg]}" ] || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/instructions.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "[bench] cargo build --profile profiling -p tlsgate -p tlsgate-loadgen" >&2
cargo build --profile profiling --quiet -p tlsgate -p tlsgate-loadgen >&2
target=${CARGO_TARGET_DIR:-$repo/target}
loadgen=$target/profiling/tlsgate-loadgen
[ ${#bins[@]} -gt 0 ] || bins=("$target/profiling/tlsgate")

# shellcheck source=lib/scratch.sh
. "$repo/bench/lib/scratch.sh"
make_scratch tlsgate-instructions
"$repo/bench/lib/pki.sh" "$work" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 300); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "bench/instructions.sh: nothing listens on port $1" >&2
  return 1
}
# start NAME CMD...: in its own process group, listed for the exit trap.
start() {
  local name=$1; shift
  setsid "$@" >"$work/$name.log" 2>&1 &
  echo $! >>"$work/pids"
  last_pid=$!
}

# The backend: bench/run.sh's nginx, 100-byte /small.
mkdir -p "$work/www" "$work/backend-nginx-tmp"/{body,proxy,fastcgi,uwsgi,scgi}
printf '%099d\n' 0 >"$work/www/small"
backend_port=$(free_port)
sed -e "s#@DIR@#$work#g; s#@WWW@#$work/www#g; s#@BACKEND_HOST@#127.0.0.1#g; s#@BACKEND_PORT@#$backend_port#g" \
  bench/peers/backend-nginx.conf.in >"$work/backend-nginx.conf"
start backend nginx -p "$work/" -c "$work/backend-nginx.conf" -e "$work/backend-nginx.error.log"
wait_port "$backend_port"

# measure BIN MODE: instructions per connection (full, resumed) or per request (keepalive).
measure() {
  local bin=$1 mode=$2 port out n less=0
  port=$(free_port)
  out="$work/callgrind.$mode.$RANDOM"
  start "tlsgate-$mode" valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" --workers 1 --log-level warn terminate --listen "127.0.0.1:$port" \
    --cert "$work/server.pem" --key "$work/server.key" --backend "127.0.0.1:$backend_port"
  local vg=$last_pid
  wait_port "$port"
  local lg=(--addr "127.0.0.1:$port" --ca "$work/ca.pem" --concurrency 4 --path /small)
  # Warm-up: the first connections fill caches, tables and the allocator.
  "$loadgen" full "${lg[@]}" --conns 50 >/dev/null
  case $mode in
    resumed)
      # The load generator warms its sessions, says "warmed", and waits for "go".
      coproc GEN { "$loadgen" resumed "${lg[@]}" --conns "$conns" --wait-go; }
      # Bash forgets a coproc's fds and pid once it exits: keep copies.
      local gen_pid=$GEN_PID gen_out gen_in
      exec {gen_out}<&"${GEN[0]}" {gen_in}>&"${GEN[1]}"
      read -r _ <&"$gen_out"
      callgrind_control -z "$vg" >/dev/null 2>&1
      echo go >&"$gen_in"
      cat <&"$gen_out" >"$out.load"
      exec {gen_out}<&- {gen_in}>&-
      wait "$gen_pid" || true
      n=$conns ;;
    keepalive)
      callgrind_control -z "$vg" >/dev/null 2>&1
      wrk -t1 -c4 -d5s "https://127.0.0.1:$port/small" >"$out.load"
      n=$(grep -oP '\d+(?= requests in)' "$out.load")
      # wrk's four full handshakes (at the full mode's cost, $3) are not requests: spread over
      # however many requests a loaded machine let wrk make, they moved the figure by hundreds.
      less=$((4 * $3)) ;;
    full)
      callgrind_control -z "$vg" >/dev/null 2>&1
      "$loadgen" full "${lg[@]}" --conns "$conns" >"$out.load"
      n=$conns ;;
  esac
  callgrind_control -d "$vg" >/dev/null 2>&1
  kill -TERM -- "-$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  local dump
  dump=$(ls "$out".[0-9]* | head -1)
  local ir
  ir=$(grep -m1 -E '^(summary|totals):' "$dump" | awk '{print $2}')
  echo $(((ir - less) / n))
}

# measure_hitch: hitch's user-space instructions per keep-alive request, the same backend and
# wrk load: the difference between a short and a long run, each under callgrind from start to
# exit (hitch's worker runs as nobody, where callgrind_control does not reach it), so start-up
# and wrk's four handshakes, the same in both, cancel out. Its worker is the process that
# counted the most.
measure_hitch() {
  local dumps=$work/hitch-callgrind d port pid reqs=() irs=()
  mkdir -p "$dumps" "$work/hitch-ocsp"
  # The worker (nobody) writes its counts there: the scratch directory only traversable.
  chmod 711 "$work"
  chmod 1777 "$dumps"
  for d in 3 9; do
    port=$(free_port)
    sed -e "s#@LISTEN_PORT@#$port#; s#@BACKEND_PORT@#$backend_port#; s#@PEM@#$work/server-combined.pem#; s#@DIR@#$work#" \
      bench/peers/hitch.conf.in >"$work/hitch.conf"
    start "hitch-$d" valgrind --tool=callgrind --callgrind-out-file="$dumps/$d.%p" hitch --config "$work/hitch.conf"
    pid=$last_pid
    wait_port "$port"
    # Its worker starts after the listener, slowly under valgrind: one request served first.
    for _ in $(seq 120); do curl -skf -o /dev/null --max-time 5 "https://127.0.0.1:$port/small" && break; sleep 0.5; done
    wrk -t1 -c4 -d"${d}s" "https://127.0.0.1:$port/small" >"$dumps/$d.load"
    # SIGINT: hitch exits through its handler, and callgrind writes each process's counts.
    kill -INT -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # The worker writes its counts as it exits, maybe after the master.
    for _ in $(seq 300); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    reqs+=("$(grep -oP '\d+(?= requests in)' "$dumps/$d.load")")
    irs+=("$(grep -h -m1 -E '^(summary|totals):' "$dumps/$d".[0-9]* | awk '$2 > m { m = $2 } END { print m }')")
  done
  echo $(((irs[1] - irs[0]) / (reqs[1] - reqs[0])))
}

hitch_ka=
if command -v hitch >/dev/null 2>&1; then
  echo "[bench] hitch" >&2
  hitch_ka=$(measure_hitch)
fi

echo "# user-space instructions per unit (callgrind), $(date -u '+%Y-%m-%d %H:%M') UTC"
echo
echo "- load: $conns connections per handshake mode over 4 workers; wrk -t1 -c4 -d5s for keep-alive (its four handshakes counted at the full-handshake figure and left out)"
echo
echo "| tlsgate binary | full handshake, per connection | resumed, per connection | keep-alive, per request |"
echo "|---|---:|---:|---:|"
ratios=()
for bin in "${bins[@]}"; do
  echo "[bench] $bin" >&2
  full=$(measure "$bin" full)
  resumed=$(measure "$bin" resumed)
  ka=$(measure "$bin" keepalive "$full")
  echo "| $bin | $full | $resumed | $ka |"
  ratios+=("keepalive_vs_hitch=$(awk -v a="$ka" -v b="$hitch_ka" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }') $bin")
done
if [ -n "$hitch_ka" ]; then
  echo "| hitch (peer), keep-alive only | | | $hitch_ka |"
  echo
  printf '%s\n' "${ratios[@]}"
fi
