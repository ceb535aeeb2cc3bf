//! A private PostgreSQL server (Debian's `postgresql`) on a temporary directory and a free
//! loopback port, run as the `postgres` user; and `psql`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::net::free_port;
use crate::process::Proc;

pub struct Postgres {
    pub port: u16,
    proc: Proc,
    _dir: tempfile::TempDir,
}

/// TLS for the server: its certificate and key; with it, `pg_hba.conf` admits TLS connections
/// only (`hostssl`), so a plaintext client is refused.
pub struct PgTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Postgres {
    pub fn start(tls: Option<PgTls>) -> Postgres {
        let bin = bin_dir();
        let (uid, gid) = (id("-u"), id("-g"));
        let dir = tempfile::Builder::new().prefix("tlsgate-pg-").tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
        let initdb = as_postgres(Command::new(bin.join("initdb")), uid, gid)
            .args(["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        let port = free_port();
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n",
            d.display()
        );
        let hba = match &tls {
            Some(t) => {
                for (from, to, mode) in [(t.cert, "server.crt", 0o644), (t.key, "server.key", 0o600)] {
                    let to = d.join(to);
                    std::fs::copy(from, &to).unwrap();
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
                    std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(mode))
                        .unwrap();
                }
                conf += &format!(
                    "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'\n",
                    d.display()
                );
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
            }
            None => "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        };
        let mut c = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut c, conf.as_bytes()).unwrap();
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        std::os::unix::fs::chown(data.join("pg_hba.conf"), Some(uid), Some(gid)).unwrap();
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.args(["-D", data.to_str().unwrap()]);
        let proc = Proc::spawn("postgres", as_postgres(cmd, uid, gid));
        proc.wait_for(&["database system is ready to accept connections"], Duration::from_secs(60));
        Postgres { port, proc, _dir: dir }
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown, so no server process outlives the test.
        let _ = Command::new("kill").args(["-INT", &self.proc.pid().to_string()]).status();
        self.proc.wait_exit(Duration::from_secs(20));
    }
}

/// Runs `psql` with a libpq connection string and one query (`-Atc`, unaligned, tuples only).
pub fn psql(conninfo: &str, query: &str) -> Output {
    Command::new("psql")
        .args([conninfo, "-X", "-Atc", query])
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("psql is installed (Debian package postgresql-client)")
}

/// The directory of the newest installed server's binaries, `/usr/lib/postgresql/<v>/bin`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists() && b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        let v = p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).unwrap_or("0");
        v.parse::<u32>().unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server binaries (postgres, initdb) not found under /usr/lib/postgresql/*/bin: \
         install Debian's postgresql package",
    )
}

/// The `postgres` user's uid or gid: the server refuses to run as root.
fn id(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
    assert!(out.status.success(), "no postgres user (Debian's postgresql package creates it)");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `cmd` run as the postgres user (set before exec, so killing the child kills the server).
fn as_postgres(mut cmd: Command, uid: u32, gid: u32) -> Command {
    cmd.uid(uid).gid(gid).env("HOME", "/tmp").current_dir("/tmp");
    cmd
}
