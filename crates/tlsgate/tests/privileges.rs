//! Started as root with a user to run as, tlsgate binds its listeners and then becomes that user
//! on every thread, keeping only what its mode needs: no capability at all for terminate,
//! CAP_NET_ADMIN alone for a transparent originate that marks its connections (and that worker
//! threads can still use it: marked connections go through). An unknown user stops the start.
//! Read from /proc/PID/task/*/status.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const CAP_NET_ADMIN: u64 = 1 << 12;

/// `nobody` and its group, looked up as `id` sees them.
fn nobody() -> (String, String) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        assert!(out.status.success(), "no user nobody on this machine");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    (id("-u"), id("-g"))
}

/// One `Key: value` of every thread of `pid`, as the status files show them.
fn per_thread(pid: u32, key: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
        values.insert(line[key.len() + 1..].split_whitespace().collect::<Vec<_>>().join(" "));
    }
    values
}

fn caps(pid: u32, set: &str) -> BTreeSet<u64> {
    per_thread(pid, set).iter().map(|v| u64::from_str_radix(v, 16).unwrap()).collect()
}

fn assert_runs_as(pid: u32, uid: &str, gid: &str) {
    assert_eq!(per_thread(pid, "Uid"), BTreeSet::from([format!("{uid} {uid} {uid} {uid}")]));
    assert_eq!(per_thread(pid, "Gid"), BTreeSet::from([format!("{gid} {gid} {gid} {gid}")]));
    assert!(!per_thread(pid, "Groups").iter().any(|g| g.split(' ').any(|g| g == "0")), "still in group root");
}

#[test]
fn terminate_drops_to_the_user_with_no_capabilities() {
    let (uid, gid) = nobody();
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "unprivileged");
    let config = format!(
        r#"
[process]
user = "nobody"

[terminate]
[[terminate.listener]]
name = "web"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  default = true
  [[terminate.listener.route]]
  backends = ["{backend}"]
"#
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let config = pki.path("tlsgate.toml");
    let gate = Tlsgate::start(BIN, &["terminate", "--config", config.to_str().unwrap()]);
    let port = gate.listening(Some("web")).port();
    let dropped = gate.proc.wait_logged(&["privileges dropped"], Duration::from_secs(30));
    assert!(dropped.contains(&format!("uid={uid}")) && dropped.contains("capabilities=none"), "{dropped}");

    let pid = gate.proc.pid();
    assert_runs_as(pid, &uid, &gid);
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(caps(pid, set), BTreeSet::from([0]), "{set} of some thread");
    }

    let get = || {
        curl(&[
            "--cacert",
            pki.ca(),
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}/"),
        ])
    };
    // Still serving: the key was read before the switch.
    let out = get();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from unprivileged\n");

    // A reload reads the files as the new user, who may not: refused, the old config serves on.
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    let refused = gate.proc.wait_logged(&["reload refused"], Duration::from_secs(30));
    assert!(refused.contains("permission denied"), "{refused}");
    let out = get();
    assert!(out.status.success(), "after the refused reload: {}", describe(&out));
}

#[test]
fn an_unknown_user_stops_the_start() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let mut gate = Tlsgate::start(
        BIN,
        &[
            "--user",
            "tlsgate-no-such-user",
            "terminate",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--backend",
            "127.0.0.1:9",
        ],
    );
    let status = gate.proc.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let log = gate.proc.log_text();
    assert!(log.contains("config error: [process] user \"tlsgate-no-such-user\": no such user"), "{log}");
}

/// The transparent originate of docs/transparent.md, on a client host whose REDIRECT rule skips
/// marked connections: run as nobody it keeps CAP_NET_ADMIN, and only that, on every thread, and
/// its worker threads still mark outbound connections (else they would fail or loop back).
#[test]
fn transparent_originate_keeps_only_net_admin() {
    const FAR: &str = "10.203.0.2";
    let (uid, gid) = nobody();
    let client = Netns::new("privc");
    let far = Netns::new("privf");
    client.link("10.203.0.1/24", &far, &format!("{FAR}/24"));
    let backend = Tlsgate::start_command(
        far.command(BIN, &["backend", "--listen", &format!("{FAR}:8080"), "--name", "far"]),
    );
    backend.proc.wait_for(&["backend listening"], Duration::from_secs(30));

    let pki = Pki::new();
    let config = format!(
        r#"
[[originate.transparent]]
name = "mesh"
listen = "127.0.0.1:15001"
ca = "{ca}"
outbound_mark = 1337
  [[originate.transparent.rule]]
  ports = ["8080"]
  action = "passthrough"
"#,
        ca = pki.ca()
    );
    std::fs::write(pki.path("mesh.toml"), config).unwrap();
    let redirect =
        "-t nat -A OUTPUT -p tcp -d 10.203.0.0/24 -m mark ! --mark 1337 -j REDIRECT --to-ports 15001";
    client.must("iptables", &redirect.split(' ').collect::<Vec<_>>());
    let gate = Tlsgate::start_command(client.command(
        BIN,
        &[
            "--workers",
            "4",
            "--user",
            "nobody",
            "originate",
            "--config",
            pki.path("mesh.toml").to_str().unwrap(),
        ],
    ));
    let dropped = gate.proc.wait_logged(&["privileges dropped"], Duration::from_secs(30));
    assert!(dropped.contains("capabilities=CAP_NET_ADMIN"), "{dropped}");
    let pid = gate.proc.pid();
    assert_runs_as(pid, &uid, &gid);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(caps(pid, set), BTreeSet::from([CAP_NET_ADMIN]), "{set} of some thread");
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(caps(pid, set), BTreeSet::from([0]), "{set} of some thread");
    }

    // Several connections, so that more than one worker thread marks one.
    for _ in 0..8 {
        let out = client.run("curl", &["-sS", "--max-time", "10", &format!("http://{FAR}:8080/")]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from far\n");
        // Its decision, read from the log before the next one (the log is read asynchronously).
        gate.proc.wait_for(&["policy decision", "action=passthrough"], Duration::from_secs(10));
    }
    let decided = gate.proc.lines_with(&["policy decision", "action=passthrough"]);
    assert_eq!(decided.len(), 8, "{}", gate.proc.log_text());
    assert!(Proc::field(&decided[0], "dst").is_some_and(|d| d == format!("{FAR}:8080")), "{}", decided[0]);
}
