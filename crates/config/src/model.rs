//! Sections shared by every mode.

use serde::Deserialize;

use crate::TerminateConfig;

/// A whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub process: ProcessConfig,
    /// The admin listener (`/healthz`, `/metrics`, `/status`); off when absent.
    pub admin: Option<AdminConfig>,
    pub terminate: Option<TerminateConfig>,
    pub originate: Option<crate::OriginateConfig>,
    pub tunnel: Option<crate::TunnelConfig>,
    pub inline: Option<crate::InlineConfig>,
    pub connect: Option<crate::ConnectConfig>,
    /// Session resumption shared by the terminate instances of a fleet (through Redis).
    pub fleet: Option<crate::FleetConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Plain HTTP; it shows client addresses and identities, so keep it on loopback or a
    /// management network. Read at start only: a reload does not move it.
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `tlsgate_io=debug,info`, …
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_level(), format: LogFormat::Text }
    }
}

fn default_level() -> String {
    "info".to_string()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Start even when a private key file is readable by group or others. Off by default: a key
    /// that others can read is a key that may already be someone else's.
    #[serde(default)]
    pub allow_insecure_key_permissions: bool,
}

/// `[process]`: who the process runs as once its sockets are bound.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Started as root, switch to this user (and its groups) after binding every listener,
    /// keeping only the capabilities the mode needs. Certificates and keys are read before the
    /// switch; a reload reads them as this user.
    pub user: Option<String>,
    /// The group to switch to; default: the user's primary group.
    pub group: Option<String>,
}
