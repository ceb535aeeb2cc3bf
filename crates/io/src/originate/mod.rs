//! `tlsgate originate`: plaintext in, TLS out, for programs that have no TLS code.
//!
//! Each listener accepts plaintext connections and carries each one to the first upstream that
//! connects and completes a verified TLS handshake (certificate chain against the configured CA
//! or the system roots, name against `sni` or the upstream's host). The listener's one
//! `ClientConfig` keeps the session cache, so later connections resume.

mod listener;
mod transparent;

pub use listener::Originator;
