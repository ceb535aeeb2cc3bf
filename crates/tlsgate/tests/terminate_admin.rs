//! The admin listener: /healthz, Prometheus /metrics after real traffic, and the /status page as
//! headless Chromium renders it while a client's connection is live. Configured by flags only:
//! `--client-ca`, `--allow-cn` and `--admin`.

use std::time::Duration;

use tlsgate_testkit::browser::dump_dom;
use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::data::random_file;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

#[test]
fn metrics_and_status_page_show_live_traffic() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    for (stem, cn) in [("alice", "alice"), ("mallory", "mallory")] {
        let c = pki.ca.issue_client(&ClientSpec { common_name: cn, ..Default::default() }).unwrap();
        c.write(pki.dir.path(), stem).unwrap();
    }
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "admin");
    let (gate, listen) = Tlsgate::terminate(
        BIN,
        &[],
        (&cert, &key),
        &addr,
        &["--client-ca", pki.ca(), "--allow-cn", "alice", "--admin", "127.0.0.1:0"],
    );
    let port = listen.port();
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(30)), "addr").unwrap();
    let client = |stem: &str, extra: &[&str], path: &str| {
        let (c, k) = (pki.path(&format!("{stem}.pem")), pki.path(&format!("{stem}.key")));
        let url = format!("https://localhost:{port}{path}");
        let mut args =
            vec!["--cacert", pki.ca(), "--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };

    let health = curl(&[&format!("http://{admin}/healthz")]);
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n");

    // Traffic: a good client, a refused one.
    let good = client("alice", &[], "/");
    assert!(good.status.success(), "{}\n{}", describe(&good), gate.proc.log_text());
    assert!(!client("mallory", &[], "/").status.success());
    gate.proc.wait_for(&["handshake failed", "client certificate refused"], Duration::from_secs(10));

    // A live connection: a slow upload by alice, open while the page is rendered.
    let body = pki.path("slow.bin");
    random_file(&body, 3 << 20);
    let slow = {
        let data = format!("@{}", body.display());
        let (c, k) = (pki.path("alice.pem"), pki.path("alice.key"));
        let (ca, url) = (pki.ca().to_string(), format!("https://localhost:{port}/sha256"));
        std::thread::spawn(move || {
            curl(&[
                "--cacert",
                &ca,
                "--cert",
                c.to_str().unwrap(),
                "--key",
                k.to_str().unwrap(),
                "--limit-rate",
                "1M",
                "--data-binary",
                &data,
                &url,
            ])
        })
    };
    // The next alice handshake after the refused one is the slow upload's.
    let line = gate.proc.wait_for(&["handshake done", "client_cert=CN=alice"], Duration::from_secs(10));
    let live_client = Proc::field(&line, "client").unwrap().trim_end_matches(['}', ':']).to_string();

    let page = dump_dom(&format!("http://{admin}/status"));
    let connections = &page[page.find("id=\"connections\"").expect("connections table")..];
    let row = connections
        .split("<tr>")
        .find(|r| r.contains(&live_client))
        .unwrap_or_else(|| panic!("live connection {live_client} not on the page:\n{page}"));
    for want in ["localhost", "TLSv1_3", "TLS13_", "CN=alice", &addr] {
        assert!(row.contains(want), "{want} missing from the row: {row}");
    }
    assert!(page.contains("Live connections (1)"), "{page}");
    assert!(page.contains(&addr) && page.contains("class=\"up\""), "backend health missing: {page}");

    let out = slow.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));

    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{admin}/metrics")]).stdout).into_owned();
    let has = |needle: &str| assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    has("tlsgate_connections_total{listener=\"127.0.0.1:0\"} 3");
    has("tlsgate_handshakes_total{listener=\"127.0.0.1:0\",result=\"ok\",version=\"TLSv1_3\",suite=\"TLS13_AES_128_GCM_SHA256\"} 2");
    has("tlsgate_handshakes_total{listener=\"127.0.0.1:0\",result=\"failed\",version=\"\",suite=\"\"} 1");
    has("tlsgate_handshake_duration_seconds_count{listener=\"127.0.0.1:0\"} 2");
    has("tlsgate_connections_open{listener=\"127.0.0.1:0\"} 0");
    has(&format!(
        "tlsgate_backend_up{{listener=\"127.0.0.1:0\",route=\"route[0] default\",backend=\"{addr}\"}} 1"
    ));
    let up: u64 = metrics
        .lines()
        .find(|l| l.starts_with("tlsgate_bytes_total{listener=\"127.0.0.1:0\",direction=\"up\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bytes up in:\n{metrics}"));
    assert!(up > 3 << 20, "bytes up {up}");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Idle connections to the admin listener, more than the process has descriptors for (its limit
/// pinned at 64 with prlimit, so it cannot raise it; 100 connections stay within the listen
/// backlog): the listener takes only a few at a time and closes each after its timeout, and TLS
/// clients are still served.
#[test]
fn idle_admin_connections_cannot_starve_the_tls_listener() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "admin");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=64:64", BIN, "terminate", "--listen", "127.0.0.1:0"]);
    cmd.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "--backend", &addr]);
    cmd.args(["--admin", "127.0.0.1:0"]);
    let gate = Tlsgate::start_command(cmd);
    let port = gate.listening(None).port();
    let admin: std::net::SocketAddr =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(30)), "addr")
            .unwrap()
            .parse()
            .unwrap();
    let pid = gate.proc.pid();
    let baseline = open_fds(pid);

    let held: Vec<std::net::TcpStream> =
        (0..100).map(|_| std::net::TcpStream::connect(admin).unwrap()).collect();
    // Await the listener taking its share of them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < baseline + 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "admin accepted only {} connections",
            open_fds(pid) - baseline
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("https://localhost:{port}/");
    let out = curl(&["--cacert", pki.ca(), "--max-time", "5", &url]);
    assert!(out.status.success(), "TLS service is down: {}\n{}", describe(&out), gate.proc.log_text());
    let fds = open_fds(pid);
    assert!(fds <= baseline + 16 + 4, "{fds} descriptors open, {baseline} before 100 idle admin connections");
    assert!(!gate.proc.log_text().contains("admin accept failed"), "{}", gate.proc.log_text());

    // The first idle connection is closed by the gate within its timeout (10 s).
    let mut first = &held[0];
    first.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n =
        std::io::Read::read(&mut first, &mut buf).expect("the gate never closed an idle admin connection");
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(12), "closed after {:?}", started.elapsed());
    drop(held);
    let health = curl(&["--max-time", "30", &format!("http://{admin}/healthz")]);
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n", "{}", describe(&health));
}

/// Off loopback the admin listener warns that it shows identities to whoever can connect.
#[test]
fn admin_listener_off_loopback_warns() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "admin");
    let (gate, _) = Tlsgate::terminate(BIN, &[], (&cert, &key), &addr, &["--admin", "0.0.0.0:0"]);
    gate.proc.wait_logged(&["WARN", "admin listener is not on loopback"], Duration::from_secs(30));
    let (quiet, _) = Tlsgate::terminate(BIN, &[], (&cert, &key), &addr, &["--admin", "127.0.0.1:0"]);
    quiet.proc.wait_logged(&["admin listening"], Duration::from_secs(30));
    assert!(!quiet.proc.log_text().contains("not on loopback"), "{}", quiet.proc.log_text());
}
