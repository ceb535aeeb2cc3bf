//! Three `tlsgate terminate` instances of one fleet, each in its own network namespace, behind
//! docs/fleet.md's nftables `numgen random` DNAT and its health-check loop in a fourth (with a
//! password-protected redis-server; HAProxy there too for the TLS 1.2 test), the clients in a
//! fifth: Python clients resume with the ticket (TLS 1.3) or session ID (TLS 1.2) one instance
//! issued on whichever instance they land; ticket keys rotate; Redis stopped and started again; an instance SIGKILLed under load, each
//! failed connection traced to the instance the balancer sent it to.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tlsgate_testkit::clients::curl;
use tlsgate_testkit::docs::{all_blocks, repo_root, support_script};
use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "fleet-test-pw";
/// The fleet's address, as in docs/fleet.md: nothing holds it, the balancer's DNAT takes it.
const VIP: &str = "10.96.0.10";
/// The balancer's address on the clients' link; Redis listens there.
const BALANCER: &str = "10.90.0.1";
const REDIS_PORT: u16 = 6379;

/// Instance `i`'s address, on its own link to the balancer (docs/fleet.md's map).
fn member(i: usize) -> String {
    format!("10.90.{}.2", i + 1)
}

/// The docs/fleet.md block starting with `first`.
fn doc_block(first: &str) -> String {
    let all = all_blocks(&repo_root());
    let found: Vec<_> = all.iter().filter(|b| b.file == "docs/fleet.md" && b.first_line() == first).collect();
    assert_eq!(found.len(), 1, "docs/fleet.md: {} blocks start with {first:?}", found.len());
    found[0].text.clone()
}

/// The clients' namespace, the balancer's and one per instance, routed through the balancer:
/// clients 10.90.0.2/24, instance i 10.90.(i+1).2/24.
struct Net {
    client: Netns,
    balancer: Netns,
    members: Vec<Netns>,
}

impl Net {
    fn new() -> Net {
        let balancer = Netns::new("hnlb");
        let client = Netns::new("hncl");
        client.link("10.90.0.2/24", &balancer, &format!("{BALANCER}/24"));
        client.must("ip", &["route", "add", "default", "via", BALANCER]);
        balancer.must("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let members = (0..3)
            .map(|i| {
                let ns = Netns::new(&format!("hnm{i}"));
                let gw = format!("10.90.{}.1", i + 1);
                ns.link(&format!("{}/24", member(i)), &balancer, &format!("{gw}/24"));
                ns.must("ip", &["route", "add", "default", "via", &gw]);
                ns
            })
            .collect();
        Net { client, balancer, members }
    }

    /// docs/fleet.md's ruleset, and a set recording where each connection to the fleet went
    /// (client port . instance address), kept by the kernel: nothing to drop under load. Only
    /// opening SYNs: conntrack also picks up a stray mid-stream packet (a late ACK or RST after
    /// its entry ended) as "new", which the DNAT would send anywhere.
    fn balance(&self, dir: &std::path::Path) {
        let ruleset = doc_block(
            "# /etc/nftables.d/fleet.nft on the balancer: 10.96.0.10:443 spread over three instances.",
        );
        let record = "table ip fleet_record {\n  set flows { type inet_service . ipv4_addr; size 65535; flags dynamic; }\n  \
            chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
            ct state new ip saddr 10.90.0.0/24 tcp dport 443 tcp flags & (syn | ack) == syn add @flows { tcp sport . ip daddr }\n  }\n}\n";
        let path = dir.join("fleet.nft");
        std::fs::write(&path, format!("{ruleset}{record}")).unwrap();
        self.balancer.must("nft", &["-f", path.to_str().unwrap()]);
    }

    /// Client port -> every instance address a connection from that port was sent to.
    fn flows(&self) -> HashMap<u16, Vec<String>> {
        let out = self.balancer.run("nft", &["list", "set", "ip", "fleet_record", "flows"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nft list set: {}", String::from_utf8_lossy(&out.stderr));
        let mut flows: HashMap<u16, Vec<String>> = HashMap::new();
        let Some(start) = text.find("elements = {") else { return flows };
        let body = &text[start + "elements = {".len()..];
        for e in body[..body.find('}').unwrap()].split(',') {
            let (port, addr) = e.trim().split_once(" . ").unwrap_or_else(|| panic!("element {e:?}"));
            flows.entry(port.trim().parse().unwrap()).or_default().push(addr.trim().to_string());
        }
        flows
    }
}

struct Redis {
    proc: Proc,
}

impl Redis {
    /// In the balancer's namespace, on [`BALANCER`]; with `tls` (certificate, key): TLS only.
    fn start(ns: &Netns, tls: Option<(&std::path::Path, &std::path::Path)>) -> Redis {
        let port = REDIS_PORT.to_string();
        let mut args =
            vec!["--bind", BALANCER, "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"];
        match tls {
            None => args.extend_from_slice(&["--port", &port]),
            Some((cert, key)) => {
                args.extend_from_slice(&["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]);
                args.extend_from_slice(&["--tls-cert-file", cert.to_str().unwrap()]);
                args.extend_from_slice(&["--tls-key-file", key.to_str().unwrap()]);
            }
        }
        let proc = Proc::spawn("redis-server", ns.command("redis-server", &args));
        proc.wait_logged(&["Ready to accept connections"], WAIT);
        Redis { proc }
    }
}

struct Instance {
    gate: Tlsgate,
    addr: String,
    _backend: Tlsgate,
}

struct Fleet {
    pki: Pki,
    redis: Option<Redis>,
    instances: Vec<Instance>,
    /// docs/fleet.md's health-check loop, in the balancer's namespace, once started.
    health: Option<Proc>,
    /// HAProxy in TCP mode in the balancer's namespace, once started.
    haproxy: Option<Proc>,
    /// Where the clients connect: the nftables address, or HAProxy's once started.
    front: (String, u16),
    /// Last: the namespaces go once every process in them is gone.
    net: Net,
}

fn fleet(rotation: Option<&str>) -> Fleet {
    fleet_with(rotation, false)
}

/// Three instances behind the balancer; with `tls`, Redis is reached as `rediss://` (the test CA).
fn fleet_with(rotation: Option<&str>, tls: bool) -> Fleet {
    let net = Net::new();
    let pki = Pki::new();
    let (cert, key) = pki.server("fleet", &["localhost"]);
    let fleet_key = pki.path("fleet-key.bin");
    std::fs::write(&fleet_key, tlsgate_tls::fleet::random_key()).unwrap();
    std::fs::set_permissions(&fleet_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (redis, url) = if tls {
        let (rcert, rkey) = pki.server("redis", &[BALANCER]);
        let r = Redis::start(&net.balancer, Some((&rcert, &rkey)));
        (r, format!("rediss://:{PASSWORD}@{BALANCER}:{REDIS_PORT}/0"))
    } else {
        (Redis::start(&net.balancer, None), format!("redis://:{PASSWORD}@{BALANCER}:{REDIS_PORT}/0"))
    };
    let mut instances = Vec::new();
    for (i, ns) in net.members.iter().enumerate() {
        let name = format!("fleet-{}", ["a", "b", "c"][i]);
        let backend_args = ["backend", "--listen", "127.0.0.1:8080", "--name", &name];
        let backend = Tlsgate::start_command(ns.command(BIN, &backend_args));
        backend.proc.wait_for(&["backend listening"], WAIT);
        let addr = member(i);
        let (listen, admin) = (format!("{addr}:443"), format!("{addr}:9000"));
        let mut args = vec!["terminate", "--listen", &listen, "--cert", cert.to_str().unwrap()];
        args.extend_from_slice(&["--key", key.to_str().unwrap(), "--backend", "127.0.0.1:8080"]);
        args.extend_from_slice(&["--fleet-redis", &url, "--fleet-key", fleet_key.to_str().unwrap()]);
        if tls {
            args.extend_from_slice(&["--fleet-redis-ca", pki.ca()]);
        }
        args.extend_from_slice(&["--admin", &admin]);
        if let Some(r) = rotation {
            args.extend_from_slice(&["--ticket-rotation", r]);
        }
        let gate = Tlsgate::start_command(ns.command(BIN, &args));
        gate.listening(None);
        gate.proc.wait_logged(&["admin listening"], WAIT);
        gate.proc.wait_logged(&["fleet: Redis reachable"], WAIT);
        instances.push(Instance { gate, addr, _backend: backend });
    }
    net.balance(pki.dir.path());
    Fleet { pki, redis: Some(redis), instances, health: None, haproxy: None, front: (VIP.into(), 443), net }
}

impl Fleet {
    /// Starts docs/fleet.md's health-check loop on the balancer (only the test that kills an
    /// instance needs it: its probes cost CPU the others can use) and waits for its first round.
    fn start_health_check(&mut self) -> &Proc {
        let script = self.pki.path("fleet-health.sh");
        let first = "# fleet-health.sh on the balancer (needs curl and nft): the map follows the instances that answer.";
        std::fs::write(&script, doc_block(first)).unwrap();
        let cmd = self.net.balancer.command("bash", &[script.to_str().unwrap()]);
        let health = self.health.insert(Proc::spawn("fleet-health.sh", cmd));
        let all = (0..3).map(member).collect::<Vec<_>>().join(" ");
        health.wait_for(&[&format!("members: {all}")], WAIT);
        health
    }

    /// HAProxy in TCP mode (`balance random`, its own health checks) on the balancer, in front
    /// of the same instances, as docs/fleet.md's haproxy.cfg; the clients go through it from now.
    fn start_haproxy(&mut self) {
        let front = format!("{BALANCER}:8443");
        let mut cfg = format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
             retries 3\n  option redispatch\nlisten fleet\n  bind {front}\n  balance random\n"
        );
        for i in 0..3 {
            cfg.push_str(&format!("  server s{i} {}:443 check inter 200ms fall 1 rise 1\n", member(i)));
        }
        let path = self.pki.path("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let cmd = self.net.balancer.command("haproxy", &["-db", "-f", path.to_str().unwrap()]);
        self.haproxy = Some(Proc::spawn("haproxy", cmd));
        self.net.balancer.wait_listening(8443, WAIT);
        self.front = (BALANCER.into(), 8443);
    }
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
    /// The client's local port of each failed connection.
    failed_ports: Vec<u16>,
    errors: String,
}

/// fleet_client.py in the clients' namespace, against the fleet's address.
fn client_cmd(f: &Fleet, args: &[&str]) -> Command {
    let script = support_script("fleet_client.py");
    let port = f.front.1.to_string();
    let mut all = vec![script.to_str().unwrap(), &f.front.0, &port, f.pki.ca()];
    all.extend_from_slice(args);
    f.net.client.command("python3", &all)
}

fn parse(out: &std::process::Output) -> Tally {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "client failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    tally(text.lines().last().unwrap_or(""))
}

fn tally(line: &str) -> Tally {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
    Tally {
        connections: n("connections"),
        failures: n("failures"),
        resumed: n("resumed"),
        cross: n("cross"),
        attempts: n("attempts"),
        skipped: n("skipped"),
        failed_ports: v["failed_ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as u16)
            .collect(),
        errors: v["errors"].to_string(),
    }
}

fn bulk(f: &Fleet, clients: usize, version: &str) -> Tally {
    let clients = clients.to_string();
    parse(&client_cmd(f, &["bulk", &clients, "5", version]).output().unwrap())
}

/// `path` of instance `i`'s admin server, asked from its own namespace.
fn admin(f: &Fleet, i: usize, path: &str) -> String {
    let url = format!("http://{}:9000{path}", f.instances[i].addr);
    let out = f.net.members[i].run("curl", &["-sS", "--max-time", "10", &url]);
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metrics(f: &Fleet, i: usize) -> String {
    admin(f, i, "/metrics")
}

fn status_json(f: &Fleet, i: usize) -> String {
    admin(f, i, "/status.json")
}

fn assert_shared(t: &Tally, clients: u64, what: &str) {
    println!("{what}: {t:?}");
    assert_eq!(t.failures, 0, "{what}: {}", t.errors);
    assert_eq!(t.attempts, clients * 5);
    assert!(t.resumed * 100 >= t.attempts * 95, "{what}: {} of {} resumed", t.resumed, t.attempts);
    // Random balancing over three: about two thirds land elsewhere than the issuer.
    assert!(t.cross * 2 > t.resumed, "{what}: only {} of {} resumed elsewhere", t.cross, t.resumed);
}

/// One fleet for two checks: shared TLS 1.3 tickets, then an instance killed under load.
#[test]
fn tls13_tickets_resume_on_the_others_and_a_killed_instance_fails_only_its_own() {
    let mut f = fleet(None);
    let t = bulk(&f, 600, "1.3");
    assert_shared(&t, 600, "TLS 1.3 tickets");
    let accepted: u64 = (0..3)
        .map(|i| {
            let m = metrics(&f, i);
            m.lines()
                .find(|l| l.starts_with("tlsgate_fleet_resumptions_total{result=\"ticket_accepted\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .map_or(0, |v| v.parse().unwrap())
        })
        .sum();
    assert!(accepted >= t.resumed, "metric counts {accepted} accepted tickets, clients saw {}", t.resumed);
    killed_under_load(&mut f);
}

/// Instance 1 SIGKILLed a quarter into 1800 connections: the connections that fail are those
/// the balancer sent to it (in flight when it died, or sent before the health-check loop took
/// it out of the map), each found by its client port in the balancer's record; none of the other
/// two instances' fail.
fn killed_under_load(f: &mut Fleet) {
    f.start_health_check();
    f.net.balancer.must("nft", &["flush", "set", "ip", "fleet_record", "flows"]);
    let workers = 8;
    let mut load = client_cmd(f, &["bulk", "300", "5", "1.3", &workers.to_string()])
        // Ports the first run did not use: the balancer's connection tracking still holds those.
        .env("FIRST_PORT", "20000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(load.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("progress"), "{line}");
    f.instances[1].gate.proc.kill();
    let (dead, live) = (member(1), format!("members: {} {}", member(0), member(2)));
    // The check loop notices (a connection refused, then no answer from /healthz) and shrinks the map.
    f.health.as_ref().unwrap().wait_for(&[&live], WAIT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(load.wait().unwrap().success());
    let t = tally(rest.lines().last().unwrap_or(""));
    assert_eq!(t.connections + t.skipped, 300 * 6, "every connection tried or accounted for");
    assert_eq!(t.failed_ports.len() as u64, t.failures, "every failure names its port: {t:?}");
    let flows = f.net.flows();
    let mut per_instance: HashMap<&str, u64> = HashMap::new();
    for a in flows.values().flatten() {
        *per_instance.entry(a.as_str()).or_default() += 1;
    }
    // The record is whole: each connection the client tried (each from its own port) is in it.
    assert_eq!(flows.len() as u64, t.connections, "{per_instance:?}");
    println!("one instance killed: {t:?}; connections per instance: {per_instance:?}");
    // Connections kept coming while it was dead and still in the map: some failed.
    assert!(t.failures > 0, "no connection failed: was the instance killed under load? {t:?}");
    for port in &t.failed_ports {
        let went =
            flows.get(port).unwrap_or_else(|| panic!("failed connection from port {port}: not recorded"));
        assert!(*went == [dead.as_str()], "failed connection from port {port} went to {went:?}, not {dead}");
    }
}

#[test]
fn tls12_session_ids_from_one_instance_resume_on_the_others() {
    let mut f = fleet(None);
    // The same fleet through HAProxy instead of the nftables DNAT: both balancers shown.
    f.start_haproxy();
    let t = bulk(&f, 600, "1.2");
    assert_shared(&t, 600, "TLS 1.2 session IDs");
    let m: String = (0..3).map(|i| metrics(&f, i)).collect();
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
    for i in 0..3 {
        assert!(metrics(&f, i).contains("tlsgate_fleet_redis_up 0"), "{}", metrics(&f, i));
        assert!(status_json(&f, i).contains("\"reachable\":false"), "{}", status_json(&f, i));
    }
    // Redis back, empty: the instances set their keys again and share.
    f.redis = Some(Redis::start(&f.net.balancer, None));
    for i in &f.instances {
        i.gate.proc.wait_for(&["fleet: Redis reachable"], WAIT);
    }
    let t = bulk(&f, 200, "1.2");
    assert_shared(&t, 200, "TLS 1.2 after Redis returned");
    for i in 0..3 {
        assert!(metrics(&f, i).contains("tlsgate_fleet_redis_up 1"));
    }
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
    let get = |path: &str| {
        String::from_utf8_lossy(&curl(&["-sS", &format!("http://{admin}{path}")]).stdout).into_owned()
    };
    assert!(get("/metrics").contains("tlsgate_fleet_redis_up 0"));
    let status = get("/status.json");
    assert!(
        status.contains("\"reachable\":false") && status.contains("\"issuing_shared\":false"),
        "{status}"
    );
    assert!(!gate.proc.log_text().contains(PASSWORD), "the Redis password is logged");
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
