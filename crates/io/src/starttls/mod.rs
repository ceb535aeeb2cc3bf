//! STARTTLS on sockets: the sans-IO prologues of `tlsgate-starttls` driven over TCP.
//!
//! - [`server`]: a terminate listener's client prologue before the handshake, and the backend's
//!   greeting swallowed after it;
//! - [`client`]: an originate listener's prologue toward the upstream before the handshake, and
//!   PostgreSQL's local answer to a plaintext client's SSLRequest.

pub mod client;
pub mod server;

/// Largest read during a prologue: its lines and messages are small.
const READ: usize = 4096;

/// The machine's host name, for greetings and EHLO when the config names none.
pub fn local_host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
