//! The configuration file model, shared by every mode.
//!
//! One TOML file holds a section per mode (`[terminate]`, `[originate]`, `[tunnel]`, `[inline]`) and
//! the sections every mode shares (`[log]`, `[security]`). Command-line flags for the quick cases
//! build the same structures, so the rest of tlsgate only ever sees a validated [`Config`].
//! docs/config.md is the reference; a test parses the example it carries.

mod acme;
mod connect;
mod error;
mod fleet;
mod inline;
mod model;
mod originate;
mod starttls;
mod terminate;
mod tunnel;

pub use acme::AcmeConfig;
pub use connect::{ConnectConfig, ConnectGateConfig, ConnectGrant, ConnectPortalConfig};
pub use error::ConfigError;
pub use fleet::{FleetConfig, RedisUrl};
pub use inline::{InlineConfig, InlineLimits, InlineService, ReleaseMode};
pub use model::{AdminConfig, Config, LogConfig, LogFormat, ProcessConfig, SecurityConfig};
pub use originate::{
    ClientIdentity, OriginateConfig, OriginateListener, RuleAction, RuleConfig, TransparentListener,
};
pub use starttls::StartTls;
pub use terminate::{
    BackendAddr, BalancePolicy, CertificateConfig, ClientAuthConfig, ClientAuthMode, HealthConfig, KtlsMode,
    ListenerConfig, ProxyProtocol, RouteConfig, TerminateConfig, TlsVersion,
};
pub use tunnel::{
    Forward, ForwardProtocol, GateConfig, PortalConfig, ProxyKind, ProxyUrl, ReverseForward, SocksAuth,
    TunnelConfig, TunnelLimits,
};

use tlsgate_core::os_error::os_error;

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // One line, so the error stays one log line: "line 14: unknown field `rout`, …".
            // The line holding the span's start: the newlines before it, plus one.
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
            });
            let msg = e.message().replace('\n', " ");
            ConfigError::Parse(match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            })
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file. Relative paths inside it are taken
    /// relative to the file's directory, as operators expect of paths written next to a config.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), os_error(&e)))?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse(problem) => ConfigError::Parse(format!("{}, {problem}", path.display())),
            other => other,
        })?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, dir: &std::path::Path) {
        if let Some(t) = &mut self.terminate {
            if let Some(c) = &mut t.control {
                *c = dir.join(&*c);
            }
            for l in &mut t.listener {
                for c in &mut l.certificate {
                    c.cert = dir.join(&c.cert);
                    if c.key_is_file() {
                        c.key = dir.join(&c.key);
                    }
                    if let Some(o) = &mut c.ocsp_file {
                        *o = dir.join(&*o);
                    }
                }
                if let Some(a) = &mut l.acme {
                    a.state = dir.join(&a.state);
                    for p in [&mut a.directory_ca].into_iter().flatten() {
                        *p = dir.join(&*p);
                    }
                }
                let auth = &mut l.client_auth;
                if let Some(ca) = &mut auth.ca {
                    *ca = dir.join(&*ca);
                }
                for crl in &mut auth.crl {
                    *crl = dir.join(&*crl);
                }
            }
        }
        if let Some(o) = &mut self.originate {
            if let Some(c) = &mut o.control {
                *c = dir.join(&*c);
            }
            for l in &mut o.listener {
                for p in [&mut l.ca, &mut l.cert, &mut l.key].into_iter().flatten() {
                    *p = dir.join(&*p);
                }
                for i in l.client_identities.values_mut() {
                    i.cert = dir.join(&i.cert);
                    i.key = dir.join(&i.key);
                }
            }
            for l in &mut o.transparent {
                for p in [&mut l.ca, &mut l.cert, &mut l.key].into_iter().flatten() {
                    *p = dir.join(&*p);
                }
            }
        }
        if let Some(t) = &mut self.tunnel {
            t.resolve_paths(dir);
        }
        if let Some(i) = &mut self.inline {
            i.resolve_paths(dir);
        }
        if let Some(c) = &mut self.connect {
            c.resolve_paths(dir);
        }
        if let Some(f) = &mut self.fleet {
            f.key_file = dir.join(&f.key_file);
            if let Some(ca) = &mut f.redis_ca {
                *ca = dir.join(&*ca);
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.terminate {
            t.validate()?;
        }
        if let Some(o) = &self.originate {
            o.validate()?;
        }
        if let Some(t) = &self.tunnel {
            t.validate()?;
        }
        if let Some(i) = &self.inline {
            i.validate()?;
        }
        if let Some(c) = &self.connect {
            c.validate()?;
        }
        if let Some(f) = &self.fleet {
            f.validate()?;
        }
        let controls = (
            self.terminate.as_ref().and_then(|t| t.control.as_ref()),
            self.originate.as_ref().and_then(|o| o.control.as_ref()),
        );
        if let (Some(a), Some(b)) = controls {
            if a == b {
                return Err(ConfigError::invalid(
                    "[originate]",
                    format!("control {} is [terminate]'s too: each needs its own socket (either answers for every connection)", b.display()),
                ));
            }
        }
        if self.process.group.is_some() && self.process.user.is_none() {
            return Err(ConfigError::invalid("[process]", "group is set without user"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
