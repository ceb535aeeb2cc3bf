"""Processes the benchmark starts, and what /proc says about them (CPU time, RSS).

Every server is started in its own session (so its process group holds its workers too), its pid
is appended to the pid file bench/run.sh's exit trap reads, and it is stopped by process group id.
"""

import os
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*parts):
    print("[bench]", *parts, file=sys.stderr, flush=True)


def free_port():
    """A loopback port the kernel just had free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    """Waits until something accepts TCP on 127.0.0.1:port; fails if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()} before listening (log: {proc.log_path})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout:.0f} s (log: {proc.log_path})")


class Server:
    """One long-running process tree (a terminator or the backend) pinned to some CPUs."""

    def __init__(self, name, argv, cpus, workdir, pidfile):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            ["taskset", "-c", cpus, *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid  # taskset execs the command: same pid
        with open(pidfile, "a") as f:
            f.write(f"{self.pid}\n")

    def poll(self):
        return self.popen.poll()

    def pids(self):
        """The process and all its descendants (nginx and hitch workers)."""
        return tree(self.pid)

    def cpu_seconds(self):
        return sum(cpu_seconds(p) for p in self.pids())

    def sys_seconds(self):
        """The kernel's share of cpu_seconds: stime alone."""
        return sum(sys_seconds(p) for p in self.pids())

    def rss_kib(self):
        return sum(rss_kib(p) for p in self.pids())

    def stop(self, grace=5.0):
        """SIGTERM to the process group, SIGKILL after `grace` seconds."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} still running {grace:.0f} s after SIGTERM; SIGKILL")
        # Workers may outlive their parent for a moment; the group goes in any case.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.pid}) did not exit after SIGKILL")
        self._log.close()


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return data[data.rindex(")") + 2 :].split()


def tree(root):
    """root and its descendants, by the parent pids in /proc/*/stat."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pid):
    """utime + stime of a process: all its threads, live and exited."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    # Fields 14 and 15 of /proc/PID/stat; index 0 here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sys_seconds(pid):
    """stime of a process (field 15): system calls and the kernel work done in its context."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return int(fields[12]) / CLK_TCK


def cpu_with_reaped(pid):
    """(utime + stime, stime) of a process plus what its reaped children used (cutime, cstime):
    a forking server's whole cost once its finished children are waited for."""
    try:
        f = _stat_fields(pid)
    except OSError:
        return 0.0, 0.0
    user, sys_s, cuser, csys = (int(x) for x in f[11:15])
    return (user + sys_s + cuser + csys) / CLK_TCK, (sys_s + csys) / CLK_TCK


def wait_children_reaped(pid, timeout=3.0):
    """Waits (bounded) until pid has no child left, live or zombie, so that cpu_with_reaped
    counts every finished child. Returns False if some remain at the timeout."""
    deadline = time.monotonic() + timeout
    while len(tree(pid)) > 1:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(argv, timeout, cpus="1"):
    """Runs a load generator pinned to `cpus`; returns stdout, raises with stderr on failure."""
    r = subprocess.run(
        ["taskset", "-c", cpus, *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {r.returncode}: {r.stderr.strip()[-500:]}")
    return r.stdout
