//! Three `tlsgate terminate` instances of one fleet behind HAProxy in TCP mode (`balance
//! random`), sharing resumption through a password-protected redis-server: Python clients
//! resume with the ticket (TLS 1.3) or session ID (TLS 1.2) one instance issued on whichever
//! instance they land; ticket keys rotate; Redis stopped and started again; an instance
//! SIGKILLed under load.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tlsgate_testkit::clients::curl;
use tlsgate_testkit::docs::support_script;
use tlsgate_testkit::net::free_port;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "fleet-test-pw";

struct Redis {
    proc: Proc,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        Redis::start_with(port, None)
    }

    /// With `tls` (certificate, key): TLS only, on `port`.
    fn start_with(port: u16, tls: Option<(&std::path::Path, &std::path::Path)>) -> Redis {
        let mut cmd = Command::new("redis-server");
        let port_s = port.to_string();
        match tls {
            None => cmd.args(["--port", &port_s]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &port_s, "--tls-auth-clients", "no"])
                .args(["--tls-cert-file", cert.to_str().unwrap(), "--tls-key-file", key.to_str().unwrap()]),
        };
        cmd.args(["--bind", "127.0.0.1", "--requirepass", PASSWORD]);
        cmd.args(["--save", "", "--appendonly", "no"]);
        let proc = Proc::spawn("redis-server", cmd);
        proc.wait_logged(&["Ready to accept connections"], WAIT);
        Redis { proc, port }
    }
}

struct Instance {
    gate: Tlsgate,
    admin: SocketAddr,
    _backend: Tlsgate,
}

struct Fleet {
    pki: Pki,
    redis: Option<Redis>,
    instances: Vec<Instance>,
    _haproxy: Proc,
    front: SocketAddr,
}

fn fleet(rotation: Option<&str>) -> Fleet {
    fleet_with(rotation, false)
}

/// Three instances behind HAProxy; with `tls`, Redis is reached as `rediss://` (the test CA).
fn fleet_with(rotation: Option<&str>, tls: bool) -> Fleet {
    let pki = Pki::new();
    let (cert, key) = pki.server("fleet", &["localhost", "127.0.0.1"]);
    let fleet_key = pki.path("fleet-key.bin");
    std::fs::write(&fleet_key, tlsgate_tls::fleet::random_key()).unwrap();
    std::fs::set_permissions(&fleet_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (redis, url) = if tls {
        let (rcert, rkey) = pki.server("redis", &["127.0.0.1"]);
        let r = Redis::start_with(free_port(), Some((&rcert, &rkey)));
        let url = format!("rediss://:{PASSWORD}@127.0.0.1:{}/0", r.port);
        (r, url)
    } else {
        let r = Redis::start(free_port());
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", r.port);
        (r, url)
    };
    let mut instances = Vec::new();
    for name in ["fleet-a", "fleet-b", "fleet-c"] {
        let (backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", name);
        let mut extra = vec!["--fleet-redis", &url, "--fleet-key", fleet_key.to_str().unwrap()];
        if tls {
            extra.extend_from_slice(&["--fleet-redis-ca", pki.ca()]);
        }
        extra.extend_from_slice(&["--admin", "127.0.0.1:0"]);
        if let Some(r) = rotation {
            extra.extend_from_slice(&["--ticket-rotation", r]);
        }
        let (gate, _) = Tlsgate::terminate(BIN, &[], (&cert, &key), &backend_addr, &extra);
        let admin = Proc::field(&gate.proc.wait_logged(&["admin listening"], WAIT), "addr").unwrap();
        gate.proc.wait_logged(&["fleet: Redis reachable"], WAIT);
        instances.push(Instance { admin: admin.parse().unwrap(), gate, _backend: backend });
    }
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
         retries 3\n  option redispatch\nlisten fleet\n  bind {front}\n  balance random\n"
    );
    for (i, inst) in instances.iter().enumerate() {
        let addr = inst.gate.listening(None);
        cfg.push_str(&format!("  server s{i} {addr} check inter 200ms fall 1 rise 1\n"));
    }
    let cfg_path = pki.path("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f", cfg_path.to_str().unwrap()]);
    let haproxy = Proc::spawn("haproxy", cmd);
    tlsgate_testkit::net::wait_accepting(front, WAIT);
    Fleet { pki, redis: Some(redis), instances, _haproxy: haproxy, front }
}

#[derive(Debug, Default)]
struct Tally {
    connections: u64,
    failures: u64,
    resumed: u64,
    cross: u64,
    attempts: u64,
    /// Resumptions not tried: their client's first handshake failed.
    skipped: u64,
    errors: String,
}

fn client_cmd(f: &Fleet, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    let port = f.front.port().to_string();
    cmd.arg(support_script("fleet_client.py")).args(["127.0.0.1", &port, f.pki.ca()]).args(args);
    cmd
}

fn field(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let start = json.find(&pat).unwrap_or_else(|| panic!("{key} in {json}")) + pat.len();
    json[start..].split([',', '}']).next().unwrap().trim().parse().unwrap()
}

fn parse(out: &std::process::Output) -> Tally {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "client failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    tally(text.lines().last().unwrap_or(""))
}

fn tally(line: &str) -> Tally {
    Tally {
        connections: field(line, "connections"),
        failures: field(line, "failures"),
        resumed: field(line, "resumed"),
        cross: field(line, "cross"),
        attempts: field(line, "attempts"),
        skipped: field(line, "skipped"),
        errors: line.to_string(),
    }
}

fn bulk(f: &Fleet, clients: usize, version: &str) -> Tally {
    let clients = clients.to_string();
    parse(&client_cmd(f, &["bulk", &clients, "5", version]).output().unwrap())
}

fn metrics(i: &Instance) -> String {
    String::from_utf8_lossy(&curl(&["-sS", &format!("http://{}/metrics", i.admin)]).stdout).into_owned()
}

fn status_json(i: &Instance) -> String {
    String::from_utf8_lossy(&curl(&["-sS", &format!("http://{}/status.json", i.admin)]).stdout).into_owned()
}

fn assert_shared(t: &Tally, clients: u64, what: &str) {
    println!("{what}: {t:?}");
    assert_eq!(t.failures, 0, "{what}: {}", t.errors);
    assert_eq!(t.attempts, clients * 5);
    assert!(t.resumed * 100 >= t.attempts * 95, "{what}: {} of {} resumed", t.resumed, t.attempts);
    // Random balancing over three: about two thirds land elsewhere than the issuer.
    assert!(t.cross * 2 > t.resumed, "{what}: only {} of {} resumed elsewhere", t.cross, t.resumed);
}

#[test]
fn tls13_tickets_from_one_instance_resume_on_the_others() {
    let f = fleet(None);
    let t = bulk(&f, 600, "1.3");
    assert_shared(&t, 600, "TLS 1.3 tickets");
    let accepted: u64 = f
        .instances
        .iter()
        .map(|i| {
            let m = metrics(i);
            m.lines()
                .find(|l| l.starts_with("tlsgate_fleet_resumptions_total{result=\"ticket_accepted\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .map_or(0, |v| v.parse().unwrap())
        })
        .sum();
    assert!(accepted >= t.resumed, "metric counts {accepted} accepted tickets, clients saw {}", t.resumed);
}

#[test]
fn tls12_session_ids_from_one_instance_resume_on_the_others() {
    let f = fleet(None);
    let t = bulk(&f, 600, "1.2");
    assert_shared(&t, 600, "TLS 1.2 session IDs");
    let m: String = f.instances.iter().map(metrics).collect();
    assert!(m.contains("tlsgate_fleet_resumptions_total{result=\"session_redis\"}"), "{m}");
}

#[test]
fn rediss_with_auth_shares_tickets_too() {
    let f = fleet_with(None, true);
    let t = bulk(&f, 100, "1.3");
    assert_shared(&t, 100, "TLS 1.3 tickets, Redis over TLS");
    for i in &f.instances {
        assert!(!i.gate.proc.log_text().contains(PASSWORD), "the Redis password is logged");
    }
}

#[test]
fn tickets_resume_one_rotation_later_but_not_two() {
    let f = fleet(Some("5s"));
    // The ticket is taken right after every instance has moved to a new period, so it is issued
    // under that period's key (an instance notices a new period up to a refresh late: a ticket
    // taken by the clock alone early in a period may carry the previous one's key).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let period = now / 5 + 1;
    let fresh = format!("period={period}");
    for i in &f.instances {
        i.gate.proc.wait_logged(&["ticket key rotated", &fresh], WAIT);
    }
    let mut child = client_cmd(&f, &["hold"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = out.next().unwrap().unwrap();
    assert!(ready.starts_with("ready "), "{ready}");
    let mut resume = || {
        writeln!(stdin, "resume").unwrap();
        out.next().unwrap().unwrap()
    };
    // Every instance has moved to the next period: the ticket's key is the previous one.
    let next = format!("period={}", period + 1);
    for i in &f.instances {
        i.gate.proc.wait_logged(&["ticket key rotated", &next], WAIT);
    }
    for _ in 0..3 {
        let answer = resume();
        assert!(answer.starts_with("resumed yes"), "one period later: {answer}");
    }
    let after = format!("period={}", period + 2);
    for i in &f.instances {
        i.gate.proc.wait_logged(&["ticket key rotated", &after], WAIT);
    }
    for _ in 0..3 {
        let answer = resume();
        assert!(answer.starts_with("resumed no"), "two periods later: {answer}");
    }
    drop(stdin);
    let _ = child.wait();
}

#[test]
fn without_redis_every_instance_serves_and_sharing_returns_with_it() {
    let mut f = fleet(None);
    let port = f.redis.as_ref().unwrap().port;
    // Stopped mid-run, under TLS 1.2 load (whose session lookups go to Redis): nothing fails.
    let mut load = client_cmd(&f, &["bulk", "200", "5", "1.2"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(load.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("progress"), "{line}");
    f.redis.as_mut().unwrap().proc.kill();
    f.redis = None;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(load.wait().unwrap().success());
    let t = tally(rest.lines().last().unwrap_or(""));
    println!("Redis stopped mid-run: {t:?}");
    assert_eq!((t.failures, t.connections), (0, 1200), "{}", t.errors);
    for i in &f.instances {
        i.gate.proc.wait_for(&["fleet: cannot reach Redis; issuing tickets with the last keys held"], WAIT);
    }
    // Full handshakes everywhere, and resumption under the keys each still holds.
    let t = bulk(&f, 100, "1.3");
    println!("Redis down: {t:?}");
    assert_eq!(t.failures, 0, "{}", t.errors);
    assert!(t.resumed * 100 >= t.attempts * 95, "{} of {} resumed with Redis down", t.resumed, t.attempts);
    for i in &f.instances {
        assert!(metrics(i).contains("tlsgate_fleet_redis_up 0"), "{}", metrics(i));
        assert!(status_json(i).contains("\"reachable\":false"), "{}", status_json(i));
    }
    // Redis back, empty: the instances set their keys again and share.
    f.redis = Some(Redis::start(port));
    for i in &f.instances {
        i.gate.proc.wait_for(&["fleet: Redis reachable"], WAIT);
    }
    let t = bulk(&f, 200, "1.2");
    assert_shared(&t, 200, "TLS 1.2 after Redis returned");
    for i in &f.instances {
        assert!(metrics(i).contains("tlsgate_fleet_redis_up 1"));
    }
}

#[test]
fn an_instance_killed_under_load_fails_only_its_own_connections() {
    let mut f = fleet(None);
    let workers = 8;
    let mut load = client_cmd(&f, &["bulk", "300", "5", "1.3", &workers.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(load.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("progress"), "{line}");
    f.instances[1].gate.proc.kill();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(load.wait().unwrap().success());
    let last = rest.lines().last().unwrap_or("").to_string();
    let t = tally(&last);
    println!("one instance killed: {t:?}");
    // At most the connections in flight on it when it died (one per client worker).
    assert!(t.failures <= workers, "{} failed: {}", t.failures, t.errors);
    assert_eq!(t.connections + t.skipped, 300 * 6, "every connection tried or accounted for");
}

#[test]
fn an_instance_started_without_redis_serves_with_a_key_of_its_own() {
    let pki = Pki::new();
    let (cert, key) = pki.server("alone", &["localhost"]);
    let fleet_key = pki.path("fleet-key.bin");
    std::fs::write(&fleet_key, tlsgate_tls::fleet::random_key()).unwrap();
    std::fs::set_permissions(&fleet_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", tlsgate_testkit::net::dead_port());
    let (_backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "alone");
    let extra = ["--fleet-redis", &url, "--fleet-key", fleet_key.to_str().unwrap(), "--admin", "127.0.0.1:0"];
    let (gate, addr) = Tlsgate::terminate(BIN, &[], (&cert, &key), &backend_addr, &extra);
    gate.proc.wait_logged(&["fleet: cannot reach Redis; issuing tickets with the last keys held"], WAIT);
    let url = format!("https://localhost:{}/", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let out = curl(&["-sS", "--cacert", pki.ca(), "--resolve", &resolve, &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from alone\n", "{}", gate.proc.log_text());
    let admin = Proc::field(&gate.proc.wait_logged(&["admin listening"], WAIT), "addr").unwrap();
    let inst = Instance { gate, admin: admin.parse().unwrap(), _backend };
    assert!(metrics(&inst).contains("tlsgate_fleet_redis_up 0"));
    let status = status_json(&inst);
    assert!(
        status.contains("\"reachable\":false") && status.contains("\"issuing_shared\":false"),
        "{status}"
    );
    assert!(!inst.gate.proc.log_text().contains(PASSWORD), "the Redis password is logged");
}

#[test]
fn a_fleet_key_readable_by_others_is_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.server("loose", &["localhost"]);
    let fleet_key = pki.path("fleet-key.bin");
    std::fs::write(&fleet_key, tlsgate_tls::fleet::random_key()).unwrap();
    std::fs::set_permissions(&fleet_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = [
        "terminate",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--backend",
        "127.0.0.1:9",
        "--fleet-redis",
        "redis://127.0.0.1:9/0",
        "--fleet-key",
        fleet_key.to_str().unwrap(),
    ];
    let mut gate = Tlsgate::start(BIN, &args);
    let status = gate.proc.wait_exit(WAIT).expect("exits");
    assert!(!status.success());
    let log = gate.proc.log_text();
    assert!(log.contains("[fleet]") && log.contains("fleet-key.bin"), "{log}");
}
