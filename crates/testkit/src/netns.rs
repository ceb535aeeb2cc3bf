//! Network namespaces joined by veth pairs: real Linux TCP between test hosts, on addresses that
//! exist only inside namespaces the test made (removed when dropped). Needs root.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 is installed");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    /// A fresh namespace with loopback up, named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> Netns {
        let name = format!("tg-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A veth pair between `self` (address `mine`, e.g. `10.201.0.1/24`) and `other` (`theirs`).
    pub fn link(&self, mine: &str, other: &Netns, theirs: &str) {
        let (a, b) = self.pair(other);
        ip(&["-n", &self.name, "addr", "add", mine, "dev", &a]);
        ip(&["-n", &other.name, "addr", "add", theirs, "dev", &b]);
        ip(&["-n", &self.name, "link", "set", &a, "up"]);
        ip(&["-n", &other.name, "link", "set", &b, "up"]);
    }

    /// A quiet veth pair, up, between `self` and `other` (which may be `self`): no addresses and
    /// IPv6 off, so nothing but what a test sends crosses it. Returns the two interface names.
    pub fn veth(&self, other: &Netns) -> (String, String) {
        let (a, b) = self.pair(other);
        for (ns, dev) in [(self, &a), (other, &b)] {
            let knob = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
            ns.must("sysctl", &["-qw", &knob]);
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        (a, b)
    }

    fn pair(&self, other: &Netns) -> (String, String) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (
            format!("tga{}x{n}", std::process::id() % 100_000),
            format!("tgb{}x{n}", std::process::id() % 100_000),
        );
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &self.name]);
        ip(&["link", "set", &b, "netns", &other.name]);
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
