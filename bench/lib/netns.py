"""Three network namespaces, client - gate - server, joined by two veth pairs, for
bench/lib/inline_net.py. GRO is off everywhere (a bridge reads frames as their sender sent them).
With offloads on (the veth default) the hosts' TSO/GSO hand 64 KiB TCP "frames" with partial
checksums to the veth, which carries them whole: the inline gate reads them as GSO frames and
sends its own that way. With offloads off (TSO, GSO, checksum offload) every frame is wire-sized
and checksummed, as on a physical wire. Each namespace made is appended to a registry file that
bench/inline.sh's exit trap deletes, should `down` not run.

With steering on (the default), RPS (`queues/rx-0/rps_cpus`) sends the receive processing of the
client's and the server's interfaces to CPU 1 and that of the gate's two interfaces to CPU 0, as
bench/lib/connect_netns.py does: CPU 0 then does what a gate host does (its process, its
interfaces' transmit and its own receive of every frame), while the peers' receive stacks (the
client's TCP taking the gate's data, the server's taking its ACKs) run on CPU 1, as on hosts of
their own. Without it, a veth hands a sent frame to its peer's stack on the sender's CPU, in the
sender's context: the client's TCP receive counts as the gate's work, and the gate's own receive
as nginx's or curl's."""

import subprocess


def sh(argv, timeout=15):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit status {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


class Topology:
    """client - gate - server. Bridged: one subnet, the gate's veths without addresses and
    forwarding off. Routed: the gate has an address on each side and forwards."""

    def __init__(self, tag, octet, routed, registry, offloads=True, steer=True):
        self.routed = routed
        self.offloads = offloads
        self.steer = steer
        self.ns = {role: f"{tag}-{role}" for role in ("client", "gate", "server")}
        self.ifs = {
            "client": f"{tag}c",
            "gate_client": f"{tag}gc",
            "gate_server": f"{tag}gs",
            "server": f"{tag}s",
        }
        if routed:
            self.client_ip, self.gate_client_ip = f"10.{octet}.1.1", f"10.{octet}.1.254"
            self.server_ip, self.gate_server_ip = f"10.{octet}.2.2", f"10.{octet}.2.254"
        else:
            self.client_ip, self.server_ip = f"10.{octet}.0.1", f"10.{octet}.0.2"
        self.registry = registry
        self.made = []

    def exec(self, role):
        return ["ip", "netns", "exec", self.ns[role]]

    def up(self):
        for role, ns in self.ns.items():
            sh(["ip", "netns", "add", ns])
            self.made.append(ns)
            # The exit trap of bench/inline.sh deletes what this file lists, should we not.
            with open(self.registry, "a") as f:
                f.write(ns + "\n")
            # No IPv6 (no router solicitations or DAD on the bridge); forwarding as the mode wants.
            sh(self.exec(role) + ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                                  "net.ipv6.conf.default.disable_ipv6=1",
                                  f"net.ipv4.ip_forward={1 if self.routed and role == 'gate' else 0}"])
            sh(self.exec(role) + ["ip", "link", "set", "lo", "up"])
        i = self.ifs
        sh(["ip", "link", "add", i["client"], "netns", self.ns["client"], "type", "veth",
            "peer", "name", i["gate_client"], "netns", self.ns["gate"]])
        sh(["ip", "link", "add", i["gate_server"], "netns", self.ns["gate"], "type", "veth",
            "peer", "name", i["server"], "netns", self.ns["server"]])
        for role, ifname in (("client", i["client"]), ("gate", i["gate_client"]),
                             ("gate", i["gate_server"]), ("server", i["server"])):
            state = "on" if self.offloads else "off"
            sh(self.exec(role) + ["ethtool", "-K", ifname, "tso", state, "gso", state, "gro", "off", "tx", state])
            sh(self.exec(role) + ["ip", "link", "set", ifname, "up"])
            if self.steer:
                self.steer_receive(role, ifname)
        sh(self.exec("client") + ["ip", "addr", "add", f"{self.client_ip}/24", "dev", i["client"]])
        sh(self.exec("server") + ["ip", "addr", "add", f"{self.server_ip}/24", "dev", i["server"]])
        if self.routed:
            sh(self.exec("gate") + ["ip", "addr", "add", f"{self.gate_client_ip}/24", "dev", i["gate_client"]])
            sh(self.exec("gate") + ["ip", "addr", "add", f"{self.gate_server_ip}/24", "dev", i["gate_server"]])
            sh(self.exec("client") + ["ip", "route", "add", "default", "via", self.gate_client_ip])
            sh(self.exec("server") + ["ip", "route", "add", "default", "via", self.gate_server_ip])

    def steer_receive(self, role, ifname):
        """RPS: the interface's receive processing on its host's CPU (gate 0, peers 1), checked."""
        mask = 1 if role == "gate" else 2
        path = f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus"
        sh(self.exec(role) + ["sh", "-c", f"echo {mask:x} > {path}"])
        got = sh(self.exec(role) + ["cat", path]).strip().replace(",", "")
        if int(got, 16) != mask:
            raise RuntimeError(f"rps_cpus of {ifname} in {self.ns[role]} reads {got}, expected {mask:x}")

    def down(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=15)
        self.made = []


def net_rx_per_cpu():
    """NET_RX softirqs raised so far, per CPU (/proc/softirqs): shows where receive work ran."""
    with open("/proc/softirqs") as f:
        for line in f:
            if line.strip().startswith("NET_RX:"):
                return [int(x) for x in line.split()[1:]]
    return []
