//! Network namespaces joined by veth pairs: real Linux TCP between test hosts, on addresses that
//! exist only inside namespaces the test made (removed when dropped). Needs root.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
}

/// What the names of namespaces and interfaces start with: `TESTKIT_NETNS_PREFIX` (two
/// characters or so: interface names are at most 15), else `tg`. Tests run side by side on one
/// machine by different people keep to their own names.
fn prefix() -> String {
    std::env::var("TESTKIT_NETNS_PREFIX").unwrap_or_else(|_| "tg".to_string())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 is installed");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    /// A fresh namespace with loopback up, named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> Netns {
        let name =
            format!("{}-{tag}-{}-{}", prefix(), std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A veth pair between `self` (address `mine`, e.g. `10.201.0.1/24`) and `other` (`theirs`).
    pub fn link(&self, mine: &str, other: &Netns, theirs: &str) {
        self.veth(Some(mine), other, Some(theirs));
    }

    /// A veth pair between `self` and `other`, both ends up, each with its address or none (a
    /// bridge port, an interface read by a packet socket); returns the two interface names.
    pub fn veth(&self, mine: Option<&str>, other: &Netns, theirs: Option<&str>) -> (String, String) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (
            format!("{}a{}x{n}", prefix(), std::process::id() % 100_000),
            format!("{}b{}x{n}", prefix(), std::process::id() % 100_000),
        );
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &self.name]);
        ip(&["link", "set", &b, "netns", &other.name]);
        for (ns, dev, addr) in [(self, &a, mine), (other, &b, theirs)] {
            if let Some(addr) = addr {
                ip(&["-n", &ns.name, "addr", "add", addr, "dev", dev]);
            }
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        (a, b)
    }

    /// Waits (bounded) until a TCP socket in this namespace listens on `port`, for servers that do
    /// not announce readiness (nginx).
    pub fn wait_listening(&self, port: u16, timeout: Duration) {
        self.wait_sockets(&["-lt", &format!("sport = :{port}")], timeout);
    }

    /// Waits (bounded) until `ss -Hn <filter…>` in this namespace lists a socket; returns the list.
    pub fn wait_sockets(&self, filter: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut args = vec!["-Hn"];
        args.extend_from_slice(filter);
        loop {
            let out = self.run("ss", &args);
            let list = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !list.is_empty() {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "no socket for ss {filter:?} in {} within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A quiet veth pair, up, between `self` and `other` (which may be `self`): no addresses and
    /// IPv6 off, so nothing but what a test sends crosses it. Returns the two interface names.
    pub fn quiet_veth(&self, other: &Netns) -> (String, String) {
        // Off before the pair exists, so no IPv6 frame leaves while it comes up.
        for ns in [self, other] {
            ns.must("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        }
        let (a, b) = self.veth(None, other, None);
        for (ns, dev) in [(self, &a), (other, &b)] {
            let knob = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
            ns.must("sysctl", &["-qw", &knob]);
        }
        (a, b)
    }

    /// `program args…` to run inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Runs to completion inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args).output().expect("ip netns exec")
    }

    /// Runs and insists on success.
    pub fn must(&self, program: &str, args: &[&str]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
