//! The `starttls` and `starttls_host` keys shared by terminate and originate listeners.

use serde::{Deserialize, Deserializer};
pub use tlsgate_starttls::Protocol as StartTls;

/// `starttls = "smtp"`: the protocol names of `tlsgate_starttls::Protocol`.
pub(crate) fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StartTls>, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

/// The two keys together: `starttls_host` goes into greetings (server side) or EHLO (client
/// side), so it only makes sense with `starttls` and must be one printable word.
pub(crate) fn check(starttls: Option<StartTls>, host: Option<&str>) -> Result<(), String> {
    let Some(host) = host else {
        return Ok(());
    };
    if starttls.is_none() {
        return Err("starttls_host without starttls".into());
    }
    if host.is_empty() || host.len() > 255 || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("starttls_host {host:?} must be one word of printable ASCII"));
    }
    Ok(())
}
