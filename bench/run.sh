#!/usr/bin/env bash
# Benchmark: tlsgate terminate against haproxy, nginx (stream), hitch and stunnel, each on one
# pinned CPU, same certificate, TLS 1.3. See docs/benchmarks.md.
#
#   bench/run.sh [--quick] [--only tlsgate,haproxy,...]
#
# Installs nothing: it names the Debian packages it is missing and stops. Builds tlsgate and
# tlsgate-loadgen (profile "profiling": release plus line tables; honours CARGO_TARGET_DIR).
# Prints a markdown table and, last, the line "ratios vs best peer: ...". Every process it starts
# is stopped on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

quick=()
only=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=(--quick) ;;
    --only) only=(--only "$2"); shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- what it needs: Debian package, and a file that proves it is installed ---------------------
declare -A need=(
  [nginx-core]=/usr/sbin/nginx
  [libnginx-mod-stream]=/usr/lib/nginx/modules/ngx_stream_module.so
  [haproxy]=/usr/sbin/haproxy
  [hitch]=/usr/sbin/hitch
  [stunnel4]=/usr/bin/stunnel4
  [wrk]=/usr/bin/wrk
  [openssl]=/usr/bin/openssl
  [util-linux]=/usr/bin/taskset
  [python3]=/usr/bin/python3
)
missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/run.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "bench/run.sh: cargo not found" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "bench/run.sh: needs 2 CPUs (terminator on CPU 0, load on CPU 1); this machine has $(nproc)" >&2
  exit 1
fi

# --- build ---------------------------------------------------------------------------------------
echo "[bench] cargo build --profile profiling -p tlsgate -p tlsgate-loadgen" >&2
cargo build --profile profiling --quiet -p tlsgate -p tlsgate-loadgen >&2
target=${CARGO_TARGET_DIR:-$repo/target}
tlsgate=$target/profiling/tlsgate
loadgen=$target/profiling/tlsgate-loadgen

# --- 1000 idle connections need file descriptors (client, terminator and backend side) --------
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  echo "bench/run.sh: open-file limit $(ulimit -n) < 8192; raise it (ulimit -n)" >&2
  exit 1
fi

# --- scratch directory, and the exit trap that stops whatever is still running ------------------
# shellcheck source=lib/scratch.sh
. "$repo/bench/lib/scratch.sh"
make_scratch tlsgate-bench

"$repo/bench/lib/pki.sh" "$work"

/usr/bin/python3 "$repo/bench/lib/bench.py" "${quick[@]}" "${only[@]}" --dir "$work" \
  --tlsgate "$tlsgate" --loadgen "$loadgen" --repo "$repo" &
py_pid=$!
wait "$py_pid"
