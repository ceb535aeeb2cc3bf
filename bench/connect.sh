#!/usr/bin/env bash
# Benchmark: CPU per GiB on the HTTPS-proxy hop, `tlsgate connect gate` with the downgrade (through
# the portal) and nested (curl --proxy https://…), beside Squid as an HTTPS proxy (https_port,
# nested), all in front of the same TLS destination (nginx), on one machine. See
# docs/benchmarks.md, "Connect gate vs Squid".
#
#   bench/connect.sh [--quick] [--runs N] [--only loopback|netns] [--baseline TLSGATE]
#     --quick: 256 MiB per transfer instead of 1 GiB; --runs: N interleaved rounds (default 3);
#     --baseline: another tlsgate binary whose gate is measured in the same rounds (A/B)
#
# Two topologies: loopback, and the gate in a network namespace of its own between the client's
# and the destination's, pinned to CPU 0 with its peers on CPU 1 (bench/lib/connect_netns.py).
# The netns topology adds a third tlsgate gate with --kernel-splice on its two interfaces (the
# downgraded connection spliced below its sockets) and the ratio "kernel-spliced/nested CPU".
# Installs nothing: it names the Debian packages it is missing and stops. Builds tlsgate (profile
# "profiling"; honours CARGO_TARGET_DIR). Prints, per topology, a markdown table (one row per run
# and proxy) and the lines "TOPOLOGY ratios (PART, median of N runs): downgrade/nested CPU …".
# Every process and network namespace it starts is stopped or deleted on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

size=$((1024 * 1024 * 1024))
runs=3
pyargs=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) size=$((256 * 1024 * 1024)) ;;
    --runs) runs=$2; shift ;;
    --only) pyargs+=(--only "$2"); shift ;;
    --baseline) pyargs+=(--baseline "$(realpath "$2")"); shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/connect.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

declare -A need=([nginx-core]=/usr/sbin/nginx [squid-openssl]=/usr/sbin/squid [curl]=/usr/bin/curl
  [openssl]=/usr/bin/openssl [python3]=/usr/bin/python3 [iproute2]=/usr/sbin/ip [ethtool]=/usr/sbin/ethtool
  [util-linux]=/usr/bin/taskset)
missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/connect.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "[bench] cargo build --profile profiling -p tlsgate" >&2
cargo build --profile profiling --quiet -p tlsgate >&2
target=${CARGO_TARGET_DIR:-$repo/target}
tlsgate=$target/profiling/tlsgate

# shellcheck source=lib/scratch.sh
. "$repo/bench/lib/scratch.sh"
make_scratch tlsgate-connect-bench

# The CA and server certificate (SAN 127.0.0.1) of the terminator benchmark serve the gate, Squid
# and the destination alike; the portal gets a client certificate from the same CA.
"$repo/bench/lib/pki.sh" "$work"
(
  cd "$work"
  umask 077
  # leaf NAME CN EXTENSIONS: an ECDSA P-256 key NAME.key and NAME.pem issued by the bench CA.
  leaf() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
      -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  }
  leaf portal bench-portal 'extendedKeyUsage=clientAuth'
  # The gate's, Squid's and the destination's certificate in the namespaces.
  leaf net bench-netns 'extendedKeyUsage=serverAuth
subjectAltName=IP:10.90.1.2,IP:10.90.2.2'
  chmod 644 net.pem
)

/usr/bin/python3 "$repo/bench/lib/connect.py" --dir "$work" --tlsgate "$tlsgate" --size "$size" \
  --runs "$runs" "${pyargs[@]}" &
py_pid=$!
wait "$py_pid"
