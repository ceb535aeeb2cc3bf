//! tcpdump on one interface of a namespace, written to a pcap file and read back with
//! [`crate::pcap`] once stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::netns::Netns;
use crate::pcap::{self, Packet};
use crate::process::Proc;

static NEXT_MARK: AtomicU16 = AtomicU16::new(0);

/// Sends one UDP datagram to the limited broadcast address out of interface `argv[1]`, port
/// `argv[2]`.
const MARK: &str = "import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[1].encode())
s.sendto(b'end of capture', ('255.255.255.255', int(sys.argv[2])))";

pub struct Capture<'a> {
    ns: &'a Netns,
    iface: String,
    proc: Proc,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl<'a> Capture<'a> {
    /// Starts capturing every frame on `iface` in `ns`; returns once tcpdump says it listens.
    pub fn start(ns: &'a Netns, iface: &str) -> Capture<'a> {
        let dir = tempfile::Builder::new().prefix("tlsgate-pcap-").tempdir().unwrap();
        let file = dir.path().join(format!("{iface}.pcap"));
        // -n: no name lookups; -l: lines not held in a buffer; -U: each packet written as it comes; --immediate-mode: packets
        // handed over as they arrive, not in batches; --print: a line per packet as well, for
        // `stop` to wait on; -B: an 8 MiB kernel buffer, so a burst at full speed is not dropped.
        let args = [
            "-i",
            iface,
            "-n",
            "-l",
            "-U",
            "--immediate-mode",
            "--print",
            "-B",
            "8192",
            "-w",
            file.to_str().unwrap(),
        ];
        let proc = Proc::spawn("tcpdump", ns.command("tcpdump", &args));
        proc.wait_for(&["listening on"], Duration::from_secs(10));
        Capture { ns, iface: iface.to_string(), proc, file, _dir: dir }
    }

    /// Stops tcpdump, insists it dropped nothing, and returns the IPv4 packets it captured.
    /// tcpdump quits on SIGINT without reading what the kernel still holds for it, so a broadcast
    /// sent out of the interface last, and printed by tcpdump, first proves it read everything
    /// sent before.
    pub fn stop(mut self) -> Vec<Packet> {
        let port = (20_000 + NEXT_MARK.fetch_add(1, Ordering::Relaxed) % 10_000).to_string();
        self.ns.must("python3", &["-c", MARK, &self.iface, &port]);
        self.proc.wait_logged(&[&format!("> 255.255.255.255.{port}: UDP")], Duration::from_secs(10));
        self.proc.interrupt();
        assert!(self.proc.wait_exit(Duration::from_secs(10)).is_some(), "tcpdump did not stop");
        let dropped = self.proc.wait_logged(&["packets dropped by kernel"], Duration::from_secs(1));
        assert!(dropped.starts_with("0 "), "the capture is incomplete: {dropped}");
        let bytes = std::fs::read(&self.file).unwrap();
        pcap::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", self.file.display()))
    }
}
