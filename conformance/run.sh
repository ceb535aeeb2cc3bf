#!/usr/bin/env bash
# External TLS conformance: tlsfuzzer's scripts (conformance/scripts) against the built binary,
# every failed case compared with the expected-failure list of docs/conformance.md.
# Prints `conformance: N passed, M failed`; exits 1 on a failure not on that list.
#
# Environment: TLSGATE (binary, default target/debug/tlsgate), TLSFUZZER (default
# ../shared/tools/tlsfuzzer), CONFORMANCE_VENV (default target/conformance-venv, created with
# tlslite-ng and ecdsa from PyPI when missing), CONFORMANCE_JOBS (scripts at once, default 2),
# CONFORMANCE_ONLY (a regular expression: run only the matching lines of conformance/scripts),
# CONFORMANCE_SCRIPTS (another list of runs), CONFORMANCE_LOGS (keep the scripts' output there),
# CONFORMANCE_INLINE (0: leave out the inline target, which needs root for network namespaces).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TLSGATE:-$root/target/debug/tlsgate}"
fuzzer="${TLSFUZZER:-$root/../shared/tools/tlsfuzzer}"
venv="${CONFORMANCE_VENV:-$root/target/conformance-venv}"
[ -x "$bin" ] || { echo "conformance: no binary at $bin (build it first)" >&2; exit 2; }
[ -d "$fuzzer/tlsfuzzer" ] || { echo "conformance: no tlsfuzzer at $fuzzer" >&2; exit 2; }
fuzzer="$(cd "$fuzzer" && pwd)"

if ! "$venv/bin/python" -c 'import tlslite, ecdsa' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'tlslite-ng==0.9.0b2' ecdsa
fi

work="$(mktemp -d)"
pids=()
namespaces=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  if [ -n "${CONFORMANCE_LOGS:-}" ]; then cp "$work"/*.log "$CONFORMANCE_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A throwaway CA, an RSA server certificate (most scripts sign with RSA-PSS or PKCS#1) and a client
# certificate for the mutual-TLS targets. umask 077: tlsgate refuses keys others can read.
umask 077
issue() { # stem subject ext
  openssl req -newkey rsa:2048 -nodes -keyout "$work/$1.key" -out "$work/$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/$1.pem" -days 2 -extfile "$work/$1.ext" 2>/dev/null
}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 2 \
  -subj /CN=conformance-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
issue server localhost 'subjectAltName=DNS:localhost,IP:127.0.0.1'
issue client conformance-client 'subjectAltName=URI:spiffe://conformance/client
extendedKeyUsage=clientAuth'

# Starts a process logging to $work/NAME.log and waits (bounded) for the line naming its port,
# left in $port (not a $(...) subshell: the process id must reach the cleanup's list).
start() { # name pattern command...
  local name="$1" pattern="$2"
  shift 2
  : >"$work/$name.log"
  "$@" >>"$work/$name.log" 2>&1 &
  pids+=("$!")
  local i
  port=""
  for ((i = 0; i < 100; i++)); do
    port="$(sed -n "s/.*$pattern.*/\1/p" "$work/$name.log" | head -1 || true)"
    [ -n "$port" ] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "conformance: $name did not start:" >&2; cat "$work/$name.log" >&2; exit 2; }
}

start backend 'listening \([0-9]*\)' python3 "$root/conformance/backend.py"
backend="$port"
tls=(--cert "$work/server.pem" --key "$work/server.key")
start terminate 'addr=127.0.0.1:\([0-9]*\)' \
  "$bin" terminate --listen 127.0.0.1:0 "${tls[@]}" --backend "127.0.0.1:$backend"
terminate="$port"
start terminate-mtls 'addr=127.0.0.1:\([0-9]*\)' \
  "$bin" terminate --listen 127.0.0.1:0 "${tls[@]}" --backend "127.0.0.1:$backend" --client-ca "$work/ca.pem"
mtls="$port"
start gate 'listen=127.0.0.1:\([0-9]*\)' \
  "$bin" tunnel gate --listen 127.0.0.1:0 "${tls[@]}" --client-ca "$work/ca.pem"
gate="$port"

# The inline engine: `tlsgate inline run` bridging a gate namespace's two veths between a client
# namespace (tlsfuzzer) and a server namespace (the backend on the service address's port 80), as
# crates/testkit/src/inline_net.rs and bench/lib/inline_net.py set it up: offloads off, no IPv6.
inline=()
if [ "${CONFORMANCE_INLINE:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v ip ethtool >/dev/null; then
  tag="cf$$"
  net="10.$((20 + $$ % 200)).0"
  for role in client gate server; do
    ip netns add "$tag-$role"
    namespaces+=("$tag-$role")
    ip netns exec "$tag-$role" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$tag-$role" ip link set lo up
  done
  ip link add "${tag}c" netns "$tag-client" type veth peer name "${tag}gc" netns "$tag-gate"
  ip link add "${tag}gs" netns "$tag-gate" type veth peer name "${tag}s" netns "$tag-server"
  for pair in "client ${tag}c" "gate ${tag}gc" "gate ${tag}gs" "server ${tag}s"; do
    set -- $pair
    ip netns exec "$tag-$1" ethtool -K "$2" tso off gso off gro off tx off >/dev/null
    ip netns exec "$tag-$1" ip link set "$2" up
  done
  ip netns exec "$tag-client" ip addr add "$net.1/24" dev "${tag}c"
  ip netns exec "$tag-server" ip addr add "$net.2/24" dev "${tag}s"
  start inline-backend 'listening \([0-9]*\)' ip netns exec "$tag-server" python3 "$root/conformance/backend.py" 80 "$net.2"
  start inline '\(inline running\)' ip netns exec "$tag-gate" \
    "$bin" inline run --client-iface "${tag}gc" --server-iface "${tag}gs" --service "$net.2:443=80" "${tls[@]}"
  inline=(--target "inline=$net.2:443" --netns "inline=$tag-client")
fi

python3 "$root/conformance/suite.py" \
  --fuzzer "$fuzzer" --python "$venv/bin/python" --scripts "${CONFORMANCE_SCRIPTS:-$root/conformance/scripts}" \
  --expected "$root/docs/conformance.md" --jobs "${CONFORMANCE_JOBS:-2}" --only="${CONFORMANCE_ONLY:-}" \
  --logs "${CONFORMANCE_LOGS:-$work/logs}" \
  --target "terminate=$terminate" --target "terminate-mtls=$mtls" --target "gate=$gate" "${inline[@]}" \
  --var "client_key=$work/client.key" --var "client_cert=$work/client.pem"
