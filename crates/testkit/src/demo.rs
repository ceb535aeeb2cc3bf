//! `tlsgate demo` as a newcomer uses it: the curl command it prints, run as printed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::clients::describe;
use crate::process::Proc;

/// What the demo's built-in backend answers to `GET /`.
pub const BODY: &str = "hello from tlsgate demo backend\n";

/// Waits (at most `timeout`) for the demo's `curl --cacert CA URL` line, runs it exactly as
/// printed with `sh -c`, as a pasted command would run, asserts that it gets the backend's answer,
/// and returns the CA path it names.
pub fn run_printed_curl(demo: &Proc, timeout: Duration) -> PathBuf {
    let line = demo.wait_for(&["curl --cacert"], timeout);
    demo.wait_logged(&["listening", "listener=demo"], Duration::from_secs(30));
    let command = line.trim();
    let out = Command::new("sh").args(["-c", command]).output().expect("sh runs");
    assert!(out.status.success(), "`{command}` failed: {}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY, "`{command}`");
    let ca = command.split_whitespace().nth(2).unwrap_or_else(|| panic!("no CA in `{command}`"));
    PathBuf::from(ca)
}
