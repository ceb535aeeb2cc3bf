"""The gate as its own host, for bench/lib/connect.py: three network namespaces joined by veth
pairs, on two CPUs.

    client (curl, portal; CPU 1) --veth-- gate (tlsgate gate or Squid; CPU 0) --veth-- dest (nginx; CPU 1)

Every veth has GRO and TSO on, as a NIC with receive offload and segmentation offload would,
and threaded NAPI, so the receive pass of each interface runs in a kernel thread of its own,
pinned: the gate's interfaces' threads to CPU 0, the others' to CPU 1. RPS sends each
interface's protocol processing (IP, TCP, the socket wake-up) to its host's CPU: the client's and
the destination's to CPU 1, the gate's to CPU 0. So what runs on CPU 0 is what a gate host runs:
the gate's process, its own sockets' send and receive work, its interfaces' receive pass; the
peers' receive stacks, which loopback charges to the sender, run on CPU 1.

The gate's CPU per transfer, in three parts (USER_HZ ticks from /proc):
- process: utime + stime of the proxy's process group;
- softirq cpu0: the softirq column of CPU 0 in /proc/stat (the gate's TCP receive, ACKs included,
  and transmit completions), less the background: CPU 0's softirq rate over a second before and
  a second after the transfer (other tenants' work) times the transfer's duration;
- napi: utime + stime of the NAPI threads of the gate's two interfaces.
Without CONFIG_IRQ_TIME_ACCOUNTING a tick that lands in a softirq counts in the softirq column and
also in the time of the task it interrupted, so the sum is an upper bound and the process part
a lower bound. Addresses exist only inside the namespaces this makes."""

import os
import subprocess
import sys
import time

import netns

TICK = os.sysconf("SC_CLK_TCK")
BACKGROUND_SECS = 1.0
CLIENT_IP, GATE_IP_C, GATE_IP_D, DEST_IP = "10.90.1.1", "10.90.1.2", "10.90.2.1", "10.90.2.2"


def sh(*args):
    out = subprocess.run(list(args), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"netns setup: {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def group_ticks(pgid):
    total = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = task_fields(pid)
            except OSError:
                continue
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total


def task_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cpu_stat(cpu):
    """CPU `cpu`'s /proc/stat line: user nice system idle iowait irq softirq steal …"""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                return [int(x) for x in line.split()[1:]]
    sys.exit(f"no cpu{cpu} in /proc/stat")


class Netns:
    name = "netns"
    client_host = "127.0.0.1"  # the portal, for curl beside it
    gate_host = GATE_IP_C
    dest_host = DEST_IP
    cert = ("net.pem", "net.key")
    parts = ("process", "softirq cpu0", "napi")
    cpus = {"client": "1", "gate": "0", "dest": "1"}

    def __init__(self, work):
        if os.cpu_count() < 2:
            sys.exit("netns topology: needs two CPUs")
        tag = f"{os.getpid() & 0xffff:04x}"
        self.ns = {role: f"tgconn-{tag}-{role}" for role in self.cpus}
        c, g, d = (self.ns[r] for r in ("client", "gate", "dest"))
        # Interface names stay short: a NAPI thread is "napi/IFNAME-ID", cut at 15 characters.
        ifc, ifg, ifh, ifd = (f"t{tag}{x}" for x in "cghd")
        with open(os.path.join(work, "netns"), "a") as f:
            f.write("".join(f"{ns}\n" for ns in self.ns.values()))
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", c, "link", "add", ifc, "type", "veth", "peer", "name", ifg, "netns", g)
        sh("ip", "-n", g, "link", "add", ifh, "type", "veth", "peer", "name", ifd, "netns", d)
        # Where the kernel splice's program attaches (the gate's interfaces).
        self.gate_ifaces = (ifg, ifh)
        # (namespace, interface, address, the CPU of its host)
        self.links = [(c, ifc, CLIENT_IP, "1"), (g, ifg, GATE_IP_C, "0"), (g, ifh, GATE_IP_D, "0"),
                      (d, ifd, DEST_IP, "1")]
        for ns, ifname, ip, cpu in self.links:
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "netns", "exec", ns, "ethtool", "-K", ifname, "gro", "on", "tso", "on", "gso", "on")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            mask = 1 << int(cpu)
            sh("ip", "netns", "exec", ns, "sh", "-c",
               f"echo 1 > /sys/class/net/{ifname}/threaded && "
               f"echo {mask:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus")
        self.napi = {}  # pid: "gate" or "peer"
        for pid in filter(str.isdigit, os.listdir("/proc")):
            name = comm(pid)
            for ns, ifname, _, cpu in self.links:
                if name.startswith(f"napi/{ifname}-"):
                    sh("taskset", "-p", "-c", cpu, pid)
                    self.napi[pid] = "gate" if cpu == "0" else "peer"
        if sorted(self.napi.values()) != ["gate", "gate", "peer", "peer"]:
            sys.exit(f"netns setup: expected a NAPI thread per veth, found {self.napi}")
        for ns, ifname, _, cpu in self.links:
            got = sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus")
            if int(got.strip().replace(",", ""), 16) != 1 << int(cpu):
                sys.exit(f"netns setup: rps_cpus of {ifname} reads {got.strip()}")
        print(f"[bench] netns: {c} ({ifc} {CLIENT_IP}, CPU 1) — {g} ({ifg} {GATE_IP_C}, "
              f"{ifh} {GATE_IP_D}, CPU 0) — {d} ({ifd} {DEST_IP}, CPU 1)", file=sys.stderr)

    def run(self, role, args):
        return ["ip", "netns", "exec", self.ns[role], "taskset", "-c", self.cpus[role]] + args

    def wait(self, role, host, port):
        probe = ("import socket,sys,time\n"
                 "for _ in range(400):\n"
                 f"    try: socket.create_connection(('{host}', {port}), timeout=1).close(); sys.exit(0)\n"
                 "    except OSError: time.sleep(0.05)\n"
                 "sys.exit(1)\n")
        if subprocess.run(["ip", "netns", "exec", self.ns[role], sys.executable, "-c", probe]).returncode:
            sys.exit(f"netns: nothing listens on {host}:{port} in {self.ns[role]}")

    def napi_ticks(self, which):
        total = 0
        for pid, owner in self.napi.items():
            if owner == which:
                fields = task_fields(pid)
                total += int(fields[11]) + int(fields[12])
        return total

    def snapshot(self, proc):
        return {"process": group_ticks(proc.pid), "softirq cpu0": cpu_stat(0)[6],
                "napi": self.napi_ticks("gate"), "peer napi": self.napi_ticks("peer"),
                "cpu0": cpu_stat(0), "net_rx": netns.net_rx_per_cpu()}

    def background(self):
        """CPU 0's softirq ticks per second with no transfer running (other tenants' work)."""
        s0, t0 = cpu_stat(0)[6], time.time()
        time.sleep(BACKGROUND_SECS)
        return (cpu_stat(0)[6] - s0) / (time.time() - t0)

    def begin(self, proc):
        bg = self.background()
        snap = self.snapshot(proc)
        snap["bg"], snap["t"] = bg, time.time()
        return snap

    def end(self, proc, before):
        after = self.snapshot(proc)
        secs = time.time() - before["t"]
        bg = (before["bg"] + self.background()) / 2
        parts = {k: (after[k] - before[k]) / TICK for k in self.parts}
        # The softirq column net of the background rate measured just before and after.
        raw = parts["softirq cpu0"]
        parts["softirq cpu0"] = max(0.0, raw - bg * secs / TICK)
        print(f"[bench]   CPU 0 softirq {raw:.2f} s raw, background {bg / TICK:.3f} s/s over "
              f"{secs:.1f} s", file=sys.stderr)
        # Checks that the steering holds, and what else CPU 0 did (other tenants, idle excluded).
        busy = sum(after["cpu0"][i] - before["cpu0"][i] for i in (0, 1, 2, 5, 6, 7)) / TICK
        rx = [x - y for x, y in zip(after["net_rx"], before["net_rx"])]
        peer = (after["peer napi"] - before["peer napi"]) / TICK
        print(f"[bench]   NET_RX softirqs per CPU {rx}; peers' NAPI threads (CPU 1) {peer:.2f} s; "
              f"CPU 0 busy in all {busy:.2f} s", file=sys.stderr)
        return parts

    def close(self):
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
