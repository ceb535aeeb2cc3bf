//! Noticing that files on disk changed, by polling their metadata.
//!
//! Polling (not inotify) because certificates are usually replaced by renaming a new file over
//! the old one, sometimes through symlinks (Kubernetes secrets), which a fingerprint of
//! (device, inode, size, mtime) of the resolved file catches without special cases.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What a file looked like; `None` when it could not be read.
type Fingerprint = Option<(u64, u64, u64, i64, i64)>;

#[derive(Debug, Default)]
pub struct FileWatch {
    files: Vec<(PathBuf, Fingerprint)>,
}

impl FileWatch {
    /// Starts watching `files` as they are now.
    pub fn new(files: Vec<PathBuf>) -> Self {
        FileWatch {
            files: files
                .into_iter()
                .map(|f| {
                    let fp = fingerprint(&f);
                    (f, fp)
                })
                .collect(),
        }
    }

    /// The files that changed since the last call (or since `new`).
    pub fn changed(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for (path, seen) in &mut self.files {
            let now = fingerprint(path);
            if now != *seen {
                *seen = now;
                changed.push(path.clone());
            }
        }
        changed
    }
}

fn fingerprint(path: &PathBuf) -> Fingerprint {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}
