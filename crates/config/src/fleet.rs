//! `[fleet]`: terminate instances of one fleet share TLS session resumption state through Redis
//! (TLS 1.3 ticket keys, wrapped with the fleet key; the TLS 1.2 session-ID cache). See
//! docs/fleet.md.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://…` (TLS, the system's CAs).
    pub redis: RedisUrl,
    /// 32 random bytes, mode 0600: wraps the ticket keys and session state kept in Redis.
    pub key_file: PathBuf,
    /// CAs (PEM) that verify a `rediss://` server instead of the system's.
    pub redis_ca: Option<PathBuf>,
    /// How often a new ticket key starts; the previous one is still accepted for one period.
    #[serde(default = "default_rotation", with = "humantime_serde")]
    pub ticket_rotation: Duration,
}

fn default_rotation() -> Duration {
    Duration::from_secs(3600)
}

impl FleetConfig {
    pub fn new(redis: RedisUrl, key_file: PathBuf, ticket_rotation: Option<Duration>) -> Self {
        FleetConfig {
            redis,
            key_file,
            redis_ca: None,
            ticket_rotation: ticket_rotation.unwrap_or_else(default_rotation),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ticket_rotation < Duration::from_secs(1) || self.ticket_rotation.subsec_nanos() != 0 {
            return Err(ConfigError::invalid(
                "[fleet]",
                "ticket_rotation must be whole seconds, at least 1s",
            ));
        }
        Ok(())
    }
}

/// A Redis URL; shown without its password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as given, password included: for the client only, never for logs.
    pub fn secret_url(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RedisUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("redis://")
            .or_else(|| s.strip_prefix("rediss://"))
            .ok_or_else(|| "redis URL must start with redis:// or rediss://".to_string())?;
        let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let hostport = hostport.split('/').next().unwrap_or("");
        if hostport.is_empty() {
            return Err("redis URL has no host".into());
        }
        Ok(RedisUrl(s.to_string()))
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("redis", &self.0));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        write!(f, "{scheme}://{rest}")
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let u: RedisUrl = "redis://:s3cret@127.0.0.1:6379/2".parse().unwrap();
        assert_eq!(u.to_string(), "redis://127.0.0.1:6379/2");
        assert_eq!(format!("{u:?}"), "redis://127.0.0.1:6379/2");
        assert_eq!(u.secret_url(), "redis://:s3cret@127.0.0.1:6379/2");
        assert!("rediss://cache.internal:6380/0".parse::<RedisUrl>().is_ok());
        assert!("http://x:1".parse::<RedisUrl>().is_err());
        assert!("redis:///0".parse::<RedisUrl>().is_err());
    }
}
