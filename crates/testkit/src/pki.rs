//! A throwaway CA with certificates written into a temporary directory.

use std::path::PathBuf;

use tlsgate_tls::pki::{write_file, TestCa};

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
