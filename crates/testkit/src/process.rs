//! A child process with its stderr captured line by line, so tests wait on what it logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lines logged so far, and how many of the two output streams have ended.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: usize,
}

/// A running process; killed when dropped.
pub struct Proc {
    child: Child,
    log: Arc<(Mutex<Log>, Condvar)>,
    /// Where [`Proc::wait_for`] resumes: each call consumes lines up to its match.
    cursor: std::cell::Cell<usize>,
    name: String,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr captured into one log.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Plain text logs: tests match on them.
        cmd.env("NO_COLOR", "1");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let log = log.clone();
            std::thread::spawn(move || {
                let (lock, cond) = &*log;
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lock.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line);
                    cond.notify_all();
                }
                lock.lock().unwrap_or_else(|e| e.into_inner()).closed += 1;
                cond.notify_all();
            });
        }
        Proc { child, log, cursor: std::cell::Cell::new(0), name: name.to_string() }
    }

    /// Waits for the next line (after the previous `wait_for` match) containing every one of
    /// `needles`, and returns it. Panics with the log when the process exits or `timeout` passes.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let (index, line) = self.wait_from(self.cursor.get(), needles, timeout);
        self.cursor.set(index + 1);
        line
    }

    /// Waits for any line, logged before or after this call, containing every one of `needles`.
    pub fn wait_logged(&self, needles: &[&str], timeout: Duration) -> String {
        self.wait_from(0, needles, timeout).1
    }

    /// Like [`Proc::wait_logged`], but `None` when the process exits without logging such a line.
    pub fn logged_or_exit(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.scan(0, needles, timeout).map(|(_, line)| line)
    }

    fn wait_from(&self, from: usize, needles: &[&str], timeout: Duration) -> (usize, String) {
        self.scan(from, needles, timeout).unwrap_or_else(|| {
            panic!("{}: exited before logging {needles:?}; log:\n{}", self.name, self.log_text())
        })
    }

    fn scan(&self, from: usize, needles: &[&str], timeout: Duration) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.log;
        let mut log = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = from;
        loop {
            while next < log.lines.len() {
                if needles.iter().all(|n| log.lines[next].contains(n)) {
                    return Some((next, log.lines[next].clone()));
                }
                next += 1;
            }
            if log.closed == 2 {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let text = log.lines.join("\n");
                drop(log);
                panic!("{}: no line with {needles:?} within {timeout:?}; log:\n{text}", self.name);
            }
            log = cond.wait_timeout(log, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Every line logged so far.
    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap_or_else(|e| e.into_inner()).lines.join("\n")
    }

    /// Lines logged so far that contain every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect()
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself (its output streams close first), at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        {
            let (lock, cond) = &*self.log;
            let mut log = lock.lock().unwrap_or_else(|e| e.into_inner());
            while log.closed < 2 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                log = cond.wait_timeout(log, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
        self.child.wait().ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL) and reaps it: a server that dies without a word.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
        assert!(status.success(), "{}: kill -INT {pid} failed", self.name);
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

/// How much of a tlsgate's log a failing test prints.
const LOG_TAIL: usize = 200;

/// The tlsgate binary under test, with its log checked for panics when dropped (and printed when
/// the test fails).
pub struct Tlsgate {
    pub proc: Proc,
}

impl Tlsgate {
    /// Runs `tlsgate <args>` (the binary path comes from the test crate's `CARGO_BIN_EXE_tlsgate`).
    pub fn start(bin: &str, args: &[&str]) -> Tlsgate {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Tlsgate { proc: Proc::spawn("tlsgate", cmd) }
    }

    /// `tlsgate [global…] terminate --listen 127.0.0.1:0 --cert … --key … --backend … [extra…]`,
    /// started and listening; returns it with its address.
    pub fn terminate(
        bin: &str,
        global: &[&str],
        (cert, key): (&std::path::Path, &std::path::Path),
        backend: &str,
        extra: &[&str],
    ) -> (Tlsgate, std::net::SocketAddr) {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut args = global.to_vec();
        args.extend_from_slice(&["terminate", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key]);
        args.extend_from_slice(&["--backend", backend]);
        args.extend_from_slice(extra);
        let gate = Tlsgate::start(bin, &args);
        let addr = gate.listening(None);
        (gate, addr)
    }

    /// The built-in HTTP backend (`tlsgate backend`, answering `hello from <name>`) on `listen`;
    /// returns it with the address it bound.
    pub fn backend(bin: &str, listen: &str, name: &str) -> (Tlsgate, String) {
        let b = Tlsgate::start(bin, &["backend", "--listen", listen, "--name", name]);
        let line = b.proc.wait_for(&["backend listening"], Duration::from_secs(30));
        let addr = Proc::field(&line, "addr").unwrap_or_else(|| panic!("no addr in {line}"));
        (b, addr)
    }

    /// Runs a prepared command (e.g. `ip netns exec … tlsgate …`) as the tlsgate under test.
    pub fn start_command(cmd: Command) -> Tlsgate {
        Tlsgate { proc: Proc::spawn("tlsgate", cmd) }
    }

    /// Waits for the `listening` line of the listener named `name` (or any listener when `None`)
    /// and returns its address.
    pub fn listening(&self, name: Option<&str>) -> std::net::SocketAddr {
        let owned;
        // "listener=" too: the admin server's and the demo backend's "listening" lines have none.
        let mut needles = vec!["listening", "listener="];
        if let Some(n) = name {
            owned = format!("listener={n}");
            needles.push(&owned);
        }
        let line = self.proc.wait_logged(&needles, Duration::from_secs(30));
        Proc::field(&line, "addr").and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no addr in {line}"))
    }
}

impl Drop for Tlsgate {
    fn drop(&mut self) {
        let log = self.proc.log_text();
        if !std::thread::panicking() {
            assert!(!log.contains("panicked"), "tlsgate panicked:\n{log}");
        } else {
            // A test failed with this tlsgate running: its log (the end of it) goes with the failure.
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!("--- tlsgate's log, its last {} lines ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}
