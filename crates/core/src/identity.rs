//! A TLS peer's identity, as read from its certificate, and allow-lists over it.
//!
//! The allow-list is the policy half of mutual TLS: the chain has already been verified against
//! the CA bundle; this decides whether *this* verified client may connect. Entries of all kinds
//! are alternatives — matching any one entry admits the client.

use std::net::IpAddr;

use crate::names::NamePattern;

/// What a certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject distinguished name, RFC 4514 style (`CN=alice,O=Example`).
    pub subject: String,
    pub common_name: Option<String>,
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub ip: Vec<IpAddr>,
}

impl PeerIdentity {
    /// A short form for logs: CN and SANs.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cn) = &self.common_name {
            parts.push(format!("CN={cn}"));
        }
        parts.extend(self.dns.iter().map(|d| format!("DNS:{d}")));
        parts.extend(self.uri.iter().map(|u| format!("URI:{u}")));
        parts.extend(self.ip.iter().map(|i| format!("IP:{i}")));
        if parts.is_empty() {
            parts.push(self.subject.clone());
        }
        parts.join(",")
    }
}

/// Who may connect. Empty lists everywhere: every verified client.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    pub common_names: Vec<String>,
    /// Exact names or `*.` wildcards, matched against DNS SANs.
    pub dns: Vec<NamePattern>,
    /// Exact URIs (SPIFFE IDs), or a prefix when the entry ends in `/*`.
    pub uri: Vec<String>,
    pub ip: Vec<IpAddr>,
}

impl AllowList {
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty() && self.dns.is_empty() && self.uri.is_empty() && self.ip.is_empty()
    }

    /// `Ok` when the identity matches an entry (or the list is empty); otherwise why not.
    pub fn permits(&self, id: &PeerIdentity) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let cn = id.common_name.as_ref().is_some_and(|cn| self.common_names.iter().any(|a| a == cn));
        let dns = id.dns.iter().any(|d| self.dns.iter().any(|p| p.matches(d)));
        let uri = id.uri.iter().any(|u| self.uri.iter().any(|a| uri_matches(a, u)));
        let ip = id.ip.iter().any(|i| self.ip.contains(i));
        if cn || dns || uri || ip {
            Ok(())
        } else {
            Err(format!("client certificate {} matches no allow-list entry", id.summary()))
        }
    }
}

fn uri_matches(allowed: &str, uri: &str) -> bool {
    match allowed.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => uri.starts_with(prefix),
        _ => allowed == uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> PeerIdentity {
        PeerIdentity {
            subject: "CN=alice".into(),
            common_name: Some("alice".into()),
            dns: vec!["alice.clients.example".into()],
            uri: vec!["spiffe://example.org/ns/prod/sa/alice".into()],
            ip: vec!["10.0.0.7".parse().unwrap()],
        }
    }

    #[test]
    fn empty_list_admits_any_verified_client() {
        assert!(AllowList::default().permits(&alice()).is_ok());
    }

    #[test]
    fn each_kind_of_entry_admits_on_its_own() {
        let lists = [
            AllowList { common_names: vec!["alice".into()], ..Default::default() },
            AllowList { dns: vec![NamePattern::parse("*.clients.example").unwrap()], ..Default::default() },
            AllowList { uri: vec!["spiffe://example.org/ns/prod/*".into()], ..Default::default() },
            AllowList { uri: vec!["spiffe://example.org/ns/prod/sa/alice".into()], ..Default::default() },
            AllowList { ip: vec!["10.0.0.7".parse().unwrap()], ..Default::default() },
        ];
        for l in lists {
            assert!(l.permits(&alice()).is_ok(), "{l:?}");
        }
    }

    #[test]
    fn non_matching_entries_refuse_with_reason() {
        let l = AllowList {
            common_names: vec!["bob".into()],
            dns: vec![NamePattern::parse("alice.other.example").unwrap()],
            uri: vec!["spiffe://example.org/ns/dev/*".into(), "spiffe://example.org/ns/prod".into()],
            ip: vec!["10.0.0.8".parse().unwrap()],
        };
        let why = l.permits(&alice()).unwrap_err();
        assert!(why.contains("CN=alice") && why.contains("no allow-list entry"), "{why}");
        // A prefix entry must end in "/*": "spiffe://example.org/ns/pro*" is an exact string.
        let l = AllowList { uri: vec!["spiffe://example.org/ns/pro*".into()], ..Default::default() };
        assert!(l.permits(&alice()).is_err());
    }
}
