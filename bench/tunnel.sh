#!/usr/bin/env bash
# Benchmark: the tlsgate tunnel (portal + gate) beside OpenSSH (ssh -L / -D to a private sshd) on
# the same machine, both ends of each tunnel pinned to CPU 0. See docs/benchmarks.md,
# "Tunnel vs OpenSSH".
#
#   bench/tunnel.sh [--quick] [--before TLSGATE_BINARY]
#                                    (SSH_CIPHER=... overrides aes128-gcm@openssh.com)
#
# Installs nothing: it names the Debian packages it is missing and stops. Builds tlsgate (profile
# "profiling": release plus line tables; honours CARGO_TARGET_DIR). Prints a markdown table, the
# line "bounds on this machine ..." (what a tunnel costing nothing, or only its system part, could
# reach here, as ratios to ssh: bound_one_stream=, bound_parallel=, floor_cpu_per_gib=) and, last,
# the line "tunnel ratios vs ssh: ...". Every process it starts is stopped on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

quick=()
before=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=(--quick) ;;
    --before) before=(--before "$(realpath "$2")"); shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/tunnel.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- what it needs: Debian package, and a file that proves it is installed ---------------------
declare -A need=(
  [openssh-server]=/usr/sbin/sshd
  [openssh-client]=/usr/bin/ssh
  [openssl]=/usr/bin/openssl
  [util-linux]=/usr/bin/taskset
  [python3]=/usr/bin/python3
)
missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/tunnel.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "bench/tunnel.sh: cargo not found" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "bench/tunnel.sh: needs 2 CPUs (tunnel on CPU 0, load on CPU 1); this machine has $(nproc)" >&2
  exit 1
fi
# sshd refuses to start without its privilege-separation directory (Debian: /run/sshd).
if [ ! -d /run/sshd ]; then
  if [ "$(id -u)" -eq 0 ]; then
    install -d -m 755 /run/sshd
  else
    echo "bench/tunnel.sh: /run/sshd is missing and only root can make it (sudo install -d -m 755 /run/sshd)" >&2
    exit 1
  fi
fi
user=$(id -un)
ssh_cipher=${SSH_CIPHER:-aes128-gcm@openssh.com}

# --- build ---------------------------------------------------------------------------------------
echo "[bench] cargo build --profile profiling -p tlsgate" >&2
cargo build --profile profiling --quiet -p tlsgate >&2
target=${CARGO_TARGET_DIR:-$repo/target}
tlsgate=$target/profiling/tlsgate

# --- scratch directory, and the exit trap that stops whatever is still running ------------------
# shellcheck source=lib/scratch.sh
. "$repo/bench/lib/scratch.sh"
make_scratch tlsgate-tunnel-bench

# --- keys: the CA and gate certificate (server.pem, SAN 127.0.0.1) of the terminator benchmark,
# a portal client certificate from the same CA, and OpenSSH host and user keys -----------------
"$repo/bench/lib/pki.sh" "$work"
(
  cd "$work"
  umask 077
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out portal.key 2>/dev/null
  openssl req -new -key portal.key -subj "/CN=bench-portal" -out portal.csr 2>/dev/null
  cat > portal.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:bench-portal
EXT
  openssl x509 -req -in portal.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
    -extfile portal.ext -out portal.pem 2>/dev/null
  openssl verify -CAfile ca.pem -purpose sslclient portal.pem >/dev/null
  ssh-keygen -q -t ed25519 -N '' -C bench-host -f ssh_host_ed25519_key
  ssh-keygen -q -t ed25519 -N '' -C bench-user -f id_ed25519
  cp id_ed25519.pub authorized_keys
  # known_hosts is filled in by tunnel.py once it knows sshd's port; the host key is ours.
)

taskset -c 1 /usr/bin/python3 "$repo/bench/lib/tunnel.py" "${quick[@]}" "${before[@]}" --dir "$work" \
  --tlsgate "$tlsgate" --sshd /usr/sbin/sshd --user "$user" --ssh-cipher "$ssh_cipher" \
  --repo "$repo" &
py_pid=$!
wait "$py_pid"
