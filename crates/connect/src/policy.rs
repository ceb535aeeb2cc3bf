//! Which destinations a portal may CONNECT to: grants of tunnel policy rules to identity
//! patterns.
//!
//! An identity pattern is matched against the portal's verified certificate the way
//! terminate's allow-lists are ([`tlsgate_core::identity::AllowList`]): `*` (any portal),
//! `cn:NAME`, `dns:NAME` (exact or `*.` wildcard), `uri:URI` (`/*` suffix for a prefix), or a
//! bare value that matches as CN, DNS SAN (when it is a name) or URI SAN. Every grant whose
//! pattern matches contributes its rules, in order; the first rule that matches decides, no
//! match refuses (fail closed: a gate with no grants refuses everything).
//!
//! The rules are the tunnel gate's (`allow tcp internal.test 443 to 10.1.0.0/16`,
//! [`tlsgate_tunnel::policy`]): loopback, link-local, unspecified and the gate's own addresses
//! only through a rule naming them, and every address a name resolves to checked again.

use tlsgate_core::identity::{AllowList, PeerIdentity};
use tlsgate_core::names::NamePattern;
use tlsgate_tunnel::policy::{Decision, Policy, Rule};
use tlsgate_tunnel::wire::Protocol;
use tlsgate_tunnel::Target;

/// An invalid grant, in the operator's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(pub String);

/// Who a grant is for.
#[derive(Clone, Debug)]
pub enum IdentityPattern {
    Any,
    Allow(AllowList),
}

impl IdentityPattern {
    pub fn parse(s: &str) -> Result<IdentityPattern, GrantError> {
        let s = s.trim();
        let name = |n: &str| NamePattern::parse(n).map_err(|e| GrantError(format!("identity {s:?}: {e}")));
        let list = match s.split_once(':') {
            _ if s == "*" => return Ok(IdentityPattern::Any),
            _ if s.is_empty() => return Err(GrantError("empty identity pattern".into())),
            Some(("cn", v)) => AllowList { common_names: vec![v.into()], ..Default::default() },
            Some(("dns", v)) => AllowList { dns: vec![name(v)?], ..Default::default() },
            Some(("uri", v)) => AllowList { uri: vec![v.into()], ..Default::default() },
            _ if s.contains("://") => AllowList { uri: vec![s.into()], ..Default::default() },
            _ => AllowList {
                common_names: vec![s.into()],
                dns: NamePattern::parse(s).into_iter().collect(),
                ..Default::default()
            },
        };
        Ok(IdentityPattern::Allow(list))
    }

    pub fn matches(&self, id: &PeerIdentity) -> bool {
        match self {
            IdentityPattern::Any => true,
            IdentityPattern::Allow(list) => list.permits(id).is_ok(),
        }
    }
}

/// Rules granted to the portals an identity pattern matches.
#[derive(Clone, Debug)]
pub struct Grant {
    pub identity: IdentityPattern,
    pub rules: Vec<Rule>,
}

/// Every grant of a gate, in order.
#[derive(Clone, Debug, Default)]
pub struct ConnectPolicy {
    pub grants: Vec<Grant>,
}

impl ConnectPolicy {
    /// From `IDENTITY=RULE` texts; a rule without an action is an `allow tcp` rule
    /// (`portal.example=internal.test 443 to 127.0.0.1`).
    pub fn from_flags(flags: &[String]) -> Result<ConnectPolicy, GrantError> {
        let grants = flags
            .iter()
            .map(|f| {
                let (id, rule) = f
                    .split_once('=')
                    .ok_or_else(|| GrantError(format!("--allow {f:?}: expected IDENTITY=DESTINATION")))?;
                Ok((id.to_string(), vec![rule.to_string()]))
            })
            .collect::<Result<Vec<_>, GrantError>>()?;
        Self::from_grants(&grants)
    }

    /// From (identity pattern, rule texts) pairs, as the config file holds them.
    pub fn from_grants(grants: &[(String, Vec<String>)]) -> Result<ConnectPolicy, GrantError> {
        let mut out = Vec::new();
        for (id, rules) in grants {
            let identity = IdentityPattern::parse(id)?;
            let rules = rules
                .iter()
                .map(|r| {
                    let r = r.trim();
                    let text = if r.starts_with("allow ") || r.starts_with("deny ") {
                        r.to_string()
                    } else {
                        format!("allow tcp {r}")
                    };
                    let rule: Rule = text.parse().map_err(|e| GrantError(format!("identity {id:?}: {e}")))?;
                    Ok(rule)
                })
                .collect::<Result<Vec<_>, GrantError>>()?;
            out.push(Grant { identity, rules });
        }
        Ok(ConnectPolicy { grants: out })
    }

    /// The rules that apply to this portal, in order (empty: it may reach nothing).
    pub fn policy_for(&self, id: &PeerIdentity) -> Policy {
        let rules = self.grants.iter().filter(|g| g.identity.matches(id)).flat_map(|g| g.rules.clone());
        Policy { rules: rules.collect(), unrestricted: false }
    }
}

/// The decision on a CONNECT as requested (before resolving).
pub fn check(policy: &Policy, target: &Target) -> Decision {
    policy.check(Protocol::TCP, target)
}

/// The decision on one address `target` resolved to (or is); `own`: one of the gate's.
pub fn check_resolved(policy: &Policy, target: &Target, ip: std::net::IpAddr, own: bool) -> Decision {
    policy.check_resolved(Protocol::TCP, target, ip, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(cn: &str, dns: &[&str]) -> PeerIdentity {
        PeerIdentity {
            subject: format!("CN={cn}"),
            common_name: Some(cn.into()),
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn grants_apply_to_matching_identities_and_nothing_is_allowed_otherwise() {
        let p = ConnectPolicy::from_flags(&[
            "laptop.corp=internal.test 443 to 127.0.0.1".into(),
            "dns:*.ops.corp=*.test 22".into(),
        ])
        .unwrap();
        let t443 = Target::name("internal.test", 443).unwrap();
        let t22 = Target::name("internal.test", 22).unwrap();
        let laptop = p.policy_for(&portal("laptop.corp", &[]));
        assert!(check(&laptop, &t443).is_allowed());
        assert!(check_resolved(&laptop, &t443, [127, 0, 0, 1].into(), false).is_allowed());
        // Resolved elsewhere than its rule's `to`: refused.
        assert!(!check_resolved(&laptop, &t443, [127, 0, 0, 2].into(), false).is_allowed());
        assert!(!check(&laptop, &t22).is_allowed(), "by port");
        let ops = p.policy_for(&portal("x", &["a.ops.corp"]));
        assert!(check(&ops, &t22).is_allowed());
        // A name allowed without `to` does not reach loopback or the gate's own addresses.
        assert!(!check_resolved(&ops, &t22, [127, 0, 0, 1].into(), false).is_allowed());
        assert!(!check_resolved(&ops, &t22, [192, 0, 2, 1].into(), true).is_allowed());
        assert!(check_resolved(&ops, &t22, [192, 0, 2, 1].into(), false).is_allowed());
        let nobody = p.policy_for(&portal("stranger", &[]));
        assert!(!check(&nobody, &t443).is_allowed());
    }

    #[test]
    fn loopback_addresses_need_a_rule_naming_them() {
        let p = ConnectPolicy::from_flags(&["*=*".into()]).unwrap();
        let any = p.policy_for(&portal("x", &[]));
        assert!(!check(&any, &Target::ip([127, 0, 0, 1], 9000)).is_allowed());
        assert!(check(&any, &Target::ip([192, 0, 2, 7], 443)).is_allowed());
    }

    #[test]
    fn bad_grants_say_what_is_wrong() {
        for bad in ["no-equals", "=x 1", "a=allow tcp 10.0.0.0/33 1", "dns:*.*.x=a 1"] {
            assert!(ConnectPolicy::from_flags(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
