//! A private dnsmasq on a loopback port: a real resolver that knows names nobody else does.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::net::free_port;
use crate::process::Proc;

pub struct Dnsmasq {
    pub addr: SocketAddr,
    pub proc: Proc,
}

impl Dnsmasq {
    /// Answers each `(name, ipv4)` and nothing else (no upstream, no /etc/hosts).
    pub fn start(records: &[(&str, &str)]) -> Dnsmasq {
        let port = free_port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-daemon",
            "--log-facility=-",
            "--log-queries",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file=",
            &format!("--port={port}"),
        ]);
        for (name, ip) in records {
            cmd.arg(format!("--address=/{name}/{ip}"));
        }
        let proc = Proc::spawn("dnsmasq", cmd);
        proc.wait_for(&["started, version"], Duration::from_secs(10));
        Dnsmasq { addr: SocketAddr::from(([127, 0, 0, 1], port)), proc }
    }
}
