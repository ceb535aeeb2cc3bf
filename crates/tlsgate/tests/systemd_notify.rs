//! `Type=notify`: with NOTIFY_SOCKET set, tlsgate tells the service manager READY=1 once its
//! listener is bound (a TLS request right after it succeeds), pings WATCHDOG=1 at half of
//! WATCHDOG_USEC, sends RELOADING=1 with MONOTONIC_USEC and then READY=1 around a SIGHUP reload,
//! and STOPPING=1 on SIGTERM. The test plays the service manager on its own datagram socket.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::net::free_port;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

/// The service manager's end: every datagram tlsgate sends, in order.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    /// The next datagram, `None` after `timeout` without one.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next datagram that is not a watchdog ping, within `timeout`.
    fn next_state(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no notification within {timeout:?}");
            let msg = self.next(left).unwrap_or_else(|| panic!("no notification within {timeout:?}"));
            if msg != "WATCHDOG=1\n" {
                return msg;
            }
        }
    }
}

fn kill(pid: u32, signal: &str) {
    assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn ready_watchdog_reloading_stopping() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "notified");
    let socket_path = pki.path("notify.sock");
    let manager = Manager { socket: UnixDatagram::bind(&socket_path).unwrap() };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");

    let mut cmd = Command::new(BIN);
    cmd.args(["terminate", "--listen", &listen, "--backend", &backend]);
    cmd.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    // A watchdog of 400 ms: pings every 200 ms.
    cmd.env("NOTIFY_SOCKET", &socket_path).env("WATCHDOG_USEC", "400000");
    let mut gate = Tlsgate::start_command(cmd);

    // READY=1 comes first, and only once the listener takes connections.
    assert_eq!(manager.next(Duration::from_secs(30)).as_deref(), Some("READY=1\n"));
    let url = format!("https://localhost:{port}/");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let out = curl(&["--cacert", pki.ca(), "--resolve", &resolve, &url]);
    assert!(out.status.success(), "request right after READY=1: {}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from notified\n");

    // Watchdog pings, at least two within a few periods.
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pings < 2 && Instant::now() < deadline {
        match manager.next(Duration::from_secs(2)).as_deref() {
            Some("WATCHDOG=1\n") => pings += 1,
            other => panic!("expected only watchdog pings while idle, got {other:?}"),
        }
    }
    assert_eq!(pings, 2, "watchdog pings");

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 once the reload is done.
    kill(gate.proc.pid(), "-HUP");
    let reloading = manager.next_state(Duration::from_secs(10));
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading:?}");
    let usec =
        lines.next().and_then(|l| l.strip_prefix("MONOTONIC_USEC=")).and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "MONOTONIC_USEC missing: {reloading:?}");
    assert_eq!(manager.next_state(Duration::from_secs(10)), "READY=1\n");
    gate.proc.wait_logged(&["reloaded", "section=terminate"], Duration::from_secs(10));
    let out = curl(&["--cacert", pki.ca(), "--resolve", &resolve, &url]);
    assert!(out.status.success(), "request after the reload: {}", describe(&out));

    // SIGTERM: STOPPING=1, then a clean exit.
    kill(gate.proc.pid(), "-TERM");
    assert_eq!(manager.next_state(Duration::from_secs(10)), "STOPPING=1\n");
    let status = gate.proc.wait_exit(Duration::from_secs(30)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}
