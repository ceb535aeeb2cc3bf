//! A child process with its stderr captured line by line, so tests wait on what it logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running process; killed when dropped.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Proc {
    /// Starts `cmd` with stderr captured (stdout too, merged into the same log).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Plain text logs: tests match on them.
        cmd.env("NO_COLOR", "1");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for (stream, tx, log) in [
            (
                Box::new(out) as Box<dyn std::io::Read + Send>,
                tx.clone(),
                log.clone(),
            ),
            (Box::new(err), tx, log.clone()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    if tx.send(line).is_err() {
                        // Nobody waits any more; keep recording into the log.
                    }
                }
            });
        }
        Proc {
            child,
            lines: rx,
            log,
            name: name.to_string(),
        }
    }

    /// Waits for a line containing every one of `needles`, returning it. Panics with the log so far
    /// when the process exits or `timeout` passes first.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no line with {needles:?} within {timeout:?}; log:\n{}",
                        self.name,
                        self.log_text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: exited before logging {needles:?}; log:\n{}",
                        self.name,
                        self.log_text()
                    )
                }
            }
        }
    }

    /// Every line logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Lines logged so far that contain every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect()
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of `key=` in a log line, e.g. `addr` in `listening listener=x addr=127.0.0.1:4433`.
    pub fn field(line: &str, key: &str) -> Option<String> {
        let pat = format!("{key}=");
        let start = line.find(&pat)? + pat.len();
        let rest = &line[start..];
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        Some(rest.split([' ', '"']).next().unwrap_or("").to_string())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tlsgate binary under test, with its log checked for panics when dropped.
pub struct Tlsgate {
    pub proc: Proc,
}

impl Tlsgate {
    /// Runs `tlsgate <args>` (the binary path comes from the test crate's `CARGO_BIN_EXE_tlsgate`).
    pub fn start(bin: &str, args: &[&str]) -> Tlsgate {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Tlsgate {
            proc: Proc::spawn("tlsgate", cmd),
        }
    }

    /// Waits for the `listening` line of the listener named `name` (or any listener when `None`)
    /// and returns its address.
    pub fn listening(&self, name: Option<&str>) -> std::net::SocketAddr {
        let owned;
        let mut needles = vec!["listening"];
        if let Some(n) = name {
            owned = format!("listener={n}");
            needles.push(&owned);
        }
        let line = self.proc.wait_for(&needles, Duration::from_secs(30));
        Proc::field(&line, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {line}"))
    }
}

impl Drop for Tlsgate {
    fn drop(&mut self) {
        let log = self.proc.log_text();
        if !std::thread::panicking() {
            assert!(!log.contains("panicked"), "tlsgate panicked:\n{log}");
        }
    }
}
