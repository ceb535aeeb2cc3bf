//! A throwaway CA with certificates written into a temporary directory.

use std::path::{Path, PathBuf};

use tlsgate_tls::pki::{write_file, ClientSpec, Issued, TestCa};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("tlsgate-test-").tempdir().unwrap();
        let ca = TestCa::new("tlsgate test CA").unwrap();
        let ca_path = dir.path().join("ca.pem");
        write_file(&ca_path, ca.cert_pem(), 0o644).unwrap();
        Pki { dir, ca, ca_path }
    }

    /// A server certificate for `names`, written as `<stem>.pem` / `<stem>.key`.
    pub fn server(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.ca.issue_server(names).unwrap().write(self.dir.path(), stem).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> &str {
        self.ca_path.to_str().unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A client certificate with common name `cn` from `ca`, written into `dir` as `<stem>.pem` /
/// `<stem>.key`; its serial (for a CRL that revokes it).
pub fn client_cert(ca: &TestCa, cn: &str, dir: &Path, stem: &str) -> (PathBuf, PathBuf, u64) {
    let spec = ClientSpec { common_name: cn, ..ClientSpec::default() };
    let issued = ca.issue_client(&spec).unwrap();
    let (cert, key) = issued.write(dir, stem).unwrap();
    (cert, key, issued.serial)
}

/// Replaces `<stem>.pem` and `<stem>.key` in `dir` the way operators and cert managers do: write
/// aside, then rename over, key first, so a reader never sees a half-written file.
pub fn swap_in(issued: &Issued, dir: &Path, stem: &str) {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let (cert, key) = issued.write(&staging, stem).unwrap();
    std::fs::rename(key, dir.join(format!("{stem}.key"))).unwrap();
    std::fs::rename(cert, dir.join(format!("{stem}.pem"))).unwrap();
}
