//! Process limits set at start. Every connection holds a descriptor (two when relayed), and the
//! usual soft limit of 1024 would cap a gateway at a few hundred clients while the hard limit
//! allows far more; so the soft limit is raised to the hard one and the figure logged.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft RLIMIT_NOFILE to the hard limit and logs the result.
pub fn raise_nofile() {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit");
            return;
        }
    };
    if soft >= hard {
        tracing::info!(nofile = soft, "file descriptor limit");
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => tracing::info!(nofile = hard, raised_from = soft, "file descriptor limit"),
        Err(e) => tracing::warn!(
            nofile = soft, hard, error = %e,
            "file descriptor limit: cannot raise the soft limit to the hard one"
        ),
    }
}

/// The warning for running with `--allow-insecure-key-permissions` (`[security]`).
pub fn warn_insecure_keys(allowed: bool) {
    if allowed {
        tracing::warn!(
            "allow_insecure_key_permissions: private keys readable by group or others are accepted; \
             anyone who can read them can impersonate this server"
        );
    }
}
