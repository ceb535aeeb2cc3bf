//! A private place to run one documented example as written: a network namespace (its own
//! loopback, so the fixed ports and `0.0.0.0` binds of the docs collide with nothing), host
//! names of the example mapped to loopback addresses in the namespace's own `/etc/hosts`, and a
//! working directory holding the certificate and key files the example names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tlsgate_testkit::clients::describe;
use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::{write_file, ClientSpec};

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Scene {
    pub ns: Netns,
    pub pki: Pki,
    /// `/etc/netns/<namespace>`: `ip netns exec` mounts the files in it over `/etc`.
    etc: PathBuf,
}

impl Scene {
    /// A namespace named after `tag` whose `/etc/hosts` maps each `(name, address)`.
    pub fn new(tag: &str, hosts: &[(&str, &str)]) -> Scene {
        let ns = Netns::new(tag);
        let etc = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&etc).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, addr) in hosts {
            text += &format!("{addr} {name}\n");
        }
        std::fs::write(etc.join("hosts"), text).unwrap();
        Scene { ns, pki: Pki::new(), etc }
    }

    /// The working directory: relative paths of the examples are taken from here.
    pub fn dir(&self) -> &Path {
        self.pki.dir.path()
    }

    /// Writes `name` (parents created) in the working directory.
    pub fn file(&self, name: &str, contents: &str) {
        let path = self.dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_file(&path, contents, 0o644).unwrap();
    }

    /// `<stem>.pem` / `<stem>.key`, a server certificate for `names` from the scene's CA.
    pub fn server_cert(&self, stem: &str, names: &[&str]) {
        std::fs::create_dir_all(self.dir().join(stem).parent().unwrap()).unwrap();
        self.pki.server(stem, names);
    }

    /// `<stem>.pem` / `<stem>.key`, a client certificate with this subject CN and URI SANs.
    pub fn client_cert(&self, stem: &str, common_name: &str, uri: &[&str]) {
        let spec = ClientSpec { common_name, uri, ..Default::default() };
        self.pki.ca.issue_client(&spec).unwrap().write(self.dir(), stem).unwrap();
    }

    /// The scene's CA certificate under another name (`clients-ca.pem`, `certs/db-ca.pem`…).
    pub fn ca_as(&self, name: &str) {
        self.file(name, self.pki.ca.cert_pem());
    }

    /// An empty CRL of the scene's CA, as `name`.
    pub fn crl_as(&self, name: &str) {
        self.file(name, &self.pki.ca.crl(&[], 1).unwrap());
    }

    /// `sh -c LINE` in the namespace and the working directory, with the tlsgate under test first
    /// on `PATH`, so a documented command runs exactly as written.
    pub fn shell(&self, line: &str) -> Command {
        let mut cmd = self.ns.command("sh", &["-c", line]);
        let bin = Path::new(env!("CARGO_BIN_EXE_tlsgate")).parent().unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display())).current_dir(self.dir());
        cmd
    }

    /// Starts a long-running documented command (a `tlsgate …` line) as written.
    pub fn start(&self, line: &str) -> Tlsgate {
        Tlsgate::start_command(self.shell(&format!("exec {line}")))
    }

    /// Runs a command line to completion.
    pub fn run(&self, line: &str) -> Output {
        self.shell(line).output().expect("sh runs")
    }

    /// Runs a command line and insists on success; returns its stdout.
    pub fn must(&self, line: &str) -> String {
        let out = self.run(line);
        assert!(out.status.success(), "{line}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The built-in HTTP backend on `listen`, answering `hello from <name>`.
    pub fn backend(&self, listen: &str, name: &str) -> Tlsgate {
        let b = self.start(&format!("tlsgate backend --listen {listen} --name {name}"));
        b.proc.wait_for(&["backend listening"], WAIT);
        b
    }

    /// `curl ARGS` must answer with the built-in backend's `hello from <name>`.
    pub fn expect_hello(&self, curl_args: &str, name: &str) {
        let body = self.must(&format!("curl -sS --max-time 20 {curl_args}"));
        assert!(body.contains(&format!("hello from {name}")), "curl {curl_args}: {body}");
    }

    /// A process started in the namespace from `program` and `args` (not a documented line).
    pub fn spawn(&self, name: &str, program: &str, args: &[&str]) -> Proc {
        let mut cmd = self.ns.command(program, args);
        cmd.current_dir(self.dir());
        Proc::spawn(name, cmd)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// The one command of a block that has one.
pub fn only(commands: &[String]) -> &str {
    assert_eq!(commands.len(), 1, "expected one command: {commands:?}");
    &commands[0]
}
