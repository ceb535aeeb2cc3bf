#!/usr/bin/env bash
# External TLS conformance: tlsfuzzer's scripts (conformance/scripts) against the built binary,
# every failed case compared with the expected-failure list of docs/conformance.md.
# Prints `conformance: N passed, M failed`; exits 1 on a failure not on that list.
#
# Environment: TLSGATE (binary, default target/debug/tlsgate), TLSFUZZER (default
# ../shared/tools/tlsfuzzer), CONFORMANCE_VENV (default target/conformance-venv, created with
# tlslite-ng and ecdsa from PyPI when missing), CONFORMANCE_JOBS (scripts at once, default 2),
# CONFORMANCE_ONLY (a regular expression: run only the matching lines of conformance/scripts),
# CONFORMANCE_SCRIPTS (another list of runs), CONFORMANCE_LOGS (keep the scripts' output there).
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
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
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

python3 "$root/conformance/suite.py" \
  --fuzzer "$fuzzer" --python "$venv/bin/python" --scripts "${CONFORMANCE_SCRIPTS:-$root/conformance/scripts}" \
  --expected "$root/docs/conformance.md" --jobs "${CONFORMANCE_JOBS:-2}" --only="${CONFORMANCE_ONLY:-}" \
  --logs "${CONFORMANCE_LOGS:-$work/logs}" \
  --target "terminate=$terminate" --target "terminate-mtls=$mtls" --target "gate=$gate" \
  --var "client_key=$work/client.key" --var "client_cert=$work/client.pem"
