#!/usr/bin/env bash
# Benchmark of the inline engine (performance; a benchmark, not a test):
#  1. its record path alone on one core (crates/inline/benches/record_path.rs: server segments
#     sealed through Downstream, client records opened through Upstream) beside
#     `openssl speed -evp <cipher> -aead` on the same core, same sizes, as a ratio;
#  2. its state per idle flow (crates/inline/benches/idle_flows.rs, 1000 flows) beside
#     `tlsgate terminate`'s resident KiB per idle TLS connection, measured as bench/run.sh does.
#
#   bench/inline.sh [--seconds N] [--no-terminate]
#
# Needs the Debian packages openssl, util-linux (taskset), python3, and for the terminate column
# nginx-core (the plaintext backend); installs nothing: it names what is missing and stops.
# Builds with profile "profiling", release plus line tables (honours CARGO_TARGET_DIR). Prints a
# markdown report on stdout; progress on stderr. See docs/benchmarks.md, "Inline engine record path".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

seconds=3
terminate=1
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift ;;
    --no-terminate) terminate=0 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/inline.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

declare -A need=([openssl]=/usr/bin/openssl [util-linux]=/usr/bin/taskset [python3]=/usr/bin/python3)
[ "$terminate" = 1 ] && need[nginx-core]=/usr/sbin/nginx
missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/inline.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "bench/inline.sh: cargo not found" >&2; exit 1; }
if [ "$terminate" = 1 ] && [ "$(nproc)" -lt 2 ]; then
  echo "bench/inline.sh: the terminate column needs 2 CPUs; use --no-terminate" >&2
  exit 1
fi

# --- build: the two bench programs (profiling), and tlsgate + its load generator ------------------
bench_exe() {
  cargo bench -q --profile profiling -p tlsgate-inline --bench "$1" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])'
}
echo "[inline] cargo bench --profile profiling --no-run -p tlsgate-inline (record_path, idle_flows)" >&2
cargo bench -q --profile profiling -p tlsgate-inline --bench record_path --bench idle_flows --no-run >&2
record_path=$(bench_exe record_path)
idle_flows=$(bench_exe idle_flows)
target=${CARGO_TARGET_DIR:-$repo/target}
if [ "$terminate" = 1 ]; then
  echo "[inline] cargo build --profile profiling -p tlsgate -p tlsgate-loadgen" >&2
  cargo build --profile profiling --quiet -p tlsgate -p tlsgate-loadgen >&2
fi

# --- 1. record path, pinned to CPU 0, then openssl on the same CPU --------------------------------
echo "[inline] record_path --seconds $seconds (taskset -c 0)" >&2
engine=$(taskset -c 0 "$record_path" --seconds "$seconds")
declare -A ossl
for cipher in aes-128-gcm aes-256-gcm chacha20-poly1305; do
  for bytes in 1460 16384; do
    echo "[inline] openssl speed -evp $cipher -aead -bytes $bytes -seconds $seconds (taskset -c 0)" >&2
    # Last line: "<NAME> <rate>k", in 1000s of bytes per second.
    k=$(taskset -c 0 openssl speed -evp "$cipher" -aead -bytes "$bytes" -seconds "$seconds" 2>/dev/null |
      tail -n 1 | awk '{print $NF}' | tr -d k)
    ossl[$cipher/$bytes]=$(awk -v k="$k" 'BEGIN {printf "%.0f", k / 1000}')
  done
done

# --- 2. state per idle flow, and terminate's RSS per idle connection ------------------------------
echo "[inline] idle_flows --flows 1000 (taskset -c 0)" >&2
idle=$(taskset -c 0 "$idle_flows" --flows 1000)
term_kib=""
if [ "$terminate" = 1 ]; then
  # shellcheck source=lib/scratch.sh
  . "$repo/bench/lib/scratch.sh"
  make_scratch tlsgate-inline-bench
  ulimit -n "$(ulimit -Hn)"
  "$repo/bench/lib/pki.sh" "$work" >&2
  echo "[inline] tlsgate terminate, 1000 idle connections (bench/lib/terminate_idle.py)" >&2
  # No __pycache__ left in the repository.
  PYTHONDONTWRITEBYTECODE=1 python3 "$repo/bench/lib/terminate_idle.py" --dir "$work" --tlsgate "$target/profiling/tlsgate" \
    --loadgen "$target/profiling/tlsgate-loadgen" >"$work/terminate.json" &
  py_pid=$!
  wait "$py_pid"
  term_kib=$(python3 -c 'import json, sys; print(round(json.load(sys.stdin)["idle_kib"], 1))' <"$work/terminate.json")
fi

# --- report -----------------------------------------------------------------------------------------
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "# Inline engine record path, $(date -u '+%Y-%m-%d %H:%M') UTC"
echo
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs; everything pinned to CPU 0"
echo "- $(openssl version)"
echo "- tlsgate: git $(git -C "$repo" describe --always --dirty --tags)"
echo "- ${seconds} s per measurement; MB = 10^6 plaintext bytes; ratio = engine / openssl"
echo
echo "| cipher | bytes | engine seal MB/s | engine open MB/s | record layer seal MB/s | openssl MB/s | seal ratio | open ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
while read -r line; do
  cipher=$(field cipher <<<"$line")
  bytes=$(field bytes <<<"$line")
  seal=$(field seal_mb_s <<<"$line")
  open=$(field open_mb_s <<<"$line")
  aead=$(field aead_mb_s <<<"$line")
  o=${ossl[$cipher/$bytes]}
  echo "| $cipher | $bytes | $seal | $open | $aead | $o | $(ratio "$seal" "$o") | $(ratio "$open" "$o") |"
done <<<"$engine"
echo
state=$(field state_bytes_per_flow <<<"$idle")
rss=$(field rss_bytes_per_flow <<<"$idle")
echo "| per idle flow / connection (1000) | bytes | KiB |"
echo "|---|---:|---:|"
echo "| inline engine, its own accounting (Report::state_bytes) | $state | $(awk -v b="$state" 'BEGIN {printf "%.1f", b / 1024}') |"
echo "| inline engine, process RSS growth | $rss | $(awk -v b="$rss" 'BEGIN {printf "%.1f", b / 1024}') |"
if [ -n "$term_kib" ]; then
  echo "| tlsgate terminate, process RSS growth (bench/run.sh's idle phase) | | $term_kib |"
  echo
  echo "ratio inline engine RSS / terminate RSS per idle connection: $(awk -v r="$rss" -v t="$term_kib" 'BEGIN {printf "%.2f", r / 1024 / t}')"
fi
