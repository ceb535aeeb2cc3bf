//! Real TLS clients: curl and `openssl s_client`, on this host or inside a network namespace.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::netns::Netns;

/// Runs curl with `args` (adds `-sS`); the output is returned whatever the exit status.
/// `--ipv4`: the servers under test listen on 127.0.0.1, and "localhost" would otherwise try
/// `::1` first, where the same port number may belong to another process.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--ipv4"]).args(args).output().expect("curl is installed")
}

/// curl GET `https://name:port/`, `name` resolved to 127.0.0.1 and verified against `ca`, with
/// `extra` arguments before the URL.
pub fn curl_name(ca: &str, name: &str, port: u16, extra: &[&str]) -> Output {
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}/");
    let mut args = vec!["--cacert", ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// [`curl`] inside the network namespace `ns`.
pub fn curl_in(ns: &Netns, args: &[&str]) -> Output {
    ns.command("curl", &["-sS", "--ipv4"]).args(args).output().expect("curl is installed")
}

/// Runs `openssl s_client` with `args`, writing `input` to its stdin and closing it.
pub fn s_client(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client").args(args);
    run_with_input(cmd, input)
}

/// [`s_client`] inside the network namespace `ns`.
pub fn s_client_in(ns: &Netns, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = ns.command("openssl", &["s_client"]);
    cmd.args(args);
    run_with_input(cmd, input)
}

fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// stdout and stderr of a finished client, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(2000)]),
        String::from_utf8_lossy(&out.stderr)
    )
}
