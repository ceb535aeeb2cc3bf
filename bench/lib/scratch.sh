# Sourced by the bench scripts: a scratch directory and the exit trap that stops whatever is
# still running. Servers are started in their own process groups and their pids listed in
# "$work/pids"; the Python harness's pid goes in $py_pid; network namespaces a harness made are
# listed in "$work/netns" and deleted after the processes are stopped.

# make_scratch PREFIX: sets $work and installs the traps.
make_scratch() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  : >"$work/pids"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${py_pid:-}" ] && kill -0 "$py_pid" 2>/dev/null; then
    kill -TERM "$py_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$py_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Servers run in their own process groups (pid = pgid); stop any the harness left behind.
  while read -r pid; do
    [ -n "$pid" ] || continue
    kill -KILL -- "-$pid" 2>/dev/null || true
  done <"$work/pids"
  if [ -f "$work/netns" ]; then
    while read -r ns; do
      [ -n "$ns" ] || continue
      ip netns delete "$ns" 2>/dev/null || true
    done <"$work/netns"
  fi
  if [ -n "${KEEP_BENCH_DIR:-}" ]; then
    echo "[bench] kept $work" >&2
  else
    rm -rf "$work"
    [ "$rc" -eq 0 ] || echo "[bench] failed; KEEP_BENCH_DIR=1 keeps the logs and configs" >&2
  fi
  exit "$rc"
}
