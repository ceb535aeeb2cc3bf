#!/usr/bin/env bash
# Benchmark of the inline engine (performance; a benchmark, not a test):
#  1. its record path alone on one core (crates/inline/benches/record_path.rs: server segments
#     sealed through Downstream, client records opened through Upstream) beside
#     `openssl speed -evp <cipher> -aead` on the same core, same sizes, as a ratio;
#  2. its state per idle flow (crates/inline/benches/idle_flows.rs, 1000 flows) beside
#     `tlsgate terminate`'s resident KiB per idle TLS connection, measured as bench/run.sh does;
#  3. inline run on real packets vs terminate (bench/lib/inline_net.py): client - gate - server
#     in network namespaces, the same curl downloads through `tlsgate inline run` bridging the
#     gate's veths, then through `tlsgate terminate` in a routing gate: tlsgate's CPU s per GiB
#     of each (target: inline / terminate <= 0.7), and idle state per flow (target <= 1 KiB).
#
#   bench/inline.sh [--seconds N] [--no-terminate] [--no-net | --only-net]
#                   [--record-runs N]   (section 1: N runs of record_path; medians, seal / raw's range)
#                   [--inline-gib G] [--idle-flows N] [--inline-mode buffered|cut-through]
#                   [--inline-direction down|up]   (section 3: curl downloads, or POSTs, G GiB)
#                   [--offloads on|off]   (section 3: TSO/GSO/checksum offload on the veths)
#                   [--steer on|off]   (section 3: RPS, each host's receive work on its own CPU)
#                   [--name-prefix P]   (section 3: namespaces and interfaces named P<pid>…)
#                   [--perf DIR]   (section 3: perf record -g of tlsgate into DIR, each run)
#                   [--rounds N]   (section 3: N interleaved rounds of every run; ratios are medians)
#                   [--baseline BIN]   (section 3: an older tlsgate's inline run beside the new one)
#
# Needs the Debian packages openssl, util-linux (taskset), python3, for the terminate column and
# section 3 nginx-core (the plaintext backend), for section 3 also iproute2, ethtool and curl,
# root and 2 CPUs; installs nothing: it names what is missing and stops. Builds with profile
# "profiling", release plus line tables (honours CARGO_TARGET_DIR). Prints a markdown report on
# stdout; progress on stderr. See docs/benchmarks.md, "Inline engine record path" and "Inline run
# on real packets vs terminate". Exits non-zero if a run of section 3 failed, after printing it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

seconds=3
terminate=1
record=1
net=1
gib=1
flows=200
mode=buffered
direction=down
offloads=on
steer=on
prefix=tb
perf=()
rounds=1
record_runs=1
baseline=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift ;;
    --no-terminate) terminate=0 ;;
    --no-net) net=0 ;;
    --only-net) record=0; terminate=0 ;;
    --inline-gib) gib=$2; shift ;;
    --idle-flows) flows=$2; shift ;;
    --inline-mode) mode=$2; shift ;;
    --inline-direction) direction=$2; shift ;;
    --offloads) offloads=$2; shift ;;
    --steer) steer=$2; shift ;;
    --name-prefix) prefix=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --record-runs) record_runs=$2; shift ;;
    --baseline) baseline=(--baseline "$(realpath "$2")"); shift ;;
    --perf) mkdir -p "$2"; perf=(--perf "$(cd "$2" && pwd)"); shift ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/inline.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$record" = 0 ] && [ "$net" = 0 ]; then
  echo "bench/inline.sh: --only-net and --no-net leave nothing to run" >&2
  exit 2
fi

declare -A need=([openssl]=/usr/bin/openssl [util-linux]=/usr/bin/taskset [python3]=/usr/bin/python3)
[ "$terminate" = 1 ] && need[nginx-core]=/usr/sbin/nginx
if [ "$net" = 1 ]; then
  need[nginx-core]=/usr/sbin/nginx
  need[iproute2]=/usr/bin/ss
  need[ethtool]=/usr/sbin/ethtool
  need[curl]=/usr/bin/curl
fi
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
if [ "$net" = 1 ]; then
  if [ "$(nproc)" -lt 2 ]; then
    echo "bench/inline.sh: section 3 needs 2 CPUs (tlsgate on CPU 0, curl and nginx on CPU 1); use --no-net" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/inline.sh: section 3 makes network namespaces and needs root; use --no-net" >&2
    exit 1
  fi
  case $mode in buffered|cut-through) ;; *) echo "bench/inline.sh: --inline-mode buffered or cut-through" >&2; exit 2 ;; esac
  case $direction in down|up) ;; *) echo "bench/inline.sh: --inline-direction down or up" >&2; exit 2 ;; esac
fi

# --- build: the two bench programs (profiling), and tlsgate + its load generator ------------------
bench_exe() {
  cargo bench -q --profile profiling -p tlsgate-inline --bench "$1" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])'
}
if [ "$record" = 1 ]; then
  echo "[inline] cargo bench --profile profiling --no-run -p tlsgate-inline (record_path, idle_flows)" >&2
  cargo bench -q --profile profiling -p tlsgate-inline --bench record_path --bench idle_flows --no-run >&2
  record_path=$(bench_exe record_path)
  idle_flows=$(bench_exe idle_flows)
fi
target=${CARGO_TARGET_DIR:-$repo/target}
if [ "$terminate" = 1 ]; then
  echo "[inline] cargo build --profile profiling -p tlsgate -p tlsgate-loadgen" >&2
  cargo build --profile profiling --quiet -p tlsgate -p tlsgate-loadgen >&2
elif [ "$net" = 1 ]; then
  echo "[inline] cargo build --profile profiling -p tlsgate" >&2
  cargo build --profile profiling --quiet -p tlsgate >&2
fi
if [ "$terminate" = 1 ] || [ "$net" = 1 ]; then
  # shellcheck source=lib/scratch.sh
  . "$repo/bench/lib/scratch.sh"
  make_scratch tlsgate-inline-bench
  ulimit -n "$(ulimit -Hn)"
  "$repo/bench/lib/pki.sh" "$work" >&2
fi

if [ "$record" = 1 ]; then
  # --- 1. record path, pinned to CPU 0, then openssl on the same CPU ------------------------------
  # Each run a process of its own (its own stack placement): medians over the runs.
  runs=""
  for ((run = 1; run <= record_runs; run++)); do
    echo "[inline] record_path --seconds $seconds (taskset -c 0), run $run of $record_runs" >&2
    runs+=$(taskset -c 0 "$record_path" --seconds "$seconds")$'\n'
  done
  engine=$(python3 "$repo/bench/lib/record_runs.py" <<<"$runs")
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

  # --- 2. state per idle flow, and terminate's RSS per idle connection ----------------------------
  echo "[inline] idle_flows --flows 1000 (taskset -c 0)" >&2
  idle=$(taskset -c 0 "$idle_flows" --flows 1000)
fi
term_kib=""
if [ "$terminate" = 1 ]; then
  echo "[inline] tlsgate terminate, 1000 idle connections (bench/lib/terminate_idle.py)" >&2
  # No __pycache__ left in the repository.
  PYTHONDONTWRITEBYTECODE=1 python3 "$repo/bench/lib/terminate_idle.py" --dir "$work" --tlsgate "$target/profiling/tlsgate" \
    --loadgen "$target/profiling/tlsgate-loadgen" >"$work/terminate.json" &
  py_pid=$!
  wait "$py_pid"
  term_kib=$(python3 -c 'import json, sys; print(round(json.load(sys.stdin)["idle_kib"], 1))' <"$work/terminate.json")
fi

# --- 3. inline run on real packets vs terminate, in network namespaces ----------------------------
net_rc=0
if [ "$net" = 1 ]; then
  echo "[inline] inline run vs terminate through network namespaces, $gib GiB each (bench/lib/inline_net.py)" >&2
  PYTHONDONTWRITEBYTECODE=1 python3 "$repo/bench/lib/inline_net.py" --dir "$work" --tlsgate "$target/profiling/tlsgate" \
    --gib "$gib" --flows "$flows" --mode "$mode" --direction "$direction" --offloads "$offloads" \
    --steer "$steer" --prefix "$prefix" --rounds "$rounds" "${baseline[@]}" "${perf[@]}" >"$work/net.md" &
  py_pid=$!
  wait "$py_pid" || net_rc=$?
fi

# --- report -----------------------------------------------------------------------------------------
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "# Inline engine, $(date -u '+%Y-%m-%d %H:%M') UTC"
echo
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs; kernel $(uname -r)"
echo "- $(openssl version)"
echo "- tlsgate: git $(git -C "$repo" describe --always --dirty --tags)"
if [ "$record" = 1 ]; then
  echo
  echo "## Record path and idle flows (everything pinned to CPU 0)"
  echo
  echo "- ${seconds} s per measurement, $record_runs run(s) of record_path (MB/s: medians); MB = 10^6 plaintext bytes; ratio = engine / openssl"
  echo "- seal / raw: the engine's seal against aws-lc's own in-place seal in the same run (target >= 0.8), the median of the runs' ratios (lowest-highest)"
  echo "- extra ns: nanoseconds per record the engine's seal takes beyond raw's (median of the runs)"
  echo
  echo "| cipher | bytes | engine seal MB/s | engine open MB/s | cut-through open MB/s | record layer seal MB/s | aws-lc raw MB/s | openssl MB/s | seal / raw | extra ns | seal ratio | open ratio | seal / record layer | open / cut-through |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  while read -r line; do
    cipher=$(field cipher <<<"$line")
    bytes=$(field bytes <<<"$line")
    seal=$(field seal_mb_s <<<"$line")
    open=$(field open_mb_s <<<"$line")
    cut=$(field cut_open_mb_s <<<"$line")
    aead=$(field aead_mb_s <<<"$line")
    raw=$(field raw_mb_s <<<"$line")
    seal_raw="$(field seal_raw <<<"$line") ($(field seal_raw_min <<<"$line")-$(field seal_raw_max <<<"$line"))"
    extra=$(field extra_ns <<<"$line")
    o=${ossl[$cipher/$bytes]}
    echo "| $cipher | $bytes | $seal | $open | $cut | $aead | $raw | $o | $seal_raw | $extra | $(ratio "$seal" "$o") | $(ratio "$open" "$o") | $(ratio "$seal" "$aead") | $(ratio "$open" "$cut") |"
  done <<<"$engine"
  echo
  state=$(field state_bytes_per_flow <<<"$idle")
  heap=$(field heap_bytes_per_flow <<<"$idle")
  rss=$(field rss_bytes_per_flow <<<"$idle")
  echo "| per idle flow / connection (1000) | bytes | KiB |"
  echo "|---|---:|---:|"
  echo "| inline engine, its own accounting (Report::state_bytes) | $state | $(awk -v b="$state" 'BEGIN {printf "%.1f", b / 1024}') |"
  echo "| inline engine, heap allocated | $heap | $(awk -v b="$heap" 'BEGIN {printf "%.1f", b / 1024}') |"
  echo "| inline engine, process RSS growth | $rss | $(awk -v b="$rss" 'BEGIN {printf "%.1f", b / 1024}') |"
  if [ -n "$term_kib" ]; then
    echo "| tlsgate terminate, process RSS growth (bench/run.sh's idle phase) | | $term_kib |"
    echo
    echo "ratio inline engine RSS / terminate RSS per idle connection: $(awk -v r="$rss" -v t="$term_kib" 'BEGIN {printf "%.2f", r / 1024 / t}')"
  fi
fi
if [ "$net" = 1 ]; then
  echo
  cat "$work/net.md"
  if [ "$net_rc" -ne 0 ]; then
    echo "bench/inline.sh: section 3 (inline run vs terminate) failed (status $net_rc); see the lines above" >&2
    exit "$net_rc"
  fi
fi
