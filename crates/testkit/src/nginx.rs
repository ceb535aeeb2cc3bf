//! A private nginx (Debian's package) serving a directory over plain HTTP, PUT enabled: on a free
//! loopback port, or on given ports inside a network namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::{free_port, wait_accepting};
use crate::netns::Netns;
use crate::process::Proc;

pub struct Nginx {
    pub addr: SocketAddr,
    pub root: PathBuf,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in the foreground, one process, on a free loopback port; `root` is served and
    /// receives PUT uploads.
    pub fn start(root: &Path) -> Nginx {
        Self::start_with(root, "", "")
    }

    /// Plain HTTP behind the PROXY protocol (v1 or v2): the access log's `pp=` shows the address
    /// the header carried.
    pub fn start_proxy_protocol(root: &Path) -> Nginx {
        Self::start_with(root, "", " proxy_protocol")
    }

    /// The same over HTTPS with `cert`/`key`; with `client_ca`, client certificates are required.
    /// The access log then also shows the protocol, whether the session was reused (`r`) and the
    /// client certificate's subject.
    pub fn start_https(root: &Path, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Nginx {
        Self::start_with(root, &tls_directives(cert, key, client_ca), " ssl")
    }

    /// nginx inside `ns`, listening on every address at each of `ports` (`"80"`, or `"443 ssl"`
    /// with `tls` certificate and key); returns once every port listens.
    pub fn start_in(ns: &Netns, root: &Path, ports: &[&str], tls: Option<(&Path, &Path)>) -> Nginx {
        let tls = tls.map(|(cert, key)| tls_directives(cert, key, None)).unwrap_or_default();
        Self::start_in_with(ns, root, ports, &tls)
    }

    /// nginx inside `ns` on `port` with TLS that requires a client certificate from `client_ca`.
    pub fn start_in_mtls(
        ns: &Netns,
        root: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> Nginx {
        let tls = tls_directives(cert, key, Some(client_ca));
        Self::start_in_with(ns, root, &[&format!("{port} ssl")], &tls)
    }

    fn start_in_with(ns: &Netns, root: &Path, ports: &[&str], tls: &str) -> Nginx {
        let listen: String = ports.iter().map(|p| format!("listen {p}; ")).collect();
        let first: u16 = ports[0].split(' ').next().unwrap().parse().expect("a port number first");
        let nginx = Self::launch(root, &listen, tls, |args| ns.command(nginx_bin(), args));
        for port in ports {
            ns.wait_listening(port.split(' ').next().unwrap().parse().unwrap(), Duration::from_secs(10));
        }
        Nginx { addr: SocketAddr::from(([0, 0, 0, 0], first)), ..nginx }
    }

    fn start_with(root: &Path, tls: &str, listen_options: &str) -> Nginx {
        let port = free_port();
        let listen = format!("listen 127.0.0.1:{port}{listen_options};");
        let nginx = Self::launch(root, &listen, tls, |args| {
            let mut cmd = Command::new(nginx_bin());
            cmd.args(args);
            cmd
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_accepting(addr, Duration::from_secs(10));
        Nginx { addr, ..nginx }
    }

    /// Writes the configuration and starts nginx with the command `command` builds from its
    /// arguments; `addr` is left for the caller to fill in.
    fn launch(root: &Path, listen: &str, tls: &str, command: impl FnOnce(&[&str]) -> Command) -> Nginx {
        let dir = tempfile::Builder::new().prefix("tlsgate-nginx-").tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                r#"daemon off;
master_process off;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    log_format tlsgate '$remote_addr "$request" $status xff="$http_x_forwarded_for" '
                       'proto="$http_x_forwarded_proto" verify="$http_x_client_verify" '
                       'cn="$http_x_client_cn" subject="$http_x_client_subject" uri="$http_x_client_uri" '
                       'tls="$ssl_protocol" reused="$ssl_session_reused" client_dn="$ssl_client_s_dn" '
                       'pp="$proxy_protocol_addr:$proxy_protocol_port" peer="$remote_addr:$remote_port" '
                       'took=$request_time';
    access_log {d}/access.log tlsgate;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    server {{
        {listen}
        {tls}
        root {root};
        dav_methods PUT;
        create_full_put_path on;
    }}
}}
"#,
                root = root.display(),
            ),
        )
        .unwrap();
        let proc = Proc::spawn("nginx", command(&["-p", &d.to_string(), "-c", conf.to_str().unwrap()]));
        let addr = SocketAddr::from(([0, 0, 0, 0], 0));
        Nginx { addr, root: root.to_path_buf(), _proc: proc, _dir: dir }
    }

    /// The access log once it holds at least `lines` lines. nginx writes a request's line after
    /// the response went out, so a client can finish before it is there; this waits (bounded)
    /// for the file to catch up.
    pub fn access_log_lines(&self, lines: usize) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.lines().count() >= lines {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nginx logged {} of {lines} lines:\n{log}",
                log.lines().count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills nginx at once, as a crashed server.
    pub fn kill(&mut self) {
        self._proc.kill();
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default()
    }
}

/// `ssl_*` directives for `cert`/`key`, client certificates required when `client_ca` is given.
fn tls_directives(cert: &Path, key: &Path, client_ca: Option<&Path>) -> String {
    let mut tls = format!(
        "ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;",
        cert.display(),
        key.display()
    );
    if let Some(ca) = client_ca {
        tls.push_str(&format!(" ssl_client_certificate {}; ssl_verify_client on;", ca.display()));
    }
    tls
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}
