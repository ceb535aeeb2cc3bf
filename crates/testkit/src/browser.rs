//! Headless Chromium (Debian's `chromium`), for pages tlsgate serves.

use std::process::Command;

/// The DOM of `url` after Chromium loaded and rendered it, as `--dump-dom` prints it.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::Builder::new().prefix("tlsgate-chromium-").tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium is installed (Debian package chromium)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
