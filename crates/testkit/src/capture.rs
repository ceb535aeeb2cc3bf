//! tcpdump on one interface of a namespace, written to a pcap file and read back with
//! [`crate::pcap`] once stopped.

use std::path::PathBuf;
use std::time::Duration;

use crate::netns::Netns;
use crate::pcap::{self, Packet};
use crate::process::Proc;

pub struct Capture {
    proc: Proc,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing every frame on `iface` in `ns`; returns once tcpdump says it listens.
    pub fn start(ns: &Netns, iface: &str) -> Capture {
        let dir = tempfile::Builder::new().prefix("tlsgate-pcap-").tempdir().unwrap();
        let file = dir.path().join(format!("{iface}.pcap"));
        // -n: no name lookups; -U: each packet written as it comes; -B: an 8 MiB kernel buffer,
        // so a burst at full speed is not dropped.
        let cmd = ns.command("tcpdump", &["-i", iface, "-n", "-U", "-B", "8192", "-w", file.to_str().unwrap()]);
        let proc = Proc::spawn("tcpdump", cmd);
        proc.wait_for(&["listening on"], Duration::from_secs(10));
        Capture { proc, file, _dir: dir }
    }

    /// Stops tcpdump (SIGINT, as Ctrl-C), insists it dropped nothing, and returns the IPv4
    /// packets it captured.
    pub fn stop(mut self) -> Vec<Packet> {
        self.proc.interrupt();
        assert!(self.proc.wait_exit(Duration::from_secs(10)).is_some(), "tcpdump did not stop");
        let dropped = self.proc.wait_logged(&["packets dropped by kernel"], Duration::from_secs(1));
        assert!(dropped.starts_with("0 "), "the capture is incomplete: {dropped}");
        let bytes = std::fs::read(&self.file).unwrap();
        pcap::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", self.file.display()))
    }
}
